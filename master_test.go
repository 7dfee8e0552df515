package main

// Unit tests of the master's namespace and registry, called directly
// without the network.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

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

func TestCheckPath(t *testing.T) {
	for _, p := range []string{"/", "/a", "/a/b.c", "/with space", "/ünïcode"} {
		if err := checkPath(p); err != nil {
			t.Errorf("checkPath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", "a", "a/b", "/a/", "//a", "/a/../b", "/./a", "/a\nb", "/a\x00b"} {
		if err := checkPath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("checkPath(%q) = %v, want ErrBadPath", p, err)
		}
	}
}

func TestMaster_Create_Conflicts(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if err := putFile(t, m, "/d/f", 10); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		force bool
		want  error
	}{
		{"/d/f", false, ErrExists},
		{"/d", true, ErrIsDir},
		{"/", true, ErrIsDir},
		{"/d/f/g", false, ErrNotDir},
		{"/d/f/g/h", true, ErrNotDir},
		{"d/x", false, ErrBadPath},
	}
	for _, tt := range tests {
		_, err := m.create(&CreateArgs{Path: tt.path, Force: tt.force})
		if !errors.Is(err, tt.want) {
			t.Errorf("create %s (force %v) = %v, want %v", tt.path, tt.force, err, tt.want)
		}
	}
	// The same path twice at once.
	if _, err := m.create(&CreateArgs{Path: "/busy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.create(&CreateArgs{Path: "/busy", Force: true}); !errors.Is(err, ErrBusy) {
		t.Errorf("second create of a path being written = %v, want ErrBusy", err)
	}
}

// A put whose path became a directory (or went under a new file) while it
// ran fails at complete, and its blocks are queued for deletion.
func TestMaster_Complete_RechecksNamespace(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	cr, err := m.create(&CreateArgs{Path: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if err := putFile(t, m, "/x/inner", 5); err != nil {
		t.Fatal(err)
	}
	err = m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 1}}})
	if !errors.Is(err, ErrIsDir) {
		t.Fatalf("complete over a new directory = %v, want ErrIsDir", err)
	}
	if !slices.Contains(m.deletes.pendingOn("MID-0"), ab.BlockID) {
		t.Errorf("block of the failed put not queued for deletion: %v", m.deletes)
	}
	if _, ok := m.leases.writes[cr.Handle]; ok {
		t.Error("failed put still registered")
	}
}

func TestMaster_Complete_Validates(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	tests := []struct {
		name  string
		edit  func(blocks []BlockInfo) []BlockInfo
		valid bool
	}{
		{"OK", func(b []BlockInfo) []BlockInfo { return b }, true},
		{"MissingBlock", func(b []BlockInfo) []BlockInfo { return b[:1] }, false},
		{"ExtraBlock", func(b []BlockInfo) []BlockInfo { return append(b, BlockInfo{ID: 42, Size: 1}) }, false},
		{"WrongID", func(b []BlockInfo) []BlockInfo { b[0].ID++; return b }, false},
		{"Swapped", func(b []BlockInfo) []BlockInfo { b[0], b[1] = b[1], b[0]; return b }, false},
		{"ShortMiddleBlock", func(b []BlockInfo) []BlockInfo { b[0].Size--; return b }, false},
		{"OversizeLast", func(b []BlockInfo) []BlockInfo { b[1].Size = testBlockSize + 1; return b }, false},
		{"EmptyLast", func(b []BlockInfo) []BlockInfo { b[1].Size = 0; return b }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := "/v/" + tt.name
			cr, err := m.create(&CreateArgs{Path: p})
			if err != nil {
				t.Fatal(err)
			}
			var blocks []BlockInfo
			for _, size := range []int64{testBlockSize, 7} {
				ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
				if err != nil {
					t.Fatal(err)
				}
				blocks = append(blocks, BlockInfo{ID: ab.BlockID, Size: size})
			}
			err = m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: tt.edit(blocks)})
			if tt.valid != (err == nil) {
				t.Fatalf("complete = %v, want valid %v", err, tt.valid)
			}
			if _, err := m.stat(p); tt.valid != (err == nil) {
				t.Errorf("stat after complete = %v", err)
			}
		})
	}
	if err := m.complete(&CompleteArgs{Handle: 12345}); !errors.Is(err, ErrLease) {
		t.Errorf("complete of an unknown handle = %v, want ErrLease", err)
	}
}

func TestMaster_ExpireWrites(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	cr, _ := m.create(&CreateArgs{Path: "/slow", Replication: 2})
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	m.expireWrites(time.Now()) // not yet
	if _, ok := m.leases.writes[cr.Handle]; !ok {
		t.Fatal("fresh put expired")
	}
	m.expireWrites(time.Now().Add(m.LeaseTimeout + time.Second))
	if _, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle}); !errors.Is(err, ErrLease) {
		t.Fatalf("addBlock after expiry = %v, want ErrLease", err)
	}
	for _, mid := range []string{"MID-0", "MID-1"} {
		if !slices.Contains(m.deletes.pendingOn(mid), ab.BlockID) {
			t.Errorf("block of the expired put not queued for deletion on %s", mid)
		}
	}
	// The path is free again.
	if err := putFile(t, m, "/slow", 1); err != nil {
		t.Fatal(err)
	}
}

func TestMaster_Place(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 3)
	m.reg.minions["MID-2"].free = 10 // full disk
	m.reg.minions["MID-1"].lastSeen = time.Now().Add(-2 * m.DeadAfter)

	got := m.reg.place(3, testBlockSize, nil)
	if len(got) != 1 || got[0].id != "MID-0" {
		t.Fatalf("place = %v, want only MID-0 (MID-1 dead, MID-2 full)", got)
	}
	m.reg.minions["MID-1"].lastSeen = time.Now()
	// MID-0 now carries one allocation, so MID-1 comes first.
	got = m.reg.place(2, testBlockSize, nil)
	if len(got) != 2 || got[0].id != "MID-1" || got[1].id != "MID-0" {
		t.Fatalf("place = %v, want MID-1 then MID-0", got)
	}
}

func TestMaster_Register_ReconcilesBlockReport(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	if err := putFile(t, m, "/f", testBlockSize, 100); err != nil {
		t.Fatal(err)
	}
	f := m.ns.file("/f")
	b0, b1 := f.blocks.list()[0], f.blocks.list()[1]
	clear(m.repl.grown) // the replicas grew before any report in flight
	cr, _ := m.create(&CreateArgs{Path: "/inflight"})
	pending, _ := m.addBlock(&AddBlockArgs{Handle: cr.Handle})

	// MID-1 comes back having lost b1, keeping b0, with an orphan, a
	// replica of the wrong length, and the block of a put in progress.
	reply, err := m.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40, Blocks: []BlockReport{
		{ID: b0, Size: testBlockSize},
		{ID: 777, Size: 5},
		{ID: pending.BlockID, Size: 3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reply.Delete, []uint64{777}) {
		t.Errorf("delete = %v, want the orphan only", reply.Delete)
	}
	if r := m.reg.idsOf(m.ns.blocks[b1]); slices.Contains(r, "MID-1") {
		t.Errorf("b1 replicas %v still name MID-1, which lost it", r)
	}
	if r := m.reg.idsOf(m.ns.blocks[b0]); !slices.Contains(r, "MID-1") {
		t.Errorf("b0 replicas %v lost MID-1", r)
	}

	reply, _ = m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40, Blocks: []BlockReport{
		{ID: b0, Size: 1}, // wrong length
		{ID: b1, Size: 100},
	}})
	if !slices.Equal(reply.Delete, []uint64{b0}) {
		t.Errorf("delete = %v, want the wrong-length replica", reply.Delete)
	}

	if _, err := m.register(&RegisterArgs{MinionID: "MID-9", ClusterID: "CID-other", Addr: "127.0.0.1:1"}); !errors.Is(err, ErrWrongCluster) {
		t.Errorf("register from another cluster = %v, want ErrWrongCluster", err)
	}
}

// A new minion dir at an old minion's address replaces it.
func TestMaster_Register_SameAddressNewDir(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if _, err := m.register(&RegisterArgs{MinionID: "MID-new", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if m.reg.alive(m.reg.minions["MID-0"], time.Now()) {
		t.Error("the old minion at the address is still alive")
	}
	if hb := m.heartbeat(&HeartbeatArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000"}); !hb.Reregister {
		t.Error("heartbeat of the replaced minion was accepted")
	}
}

// Completed puts and deletes are on disk when they return.
func TestMaster_Persist_Reload(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)
	for _, p := range []string{"/a", "/d/b", "/d/c"} {
		if err := putFile(t, m, p, testBlockSize, 3); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.remove("/d/c", false); err != nil {
		t.Fatal(err)
	}
	// No Close: a crash right after the calls returned.
	m2 := newTestMaster(t, dir)
	if m2.clusterID != m.clusterID {
		t.Errorf("cluster id %s, want %s", m2.clusterID, m.clusterID)
	}
	got, err := m2.list("/", true)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, fi := range got {
		paths = append(paths, fi.Path)
	}
	if want := []string{"/a", "/d", "/d/b"}; !slices.Equal(paths, want) {
		t.Fatalf("after reload: %v, want %v", paths, want)
	}
	fi, _ := m2.stat("/d/b")
	if fi.Size != testBlockSize+3 || len(fi.Blocks) != 2 || len(fi.Blocks[0].Replicas) != 2 {
		t.Errorf("after reload: %+v", fi)
	}
	if m2.reg.minions["MID-0"].load != m.reg.minions["MID-0"].load {
		t.Errorf("load after reload %d, want %d", m2.reg.minions["MID-0"].load, m.reg.minions["MID-0"].load)
	}
}

func TestMaster_Start_BadSettings(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Master)
	}{
		{"BlockSize", func(m *Master) { m.BlockSize = 1000 }},
		{"Replication", func(m *Master) { m.Replication = 0 }},
		{"DeadAfter", func(m *Master) { m.DeadAfter = m.Heartbeat }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMaster(t.TempDir(), "127.0.0.1:0")
			tt.edit(m)
			if err := m.Start(); !errors.Is(err, ErrBadArg) {
				m.Close()
				t.Fatalf("Start = %v, want ErrBadArg", err)
			}
		})
	}
}

// After a restart the master waits for block reports before it copies or
// deletes anything, and leaves safe mode once the blocks are reported.
func TestMaster_SafeMode(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 3)
	for i := range 4 {
		if err := putFile(t, m, fmt.Sprintf("/f%d", i), 10); err != nil {
			t.Fatal(err)
		}
	}
	m.edits.close()

	m2 := newTestMaster(t, dir, func(m *Master) { m.SafeModeTimeout = time.Hour })
	if !m2.repl.safeMode {
		t.Fatal("restarted master with blocks is not in safe mode")
	}
	// MID-0 reports everything but one block, plus an orphan; the others
	// are silent. Nothing may be copied or deleted yet.
	var report []BlockReport
	for id, b := range m2.ns.blocks {
		report = append(report, BlockReport{ID: id, Size: b.size})
	}
	reply, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
		Blocks: append(report[1:], BlockReport{ID: 4242, Size: 1})})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Delete) != 0 {
		t.Errorf("deletes %v in safe mode", reply.Delete)
	}
	for _, mid := range []string{"MID-1", "MID-2"} {
		m2.reg.minions[mid].lastSeen = time.Now().Add(-time.Hour) // dead
	}
	m2.replicate(time.Now())
	if !m2.repl.safeMode || len(m2.repl.copyCmds) != 0 {
		t.Fatalf("safe mode %v, copies %v: want still in safe mode, no copies", m2.repl.safeMode, m2.repl.copyCmds)
	}
	// The last block reported: safe mode ends, the orphan goes, copies start.
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
		Blocks: append(report, BlockReport{ID: 4242, Size: 1})}); err != nil {
		t.Fatal(err)
	}
	if m2.repl.safeMode {
		t.Fatal("still in safe mode with every block reported")
	}
	if !slices.Contains(m2.deletes.pendingOn("MID-0"), 4242) {
		t.Errorf("orphan reported in safe mode not queued for deletion: %v", m2.deletes)
	}
}

// A block report taken before a block was finalized does not drop the
// fresh replica.
func TestMaster_Reconcile_FreshReplicaKept(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if err := putFile(t, m, "/f", 10); err != nil {
		t.Fatal(err)
	}
	id := m.ns.file("/f").blocks.list()[0]
	if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-0") {
		t.Fatal("a replica recorded a moment ago was dropped by an older report")
	}
}

// A replica the master dropped (corrupt, or trimmed) and queued for
// deletion is deleted, not adopted again, when its minion reports it.
func TestMaster_Reconcile_QueuedDeleteNotReadopted(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	id := putSmallFile(t, m, "/f", 2)
	m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9001", Reason: "test"})
	if slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-1") {
		t.Fatal("bad replica still listed")
	}
	reply, err := m.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40,
		Blocks: []BlockReport{{ID: id, Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-1") {
		t.Error("a corrupt replica was adopted again from a block report")
	}
	if !slices.Equal(reply.Delete, []uint64{id}) {
		t.Errorf("delete = %v, want the corrupt replica", reply.Delete)
	}
}

// The entries a master holds per file and per block stay in the 32-byte
// size class, and a file's block list keeps its ids whatever their number.
func TestMaster_EntrySizes(t *testing.T) {
	if size := unsafe.Sizeof(fileEntry{}); size != 32 {
		t.Errorf("fileEntry is %d bytes, want 32", size)
	}
	if size := unsafe.Sizeof(blockEntry{}); size != 32 {
		t.Errorf("blockEntry is %d bytes, want 32", size)
	}
	for _, ids := range [][]uint64{nil, {7}, {0}, {7, 8, 9}} {
		var blocks []imageBlock
		for _, id := range ids {
			blocks = append(blocks, imageBlock{ID: id})
		}
		l := blockListOf(blocks)
		if got := l.list(); !slices.Equal(got, ids) {
			t.Errorf("block list of %v lists %v", ids, got)
		}
	}
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

// A move takes a file's blocks to its new path, or a directory's files
// below its new path, as mv does; it is refused, changing nothing, where
// mv would refuse it; and a restart replays it.
func TestMaster_Rename(t *testing.T) {
	files := []string{"/a", "/f2", "/d/x", "/d/sub/y", "/e/z", "/e/sub/w"}
	for _, tt := range []struct {
		name     string
		src, dst string
		force    bool
		err      error
		to       string            // the path it moved to
		moved    map[string]string // old path -> new path of each file that moved
		replaced []string          // files whose blocks went
	}{
		{name: "File", src: "/a", dst: "/b", to: "/b", moved: map[string]string{"/a": "/b"}},
		{name: "FileNewParents", src: "/a", dst: "/p/q/r", to: "/p/q/r", moved: map[string]string{"/a": "/p/q/r"}},
		{name: "FileIntoDir", src: "/a", dst: "/e", to: "/e/a", moved: map[string]string{"/a": "/e/a"}},
		{name: "FileIntoRoot", src: "/d/x", dst: "/", to: "/x", moved: map[string]string{"/d/x": "/x"}},
		{name: "FileOntoFile", src: "/a", dst: "/f2", err: ErrExists},
		{name: "FileOntoFileForce", src: "/a", dst: "/f2", force: true, to: "/f2", moved: map[string]string{"/a": "/f2"}, replaced: []string{"/f2"}},
		{name: "FileUnderFile", src: "/a", dst: "/f2/b", err: ErrNotDir},
		{name: "FileToItself", src: "/a", dst: "/a", to: "/a", moved: map[string]string{}},
		{name: "Dir", src: "/d", dst: "/n", to: "/n", moved: map[string]string{"/d/x": "/n/x", "/d/sub/y": "/n/sub/y"}},
		{name: "DirIntoDir", src: "/d", dst: "/e", to: "/e/d", moved: map[string]string{"/d/x": "/e/d/x", "/d/sub/y": "/e/d/sub/y"}},
		{name: "DirOntoDir", src: "/d/sub", dst: "/e", err: ErrExists}, // /e/sub exists
		{name: "DirIntoItself", src: "/d", dst: "/d/sub", err: ErrBadArg},
		{name: "DirOntoFile", src: "/d", dst: "/f2", err: ErrNotDir},
		{name: "Missing", src: "/nope", dst: "/b", err: ErrNotFound},
		{name: "Root", src: "/", dst: "/r", err: ErrBadArg},
		{name: "BadPath", src: "/a", dst: "/x/../y", err: ErrBadPath},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m := newTestMaster(t, dir)
			addMinions(t, m, 2)
			for _, p := range files {
				putSmallFile(t, m, p, 2)
			}
			before := blocksByPath(m)
			to, n, err := m.rename(tt.src, tt.dst, tt.force)
			if !errors.Is(err, tt.err) {
				t.Fatalf("rename(%s, %s) = %v, want %v", tt.src, tt.dst, err, tt.err)
			}
			want := maps.Clone(before)
			for old := range tt.moved {
				delete(want, old)
			}
			for old, p := range tt.moved {
				want[p] = before[old]
			}
			if err == nil && (to != tt.to || n != len(tt.moved)) {
				t.Errorf("rename(%s, %s) moved %d files to %s, want %d to %s", tt.src, tt.dst, n, to, len(tt.moved), tt.to)
			}
			if got := blocksByPath(m); !maps.EqualFunc(got, want, slices.Equal) {
				t.Errorf("files after: %v, want %v", got, want)
			}
			for _, p := range tt.replaced {
				for _, id := range before[p] {
					if m.ns.blocks[id] != nil || !slices.Contains(m.deletes.pendingOn("MID-0"), id) {
						t.Errorf("block %s of the replaced %s is kept", blockName(id), p)
					}
				}
			}
			if tt.err == nil && tt.src != tt.to {
				if _, err := m.stat(tt.src); !errors.Is(err, ErrNotFound) {
					t.Errorf("stat %s after the move: %v, want ErrNotFound", tt.src, err)
				}
			}
			checkReplicaCounts(t, m)
			m.edits.close()
			m2 := newTestMaster(t, dir)
			if got := blocksByPath(m2); !maps.EqualFunc(got, want, slices.Equal) {
				t.Errorf("files after a restart: %v, want %v", got, want)
			}
		})
	}
}

// A move onto a path a put is writing, or of a directory a put is
// writing into, is refused: the put would replace the moved file, or
// complete at the old path.
func TestMaster_Rename_Busy(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	putSmallFile(t, m, "/a", 1)
	putSmallFile(t, m, "/d/x", 1)
	for _, p := range []string{"/b", "/d/new"} {
		if _, err := m.create(&CreateArgs{Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range [][2]string{{"/a", "/b"}, {"/d", "/n"}} {
		if _, _, err := m.rename(c[0], c[1], true); !errors.Is(err, ErrBusy) {
			t.Errorf("rename(%s, %s) = %v, want ErrBusy", c[0], c[1], err)
		}
	}
}

// checkpointBehind writes an image without the master's lock (the test
// holds it throughout), from the last image and the closed log segments;
// a restart from it and the rest of the log has the live namespace.
func TestMaster_CheckpointBehind(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 3)
	for i := range 20 {
		putSmallFile(t, m, fmt.Sprintf("/d/f%02d", i), 2)
	}
	if err := m.checkpoint(); err != nil { // an image with files in it
		t.Fatal(err)
	}
	for i := range 10 {
		putSmallFile(t, m, fmt.Sprintf("/e/g%02d", i), 3)
	}
	if _, _, err := m.rename("/d", "/moved", false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.setReplication("/e", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.remove("/moved/f03", false); err != nil {
		t.Fatal(err)
	}

	m.mu.Lock()
	done := make(chan error, 1)
	go func() { done <- m.checkpointBehind() }()
	select {
	case err := <-done:
		m.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("checkpointBehind waits for the master's lock")
	}
	img, err := loadImage(imagePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if img.numFiles() != 29 {
		t.Errorf("the new image has %d files, want 29", img.numFiles())
	}
	if firsts, err := segments(dir); err != nil || len(firsts) != 1 || firsts[0] != img.LastSeq+1 {
		t.Errorf("segments %v (%v) after a checkpoint up to record %d, want only the one after it", firsts, err, img.LastSeq)
	}

	putSmallFile(t, m, "/after", 2) // in the segment after the image
	want := blocksByPath(m)
	m.edits.close()
	m2 := newTestMaster(t, dir)
	if got := blocksByPath(m2); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after a restart: %v, want %v", got, want)
	}
	m.ns.walk("/", func(p string, f *fileEntry) bool {
		if g := m2.ns.file(p); g != nil && g.replication != f.replication {
			t.Errorf("%s: replication %d after a restart, want %d", p, g.replication, f.replication)
		}
		return true
	})
}

// A directory move that would land a file on the path a put is writing is
// refused, as a move onto that path is: the put, completing, would replace
// the moved file. A put without --force does not replace a file a move put
// on its path meanwhile.
func TestMaster_Rename_DirOntoPutInProgress(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	moved := putSmallFile(t, m, "/d/x", 1)
	cr, err := m.create(&CreateArgs{Path: "/n/x"})
	if err != nil {
		t.Fatal(err)
	}
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.rename("/d", "/n", false); !errors.Is(err, ErrBusy) {
		t.Errorf("rename(/d, /n) with a put writing /n/x = %v, want ErrBusy", err)
	}
	if _, _, err := m.rename("/d/x", "/n/x", true); !errors.Is(err, ErrBusy) {
		t.Errorf("rename(/d/x, /n/x) with a put writing /n/x = %v, want ErrBusy", err)
	}
	// Were a file there (as from an older master that allowed the move),
	// the put without --force fails rather than replace it.
	m.mu.Lock()
	if _, err := m.ns.apply(&edit{Op: opRename, V: editVersion, Path: "/d/x", Dst: "/n/x"}); err != nil {
		t.Fatal(err)
	}
	m.mu.Unlock()
	if err := m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 10}}}); !errors.Is(err, ErrExists) {
		t.Errorf("complete of a put without --force onto a file = %v, want ErrExists", err)
	}
	if m.ns.blocks[moved] == nil {
		t.Errorf("the block of the moved file was deleted by a put without --force")
	}
}

// The blocks of a file that rm, mv --force or put --force takes out of the
// namespace are handed to minions for deletion only once the change is on
// disk: a crash before that brings the file back, and it must still have
// its data. Here another sync holds the log while a heartbeat comes.
func TestMaster_DeletesWaitForTheirRecord(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(m *Master) error
	}{
		{"Rm", func(m *Master) error { _, err := m.remove("/b", false); return err }},
		{"MvForce", func(m *Master) error { _, _, err := m.rename("/a", "/b", true); return err }},
		{"PutForce", func(m *Master) error {
			cr, err := m.create(&CreateArgs{Path: "/b", Force: true, FirstBlock: true})
			if err != nil {
				return err
			}
			return m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: cr.First.BlockID, Size: 10}}})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m := newTestMaster(t, dir)
			addMinions(t, m, 1)
			putSmallFile(t, m, "/a", 1)
			victim := putSmallFile(t, m, "/b", 1)

			holdSync(m) // a slow fdatasync of other records
			done := make(chan error, 1)
			go func() { done <- tt.change(m) }()
			waitFor(t, 5*time.Second, "the change applied in memory", func() bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				f := m.ns.file("/b")
				return f == nil || !slices.Equal(f.blocks.list(), []uint64{victim})
			})
			hb := m.heartbeat(&HeartbeatArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000"})
			reply, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
				Blocks: []BlockReport{{ID: victim, Size: 10}}})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(hb.Delete, victim) || slices.Contains(reply.Delete, victim) {
				t.Errorf("the minion was told to delete %s before the change that removed its file was on disk", blockName(victim))
			}

			// kill -9 now: the change never reached the disk.
			m2 := NewMaster(dir, "127.0.0.1:0")
			m2.Logger = testLogger(t)
			configureTestMaster(m2)
			if err := m2.load(); err != nil {
				t.Fatal(err)
			}
			m2.edits.close()
			if f := m2.ns.file("/b"); f == nil || !slices.Equal(f.blocks.list(), []uint64{victim}) {
				t.Errorf("after the crash /b is %v, want the old /b", f)
			}

			releaseSync(m)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(m.deletes.pendingOn("MID-0"), victim) {
				t.Errorf("once the change is on disk, the delete of %s is not queued", blockName(victim))
			}
		})
	}
}

// A move may not make a path longer than a put may.
func TestMaster_Rename_OverlongPath(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	long := "/" + strings.Repeat("d", 3000)
	putSmallFile(t, m, long+"/f", 1)
	putSmallFile(t, m, "/"+strings.Repeat("n", 2000), 1)
	putSmallFile(t, m, "/e/"+strings.Repeat("x", 2000), 1)
	for _, c := range [][2]string{
		{"/" + strings.Repeat("n", 2000), long},        // into a directory
		{"/e", long + "/" + strings.Repeat("y", 1000)}, // a directory
	} {
		if _, _, err := m.rename(c[0], c[1], false); !errors.Is(err, ErrBadPath) {
			t.Errorf("rename(%.20s..., %.20s...) = %v, want ErrBadPath", c[0], c[1], err)
		}
	}
}

// A log an older master wrote, with a move that made a path longer than a
// put may (which moves now refuse), still replays: the check is the live
// call's, not the replay's.
func TestMaster_Rename_OlderLogWithOverlongPathReplays(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 1)
	long := "/" + strings.Repeat("d", 3000)
	short := "/" + strings.Repeat("n", 2000)
	putSmallFile(t, m, long+"/f", 1)
	putSmallFile(t, m, short, 1)
	// What the previous master did for `mv short long` (to = long/nnn…).
	m.mu.Lock()
	to := long + short
	e := &edit{Op: opRename, Path: short, Dst: to}
	seq, err := m.logEdit(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.applyEdit(e); err != nil {
		t.Fatal(err)
	}
	m.mu.Unlock()
	if err := m.edits.sync(seq); err != nil {
		t.Fatal(err)
	}
	m2 := NewMaster(dir, "127.0.0.1:0")
	m2.Logger = testLogger(t)
	configureTestMaster(m2)
	if err := m2.load(); err != nil {
		t.Fatalf("restart on a log from the previous version: %v", err)
	}
	m2.edits.close()
	if m2.ns.file(to) == nil {
		t.Errorf("moved file missing after replay")
	}
}

// A minion that reports a block whose delete is held (its file removed by
// a change not yet on disk), a minion the change did not know held it,
// is told to delete it too once the change is on disk.
func TestMaster_HeldDelete_CopyElsewhereGoesToo(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	victim := putSmallFile(t, m, "/b", 1)
	m.mu.Lock()
	holder := m.reg.at(m.ns.blocks[victim].replicas.list()[0])
	other := "MID-0"
	if holder.id == other {
		other = "MID-1"
	}
	otherAddr := m.reg.minions[other].addr
	m.mu.Unlock()

	holdSync(m)
	done := make(chan error, 1)
	go func() { _, err := m.remove("/b", false); done <- err }()
	waitFor(t, 5*time.Second, "rm applied", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ns.file("/b") == nil
	})
	// The other minion (say, the target of a copy, or a replica the master
	// had dropped) reports the block in this window.
	reply, err := m.register(&RegisterArgs{MinionID: other, Addr: otherAddr, Free: 1 << 40,
		Blocks: []BlockReport{{ID: victim, Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	releaseSync(m)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hb := m.heartbeat(&HeartbeatArgs{MinionID: other, Addr: otherAddr})
	if !slices.Contains(reply.Delete, victim) && !slices.Contains(hb.Delete, victim) {
		t.Errorf("%s reported %s of a removed file; once the rm is on disk it is never told to delete it (until its next full report)", other, blockName(victim))
	}
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
