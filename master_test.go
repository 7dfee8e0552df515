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
	if _, err := m.remove(CallID{}, "/d/c", false); err != nil {
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
			to, n, err := m.rename(CallID{}, tt.src, tt.dst, tt.force)
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
		if _, _, err := m.rename(CallID{}, c[0], c[1], true); !errors.Is(err, ErrBusy) {
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
	if _, _, err := m.rename(CallID{}, "/d", "/moved", false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.setReplication("/e", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.remove(CallID{}, "/moved/f03", false); err != nil {
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
	if _, _, err := m.rename(CallID{}, "/d", "/n", false); !errors.Is(err, ErrBusy) {
		t.Errorf("rename(/d, /n) with a put writing /n/x = %v, want ErrBusy", err)
	}
	if _, _, err := m.rename(CallID{}, "/d/x", "/n/x", true); !errors.Is(err, ErrBusy) {
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
		{"Rm", func(m *Master) error { _, err := m.remove(CallID{}, "/b", false); return err }},
		{"MvForce", func(m *Master) error { _, _, err := m.rename(CallID{}, "/a", "/b", true); return err }},
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
		if _, _, err := m.rename(CallID{}, c[0], c[1], false); !errors.Is(err, ErrBadPath) {
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
	go func() { _, err := m.remove(CallID{}, "/b", false); done <- err }()
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
