package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// haCluster is three replicated masters and their minions in this process.
type haCluster struct {
	t       testing.TB
	dir     string
	peers   []Peer
	masters []*Master // nil where stopped
	addrs   []string  // their client addresses, kept across restarts
	minions []*Minion
	join    bool // start masters with --join
}

// freeAddr is a loopback address whose port the OS chose and that is free
// now: Raft needs every master's address before any starts.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Raft timings of the tests: elections within a second.
func fastRaft(m *Master) {
	m.RaftHeartbeat, m.RaftElection, m.RaftLease = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
}

func startHACluster(t testing.TB, nMasters, nMinions int) *haCluster {
	t.Helper()
	hc := &haCluster{t: t, dir: t.TempDir(), masters: make([]*Master, nMasters)}
	for i := range nMasters {
		hc.peers = append(hc.peers, Peer{ID: fmt.Sprintf("m%d", i+1), Addr: freeAddr(t)})
	}
	for i := range nMasters {
		hc.start(i)
	}
	t.Cleanup(hc.close)
	hc.leader()
	for i := range nMinions {
		mn := NewMinion(filepath.Join(hc.dir, fmt.Sprintf("minion-%d", i+1)), "127.0.0.1:0", hc.spec())
		mn.Logger = testLogger(t).With("role", "minion", "name", fmt.Sprintf("minion-%d", i+1))
		mn.Heartbeat = testHeartbeat
		mn.ScrubInterval = 0
		if err := mn.Start(); err != nil {
			t.Fatalf("start minion: %v", err)
		}
		hc.minions = append(hc.minions, mn)
	}
	waitFor(t, 10*time.Second, "minions registered with the leader", func() bool {
		return hc.liveMinions(hc.leader()) == nMinions
	})
	return hc
}

// start starts master i on its dir and client port (a new one on the first start).
func (hc *haCluster) start(i int) {
	hc.t.Helper()
	addr := "127.0.0.1:0"
	if old := hc.clientAddr(i); old != "" {
		addr = old
	}
	m := NewMaster(filepath.Join(hc.dir, hc.peers[i].ID), addr)
	m.Logger = testLogger(hc.t).With("role", "master", "id", hc.peers[i].ID)
	configureTestMaster(m)
	m.Peers, m.ID, m.Join = hc.peers, hc.peers[i].ID, hc.join
	fastRaft(m)
	if err := m.Start(); err != nil {
		hc.t.Fatalf("start master %s: %v", m.ID, err)
	}
	hc.masters[i] = m
	for len(hc.addrs) <= i {
		hc.addrs = append(hc.addrs, "")
	}
	hc.addrs[i] = m.AddrString()
}

func (hc *haCluster) clientAddr(i int) string {
	if i < len(hc.addrs) {
		return hc.addrs[i]
	}
	return ""
}

// spec is the masters' client addresses, as --master takes them.
func (hc *haCluster) spec() string { return strings.Join(hc.addrs, ",") }

func (hc *haCluster) stop(i int) {
	hc.t.Helper()
	if err := hc.masters[i].Close(); err != nil {
		hc.t.Errorf("close master %d: %v", i, err)
	}
	hc.masters[i] = nil
}

func (hc *haCluster) close() {
	for _, mn := range hc.minions {
		mn.Close()
	}
	for i, m := range hc.masters {
		if m != nil {
			hc.stop(i)
		}
	}
}

// leader waits for a running master to lead and returns its index.
func (hc *haCluster) leader() int {
	hc.t.Helper()
	var at int
	waitFor(hc.t, 10*time.Second, "a leader", func() bool {
		for i, m := range hc.masters {
			if m != nil && m.leaderOnly() == nil {
				at = i
				return true
			}
		}
		return false
	})
	return at
}

func (hc *haCluster) liveMinions(i int) int {
	r := hc.masters[i].report()
	n := 0
	for _, mn := range r.Minions {
		if mn.State == stateLive {
			n++
		}
	}
	return n
}

// namespaceOf is every path below / on master m, with each file's blocks.
func namespaceOf(m *Master) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	walkDirs("", &m.ns.root, func(p string, _ *dirNode) { out = append(out, p+"/") })
	walkDir("", &m.ns.root, func(p string, f *fileEntry) bool {
		out = append(out, fmt.Sprintf("%s %v", p, f.blocks.list()))
		return true
	})
	slices.Sort(out)
	return out
}

// waitSame waits until every running master has the namespace of the leader.
func (hc *haCluster) waitSame() {
	hc.t.Helper()
	l := hc.masters[hc.leader()]
	want := namespaceOf(l)
	waitFor(hc.t, 10*time.Second, "the followers to have the leader's namespace", func() bool {
		for _, m := range hc.masters {
			if m != nil && !slices.Equal(namespaceOf(m), want) {
				return false
			}
		}
		return true
	})
}

// leaderAlone puts data at p, waits until every master has it, stops every
// master but the leader and returns the leader's index.
func (hc *haCluster) leaderAlone(c *Client, p string, data []byte) int {
	hc.t.Helper()
	mustPut(hc.t, c, p, data, PutOptions{Replication: 1})
	hc.waitSame()
	l := hc.leader()
	for i := range hc.masters {
		if i != l {
			hc.stop(i)
		}
	}
	return l
}

func (hc *haCluster) client() *Client {
	c := NewClient(hc.spec())
	c.Logger = testLogger(hc.t)
	hc.t.Cleanup(c.Close)
	return c
}

// Changes made through the leader reach every master; a follower sends
// the caller to the leader; when the leader stops, another takes over
// within seconds, with every acknowledged file; the old one rejoins and
// catches up.
func TestHA_ReplicatesAndFailsOver(t *testing.T) {
	hc := startHACluster(t, 3, 3)
	c := hc.client()
	files := map[string][]byte{}
	for i := range 5 {
		p := fmt.Sprintf("/d/f%d", i)
		files[p] = randomBytes(t, testBlockSize*i+100)
		mustPut(t, c, p, files[p], PutOptions{})
	}
	if _, err := c.Rename(t.Context(), "/d/f0", "/d/g0", false); err != nil {
		t.Fatal(err)
	}
	files["/d/g0"] = files["/d/f0"]
	delete(files, "/d/f0")
	hc.waitSame()

	// A follower names the leader.
	l := hc.leader()
	f := (l + 1) % 3
	fc := NewClient(hc.addrs[f])
	defer fc.Close()
	err := fc.pool.call(t.Context(), hc.addrs[f], masterService+".Stat", &PathArgs{Path: "/d"}, &FileInfo{}, time.Second)
	if got := leaderIn(err); got != hc.addrs[l] {
		t.Fatalf("stat at a follower: %v; want a redirect to %s", err, hc.addrs[l])
	}
	// A client given only the follower's address follows it.
	fc.Logger = testLogger(t)
	mustGet(t, fc, "/d/f1", files["/d/f1"])

	stopped := time.Now()
	hc.stop(l)
	next := hc.leader()
	mustPut(t, c, "/after", []byte("after the failover"), PutOptions{})
	t.Logf("leader %s stopped: %s leads, and a put went through, %v later", hc.peers[l].ID, hc.peers[next].ID, time.Since(stopped).Round(time.Millisecond))
	files["/after"] = []byte("after the failover")
	for p, data := range files {
		mustGet(t, c, p, data)
	}

	hc.start(l)
	hc.waitSame()
}

// All three masters stopped and started again come back with the
// namespace: from Raft's snapshots and log.
func TestHA_RestartAll(t *testing.T) {
	hc := startHACluster(t, 3, 2)
	c := hc.client()
	data := randomBytes(t, 3*testBlockSize)
	mustPut(t, c, "/a/b", data, PutOptions{Replication: 2})
	if err := c.Mkdir(t.Context(), "/empty", false); err != nil {
		t.Fatal(err)
	}
	hc.waitSame()
	want := namespaceOf(hc.masters[hc.leader()])
	for i := range hc.masters {
		hc.stop(i)
	}
	for i := range hc.masters {
		hc.start(i)
	}
	hc.waitSame()
	if got := namespaceOf(hc.masters[hc.leader()]); !slices.Equal(got, want) {
		t.Fatalf("after a restart of every master: %v; want %v", got, want)
	}
	mustGet(t, c, "/a/b", data)
}

// A leader cut off from the others with a change applied but not
// committed says so (ErrLeadershipLost), drops the change (it restarts
// from what was committed), and converges with the others when they come
// back, whichever of them then leads.
func TestHA_DeposedLeaderDropsUncommitted(t *testing.T) {
	hc := startHACluster(t, 3, 1)
	c := hc.client()
	l := hc.leaderAlone(c, "/before", []byte("committed"))
	m := hc.masters[l]
	err := m.mkdir(CallID{}, "/uncommitted", false, 0)
	if !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("mkdir on a leader without followers: %v; want %v or %v", err, ErrLeadershipLost, ErrNotLeader)
	}
	waitFor(t, 10*time.Second, "the deposed leader to drop the change", func() bool {
		return !slices.Contains(namespaceOf(m), "/uncommitted/")
	})
	for i := range hc.masters {
		if i != l {
			hc.start(i)
		}
	}
	hc.waitSame()
	mustGet(t, c, "/before", []byte("committed"))
	mustPut(t, c, "/after", []byte("next"), PutOptions{Replication: 1})
	hc.waitSame()
}

func TestParsePeers(t *testing.T) {
	tests := []struct {
		in   string
		want []Peer
		err  bool
	}{
		{"a=h:1,b=h:2", []Peer{{"a", "h:1"}, {"b", "h:2"}}, false},
		{" a=h:1 , ", []Peer{{"a", "h:1"}}, false},
		{"", nil, true},
		{"h:1", nil, true},
		{"=h:1", nil, true},
		{"a=h", nil, true},
		{"a=:1", nil, true},
		{"a=h:0", nil, true},
		{"a=h:1,a=h:2", nil, true},
		{"a=h:1,b=h:1", nil, true},
	}
	for _, tt := range tests {
		got, err := parsePeers(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("parsePeers(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err != nil && !errors.Is(err, ErrBadArg) {
			t.Errorf("parsePeers(%q): %v is not %v", tt.in, err, ErrBadArg)
		}
	}
}

// add-peer brings a fourth master in (started with --join, it takes the
// namespace from the leader); report lists every master with its role;
// remove-peer takes it out again.
func TestHA_AddRemovePeer(t *testing.T) {
	hc := startHACluster(t, 3, 1)
	c := hc.client()
	mustPut(t, c, "/x", []byte("x"), PutOptions{Replication: 1})
	hc.peers = append(hc.peers, Peer{ID: "m4", Addr: freeAddr(t)})
	hc.masters = append(hc.masters, nil)
	hc.join = true
	hc.start(3)
	if err := c.AddMaster(t.Context(), "m4", hc.peers[3].Addr); err != nil {
		t.Fatalf("add m4: %v", err)
	}
	hc.waitSame()
	var r *ReportReply
	waitFor(t, 10*time.Second, "a report of four masters, each with its client address", func() bool {
		var err error
		if r, err = c.Report(t.Context()); err != nil {
			t.Fatal(err)
		}
		ok := len(r.Masters) == 4 && r.Masters[0].Role == "leader"
		for _, mi := range r.Masters[1:] {
			ok = ok && mi.Role == "follower" && mi.Err == "" && mi.Addr != "" && mi.Term == r.Masters[0].Term
		}
		return ok
	})
	t.Logf("masters: %+v", r.Masters)

	if err := c.RemoveMaster(t.Context(), "m4"); err != nil {
		t.Fatalf("remove m4: %v", err)
	}
	if err := c.RemoveMaster(t.Context(), "m9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove of an unknown master: %v, want %v", err, ErrNotFound)
	}
	if r, err := c.Report(t.Context()); err != nil || len(r.Masters) != 3 || slices.ContainsFunc(r.Masters, func(mi MasterInfo) bool { return mi.ID == "m4" }) {
		t.Fatalf("report after removing m4: %+v, %v", r, err)
	}
	hc.stop(3)
	mustPut(t, c, "/y", []byte("y"), PutOptions{Replication: 1})
}

// A single master's metadata moves to replicated masters: started with
// --peers naming only itself, it takes its image and edit log as the first
// snapshot; add-peer brings in two more, which then survive its stop.
func TestHA_FromSingleMaster(t *testing.T) {
	dir := t.TempDir()
	cl := &DevCluster{Dir: dir, Addr: "127.0.0.1:0", Minions: 3, Logger: testLogger(t), Heartbeat: testHeartbeat, Configure: configureTestMaster}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	sc := newTestClient(t, cl)
	files := map[string][]byte{"/a/one": randomBytes(t, 2*testBlockSize+7), "/two": []byte("two")}
	for p, data := range files {
		mustPut(t, sc, p, data, PutOptions{})
	}
	if err := cl.Master.Close(); err != nil {
		t.Fatal(err)
	}
	for _, mn := range cl.MinionSet {
		mn.Close()
	}
	if err := os.Rename(filepath.Join(dir, "master"), filepath.Join(dir, "m1")); err != nil {
		t.Fatal(err)
	}

	hc := &haCluster{t: t, dir: dir, peers: []Peer{{ID: "m1", Addr: freeAddr(t)}}, masters: make([]*Master, 1)}
	t.Cleanup(hc.close)
	hc.start(0)
	hc.leader()
	startMinions := func() {
		for _, mn := range hc.minions {
			mn.Close()
		}
		hc.minions = nil
		for i := range 3 {
			mn := NewMinion(filepath.Join(dir, fmt.Sprintf("minion-%d", i+1)), "127.0.0.1:0", hc.spec())
			mn.Logger = testLogger(t).With("role", "minion")
			mn.Heartbeat = testHeartbeat
			if err := mn.Start(); err != nil {
				t.Fatalf("minion of the moved cluster: %v", err)
			}
			hc.minions = append(hc.minions, mn)
		}
	}
	startMinions()
	c := hc.client()
	for p, data := range files {
		mustGet(t, c, p, data)
	}
	if _, err := os.Stat(filepath.Join(dir, "m1", "single-master", "fsimage")); err != nil {
		t.Errorf("the single master's image was not moved aside: %v", err)
	}

	hc.join = true
	for _, id := range []string{"m2", "m3"} {
		hc.peers = append(hc.peers, Peer{ID: id, Addr: freeAddr(t)})
		hc.masters = append(hc.masters, nil)
		hc.start(len(hc.peers) - 1)
		if err := c.AddMaster(t.Context(), id, hc.peers[len(hc.peers)-1].Addr); err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
	}
	hc.waitSame()
	// Minions and clients are given every master now.
	startMinions()
	c2 := hc.client()
	hc.stop(0)
	hc.leader()
	for p, data := range files {
		mustGet(t, c2, p, data)
	}
	mustPut(t, c2, "/three", []byte("three"), PutOptions{})
}

// A single master's dir given with --peers of several masters is refused
// with what to do instead.
func TestHA_FromSingleNeedsOnePeer(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	m.Close()
	m2 := NewMaster(dir, "127.0.0.1:0")
	m2.Logger = testLogger(t)
	m2.Peers, m2.ID = []Peer{{"m1", freeAddr(t)}, {"m2", freeAddr(t)}}, "m1"
	err := m2.Start()
	if err == nil {
		m2.Close()
		t.Fatal("started")
	}
	if !errors.Is(err, ErrBadArg) || !strings.Contains(err.Error(), "add-peer") {
		t.Fatalf("start: %v", err)
	}
}

// seekHook is a seekable reader that calls hook once, when at least after
// bytes have been read.
type seekHook struct {
	*bytes.Reader
	after int64
	hook  func()
	done  bool
}

func (r *seekHook) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if pos, _ := r.Seek(0, io.SeekCurrent); !r.done && pos >= r.after {
		r.done = true
		r.hook()
	}
	return n, err
}

// A put whose leader dies midway starts again with the next leader (its
// lease died with the old one) and the file is whole.
func TestHA_PutAcrossFailover(t *testing.T) {
	hc := startHACluster(t, 3, 3)
	c := hc.client()
	data := randomBytes(t, 6*testBlockSize+321)
	l := hc.leader()
	r := &seekHook{Reader: bytes.NewReader(data), after: 2 * testBlockSize, hook: func() { hc.stop(l) }}
	if _, err := c.Put(t.Context(), r, "/across", PutOptions{}); err != nil {
		t.Fatalf("put across a failover: %v", err)
	}
	mustGet(t, c, "/across", data)
}

// A single master refuses the replicated masters' calls with a clear
// error (it has no Raft node to ask).
func TestHA_SingleMasterRefusesPeerCalls(t *testing.T) {
	cl := startCluster(t, 0)
	c := newTestClient(t, cl)
	if err := c.AddMaster(t.Context(), "m2", "127.0.0.1:1"); !errors.Is(err, ErrBadArg) {
		t.Errorf("add-peer on a single master: %v, want %v", err, ErrBadArg)
	}
	err := c.meta(t.Context(), "Announce", &AnnounceArgs{Master: imageMaster{ID: "m2", Addr: "127.0.0.1:1"}}, &Empty{})
	if !errors.Is(err, ErrBadArg) {
		t.Errorf("announce to a single master: %v, want %v", err, ErrBadArg)
	}
}
