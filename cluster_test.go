package main

// Integration tests: a real master and real minions in this process, on
// loopback ports chosen by the OS, driven through the Client.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestCluster_PutGet(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	tests := []struct {
		name      string
		size      int
		blockSize int64
	}{
		{"Empty", 0, 0},
		{"OneByte", 1, 0},
		{"UnderOneChecksumChunk", 511, 0},
		{"OneChecksumChunk", 512, 0},
		{"ExactlyOneBlock", testBlockSize, 0},
		{"OneBlockAndOneByte", testBlockSize + 1, 0},
		{"ManyBlocks", 5*testBlockSize + 777, 0},
		// Blocks of several packets each, the last one short.
		{"ManyPacketsPerBlock", 5<<20 + 123, 2<<20 + 512},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(t, tt.size)
			p := "/putget/" + tt.name
			mustPut(t, c, p, data, PutOptions{BlockSize: tt.blockSize})
			mustGet(t, c, p, data)

			fi, err := c.Stat(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			bs := tt.blockSize
			if bs == 0 {
				bs = testBlockSize
			}
			if want := (int64(tt.size) + bs - 1) / bs; int64(len(fi.Blocks)) != want {
				t.Errorf("%d blocks, want %d", len(fi.Blocks), want)
			}
			for _, b := range fi.Blocks {
				if len(b.Replicas) != 3 {
					t.Errorf("%s has replicas %v, want 3", blockName(b.ID), b.Replicas)
				}
			}
			if fi.Size != int64(tt.size) || fi.Replication != 3 || fi.BlockSize != bs {
				t.Errorf("stat = size %d repl %d bs %d", fi.Size, fi.Replication, fi.BlockSize)
			}
		})
	}
}

// A reader of unknown length, as stdin is.
func TestCluster_Put_FromPipe(t *testing.T) {
	cl := startCluster(t, 2)
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize+100)
	pr, pw := io.Pipe()
	go func() {
		// Small, odd-sized writes, as a pipe delivers them.
		for b := data; len(b) > 0; {
			n := min(len(b), 1000)
			if _, err := pw.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		pw.Close()
	}()
	if _, err := c.Put(t.Context(), pr, "stdin.bin", PutOptions{Replication: 2}); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, "/stdin.bin", data)
}

func TestCluster_Put_Exists(t *testing.T) {
	cl := startCluster(t, 1)
	c := newTestClient(t, cl)
	mustPut(t, c, "/f", []byte("one"), PutOptions{})
	_, err := c.Put(t.Context(), bytes.NewReader([]byte("two")), "/f", PutOptions{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("put over an existing file: %v, want ErrExists", err)
	}
	mustGet(t, c, "/f", []byte("one"))
	mustPut(t, c, "/f", []byte("three"), PutOptions{Force: true})
	mustGet(t, c, "/f", []byte("three"))
	// The replaced file's block is deleted from the minion.
	waitFor(t, 5*time.Second, "old block deleted", func() bool { return totalBlocks(cl) == 1 })
}

func TestCluster_Namespace_Errors(t *testing.T) {
	cl := startCluster(t, 1)
	c := newTestClient(t, cl)
	mustPut(t, c, "/dir/file", []byte("x"), PutOptions{})
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"GetMissing", func() error { _, err := c.Get(t.Context(), "/nope", io.Discard); return err }, ErrNotFound},
		{"GetDir", func() error { _, err := c.Get(t.Context(), "/dir", io.Discard); return err }, ErrIsDir},
		{"PutOverDir", func() error {
			_, err := c.Put(t.Context(), bytes.NewReader(nil), "/dir", PutOptions{Force: true})
			return err
		}, ErrIsDir},
		{"PutUnderFile", func() error {
			_, err := c.Put(t.Context(), bytes.NewReader(nil), "/dir/file/x", PutOptions{})
			return err
		}, ErrNotDir},
		{"PutRoot", func() error { _, err := c.Put(t.Context(), bytes.NewReader(nil), "/", PutOptions{}); return err }, ErrIsDir},
		{"BadReplication", func() error {
			_, err := c.Put(t.Context(), bytes.NewReader(nil), "/r", PutOptions{Replication: 99})
			return err
		}, ErrBadArg},
		{"BadBlockSize", func() error {
			_, err := c.Put(t.Context(), bytes.NewReader(nil), "/b", PutOptions{BlockSize: 1000})
			return err
		}, ErrBadArg},
		{"RemoveMissing", func() error { _, err := c.Remove(t.Context(), "/nope", false); return err }, ErrNotFound},
		{"RemoveDirNotRecursive", func() error { _, err := c.Remove(t.Context(), "/dir", false); return err }, ErrIsDir},
		{"ListMissing", func() error { _, err := c.List(t.Context(), "/nope", false); return err }, ErrNotFound},
		{"StatMissing", func() error { _, err := c.Stat(t.Context(), "/dir/nope"); return err }, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCluster_ListStatRemove(t *testing.T) {
	cl := startCluster(t, 2)
	c := newTestClient(t, cl)
	for _, p := range []string{"/a/x", "/a/y", "/a/sub/z", "/b"} {
		mustPut(t, c, p, []byte(p), PutOptions{})
	}
	paths := func(entries []FileInfo) []string {
		var out []string
		for _, e := range entries {
			s := e.Path
			if e.Dir {
				s += "/"
			}
			out = append(out, s)
		}
		return out
	}
	check := func(p string, recursive bool, want ...string) {
		t.Helper()
		entries, err := c.List(t.Context(), p, recursive)
		if err != nil {
			t.Fatalf("list %s: %v", p, err)
		}
		if got := paths(entries); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("list %s (recursive %v) = %v, want %v", p, recursive, got, want)
		}
	}
	check("/", false, "/a/", "/b")
	check("/a", false, "/a/sub/", "/a/x", "/a/y")
	check("a/", false, "/a/sub/", "/a/x", "/a/y")
	check("/", true, "/a/", "/a/sub/", "/a/sub/z", "/a/x", "/a/y", "/b")
	check("/b", false, "/b")

	fi, err := c.Stat(t.Context(), "/a")
	if err != nil || !fi.Dir {
		t.Fatalf("stat /a = %+v, %v; want a directory", fi, err)
	}
	n, err := c.Remove(t.Context(), "/a", true)
	if err != nil || n != 3 {
		t.Fatalf("rm -r /a = %d, %v; want 3 files", n, err)
	}
	check("/", false, "/b")
	if _, err := c.List(t.Context(), "/a", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("list of a removed dir: %v", err)
	}
	// Every minion frees the blocks within a few heartbeats.
	waitFor(t, 5*time.Second, "blocks of removed files deleted", func() bool { return totalBlocks(cl) == 2 })
}

func TestCluster_Get_FallsBackToNextReplica(t *testing.T) {
	t.Run("MinionDown", func(t *testing.T) {
		cl := startCluster(t, 3)
		c := newTestClient(t, cl)
		data := randomBytes(t, 3*testBlockSize)
		mustPut(t, c, "/f", data, PutOptions{})
		fi, _ := c.Stat(t.Context(), "/f")
		// The first replica of every block is the one a reader tries
		// first; stop it. The master still believes it alive.
		if err := minionAt(t, cl, fi.Blocks[0].Replicas[0]).Close(); err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "/f", data)
	})
	t.Run("CorruptReplica", func(t *testing.T) {
		cl := startCluster(t, 3)
		c := newTestClient(t, cl)
		data := randomBytes(t, 2*testBlockSize)
		mustPut(t, c, "/f", data, PutOptions{})
		fi, _ := c.Stat(t.Context(), "/f")
		b := fi.Blocks[1]
		mn := minionAt(t, cl, b.Replicas[0])
		flipBlockByte(t, mn.store, b.ID, 1000)
		mustGet(t, c, "/f", data)
	})
	t.Run("MissingBlockFile", func(t *testing.T) {
		cl := startCluster(t, 2)
		c := newTestClient(t, cl)
		data := randomBytes(t, testBlockSize/2)
		mustPut(t, c, "/f", data, PutOptions{Replication: 2})
		fi, _ := c.Stat(t.Context(), "/f")
		mn := minionAt(t, cl, fi.Blocks[0].Replicas[0])
		if err := mn.store.remove(fi.Blocks[0].ID); err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "/f", data)
	})
}

// When no replica of a block can be read, Get fails and never writes a
// byte it could not check.
func TestCluster_Get_AllReplicasBad(t *testing.T) {
	cl := startCluster(t, 2)
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize)
	mustPut(t, c, "/f", data, PutOptions{Replication: 2})
	fi, _ := c.Stat(t.Context(), "/f")
	b := fi.Blocks[1]
	for _, addr := range b.Replicas {
		flipBlockByte(t, minionAt(t, cl, addr).store, b.ID, testBlockSize-1)
	}
	var out bytes.Buffer
	_, err := c.Get(t.Context(), "/f", &out)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("get with every replica of block 1 corrupt: %v, want ErrChecksum", err)
	}
	// Block 0 and the checked packets of block 1 before the bad byte may
	// be out; nothing else.
	if out.Len() > testBlockSize || !bytes.Equal(out.Bytes(), data[:out.Len()]) {
		t.Fatalf("get wrote %d bytes that are not a prefix of block 0", out.Len())
	}
}

func TestCluster_Get_NoLiveReplica(t *testing.T) {
	cl := startCluster(t, 1)
	c := newTestClient(t, cl)
	mustPut(t, c, "/f", []byte("hello"), PutOptions{Replication: 1})
	if err := cl.MinionSet[0].Close(); err != nil {
		t.Fatal(err)
	}
	// Before the master notices, the dial fails; after, it names no replica.
	for _, phase := range []string{"before", "after"} {
		if phase == "after" {
			waitFor(t, 5*time.Second, "minion declared dead", func() bool {
				fi, err := c.Stat(t.Context(), "/f")
				return err == nil && len(fi.Blocks[0].Replicas) == 0
			})
		}
		var out bytes.Buffer
		if _, err := c.Get(t.Context(), "/f", &out); err == nil || out.Len() != 0 {
			t.Fatalf("%s: get = %v with %d bytes out, want an error and nothing", phase, err, out.Len())
		}
	}
}

// A put that fails half-way leaves no file, and its blocks are deleted.
func TestCluster_Put_FailureLeavesNothing(t *testing.T) {
	t.Run("InputFails", func(t *testing.T) {
		cl := startCluster(t, 3)
		c := newTestClient(t, cl)
		boom := errors.New("disk on fire")
		_, err := c.Put(t.Context(), &errAfter{n: 2*testBlockSize + 10, err: boom}, "/f", PutOptions{})
		if !errors.Is(err, boom) {
			t.Fatalf("put = %v, want the reader's error", err)
		}
		if _, err := c.Stat(t.Context(), "/f"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat after a failed put: %v, want ErrNotFound", err)
		}
		waitFor(t, 5*time.Second, "blocks of the failed put deleted", func() bool { return totalBlocks(cl) == 0 })
		// The path is free again.
		mustPut(t, c, "/f", []byte("ok"), PutOptions{})
	})
	t.Run("EveryMinionDies", func(t *testing.T) {
		cl := startCluster(t, 2)
		c := newTestClient(t, cl)
		r := &hookReader{r: bytes.NewReader(randomBytes(t, 4*testBlockSize)), at: testBlockSize + 1, hook: func() {
			cl.MinionSet[0].Close()
			cl.MinionSet[1].Close()
		}}
		if _, err := c.Put(t.Context(), r, "/f", PutOptions{Replication: 2}); err == nil {
			t.Fatal("put succeeded with every minion gone")
		}
		if _, err := c.Stat(t.Context(), "/f"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat after a failed put: %v, want ErrNotFound", err)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		cl := startCluster(t, 1)
		c := newTestClient(t, cl)
		ctx, cancel := context.WithCancel(t.Context())
		r := &hookReader{r: bytes.NewReader(randomBytes(t, 3*testBlockSize)), at: testBlockSize + 1, hook: cancel}
		if _, err := c.Put(ctx, r, "/f", PutOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("put = %v, want context.Canceled", err)
		}
		if _, err := c.Stat(t.Context(), "/f"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat after a canceled put: %v, want ErrNotFound", err)
		}
	})
}

func TestCluster_NoMinions(t *testing.T) {
	cl := startCluster(t, 0)
	c := newTestClient(t, cl)
	_, err := c.Put(t.Context(), bytes.NewReader([]byte("x")), "/f", PutOptions{})
	if !errors.Is(err, ErrNoMinions) {
		t.Fatalf("put with no minions: %v, want ErrNoMinions", err)
	}
	if _, err := c.Stat(t.Context(), "/f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat: %v", err)
	}
	// An empty file needs no minion.
	mustPut(t, c, "/empty", nil, PutOptions{})
	mustGet(t, c, "/empty", nil)
}

// Fewer live minions than the replication: the put goes to all of them.
func TestCluster_Put_FewerMinionsThanReplication(t *testing.T) {
	cl := startCluster(t, 2)
	c := newTestClient(t, cl)
	data := randomBytes(t, 2*testBlockSize)
	mustPut(t, c, "/f", data, PutOptions{Replication: 3})
	fi, _ := c.Stat(t.Context(), "/f")
	for _, b := range fi.Blocks {
		if len(b.Replicas) != 2 {
			t.Errorf("replicas %v, want the 2 live minions", b.Replicas)
		}
	}
	mustGet(t, c, "/f", data)
}

// Placement spreads blocks over the least used minions.
func TestCluster_Placement_LeastUsedFirst(t *testing.T) {
	cl := startCluster(t, 4)
	c := newTestClient(t, cl)
	mustPut(t, c, "/f", randomBytes(t, 8*testBlockSize), PutOptions{Replication: 1})
	for _, mn := range cl.MinionSet {
		if _, n := mn.store.usage(); n != 2 {
			t.Errorf("minion %s holds %d blocks, want 2 of 8 on each of 4", mn.advertised(), n)
		}
	}
}

func TestCluster_DeadMinion_NotUsed(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	mustPut(t, c, "/before", []byte("x"), PutOptions{})
	dead := cl.MinionSet[0]
	deadAddr := dead.advertised()
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "dead minion dropped from locations", func() bool {
		fi, err := c.Stat(t.Context(), "/before")
		return err == nil && len(fi.Blocks[0].Replicas) == 2
	})
	mustPut(t, c, "/after", randomBytes(t, 3*testBlockSize), PutOptions{})
	fi, _ := c.Stat(t.Context(), "/after")
	for _, b := range fi.Blocks {
		for _, r := range b.Replicas {
			if r == deadAddr {
				t.Errorf("block placed on dead minion %s", r)
			}
		}
	}
}

// A minion restarted on the same dir (on another port) serves its blocks.
func TestCluster_MinionRestart_KeepsBlocks(t *testing.T) {
	cl := startCluster(t, 2)
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize)
	mustPut(t, c, "/f", data, PutOptions{Replication: 1})
	fi, _ := c.Stat(t.Context(), "/f")
	mn := minionAt(t, cl, fi.Blocks[0].Replicas[0])
	if err := mn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.StartMinion(mn.Dir); err != nil {
		t.Fatal(err)
	}
	mustGet(t, c, "/f", data)
}

// Blocks of a file deleted while its minion was down are removed when the
// minion comes back.
func TestCluster_OrphanBlocks_DeletedOnRegister(t *testing.T) {
	cl := startCluster(t, 1)
	c := newTestClient(t, cl)
	mustPut(t, c, "/f", randomBytes(t, 2*testBlockSize), PutOptions{})
	mn := cl.MinionSet[0]
	if err := mn.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Remove(t.Context(), "/f", false); err != nil {
		t.Fatal(err)
	}
	if err := cl.StartMinion(mn.Dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "orphan blocks deleted", func() bool { return totalBlocks(cl) == 0 })
}

func TestCluster_MasterRestart_KeepsFiles(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	files := map[string][]byte{
		"/one":       randomBytes(t, 10),
		"/dir/two":   randomBytes(t, 3*testBlockSize+1),
		"/dir/empty": nil,
	}
	for p, data := range files {
		mustPut(t, c, p, data, PutOptions{})
	}
	addr := cl.Master.AddrString()
	if err := cl.Master.Close(); err != nil {
		t.Fatal(err)
	}
	// The same dir and address, so the running minions find it again.
	m := NewMaster(cl.Master.Dir, addr)
	m.Logger = testLogger(t)
	configureTestMaster(m)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	cl.Master = m
	// With the same client: its pooled connection went down with the old
	// master, and its reader may not have seen it yet (with GOMAXPROCS=1
	// it never has), so the first Stat goes out on it and breaks. Reads
	// are sent again on a new connection.
	for p, data := range files {
		mustGet(t, c, p, data)
	}
	waitFor(t, 5*time.Second, "minions registered again", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, mn := range m.reg.minions {
			if mn.numBlocks > 0 {
				n++
			}
		}
		return n == 3
	})
}

func TestCluster_ConcurrentPuts(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	const n = 8
	datas := make([][]byte, n)
	errs := make(chan error, n)
	for i := range n {
		datas[i] = randomBytes(t, (i+1)*testBlockSize/2)
		go func() {
			_, err := c.Put(t.Context(), bytes.NewReader(datas[i]), fmt.Sprintf("/c/%d", i), PutOptions{})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		mustGet(t, c, fmt.Sprintf("/c/%d", i), datas[i])
	}
}

// Two puts of one path at once: one wins, the other is told why.
func TestCluster_ConcurrentPuts_SamePath(t *testing.T) {
	cl := startCluster(t, 1)
	c := newTestClient(t, cl)
	started := make(chan struct{})
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		r := &hookReader{r: bytes.NewReader(randomBytes(t, 2*testBlockSize)), at: 1, hook: func() {
			close(started)
			<-release
		}}
		_, err := c.Put(t.Context(), r, "/same", PutOptions{})
		first <- err
	}()
	<-started
	_, err := c.Put(t.Context(), bytes.NewReader([]byte("x")), "/same", PutOptions{Force: true})
	close(release)
	if !errors.Is(err, ErrBusy) {
		t.Errorf("second put while the first runs: %v, want ErrBusy", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first put: %v", err)
	}
}

// Addresses that are not a dfs master give a clear error, never a hang.
func TestClient_NotAMaster(t *testing.T) {
	garbage := listen(t, func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\nthis is not gob"))
		c.Close()
	})
	silent := listen(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // reads, never answers
	})
	cl := startCluster(t, 1)
	tests := []struct {
		name string
		addr string
	}{
		{"Garbage", garbage},
		{"Silent", silent},
		{"Closed", closedPort(t)},
		{"Minion", cl.MinionSet[0].advertised()},
		{"BadAddress", "no-port-here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClient(tt.addr)
			c.Timeout = 500 * time.Millisecond
			defer c.Close()
			start := time.Now()
			_, err := c.Stat(t.Context(), "/f")
			if err == nil {
				t.Fatal("stat against a non-master succeeded")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			t.Logf("error: %v", err)
		})
	}
}

// A minion dir of one cluster cannot join another.
func TestMinion_WrongCluster(t *testing.T) {
	a := startCluster(t, 1)
	b := startCluster(t, 0)
	dir := a.MinionSet[0].Dir
	if err := a.MinionSet[0].Close(); err != nil {
		t.Fatal(err)
	}
	mn := NewMinion(dir, "127.0.0.1:0", b.Master.AddrString())
	mn.Logger = testLogger(t)
	err := mn.Start()
	if err == nil {
		mn.Close()
	}
	if !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("start in another cluster's dir: %v, want ErrWrongCluster", err)
	}
}

// Two processes (here: two minions) cannot share one dir.
func TestMinion_DirLocked(t *testing.T) {
	cl := startCluster(t, 1)
	mn := NewMinion(cl.MinionSet[0].Dir, "127.0.0.1:0", cl.Master.AddrString())
	mn.Logger = testLogger(t)
	if err := mn.Start(); !errors.Is(err, errLocked) {
		mn.Close()
		t.Fatalf("second minion on a dir in use: %v, want errLocked", err)
	}
	if _, err := os.Stat(filepath.Join(cl.MinionSet[0].Dir, "minion.json")); err != nil {
		t.Fatal(err)
	}
}

// waitDead waits until the master counts the minion at addr as dead.
func waitDead(t testing.TB, cl *DevCluster, addr string) {
	t.Helper()
	waitFor(t, 5*time.Second, "minion "+addr+" declared dead", func() bool {
		for _, mn := range cl.Master.report().Minions {
			if mn.Addr == addr {
				return mn.State == stateDead
			}
		}
		return false
	})
}

// A minion that dies in the middle of a put does not fail it: the pipeline
// goes on without it, and re-replication restores the replication.
func TestCluster_Put_PipelineRecovery(t *testing.T) {
	for _, tc := range []struct {
		name      string
		blockSize int64
	}{
		{"OnePacketBlocks", testBlockSize}, // finalized with their packet
		{"ManyPacketBlocks", 2<<20 + 512},  // packets, then FinalizeBlock
	} {
		for _, victim := range []int{0, 1, 2} { // head, middle, tail of the pipeline
			t.Run(fmt.Sprintf("%s/Minion%d", tc.name, victim), func(t *testing.T) {
				testPipelineRecovery(t, tc.blockSize, victim)
			})
		}
	}
}

func testPipelineRecovery(t *testing.T, bs int64, victim int) {
	cl := startCluster(t, 4)
	c := newTestClient(t, cl)
	data := randomBytes(t, int(3*bs+100))
	var once sync.Once
	var killed string
	// Kill a minion of the pipeline of the block being written,
	// half-way through it.
	r := &hookReader{r: bytes.NewReader(data), at: int(bs + bs/2), hook: func() {
		once.Do(func() {
			cl.Master.mu.Lock()
			var mid string
			for _, w := range cl.Master.leases.writes {
				mid = w.blocks[len(w.blocks)-1].pipeline[victim]
			}
			killed = cl.Master.reg.minions[mid].addr
			cl.Master.mu.Unlock()
			minionAt(t, cl, killed).Close()
		})
	}}
	if _, err := c.Put(t.Context(), r, "/f", PutOptions{Replication: 3, BlockSize: bs}); err != nil {
		t.Fatalf("put with a minion dying: %v", err)
	}
	mustGet(t, c, "/f", data)
	waitDead(t, cl, killed)
	waitFor(t, 15*time.Second, "full replication again", func() bool { return fsckHealthy(t, cl, "/") })
	fi, _ := c.Stat(t.Context(), "/f")
	for _, b := range fi.Blocks {
		if slices.Contains(b.Replicas, killed) {
			t.Errorf("%s still lists the dead minion %s", blockName(b.ID), killed)
		}
	}
}

// Losing a minion: every block is copied back to full replication with no
// client involved.
func TestCluster_ReReplication_AfterMinionLoss(t *testing.T) {
	cl := startCluster(t, 4)
	c := newTestClient(t, cl)
	files := map[string][]byte{}
	for i := range 5 {
		p := fmt.Sprintf("/r/%d", i)
		files[p] = randomBytes(t, (i+1)*testBlockSize)
		mustPut(t, c, p, files[p], PutOptions{Replication: 3})
	}
	lost := cl.MinionSet[1]
	if err := lost.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitDead(t, cl, lost.advertised())
	dead := time.Since(start)
	waitFor(t, 20*time.Second, "full replication again", func() bool { return fsckHealthy(t, cl, "/") })
	t.Logf("minion declared dead after %v (dead-after %v); full replication again %v later", dead, testDeadAfter, time.Since(start)-dead)
	for p, data := range files {
		mustGet(t, c, p, data)
	}
}

// A replica that rots on disk is noticed (by a reader, or by the scrubber)
// and replaced by a good copy.
func TestCluster_CorruptReplica_Repaired(t *testing.T) {
	for _, how := range []string{"Reader", "Scrubber"} {
		t.Run(how, func(t *testing.T) {
			cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: 3, Logger: testLogger(t), Heartbeat: testHeartbeat,
				Configure: configureTestMaster}
			cl.ConfigureMinion = func(mn *Minion) {
				mn.ScrubInterval = 0
				if how == "Scrubber" {
					mn.ScrubInterval = 100 * time.Millisecond
				}
			}
			if err := cl.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			c := newTestClient(t, cl)
			data := randomBytes(t, 2*testBlockSize)
			mustPut(t, c, "/f", data, PutOptions{Replication: 2})
			fi, _ := c.Stat(t.Context(), "/f")
			b := fi.Blocks[0]
			bad := b.Replicas[0]
			flipBlockByte(t, minionAt(t, cl, bad).store, b.ID, 100)
			if how == "Reader" {
				mustGet(t, c, "/f", data)
			}
			waitFor(t, 10*time.Second, "corrupt replica replaced", func() bool {
				fi, err := c.Stat(t.Context(), "/f")
				if err != nil || len(fi.Blocks[0].Replicas) != 2 {
					return false
				}
				for _, addr := range fi.Blocks[0].Replicas {
					if minionAt(t, cl, addr).store.verify(b.ID) != nil {
						return false
					}
				}
				return true
			})
			// And the bad copy goes from its minion (deletes run in the
			// background after a heartbeat).
			waitFor(t, 10*time.Second, "no bad copy left on any minion", func() bool {
				for _, mn := range cl.MinionSet {
					if mn.store.has(b.ID) && mn.store.verify(b.ID) != nil {
						return false
					}
				}
				return true
			})
			mustGet(t, c, "/f", data)
		})
	}
}

// Extra replicas (a minion that comes back after its blocks were copied
// elsewhere) are trimmed.
func TestCluster_ExtraReplicas_Trimmed(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	data := randomBytes(t, testBlockSize)
	mustPut(t, c, "/f", data, PutOptions{Replication: 2})
	fi, _ := c.Stat(t.Context(), "/f")
	gone := minionAt(t, cl, fi.Blocks[0].Replicas[0])
	gone.Close()
	waitDead(t, cl, gone.advertised())
	waitFor(t, 15*time.Second, "copied to the third minion", func() bool { return fsckHealthy(t, cl, "/") })
	if err := cl.StartMinion(gone.Dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "back to 2 replicas", func() bool {
		r, _ := cl.Master.fsck("/f")
		return r.Blocks[0].Live == 2 && totalBlocks(cl) == 2
	})
	mustGet(t, c, "/f", data)
}

func TestCluster_Decommission(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize)
	mustPut(t, c, "/f", data, PutOptions{Replication: 2})
	victim := cl.MinionSet[0].advertised()
	if warning, err := c.Decommission(t.Context(), victim); err != nil || warning != "" {
		t.Fatalf("decommission = %q, %v", warning, err)
	}
	state := func() string {
		r, err := c.Report(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, mn := range r.Minions {
			if mn.Addr == victim {
				return mn.State
			}
		}
		return ""
	}
	waitFor(t, 15*time.Second, "decommissioned", func() bool { return state() == stateDecommissioned })
	minionAt(t, cl, victim).Close()
	mustGet(t, c, "/f", data)
	// New blocks avoid it.
	if _, err := c.Decommission(t.Context(), "127.0.0.1:1"); !errors.Is(err, ErrNoSuchMinion) {
		t.Errorf("decommission of an unknown minion = %v", err)
	}
}

// With a small --checkpoint size, the master checkpoints in the background
// while puts go on: the log is cut, and the image with the rest of the log
// holds every file.
func TestCluster_CheckpointsInTheBackground(t *testing.T) {
	cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: 1, Logger: testLogger(t), Heartbeat: testHeartbeat}
	cl.Configure = func(m *Master) error {
		configureTestMaster(m)
		m.Replication = 1
		m.CheckpointBytes = 8 << 10
		return nil
	}
	if err := cl.Start(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	c := newTestClient(t, cl)
	dir := cl.Master.Dir
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				p := fmt.Sprintf("/w%d/f%02d", w, i)
				if _, err := c.Put(t.Context(), bytes.NewReader([]byte(p)), p, PutOptions{}); err != nil {
					t.Errorf("put %s: %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Until the log is cut and no checkpoint runs or is due: the log
	// stays as it is from then on.
	waitFor(t, 10*time.Second, "a checkpoint to cut the log", func() bool {
		img, err := loadImage(imagePath(dir))
		return err == nil && img != nil && img.numFiles() > 0 &&
			!cl.Master.checkpointing.Load() && cl.Master.edits.size() <= cl.Master.CheckpointBytes
	})
	// What a restart would load: the image, then the log after it.
	img, err := loadImage(imagePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	ns := &Master{Dir: dir, Logger: testLogger(t), DeadAfter: testDeadAfter}
	ns.reset()
	if err := ns.applyImage(img); err != nil {
		t.Fatal(err)
	}
	if _, _, err := replayEdits(dir, img.LastSeq, ns.replay); err != nil {
		t.Fatal(err)
	}
	cl.Master.mu.Lock()
	want := blocksByPath(cl.Master)
	cl.Master.mu.Unlock()
	if got := blocksByPath(ns); len(want) != 200 || !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("image %d + log: %d files, live: %d files (want 200); they differ: %v", img.LastSeq, len(got), len(want), !maps.EqualFunc(got, want, slices.Equal))
	}
	if firsts, err := segments(dir); err != nil || firsts[0] != img.LastSeq+1 {
		t.Errorf("log segments %v (%v): the ones the image covers are not gone", firsts, err)
	}
}

// A minion that forwards to a peer that restarted (same address) uses the
// dead pooled connection once: the healthy peer is dropped from the pipeline.
func TestCluster_RestartedMinion_NotDroppedFromPipeline(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	data := randomBytes(t, 1000)
	mustPut(t, c, "/a", data, PutOptions{})
	fi, _ := c.Stat(t.Context(), "/a")
	t.Logf("first pipeline/replicas: %v", fi.Blocks[0].Replicas)
	// Restart every minion except the first of the pipeline, on the same address.
	first := 0
	for i, mn := range cl.MinionSet {
		if mn.ident.MinionID < cl.MinionSet[first].ident.MinionID {
			first = i
		}
	}
	for i, old := range cl.MinionSet {
		if i == first {
			continue
		}
		addr := old.advertised()
		dir := old.Dir
		old.Close()
		mn := NewMinion(dir, addr, cl.Master.AddrString())
		mn.Logger = old.Logger
		mn.Heartbeat = testHeartbeat
		mn.ScrubInterval = 0
		if err := mn.Start(); err != nil {
			t.Fatal(err)
		}
		cl.MinionSet[i] = mn
	}
	waitFor(t, 5*time.Second, "restarted minions registered", func() bool {
		for _, mn := range cl.MinionSet {
			mn.mu.Lock()
			ok := mn.registered
			mn.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	c2 := newTestClient(t, cl) // fresh client pool; minions' pools are long-lived
	for i := range 5 {
		p := "/b" + string(rune('0'+i))
		mustPut(t, c2, p, data, PutOptions{})
		fi, _ := c2.Stat(t.Context(), p)
		if n := len(fi.Blocks[0].Replicas); n != 3 {
			t.Errorf("%s: written to %d minions of 3 (%v) although all are healthy", p, n, fi.Blocks[0].Replicas)
		}
		mustGet(t, c2, p, data)
	}
}

// failAfter is an output that takes n bytes and then fails.
type failAfter struct {
	n   int
	got int
}

var errOutputFull = errors.New("output full")

func (w *failAfter) Write(p []byte) (int, error) {
	if w.got+len(p) > w.n {
		return 0, errOutputFull
	}
	w.got += len(p)
	return len(p), nil
}

// A get reads the next block while it writes the current one. Every range
// comes out right across block boundaries; a failing output stops the get
// with its error, after exactly the bytes it took, and the reads ahead
// of it end with it.
func TestCluster_Get_ReadsAhead(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	const bs = 2<<20 + 512 // blocks of three packets, the last one short
	data := randomBytes(t, 5*bs+1000)
	mustPut(t, c, "/ahead", data, PutOptions{BlockSize: bs})
	ranges := []struct{ off, n int64 }{
		{0, -1}, {1, 10}, {bs - 3, 6}, {bs, bs}, {bs - 1, 2*bs + 2}, {4*bs + 7, -1}, {int64(len(data)), -1},
	}
	for _, r := range ranges {
		var out bytes.Buffer
		n, err := c.GetRange(t.Context(), "/ahead", r.off, r.n, &out)
		end := int64(len(data))
		if r.n >= 0 {
			end = min(end, r.off+r.n)
		}
		if err != nil || n != end-r.off || !bytes.Equal(out.Bytes(), data[r.off:end]) {
			t.Errorf("GetRange(%d, %d): %d bytes, %v; want %d", r.off, r.n, n, err, end-r.off)
		}
	}

	before := runtime.NumGoroutine()
	for _, limit := range []int{0, 100, bs, 3*bs + 5} {
		w := &failAfter{n: limit}
		n, err := c.Get(t.Context(), "/ahead", w)
		if !errors.Is(err, errOutputFull) || n != int64(w.got) || w.got > limit {
			t.Errorf("get into an output of %d bytes: %d bytes, %v", limit, n, err)
		}
	}
	waitFor(t, 10*time.Second, "the reads ahead to end", func() bool { return runtime.NumGoroutine() <= before })
}
