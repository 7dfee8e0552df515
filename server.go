// server.go is the serving side of net/rpc, shared by the master and the
// minions: the listener, an accept loop that survives transient errors, the
// set of open connections, and a Close that stops all of it.
package main

import (
	"bufio"
	"encoding/gob"
	"errors"
	"io"
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
			// ServeCodec returns when the peer hangs up or sends
			// something that is not a gob-encoded rpc request.
			s.srv.ServeCodec(newServerCodec(&deadlineConn{Conn: conn, writeTimeout: connWriteTimeout}))
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

// serverCodec is net/rpc's gob server codec with the headers done by hand
// (codec.go), plus buffer recycling: the 1 MiB packets of the data path
// come from packetPool and go back to it once they are written (a request's
// Data when its handler returns, a reply's Data once it is on the wire), so
// a busy minion does not make a megabyte of garbage per packet.
type serverCodec struct {
	rwc    io.ReadWriteCloser
	dec    *gob.Decoder
	enc    *gob.Encoder
	encBuf *bufio.Writer
	hr     headerReader
	hw     headerWriter
	closed bool
}

func newServerCodec(conn io.ReadWriteCloser) *serverCodec {
	buf := bufio.NewWriter(conn)
	r := bufio.NewReader(conn)
	c := &serverCodec{rwc: conn, dec: gob.NewDecoder(r), enc: gob.NewEncoder(buf), encBuf: buf}
	c.hr.t, c.hr.r = requestHeader, r
	c.hw.t = responseHeader
	return c
}

func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error { return c.hr.readRequest(r) }

func (c *serverCodec) ReadRequestBody(body any) error {
	if a, ok := body.(*WriteBlockArgs); ok {
		a.Data = getPacketBuf()[:0] // gob decodes into its capacity
	}
	return c.dec.Decode(body)
}

// releaser is a reply whose buffers can be reused once it is sent.
type releaser interface{ release() }

func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	if rel, ok := body.(releaser); ok {
		defer rel.release()
	}
	if err := c.hw.write(c.encBuf, c.enc, r, r.ServiceMethod, r.Seq, r.Error); err != nil {
		if c.encBuf.Flush() == nil {
			c.Close() // a header gob cannot encode: the stream is broken
		}
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		if c.encBuf.Flush() == nil {
			c.Close()
		}
		return err
	}
	return c.encBuf.Flush()
}

func (c *serverCodec) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	return c.rwc.Close()
}

// packetPool holds packet buffers of packetSize bytes.
var packetPool = sync.Pool{New: func() any { b := make([]byte, packetSize); return &b }}

func getPacketBuf() []byte { return *packetPool.Get().(*[]byte) }

// putPacketBuf recycles b if it is a whole packet buffer.
func putPacketBuf(b []byte) {
	if cap(b) >= packetSize {
		b = b[:packetSize]
		packetPool.Put(&b)
	}
}
