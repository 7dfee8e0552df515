// harness_test.go is the in-process test harness: clusters of a master and
// minions on loopback port 0 that close at cleanup, masters without a
// listener for unit tests of the namespace and healing, clients, waiting
// with a deadline, and ways to damage what is on a minion's disk. The
// harness of the built binary is e2e_harness_test.go.
package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// Settings of test clusters: fast heartbeats, small blocks.
const (
	testHeartbeat = 50 * time.Millisecond
	testDeadAfter = time.Second
	testBlockSize = 64 << 10
)

// testLogger sends a component's logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// startCluster runs a master and n minions in this process on loopback
// ports chosen by the OS, and stops them when the test ends.
func startCluster(t testing.TB, n int) *DevCluster {
	t.Helper()
	return startSecureCluster(t, n, nil)
}

// startSecureCluster is startCluster with the given security on every
// process; newTestClient gives its clients the same.
func startSecureCluster(t testing.TB, n int, sec *Security) *DevCluster {
	t.Helper()
	cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: n, Logger: testLogger(t), Heartbeat: testHeartbeat, Security: sec}
	cl.Configure = configureTestMaster
	cl.ConfigureMinion = func(mn *Minion) {
		mn.ReportInterval = 20 * testHeartbeat
		mn.ScrubInterval = 0 // tests that want it turn it on
	}
	if err := cl.Start(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return cl
}

func configureTestMaster(m *Master) error {
	m.Heartbeat = testHeartbeat
	m.DeadAfter = testDeadAfter
	m.BlockSize = testBlockSize
	m.Replication = 3
	return nil
}

// newTestClient returns a client of cl's master, closed when the test ends.
func newTestClient(t testing.TB, cl *DevCluster) *Client {
	c := NewClient(cl.Master.AddrString())
	c.Logger = testLogger(t)
	c.SetSecurity(cl.Security)
	t.Cleanup(c.Close)
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// mustPut stores data at path with the cluster's defaults.
func mustPut(t testing.TB, c *Client, path string, data []byte, opt PutOptions) {
	t.Helper()
	if _, err := c.Put(t.Context(), bytes.NewReader(data), path, opt); err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
}

// mustGet reads path back and compares it with want.
func mustGet(t testing.TB, c *Client, path string, want []byte) {
	t.Helper()
	var buf bytes.Buffer
	n, err := c.Get(t.Context(), path, &buf)
	if err != nil {
		t.Fatalf("get %s: %v", path, err)
	}
	if n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("get %s: got %d bytes (%d reported), want %d; contents differ", path, buf.Len(), n, len(want))
	}
}

// totalBlocks counts the finalized blocks on the running minions of cl.
func totalBlocks(cl *DevCluster) int {
	n := 0
	for _, mn := range cl.MinionSet {
		if mn.ctx.Err() == nil {
			_, k := mn.store.usage()
			n += k
		}
	}
	return n
}

// flipByte inverts the byte at off in the file at path.
func flipByte(t testing.TB, path string, off int64) { flipBit(t, path, off, 0xff) }

// flipBit flips the bits of mask in the byte at off in the file at path.
func flipBit(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		f.Close()
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// flipBlockByte inverts byte off of block id in s, wherever s keeps it: in
// its own file or in a record of a volume.
func flipBlockByte(t testing.TB, s *blockStore, id uint64, off int64) {
	t.Helper()
	path, base := blockDataAt(t, s.dir, id)
	flipByte(t, path, base+off)
}

// blockDataAt returns the file that holds the data of block id in the
// store in dir, and the offset of the block's first byte in it.
func blockDataAt(t testing.TB, dir string, id uint64) (path string, off int64) {
	t.Helper()
	s := &blockStore{dir: dir}
	if _, err := os.Stat(s.dataPath(id)); err == nil {
		return s.dataPath(id), 0
	}
	b, ok := volumeBlocks(t, dir)[id]
	if !ok {
		t.Fatalf("block %s is in no file or volume of %s", blockName(id), dir)
	}
	return b.path, b.off
}

// packedAt is where a packed block's data is: a volume and an offset.
type packedAt struct {
	path      string
	off, size int64
}

// volumeBlocks lists the blocks packed in the volumes of the store in dir,
// as a minion would index them. It reads the files itself, so it works on
// the dir of a minion in another process, even a running one.
func volumeBlocks(t testing.TB, dir string) map[uint64]packedAt {
	t.Helper()
	out := make(map[uint64]packedAt)
	vols, err := filepath.Glob(filepath.Join(dir, "volumes", "vol_*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range vols {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // compacted away meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		// Damaged data counts: tests look for the replicas they damaged.
		sc := &volumeScan{f: f, size: fi.Size(), headersOnly: true}
		_, err = sc.scan(filepath.Base(p), slog.New(slog.DiscardHandler), func(h volumeHeader, at int64) {
			if !h.deleted {
				out[h.id] = packedAt{path: p, off: at + volumeHeaderSize, size: h.size}
			}
		}, nil)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// minionAt returns the running minion that serves addr.
func minionAt(t testing.TB, cl *DevCluster, addr string) *Minion {
	t.Helper()
	for _, mn := range cl.MinionSet {
		if mn.advertised() == addr {
			return mn
		}
	}
	t.Fatalf("no minion at %s", addr)
	return nil
}

// errAfter yields n bytes, then fails.
type errAfter struct {
	n   int
	err error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = byte(i)
	}
	r.n -= k
	return k, nil
}

// hookReader calls hook once, when the reading passes offset at.
type hookReader struct {
	r    io.Reader
	at   int
	n    int
	hook func()
	once sync.Once
}

func (h *hookReader) Read(p []byte) (int, error) {
	if h.n >= h.at {
		h.once.Do(h.hook)
	}
	n, err := h.r.Read(p[:min(len(p), 4096)])
	h.n += n
	return n, err
}

// listen serves each connection with handle on a loopback port.
// listenAuthed is listen for handlers that speak RPC: each connection first
// goes through the listener's side of the handshake (no secret), as a
// master's would.
func listenAuthed(t testing.TB, handle func(net.Conn)) string {
	return listen(t, func(c net.Conn) {
		conn, _, err := (*Security)(nil).accept(c, roleMaster, "")
		if err != nil {
			return
		}
		handle(conn)
	})
}

func listen(t testing.TB, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// fsckHealthy reports whether every block below p has its full replication.
func fsckHealthy(t testing.TB, cl *DevCluster, p string) bool {
	r, err := cl.Master.fsck(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range r.Blocks {
		if b.Status != statusHealthy {
			if testing.Verbose() {
				t.Logf("fsck: %s block %d: %s, live %d of %d on %v", b.Path, b.Index, b.Status, b.Live, b.Expected, b.Replicas)
			}
			return false
		}
	}
	return true
}

// newTestMaster returns a master whose state is loaded from dir (a new
// cluster if it is empty), not serving: tests call its methods directly.
// Each option adjusts it before it loads.
func newTestMaster(t *testing.T, dir string, options ...func(*Master)) *Master {
	t.Helper()
	m := NewMaster(dir, "127.0.0.1:0")
	m.Logger = testLogger(t)
	configureTestMaster(m)
	for _, o := range options {
		o(m)
	}
	if err := m.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.edits.close() })
	return m
}

// addMinions registers n fake minions with plenty of room.
func addMinions(t *testing.T, m *Master, n int) {
	t.Helper()
	for i := range n {
		_, err := m.register(&RegisterArgs{MinionID: fmt.Sprintf("MID-%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", 9000+i),
			Capacity: 1 << 40, Free: 1 << 40})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// putFile runs create, addBlock per block and complete for a file of the
// given block sizes.
func putFile(t *testing.T, m *Master, p string, sizes ...int64) error {
	t.Helper()
	cr, err := m.create(&CreateArgs{Path: p})
	if err != nil {
		return err
	}
	var blocks []BlockInfo
	for _, s := range sizes {
		ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
		if err != nil {
			return err
		}
		blocks = append(blocks, BlockInfo{ID: ab.BlockID, Size: s, CRC: 1})
	}
	return m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: blocks})
}

// putSmallFile puts a file of one 10-byte block with the given replication
// and returns the block's id.
func putSmallFile(t *testing.T, m *Master, p string, replication int) uint64 {
	t.Helper()
	cr, err := m.create(&CreateArgs{Path: p, Replication: replication})
	if err != nil {
		t.Fatal(err)
	}
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	return ab.BlockID
}

// blocksByPath maps every file of m to its block ids.
func blocksByPath(m *Master) map[string][]uint64 {
	out := map[string][]uint64{}
	m.ns.walk("/", func(p string, f *fileEntry) bool {
		out[p] = slices.Clone(f.blocks.list())
		return true
	})
	return out
}

// holdSync makes m's edit log look busy with a sync, as a slow fdatasync of
// other records would: syncs of new records wait until releaseSync.
func holdSync(m *Master) {
	m.edits.mu.Lock()
	m.edits.syncing = true
	m.edits.mu.Unlock()
}

// releaseSync ends holdSync.
func releaseSync(m *Master) {
	m.edits.mu.Lock()
	m.edits.syncing = false
	m.edits.cond.Broadcast()
	m.edits.mu.Unlock()
}

// copiesAsked lists the blocks the master asked minion mid to copy, and
// hands them over (as the minion's heartbeat would).
func copiesAsked(m *Master, mid string) []uint64 {
	var ids []uint64
	for _, c := range m.repl.copyCmds[mid] {
		ids = append(ids, c.BlockID)
	}
	delete(m.repl.copyCmds, mid)
	return ids
}

// checkReplicaCounts checks each minion's count of the replicas the master
// lists on it, which decides whether a block report needs a full scan.
func checkReplicaCounts(t *testing.T, m *Master) {
	t.Helper()
	counts := map[string]int{}
	for _, b := range m.ns.blocks {
		for _, id := range m.reg.idsOf(b) {
			counts[id]++
		}
	}
	for id, mn := range m.reg.minions {
		if mn.replicas != counts[id] {
			t.Errorf("%s: counted %d replicas, the master lists %d", id, mn.replicas, counts[id])
		}
	}
}
