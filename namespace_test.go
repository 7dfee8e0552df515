package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testHooks is what a namespace under test tells the rest of the master:
// the blocks in it, kept from blockAdded and blockRemoved alone.
type testHooks struct{ live map[uint64]bool }

func newTestNamespace() (*namespace, *testHooks) {
	h := &testHooks{live: map[uint64]bool{}}
	return newNamespace(h), h
}

func (h *testHooks) replicaSetOf([]string) replicaSet { return replicaSet{} }
func (h *testHooks) blockAdded(id uint64, _ *blockEntry) {
	if h.live[id] {
		panic(fmt.Sprintf("block %d added twice", id))
	}
	h.live[id] = true
}
func (h *testHooks) blockRemoved(id uint64, _ *blockEntry) {
	if !h.live[id] {
		panic(fmt.Sprintf("block %d removed but not there", id))
	}
	delete(h.live, id)
}
func (h *testHooks) replicationSet(uint64) {}

var nextTestBlock atomic.Uint64

// nsPut is the record of a put of a file of n blocks of 512 bytes at p.
func nsPut(p string, n int, force bool) *edit {
	f := imageFile{Path: p, Replication: 2, BlockSize: 512, ModTime: time.Unix(0, int64(len(p))).UTC()}
	for range n {
		id := nextTestBlock.Add(1)
		f.Blocks = append(f.Blocks, imageBlock{ID: id, Size: 512, CRC: uint32(id)})
	}
	return &edit{Op: opPut, V: editVersion, Path: p, File: f, Force: force, Time: 1}
}

// dump describes everything a namespace holds, derived state included,
// one line per directory and file, sorted.
func dump(ns *namespace) string {
	var lines []string
	lines = append(lines, fmt.Sprintf("/ size=%d mod=%d files=%d dirs=%d blocks=%d", ns.root.size, ns.root.modTime, ns.files, ns.dirs, len(ns.blocks)))
	walkDirs("", &ns.root, func(p string, d *dirNode) {
		lines = append(lines, fmt.Sprintf("%s/ size=%d mod=%d mode=%o", p, d.size, d.modTime, d.mode))
	})
	walkDir("", &ns.root, func(p string, f *fileEntry) bool {
		var bs []string
		for _, id := range f.blocks.list() {
			b := ns.blocks[id]
			bs = append(bs, fmt.Sprintf("%d:%d:%d:%d", id, b.size, b.crc, b.repl))
		}
		lines = append(lines, fmt.Sprintf("%s repl=%d bs=%d mod=%d mode=%o blocks=%s", p, f.replication, f.blockSize(), f.modTime, f.mode, strings.Join(bs, ",")))
		return true
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// checkDerived recounts what the namespace keeps as it goes (sizes,
// counts, the block index) and reports any difference.
func checkDerived(t *testing.T, ns *namespace, h *testHooks) {
	t.Helper()
	var files, dirs int
	blocks := map[uint64]bool{}
	var size func(d *dirNode) int64
	size = func(d *dirNode) int64 {
		var n int64
		for _, f := range d.files {
			files++
			n += ns.fileSize(f)
			for _, id := range f.blocks.list() {
				blocks[id] = true
			}
		}
		for name, sub := range d.dirs {
			dirs++
			if sub.size != size(sub) {
				t.Errorf("directory %s: size %d kept, %d below it", name, sub.size, size(sub))
			}
			n += sub.size
		}
		return n
	}
	if got := size(&ns.root); got != ns.root.size {
		t.Errorf("/: size %d kept, %d below it", ns.root.size, got)
	}
	if files != ns.files || dirs != ns.dirs {
		t.Errorf("counts files=%d dirs=%d kept, %d and %d in the tree", ns.files, ns.dirs, files, dirs)
	}
	if len(blocks) != len(ns.blocks) || len(h.live) != len(ns.blocks) {
		t.Errorf("%d blocks in files, %d indexed, %d told to the hooks", len(blocks), len(ns.blocks), len(h.live))
	}
	for id := range blocks {
		if ns.blocks[id] == nil || !h.live[id] {
			t.Errorf("block %d of a file is not indexed or not told", id)
		}
	}
}

// A change the namespace refuses changes nothing; one it takes has the
// effect mkdir, put, rm, mv and setrep have on a file system.
func TestNamespace_Apply(t *testing.T) {
	setup := []*edit{
		nsPut("/a/x", 1, false),
		nsPut("/a/sub/y", 2, false),
		nsPut("/f", 1, false),
		{Op: opMkdir, Path: "/empty", Time: 5},
	}
	for _, tt := range []struct {
		name string
		e    *edit
		err  error
		want []string // paths that must exist after it (dirs end in /)
		gone []string // paths that must not
	}{
		{"MkdirNew", &edit{Op: opMkdir, Path: "/n"}, nil, []string{"/n/"}, nil},
		{"MkdirExists", &edit{Op: opMkdir, Path: "/a"}, ErrExists, nil, nil},
		{"MkdirPExists", &edit{Op: opMkdir, Path: "/a", Parents: true}, nil, []string{"/a/x"}, nil},
		{"MkdirOverFile", &edit{Op: opMkdir, Path: "/f", Parents: true}, ErrExists, nil, nil},
		{"MkdirNoParent", &edit{Op: opMkdir, Path: "/p/q"}, ErrNotFound, nil, []string{"/p/"}},
		{"MkdirParents", &edit{Op: opMkdir, Path: "/p/q/r", Parents: true}, nil, []string{"/p/", "/p/q/", "/p/q/r/"}, nil},
		{"MkdirBelowFile", &edit{Op: opMkdir, Path: "/f/d", Parents: true}, ErrNotDir, nil, nil},
		{"PutNewParents", nsPut("/new/dir/file", 1, false), nil, []string{"/new/", "/new/dir/", "/new/dir/file"}, nil},
		{"PutExists", nsPut("/f", 1, false), ErrExists, nil, nil},
		{"PutForce", nsPut("/f", 2, true), nil, []string{"/f"}, nil},
		{"PutOntoDir", nsPut("/a", 1, true), ErrIsDir, nil, nil},
		{"PutBelowFile", nsPut("/f/x", 1, false), ErrNotDir, nil, nil},
		{"PutOldRecordReplaces", func() *edit { e := nsPut("/f", 1, false); e.V = 0; return e }(), nil, []string{"/f"}, nil},
		{"RmFile", &edit{Op: opDelete, Path: "/f"}, nil, []string{"/a/"}, []string{"/f"}},
		{"RmEmptyDir", &edit{Op: opDelete, Path: "/empty"}, nil, nil, []string{"/empty/"}},
		{"RmFullDir", &edit{Op: opDelete, Path: "/a"}, ErrIsDir, []string{"/a/x"}, nil},
		{"RmR", &edit{Op: opDelete, Path: "/a", Recursive: true}, nil, []string{"/f", "/empty/"}, []string{"/a/", "/a/sub/", "/a/sub/y"}},
		{"RmRRoot", &edit{Op: opDelete, Path: "/", Recursive: true}, nil, nil, []string{"/a/", "/f", "/empty/"}},
		{"RmMissing", &edit{Op: opDelete, Path: "/nope"}, ErrNotFound, nil, nil},
		{"MvFile", &edit{Op: opRename, Path: "/f", Dst: "/g"}, nil, []string{"/g"}, []string{"/f"}},
		{"MvFileNewParents", &edit{Op: opRename, Path: "/f", Dst: "/x/y/g"}, nil, []string{"/x/y/g"}, []string{"/f"}},
		{"MvDir", &edit{Op: opRename, Path: "/a", Dst: "/b"}, nil, []string{"/b/x", "/b/sub/y"}, []string{"/a/", "/a/x"}},
		{"MvEmptyDir", &edit{Op: opRename, Path: "/empty", Dst: "/a/e"}, nil, []string{"/a/e/"}, []string{"/empty/"}},
		{"MvDirIntoItself", &edit{Op: opRename, Path: "/a", Dst: "/a/sub/a"}, ErrBadArg, []string{"/a/x"}, nil},
		{"MvOntoDir", &edit{Op: opRename, Path: "/f", Dst: "/empty"}, ErrExists, nil, nil},
		{"MvDirOntoFile", &edit{Op: opRename, Path: "/a", Dst: "/f", Force: true}, ErrNotDir, nil, nil},
		{"MvFileOntoFile", &edit{Op: opRename, Path: "/a/x", Dst: "/f"}, ErrExists, nil, nil},
		{"MvFileOntoFileForce", &edit{Op: opRename, Path: "/a/x", Dst: "/f", Force: true}, nil, []string{"/f"}, []string{"/a/x"}},
		{"MvBelowFile", &edit{Op: opRename, Path: "/a/x", Dst: "/f/x"}, ErrNotDir, nil, nil},
		{"MvRoot", &edit{Op: opRename, Path: "/", Dst: "/r"}, ErrBadArg, nil, nil},
		{"SetrepDir", &edit{Op: opSetReplication, Path: "/a", Replication: 3}, nil, nil, nil},
		{"SetrepMissing", &edit{Op: opSetReplication, Path: "/nope", Replication: 3}, ErrNotFound, nil, nil},
		{"SetrepRange", &edit{Op: opSetReplication, Path: "/a", Replication: 0}, ErrBadArg, nil, nil},
		{"BadPath", &edit{Op: opMkdir, Path: "a/b"}, ErrBadPath, nil, nil},
		{"NotANamespaceOp", &edit{Op: opMinion, Path: "/"}, ErrBadArg, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns, h := newTestNamespace()
			for _, e := range setup {
				if _, err := ns.apply(e); err != nil {
					t.Fatal(err)
				}
			}
			before := dump(ns)
			if tt.name != "PutOldRecordReplaces" {
				tt.e.V = editVersion
			}
			_, err := ns.apply(tt.e)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("apply = %v, want %v", err, tt.err)
			}
			if err != nil && dump(ns) != before {
				t.Errorf("a refused edit changed the namespace:\n%s\nwas\n%s", dump(ns), before)
			}
			for _, p := range tt.want {
				if isDir := strings.HasSuffix(p, "/"); isDir && !ns.isDir(strings.TrimSuffix(p, "/")) || !isDir && ns.file(p) == nil {
					t.Errorf("%s is not there", p)
				}
			}
			for _, p := range tt.gone {
				if ns.exists(strings.TrimSuffix(p, "/")) {
					t.Errorf("%s is still there", p)
				}
			}
			checkDerived(t, ns, h)
		})
	}
}

// randomEdit makes an edit over a small set of names, so that many of them
// collide: some are refused, as a live master would refuse them.
func randomEdit(r *rand.Rand, step int) *edit {
	names := []string{"a", "b", "c"}
	p := ""
	for range 1 + r.IntN(3) {
		p += "/" + names[r.IntN(len(names))]
	}
	q := ""
	for range 1 + r.IntN(3) {
		q += "/" + names[r.IntN(len(names))]
	}
	t := int64(1000 + step)
	switch r.IntN(8) {
	case 0, 1:
		e := nsPut(p, r.IntN(3), r.IntN(2) == 0)
		e.File.ModTime = time.Unix(0, t).UTC()
		e.Time = t
		return e
	case 2:
		return &edit{Op: opMkdir, V: editVersion, Path: p, Parents: r.IntN(2) == 0, Mode: uint32(r.IntN(2) * 0o700), Time: t}
	case 3:
		return &edit{Op: opDelete, V: editVersion, Path: p, Recursive: r.IntN(2) == 0, Time: t}
	case 4:
		return &edit{Op: opRename, V: editVersion, Path: p, Dst: q, Force: r.IntN(2) == 0, Time: t}
	case 5:
		return &edit{Op: opSetTimes, V: editVersion, Path: p, Time: t}
	case 6:
		return &edit{Op: opSetMode, V: editVersion, Path: p, Mode: uint32(r.IntN(0o1000))}
	default:
		return &edit{Op: opSetReplication, V: editVersion, Path: p, Replication: 1 + r.IntN(3), Time: t}
	}
}

// Replaying the edits a namespace took, into a fresh one, gives the same
// namespace, derived state included: the live path and replay share
// apply, and apply is deterministic.
func TestNamespace_ReplayRandom(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			live, lh := newTestNamespace()
			var taken []*edit
			for step := range 300 {
				e := randomEdit(r, step)
				if live.check(e) != nil {
					continue // the live path does not log what it refuses
				}
				if _, err := live.apply(e); err != nil {
					t.Fatalf("step %d: %v passed check and failed apply: %v", step, e, err)
				}
				taken = append(taken, e)
			}
			checkDerived(t, live, lh)
			replayed, rh := newTestNamespace()
			for i, e := range taken {
				if _, err := replayed.apply(e); err != nil {
					t.Fatalf("replay of edit %d (%+v): %v", i, e, err)
				}
			}
			checkDerived(t, replayed, rh)
			if got, want := dump(replayed), dump(live); got != want {
				t.Errorf("replayed namespace differs from the live one after %d edits:\n%s\nwant\n%s", len(taken), got, want)
			}
		})
	}
}

// The same through a master: random changes through its RPC methods, then
// a restart from its directory (image plus journal) and a restart after a
// checkpoint give back the namespace it had.
func TestMaster_ReplayRandom(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)
	r := rand.New(rand.NewPCG(7, 7))
	accepted := 0
	for step := range 200 {
		e := randomEdit(r, step)
		var err error
		switch e.Op {
		case opPut:
			var cr *CreateReply
			if cr, err = m.create(&CreateArgs{Path: e.Path, Force: e.Force, Replication: 2, BlockSize: 512}); err == nil {
				err = m.complete(&CompleteArgs{Handle: cr.Handle})
			}
		case opMkdir:
			err = m.mkdir(CallID{}, e.Path, e.Parents, e.Mode)
		case opDelete:
			_, err = m.remove(CallID{}, e.Path, e.Recursive)
		case opRename:
			_, _, err = m.rename(CallID{}, e.Path, e.Dst, e.Force)
		case opSetReplication:
			_, err = m.setReplication(e.Path, e.Replication)
		case opSetTimes:
			err = m.setTimes(e.Path, time.Unix(0, e.Time))
		case opSetMode:
			err = m.setMode(e.Path, e.Mode)
		}
		if err == nil {
			accepted++
		}
	}
	if accepted < 50 {
		t.Fatalf("only %d of 200 changes taken: the test does not test much", accepted)
	}
	m.mu.Lock()
	want := dump(m.ns)
	m.mu.Unlock()
	m.edits.close()
	m2 := newTestMaster(t, dir) // replays the journal
	if got := dump(m2.ns); got != want {
		t.Errorf("after a restart that replayed the journal:\n%s\nwant\n%s", got, want)
	}
	if err := m2.checkpoint(); err != nil {
		t.Fatal(err)
	}
	m2.edits.close()
	m3 := newTestMaster(t, dir) // loads the image
	if got := dump(m3.ns); got != want {
		t.Errorf("after a restart from a checkpoint:\n%s\nwant\n%s", got, want)
	}
}
