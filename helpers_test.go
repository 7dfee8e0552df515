package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
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
	cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: n, Logger: testLogger(t), Heartbeat: testHeartbeat}
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
