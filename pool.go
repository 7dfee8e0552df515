// pool.go is the calling side of net/rpc: one connection per remote address,
// shared by concurrent calls (net/rpc multiplexes them), and a deadline on
// every call and every write, because net/rpc has none of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"reflect"
	"sync"
	"time"
)

// pool keeps one *rpc.Client per address. It is safe for concurrent use.
// Each connection it dials opens with the handshake of auth.go, as a
// process of role self.
type pool struct {
	self role

	// mu guards the fields below.
	mu      sync.Mutex
	sec     *Security
	clients map[string]*rpc.Client
	closed  bool

	// waiting holds the calls in wait, so that one timer serves them all.
	waiting deadlines
}

func newPool(sec *Security, self role) *pool {
	return &pool{self: self, sec: sec, clients: make(map[string]*rpc.Client)}
}

// setSecurity changes how connections dialed from now on open.
func (p *pool) setSecurity(sec *Security) {
	p.mu.Lock()
	p.sec = sec
	p.mu.Unlock()
}

// errPoolClosed is returned by calls made after close.
var errPoolClosed = errors.New("connection pool closed")

// get returns the client for addr, dialing it if there is none; pooled is
// true if it was there already.
// A new connection's handshake takes at most limit (and handshakeTimeout).
func (p *pool) get(ctx context.Context, addr string, limit time.Duration) (_ *rpc.Client, pooled bool, _ error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errPoolClosed
	}
	if c, ok := p.clients[addr]; ok {
		p.mu.Unlock()
		return c, true, nil
	}
	sec := p.sec
	p.mu.Unlock()

	// Dial outside the lock: one unreachable address must not stall calls
	// to the others.
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	// The handshake has a deadline of its own; ctx may end it sooner.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	conn, err := sec.dial(raw, addr, p.self, min(limit, handshakeTimeout))
	if !stop() {
		if err == nil {
			conn.Close()
		}
		return nil, false, ctx.Err()
	}
	if err != nil {
		return nil, false, err
	}
	c := rpc.NewClientWithCodec(newClientCodec(&deadlineConn{Conn: conn, writeTimeout: connWriteTimeout}))

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return nil, false, errPoolClosed
	}
	if old, ok := p.clients[addr]; ok { // another caller dialed first
		c.Close()
		return old, true, nil
	}
	p.clients[addr] = c
	return c, false, nil
}

// drop closes c and forgets it, if it is still the client for addr. Calls
// still waiting on c fail with rpc.ErrShutdown.
func (p *pool) drop(addr string, c *rpc.Client) {
	p.mu.Lock()
	if p.clients[addr] == c {
		delete(p.clients, addr)
	}
	p.mu.Unlock()
	c.Close()
}

// close closes every connection. Later calls fail.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, c := range p.clients {
		c.Close()
		delete(p.clients, addr)
	}
	p.waiting.stop()
}

// call invokes method on addr and waits at most timeout for the reply. A
// connection that was found dead before the request went out is redialed
// once, so a restarted server is reached again; so is a pooled one that
// broke with the request in flight, if the method only reads (its peer may
// have gone before it saw the request, or after: the answer is the same).
// Remote errors come back through fromRemote, so errors.Is works on the
// sentinels.
func (p *pool) call(ctx context.Context, addr, method string, args, reply any, timeout time.Duration) error {
	for attempt := 0; ; attempt++ {
		pc, err := p.startWithin(ctx, addr, method, args, reply, timeout)
		if err != nil {
			return err
		}
		err = pc.wait(ctx, timeout)
		if err == nil || !pc.broken || !pc.pooled || attempt > 0 || !readOnly[method] {
			return err
		}
		// The reply may hold part of an answer cut short: gob would
		// leave it where the next answer has zero values.
		if v := reflect.ValueOf(reply); v.Kind() == reflect.Pointer && !v.IsNil() {
			v.Elem().SetZero()
		}
	}
}

// readOnly are the methods that change nothing, which call may send again.
var readOnly = map[string]bool{
	masterService + ".Ping": true, masterService + ".Stat": true, masterService + ".List": true,
	masterService + ".Report": true, masterService + ".Fsck": true, minionService + ".ReadBlock": true,
}

// pendingCall is a call in flight, started by start.
type pendingCall struct {
	p      *pool
	addr   string
	c      *rpc.Client
	call   *rpc.Call
	pooled bool // c was in the pool before the call
	broken bool // c failed: a transport error, not the peer's answer

	// deadline, prev and next belong to p.waiting while the call waits.
	deadline   time.Time
	prev, next *pendingCall
	queued     bool
}

// start sends a request without waiting for its reply. The request is
// written to the connection before start returns, so the caller may reuse
// the memory behind args at once. A pooled connection found dead before the
// request went out (the peer restarted) is redialed once, so a healthy peer
// is not taken for a failed one.
func (p *pool) start(ctx context.Context, addr, method string, args, reply any) (*pendingCall, error) {
	return p.startWithin(ctx, addr, method, args, reply, handshakeTimeout)
}

// startWithin is start with at most limit for a new connection's handshake.
func (p *pool) startWithin(ctx context.Context, addr, method string, args, reply any, limit time.Duration) (*pendingCall, error) {
	for attempt := 0; ; attempt++ {
		c, pooled, err := p.get(ctx, addr, limit)
		if err != nil {
			return nil, err
		}
		pc := &pendingCall{p: p, addr: addr, c: c, pooled: pooled, call: c.Go(method, args, reply, make(chan *rpc.Call, 1))}
		select {
		case call := <-pc.call.Done: // over already: perhaps never sent
			if errors.Is(call.Error, rpc.ErrShutdown) && attempt == 0 {
				p.drop(addr, c)
				continue
			}
			pc.call.Done <- call // for wait
		default:
		}
		return pc, nil
	}
}

// wait waits for the reply. When the deadline passes or ctx ends first, the
// connection is closed: net/rpc cannot cancel one call, and a peer that does
// not answer one call is not trusted with the next.
func (pc *pendingCall) wait(ctx context.Context, timeout time.Duration) error {
	pc.deadline = time.Now().Add(timeout)
	pc.p.waiting.add(pc)
	select {
	case call := <-pc.call.Done:
		pc.p.waiting.remove(pc)
		if call == timedOut {
			pc.p.drop(pc.addr, pc.c)
			return fmt.Errorf("%s: no answer from %s within %v", pc.call.ServiceMethod, pc.addr, timeout)
		}
		err := call.Error
		if err == nil {
			return nil
		}
		var se rpc.ServerError
		if !errors.As(err, &se) {
			// A transport error: the connection is no good any more.
			pc.broken = true
			pc.p.drop(pc.addr, pc.c)
		}
		return fromRemote(err)
	case <-ctx.Done():
		pc.p.waiting.remove(pc)
		pc.p.drop(pc.addr, pc.c)
		return ctx.Err()
	}
}

// timedOut is what deadlines puts on the Done channel of a call whose
// deadline has passed. net/rpc never sends it; a reply that comes later
// finds the channel full and is dropped (rpc.Call.done does not block).
var timedOut = new(rpc.Call)

// deadlines times out the calls of a pool that are in wait. A timer per
// call costs more than the rest of a small call's bookkeeping together, so
// one timer serves them all: it is set for the earliest deadline, and when
// it fires it times out every call that is due and sets itself for the
// next. Calls mostly come with the same timeout, so a new call's deadline is
// seldom the earliest and adding it does not touch the timer.
type deadlines struct {
	mu    sync.Mutex
	head  *pendingCall // a doubly linked list, in no order
	timer *time.Timer  // runs sweep
	at    time.Time    // when timer fires; zero if it is not set
}

func (d *deadlines) add(pc *pendingCall) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pc.prev, pc.next, pc.queued = nil, d.head, true
	if d.head != nil {
		d.head.prev = pc
	}
	d.head = pc
	if d.at.IsZero() || pc.deadline.Before(d.at) {
		d.arm(pc.deadline)
	}
}

// arm sets the timer for at. d.mu is held.
func (d *deadlines) arm(at time.Time) {
	d.at = at
	if d.timer == nil {
		d.timer = time.AfterFunc(time.Until(at), d.sweep)
	} else {
		d.timer.Reset(time.Until(at))
	}
}

// remove takes pc out, if it is still in. The timer is left alone: if pc
// had the earliest deadline, the timer fires for nothing and moves on.
func (d *deadlines) remove(pc *pendingCall) {
	d.mu.Lock()
	d.unlink(pc)
	d.mu.Unlock()
}

func (d *deadlines) unlink(pc *pendingCall) {
	if !pc.queued {
		return
	}
	if pc.prev != nil {
		pc.prev.next = pc.next
	} else {
		d.head = pc.next
	}
	if pc.next != nil {
		pc.next.prev = pc.prev
	}
	pc.prev, pc.next, pc.queued = nil, nil, false
}

// sweep times out the calls that are due and sets the timer for the
// earliest deadline left.
func (d *deadlines) sweep() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	var next time.Time
	for pc := d.head; pc != nil; {
		after := pc.next
		if !pc.deadline.After(now) {
			d.unlink(pc)
			select {
			case pc.call.Done <- timedOut:
			default: // the reply is there already; the call takes it
			}
		} else if next.IsZero() || pc.deadline.Before(next) {
			next = pc.deadline
		}
		pc = after
	}
	d.at = time.Time{}
	if !next.IsZero() {
		d.arm(next)
	}
}

// stop stops the timer. Calls still waiting fail on their own: their
// connections are closed.
func (d *deadlines) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.at = time.Time{}
}

// deadlineConn puts a deadline on every Write, so a peer that stops reading
// cannot block a writer (and net/rpc's send lock) for ever. Reads have no
// deadline here: an idle pooled connection may wait for its next reply as
// long as it likes, and callers bound each call in wait.
type deadlineConn struct {
	net.Conn
	writeTimeout time.Duration
	// deadline is the write deadline last set. It is moved only when less
	// than half of writeTimeout is left: setting it costs more than a
	// small write. Writes on one connection are serialised by net/rpc.
	deadline time.Time
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if now := time.Now(); c.deadline.Sub(now) < c.writeTimeout/2 {
		c.deadline = now.Add(c.writeTimeout)
		if err := c.Conn.SetWriteDeadline(c.deadline); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}
