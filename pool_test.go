package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"testing"
	"time"
)

// A call that gets no answer fails with an error that says so, and the
// connection is not used again.
func TestPool_Timeout(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	silent := listenAuthed(t, func(c net.Conn) {
		mu.Lock()
		conns++
		mu.Unlock()
		io.Copy(io.Discard, c) // reads, never answers
	})
	p := newPool(nil, roleClient)
	defer p.close()
	for range 2 {
		err := p.call(t.Context(), silent, "Master.Stat", &PathArgs{}, &Empty{}, 20*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "Master.Stat: no answer from "+silent+" within 20ms") {
			t.Fatalf("err = %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 2 {
		t.Errorf("%d connections for 2 calls that timed out, want 2", conns)
	}
}

// A call with a short timeout times out even while calls with long ones
// wait: the shared timer follows the earliest deadline.
func TestPool_TimeoutShorterThanOthers(t *testing.T) {
	silent := listenAuthed(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := newPool(nil, roleClient)
	defer p.close()
	long := make(chan error, 3)
	for range 3 {
		pc, err := p.start(t.Context(), silent, "Master.Stat", &PathArgs{}, &Empty{})
		if err != nil {
			t.Fatal(err)
		}
		go func() { long <- pc.wait(t.Context(), time.Hour) }()
	}
	// If the timer stayed set for an hour, this would hang.
	err := p.call(t.Context(), silent, "Master.Stat", &PathArgs{}, &Empty{}, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("err = %v", err)
	}
	// The timeout closed the shared connection: the long calls fail too.
	for range 3 {
		if err := <-long; err == nil {
			t.Error("a call on a dropped connection succeeded")
		}
	}
}

// A call whose context ends fails with the context's error.
func TestPool_ContextCanceled(t *testing.T) {
	silent := listenAuthed(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := newPool(nil, roleClient)
	defer p.close()
	ctx, cancel := context.WithCancel(t.Context())
	pc, err := p.start(ctx, silent, "Master.Stat", &PathArgs{}, &Empty{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := pc.wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if p.waiting.head != nil {
		t.Error("a call that returned is still in the deadlines")
	}
}

// breaker is a service whose second call of each method closes every
// connection to it before it answers, as a server that restarts does.
type breaker struct {
	mu    sync.Mutex
	calls map[string]int
	conns *[]net.Conn
}

func (b *breaker) call(method string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.calls[method]++; b.calls[method] == 2 {
		for _, c := range *b.conns {
			c.Close()
		}
	}
}

func (b *breaker) Stat(a *PathArgs, reply *FileInfo) error {
	b.call("Stat")
	reply.Path = a.Path
	return nil
}

func (b *breaker) Delete(a *DeleteArgs, reply *DeleteReply) error {
	b.call("Delete")
	reply.Removed = 1
	return nil
}

// A pooled connection that breaks with a call in flight is redialed and the
// call sent again if it only reads; a call that changes something fails
// rather than risk being done twice.
func TestPool_BrokenConnection_ReadsRetried(t *testing.T) {
	var conns []net.Conn // guarded by b.mu
	b := &breaker{calls: map[string]int{}, conns: &conns}
	srv := rpc.NewServer()
	if err := srv.RegisterName(masterService, b); err != nil {
		t.Fatal(err)
	}
	addr := listenAuthed(t, func(c net.Conn) {
		b.mu.Lock()
		conns = append(conns, c)
		b.mu.Unlock()
		srv.ServeCodec(newServerCodec(c, nil))
	})
	p := newPool(nil, roleClient)
	defer p.close()
	for i := range 2 {
		var fi FileInfo
		if err := p.call(t.Context(), addr, masterService+".Stat", &PathArgs{Path: "/f"}, &fi, 5*time.Second); err != nil || fi.Path != "/f" {
			t.Fatalf("Stat %d: %+v, %v", i, fi, err)
		}
	}
	for i, wantErr := range []bool{false, true} {
		var r DeleteReply
		if err := p.call(t.Context(), addr, masterService+".Delete", &DeleteArgs{Path: "/f"}, &r, 5*time.Second); (err != nil) != wantErr {
			t.Fatalf("Delete %d: %v, want an error: %v", i, err, wantErr)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.calls["Stat"] != 3 || b.calls["Delete"] != 2 {
		t.Errorf("the server saw %d Stats and %d Deletes, want 3 (one sent again) and 2", b.calls["Stat"], b.calls["Delete"])
	}
}
