// server.go is the serving side of net/rpc, shared by the master and the
// minions: the listener, an accept loop that survives transient errors, the
// set of open connections, and a Close that stops all of it.
package main

import (
	"errors"
	"log/slog"
	"net"
	"net/rpc"
	"sync"
	"time"
)

// rpcServer serves one rpc.Server on one TCP listener.
type rpcServer struct {
	ln     net.Listener
	srv    *rpc.Server
	logger *slog.Logger

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// serveRPC listens on addr and serves srv until Close. It returns once the
// listener is bound, so Addr is valid at once.
func serveRPC(addr string, srv *rpc.Server, logger *slog.Logger) (*rpcServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &rpcServer{ln: ln, srv: srv, logger: logger, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the listener is bound to.
func (s *rpcServer) Addr() net.Addr { return s.ln.Addr() }

func (s *rpcServer) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and try again
			// rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger.Warn("accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(conn) {
			conn.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			// ServeConn returns when the peer hangs up or sends
			// something that is not a gob-encoded rpc request.
			s.srv.ServeConn(&deadlineConn{Conn: conn, writeTimeout: connWriteTimeout})
		}()
	}
}

func (s *rpcServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *rpcServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *rpcServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, closes every connection and waits for the serving
// goroutines to return. Handlers still running finish on their own; their
// replies are lost. It is safe to call more than once.
func (s *rpcServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
