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

// rpcServer serves one rpc.Server on one TCP listener. Every connection
// opens with the handshake of auth.go; only a peer it lets in reaches the
// rpc.Server.
type rpcServer struct {
	ln     net.Listener
	srv    *rpc.Server
	logger *slog.Logger
	sec    *Security
	self   role
	rpcs   *rpcMetrics // nil: no metrics

	// maxConns and maxPerIP bound the connections open at once, in all
	// and from one IP address.
	maxConns, maxPerIP int

	refusals refusalLog

	// mu guards the fields below.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	perIP  map[string]int
	seen   map[string]bool // peers from other hosts seen without a secret (--insecure)
	closed bool

	wg sync.WaitGroup
}

// Connection limits of a server. A cluster's own processes need a handful
// each; the rest is for clients.
const (
	defaultMaxConns = 4096
	defaultMaxPerIP = 512
	// maxSeen bounds the peer addresses remembered for --insecure's
	// warnings.
	maxSeen = 4096
)

// serveRPC listens on addr and serves srv, as a process of role self, until
// Close. It returns once the listener is bound, so Addr is valid at once.
func serveRPC(addr string, srv *rpc.Server, logger *slog.Logger, sec *Security, self role, rpcs *rpcMetrics) (*rpcServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &rpcServer{ln: ln, srv: srv, logger: logger, sec: sec, self: self, rpcs: rpcs,
		maxConns: defaultMaxConns, maxPerIP: defaultMaxPerIP,
		conns: make(map[net.Conn]struct{}), perIP: make(map[string]int), seen: make(map[string]bool)}
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
		refuse, ok := s.track(conn)
		if !ok {
			conn.Close()
			if s.isClosed() {
				return
			}
			continue // far over the limit: not worth a goroutine
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			c, p, err := s.sec.accept(conn, s.self, refuse)
			if err != nil {
				s.refusals.log(s.logger, conn.RemoteAddr().String(), err)
				return
			}
			s.warnInsecure(conn.RemoteAddr())
			// ServeCodec returns when the peer hangs up or sends
			// something that is not a gob-encoded rpc request.
			sc := newServerCodec(&deadlineConn{Conn: c, writeTimeout: connWriteTimeout}, p)
			sc.timer = newCallTimer(s.rpcs)
			s.srv.ServeCodec(sc)
			p.closed.Store(true)
		}()
	}
}

// warnInsecure warns of each new peer from another host that got in without
// a secret.
func (s *rpcServer) warnInsecure(a net.Addr) {
	if s.sec == nil || s.sec.Secret != nil || !s.sec.Insecure || isLoopback(a) {
		return
	}
	host, _, _ := net.SplitHostPort(a.String())
	s.mu.Lock()
	fresh := !s.seen[host] && len(s.seen) < maxSeen
	if fresh {
		s.seen[host] = true
	}
	s.mu.Unlock()
	if fresh {
		s.logger.Warn("a peer from another host got in without a cluster secret (--insecure)", "peer", a.String())
	}
}

func (s *rpcServer) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track counts c in. Over a limit, it is still taken, to be told why it is
// refused (refuse); far over the total limit, or once closed, it is not
// taken at all (ok is false).
func (s *rpcServer) track(c net.Conn) (refuse string, ok bool) {
	ip := remoteIP(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= 2*s.maxConns {
		return "", false
	}
	if len(s.conns) >= s.maxConns || s.perIP[ip] >= s.maxPerIP {
		refuse = reasonTooMany
	}
	s.conns[c] = struct{}{}
	s.perIP[ip]++
	return refuse, true
}

func (s *rpcServer) untrack(c net.Conn) {
	ip := remoteIP(c)
	s.mu.Lock()
	delete(s.conns, c)
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	s.mu.Unlock()
	c.Close()
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
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
// (codec.go), plus buffer recycling: the 1 MiB payloads of the data path
// are read into buffers of packetPool and go back to it once they are
// written (a request's Data when its handler returns, a reply's Data once
// it is on the wire), so a busy minion does not make a megabyte of garbage
// per packet.
type serverCodec struct {
	rwc    io.ReadWriteCloser
	dec    *gob.Decoder
	enc    *gob.Encoder
	encBuf *bufio.Writer
	hr     headerReader
	hw     headerWriter
	closed bool
	peer   *peer // who is at the other end; nil in tests of the codec alone
	timer  *callTimer
	// payload: the request whose header was read last has a payload
	// frame after its body.
	payload bool
}

func newServerCodec(conn io.ReadWriteCloser, p *peer) *serverCodec {
	buf := bufio.NewWriter(conn)
	r := bufio.NewReader(conn)
	c := &serverCodec{rwc: conn, dec: gob.NewDecoder(&msgLimiter{r: r, max: maxRequestBody}), enc: gob.NewEncoder(buf), encBuf: buf, peer: p}
	c.hr.t, c.hr.r = requestHeader, r
	c.hw.t = responseHeader
	return c
}

func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error {
	err := c.hr.readRequest(r)
	c.payload = err == nil && requestHasPayload(r.ServiceMethod)
	if err == nil {
		c.timer.begin(r.Seq)
	}
	return err
}

// ReadRequestBody reads the body, and its payload if it has one (into a
// packet buffer: see WriteBlockArgs). A payload that cannot be read leaves
// the stream at no message boundary, and net/rpc would go on reading after
// it: the connection is closed.
func (c *serverCodec) ReadRequestBody(body any) error {
	if err := c.dec.Decode(body); err != nil {
		return err
	}
	if c.payload {
		if err := readPayload(c.hr.r, body); err != nil {
			c.Close()
			return err
		}
	}
	if a, ok := body.(peerArgs); ok && c.peer != nil {
		a.setPeer(c.peer)
	}
	return nil
}

// peerArgs are the arguments of calls whose handlers need to know who called
// (a minion's own reports): the codec fills the peer in, after gob, so no
// peer can claim one.
type peerArgs interface{ setPeer(*peer) }

// releaser is a reply whose buffers can be reused once it is sent.
type releaser interface{ release() }

func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	if rel, ok := body.(releaser); ok {
		defer rel.release()
	}
	c.timer.end(r.Seq, r.ServiceMethod, r.Error != "")
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
	if replyHasPayload(r.ServiceMethod) {
		if err := writePayload(c.encBuf, body); err != nil {
			c.Close() // a body without its frame
			return err
		}
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
