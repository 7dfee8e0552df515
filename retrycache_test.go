package main

import (
	"errors"
	"fmt"
	"net/rpc"
	"sync"
	"testing"
	"time"
)

func TestRetryCache_Forgets(t *testing.T) {
	c := newRetryCache()
	t0 := time.Now().UnixNano()
	id := func(i int) CallID { return CallID{Client: 7, Seq: uint64(i)} }
	c.add(&edit{Op: opDelete, Path: "/a", Time: t0, Call: id(1)}, 3)
	c.add(&edit{Op: opDelete, Path: "/nameless", Time: t0}, 1) // no CallID: not kept
	if r, ok := c.lookup(id(1), opDelete, "/a"); !ok || r.n != 3 {
		t.Fatalf("lookup = %+v, %v; want 3 files", r, ok)
	}
	for _, miss := range []struct {
		id CallID
		op editOp
		p  string
	}{{id(2), opDelete, "/a"}, {id(1), opRename, "/a"}, {id(1), opDelete, "/b"}, {CallID{}, opDelete, "/nameless"}} {
		if _, ok := c.lookup(miss.id, miss.op, miss.p); ok {
			t.Errorf("lookup(%v, %v, %s) found a call", miss.id, miss.op, miss.p)
		}
	}
	// Calls older than retryTTL, by the records' times, are forgotten.
	c.add(&edit{Op: opMkdir, Path: "/late", Time: t0 + int64(retryTTL) + 1, Call: id(3)}, 0)
	if _, ok := c.lookup(id(1), opDelete, "/a"); ok {
		t.Error("a call older than retryTTL is still known")
	}
	if _, ok := c.lookup(id(3), opMkdir, "/late"); !ok {
		t.Error("the newest call is forgotten")
	}
	// At most retryMax calls are kept.
	for i := range retryMax + 10 {
		c.add(&edit{Op: opDelete, Path: "/x", Time: t0 + int64(retryTTL) + 2, Call: id(10 + i)}, 1)
	}
	if len(c.entries) != retryMax || len(c.order) != retryMax {
		t.Errorf("%d calls kept (%d in order), want %d", len(c.entries), len(c.order), retryMax)
	}
	if _, ok := c.lookup(id(10), opDelete, "/x"); ok {
		t.Error("the oldest call past retryMax is still known")
	}
}

// A change sent again with the same CallID gets the first answer, not
// "no such file", on the master that made it and after a restart (the
// edit log's replay); without a CallID it is made (and refused) again.
func TestMaster_RetriedChanges(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 1)
	for _, p := range []string{"/rm/f", "/mv/f"} {
		if err := putFile(t, m, p, testBlockSize, 1); err != nil {
			t.Fatal(err)
		}
	}
	calls := []struct {
		name string
		call func(m *Master, id CallID) (string, error)
		want string
	}{
		{"rm", func(m *Master, id CallID) (string, error) {
			n, err := m.remove(id, "/rm/f", false)
			return fmt.Sprint(n), err
		}, "1"},
		{"mv", func(m *Master, id CallID) (string, error) {
			to, n, err := m.rename(id, "/mv/f", "/mv/g", false)
			return fmt.Sprintf("%s %d", to, n), err
		}, "/mv/g 1"},
		{"mkdir", func(m *Master, id CallID) (string, error) {
			return "", m.mkdir(id, "/new", false, 0)
		}, ""},
	}
	for i, c := range calls {
		id := CallID{Client: 42, Seq: uint64(i + 1)}
		if got, err := c.call(m, id); err != nil || got != c.want {
			t.Fatalf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
		if got, err := c.call(m, id); err != nil || got != c.want {
			t.Errorf("%s sent again: %q, %v; want the first answer %q", c.name, got, err, c.want)
		}
		if _, err := c.call(m, CallID{Client: 42, Seq: 100 + uint64(i)}); err == nil {
			t.Errorf("%s as another call: made again, want an error", c.name)
		}
	}
	// No Close: a crash. The restarted master replays the calls; then a
	// clean stop writes them into the image, from which the next starts.
	m2 := newTestMaster(t, dir)
	for i, c := range calls {
		if got, err := c.call(m2, CallID{Client: 42, Seq: uint64(i + 1)}); err != nil || got != c.want {
			t.Errorf("%s sent again after a restart: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	if firsts, _ := segments(dir); len(firsts) != 1 {
		t.Fatalf("segments after a clean stop: %v, want the one new", firsts)
	}
	m3 := newTestMaster(t, dir)
	for i, c := range calls {
		if got, err := c.call(m3, CallID{Client: 42, Seq: uint64(i + 1)}); err != nil || got != c.want {
			t.Errorf("%s sent again after a start from the image: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// A call sent again while the first is not committed gets no answer
// before the commit: a leader cut off from the others fails both.
func TestHA_RetryBeforeCommit(t *testing.T) {
	hc := startHACluster(t, 3, 1)
	c := hc.client()
	l := hc.leaderAlone(c, "/rm", []byte("x"))
	m := hc.masters[l]
	id := CallID{Client: 77, Seq: 1}
	errs := make(chan error, 2)
	del := func() {
		errs <- c.pool.call(t.Context(), hc.addrs[l], masterService+".Delete", &DeleteArgs{Path: "/rm", Call: id}, &DeleteReply{}, 10*time.Second)
	}
	go del()
	waitFor(t, 5*time.Second, "the leader to apply the delete", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.retries.lookup(id, opDelete, "/rm")
		return ok
	})
	go del()
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("a delete that was never committed was acknowledged")
		} else {
			t.Logf("delete: %v", err)
		}
	}
}

// Replicated masters: a change made by the leader, sent again to the next
// leader after a failover (the client never heard the answer), gets the
// answer of the first; a new call is refused as the change was made.
func TestHA_RetryAfterFailover(t *testing.T) {
	hc := startHACluster(t, 3, 1)
	c := hc.client()
	mustPut(t, c, "/rm", []byte("x"), PutOptions{Replication: 1})
	mustPut(t, c, "/mv", []byte("y"), PutOptions{Replication: 1})
	id := func(i uint64) CallID { return CallID{Client: 99, Seq: i} }
	calls := []struct {
		method     string
		args       func(CallID) any
		reply      func() any
		want       string
		errWithout error
	}{
		{"Delete", func(id CallID) any { return &DeleteArgs{Path: "/rm", Call: id} }, func() any { return &DeleteReply{} }, "&{Removed:1}", ErrNotFound},
		{"Rename", func(id CallID) any { return &RenameArgs{Src: "/mv", Dst: "/mv2", Call: id} }, func() any { return &RenameReply{} }, "&{Path:/mv2 Moved:1}", ErrNotFound},
		{"Mkdir", func(id CallID) any { return &MkdirArgs{Path: "/d", Call: id} }, func() any { return &Empty{} }, "&{}", ErrExists},
	}
	call := func(addr string, i int, id CallID) (string, error) {
		reply := calls[i].reply()
		err := c.pool.call(t.Context(), addr, masterService+"."+calls[i].method, calls[i].args(id), reply, 5*time.Second)
		return fmt.Sprintf("%+v", reply), err
	}
	l := hc.leader()
	for i := range calls {
		if got, err := call(hc.addrs[l], i, id(uint64(i+1))); err != nil || got != calls[i].want {
			t.Fatalf("%s: %s, %v; want %s", calls[i].method, got, err, calls[i].want)
		}
	}
	hc.waitSame()
	hc.stop(l)
	next := hc.leader()
	for i := range calls {
		if got, err := call(hc.addrs[next], i, id(uint64(i+1))); err != nil || got != calls[i].want {
			t.Errorf("%s sent again to the new leader: %s, %v; want %s", calls[i].method, got, err, calls[i].want)
		}
		if _, err := call(hc.addrs[next], i, id(uint64(i+10))); !errors.Is(err, calls[i].errWithout) {
			t.Errorf("%s as a new call: %v; want %v", calls[i].method, err, calls[i].errWithout)
		}
	}
}

// A Create or an AddBlock sent again with the same CallID gets the answer
// of the first (the same put, the same block) instead of ErrBusy or a
// second block; another call is a new one.
func TestMaster_RetriedCreateAndAddBlock(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	create := CreateArgs{Path: "/f", Replication: 1, FirstBlock: true, Call: CallID{Client: 5, Seq: 1}}
	first, err := m.create(&create)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.create(&create)
	if err != nil || again.Handle != first.Handle || again.First.BlockID != first.First.BlockID {
		t.Fatalf("create sent again: %+v, %v; want the first answer %+v", again, err, first)
	}
	other := create
	other.Call.Seq = 2
	if _, err := m.create(&other); !errors.Is(err, ErrBusy) {
		t.Errorf("another create of the path: %v, want %v", err, ErrBusy)
	}
	add := AddBlockArgs{Handle: first.Handle, Call: CallID{Client: 5, Seq: 3}}
	b1, err := m.addBlock(&add)
	if err != nil {
		t.Fatal(err)
	}
	b1again, err := m.addBlock(&add)
	if err != nil || b1again.BlockID != b1.BlockID {
		t.Fatalf("AddBlock sent again: block %d, %v; want block %d", b1again.BlockID, err, b1.BlockID)
	}
	add.Call.Seq = 4
	b2, err := m.addBlock(&add)
	if err != nil || b2.BlockID == b1.BlockID {
		t.Fatalf("a second AddBlock: block %d, %v; want a new block", b2.BlockID, err)
	}
	m.abandon(&AbandonArgs{Handle: first.Handle})
	if len(m.leases.byCall) != 0 {
		t.Errorf("%d named creates kept after the put ended", len(m.leases.byCall))
	}
	if _, err := m.create(&create); err != nil {
		t.Errorf("the same create after its put ended: %v (a new put)", err)
	}
}

// leaderLostOnce is a master that leads, and answers the first Delete with
// ErrLeadershipLost (as a leader deposed before the commit) and the next
// with success; it records the CallIDs it got.
type leaderLostOnce struct {
	mu    sync.Mutex
	calls []CallID
}

func (f *leaderLostOnce) Ping(_ *PingArgs, r *PingReply) error {
	r.Raft = &MasterInfo{ID: "m1", Role: "leader"}
	return nil
}

func (f *leaderLostOnce) Delete(a *DeleteArgs, r *DeleteReply) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, a.Call)
	if len(f.calls) == 1 {
		return ErrLeadershipLost
	}
	r.Removed = 1
	return nil
}

// With several masters, a client sends a rm answered ErrLeadershipLost
// again, with the same CallID; with one, it reports the error at once.
func TestClient_ResendsNamedCall(t *testing.T) {
	tests := []struct {
		name    string
		several bool
	}{{"one master", false}, {"several masters", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &leaderLostOnce{}
			srv := rpc.NewServer()
			if err := srv.RegisterName(masterService, fake); err != nil {
				t.Fatal(err)
			}
			s, err := serveRPC("127.0.0.1:0", srv, testLogger(t), nil, roleMaster, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			spec := s.Addr().String()
			if tt.several {
				spec += "," + freeAddr(t) // nobody there
			}
			c := NewClient(spec)
			c.Logger = testLogger(t)
			defer c.Close()
			n, err := c.Remove(t.Context(), "/f", false)
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if !tt.several {
				if !errors.Is(err, ErrLeadershipLost) || len(fake.calls) != 1 || fake.calls[0] != (CallID{}) {
					t.Fatalf("rm: %d, %v, calls %v; want ErrLeadershipLost from one call with no CallID", n, err, fake.calls)
				}
				return
			}
			if err != nil || n != 1 {
				t.Fatalf("rm: %d, %v; want 1 file removed on the second try", n, err)
			}
			if len(fake.calls) != 2 || fake.calls[0] == (CallID{}) || fake.calls[0] != fake.calls[1] {
				t.Fatalf("calls %v; want the same CallID twice", fake.calls)
			}
		})
	}
}
