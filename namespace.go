// namespace.go is the master's namespace: a tree of directories and files,
// each file's blocks, and every block by id.
//
// It is the master's state machine, in the spirit of a hashicorp/raft FSM:
// it changes only through apply, which takes one edit (journal.go) and
// applies all of it, or none of it when check refuses it. The live path
// builds an edit, checks it, appends it to the journal and applies it;
// replay at start and the background checkpoint apply the very same records
// through the same method, so no change is written twice. apply is
// deterministic: it does no I/O and reads no clock (an edit carries its
// times), so the same records give the same namespace on any master.
//
// Derived state (each directory's size, the number of files, the block
// index) is kept by apply too, never patched on the side. What the rest of
// the master keeps about blocks (minion loads, deletes of removed replicas,
// replication checks) it hears of through nsHooks, called by apply.
//
// Directories are real: they are made by mkdir or by a put into a path
// whose parents are missing, stay when emptied, and go with rm (of an
// empty one) or rm -r. Each keeps its children, so listing, moving or
// walking a subtree costs in proportion to that subtree, and moving a
// directory moves one node.
//
// A namespace is not safe for concurrent use; the master's mu guards it.
package main

import (
	"fmt"
	"path"
	"strings"
)

// namespace is the tree of directories and files, and the blocks by id.
type namespace struct {
	root   dirNode
	files  int // files in the tree
	dirs   int // directories in the tree, / excluded
	blocks map[uint64]*blockEntry
	hooks  nsHooks
}

// nsHooks is how apply reaches the rest of the master. The calls are made
// in the order of the change; a hook must not change the namespace.
type nsHooks interface {
	// replicaSetOf maps the minion ids of a put's replicas to their slots.
	replicaSetOf(ids []string) replicaSet
	// blockAdded is called for each block of a file put in the namespace.
	blockAdded(id uint64, b *blockEntry)
	// blockRemoved is called for each block of a file that leaves the
	// namespace (rm, or replaced by put or mv), after it left.
	blockRemoved(id uint64, b *blockEntry)
	// replicationSet is called for each block whose file's replication
	// changed.
	replicationSet(id uint64)
}

// dirNode is a directory: its children by name, a file and a directory
// never sharing one. The maps are made on first use.
type dirNode struct {
	dirs    map[string]*dirNode
	files   map[string]*fileEntry
	modTime int64  // Unix nanoseconds: the newest change to it or below it
	size    int64  // bytes of every file below it
	mode    uint16 // permission bits; 0 is defaultDirMode
}

// empty reports whether d has no children.
func (d *dirNode) empty() bool { return len(d.dirs) == 0 && len(d.files) == 0 }

// has reports whether d has a child called name.
func (d *dirNode) has(name string) bool { return d.dirs[name] != nil || d.files[name] != nil }

// fileEntry is a file of the namespace. It is kept small (32 bytes, with
// the block id of a one-block file inline): a master holds one per file.
// Its size is the sum of its blocks'.
type fileEntry struct {
	blocks  blockList // 16 bytes
	modTime int64     // Unix nanoseconds
	// blockUnits is the block size over bytesPerChecksum, which divides
	// it (validBlockSize): 4 bytes where the size would take 8.
	blockUnits  uint32
	replication int16
	mode        uint16 // permission bits; 0 is defaultFileMode
}

// The modes of files and directories made without one (by dfs put and
// mkdir, and before the namespace kept modes).
const (
	defaultFileMode = 0o644
	defaultDirMode  = 0o755
)

// A mode on the wire and in the log is 0 for the default, else modeSet
// with the permission bits (so that chmod 000 is a mode too); stored, it
// is 0 or modeStored with the bits.
const (
	modeSet    = 1 << 31
	modeStored = 1 << 15
)

// permBits is the stored form of mode.
func permBits(mode uint32) uint16 {
	if mode == 0 {
		return 0
	}
	return uint16(mode&0o7777) | modeStored
}

// modeOr is the permission bits of a stored mode, def if it has none.
func modeOr(mode uint16, def uint32) uint32 {
	if mode&modeStored == 0 {
		return def
	}
	return uint32(mode & 0o7777)
}

func (f *fileEntry) blockSize() int64 { return int64(f.blockUnits) * bytesPerChecksum }

// blockList is the ids of a file's blocks, in 16 bytes. Most files have
// one block: it is kept inline. Any other file (empty, or of several
// blocks) has its ids in a slice of its own.
type blockList struct {
	one  [1]uint64 // the block of a one-block file
	more *[]uint64 // the blocks of any other file; nil for a one-block file
}

// blockListOf lists the ids of blocks.
func blockListOf(blocks []imageBlock) blockList {
	if len(blocks) == 1 {
		return blockList{one: [1]uint64{blocks[0].ID}}
	}
	ids := make([]uint64, len(blocks))
	for i, b := range blocks {
		ids[i] = b.ID
	}
	return blockList{more: &ids}
}

// list returns the ids in order. The caller must not change them.
func (l *blockList) list() []uint64 {
	if l.more != nil {
		return *l.more
	}
	return l.one[:]
}

// blockEntry is a block of a file (32 bytes, up to 4 replicas included).
// size, crc and repl are the namespace's; replicas is the block map's,
// soft state that block reports and copies change (replicas.go).
type blockEntry struct {
	replicas replicaSet // 16 bytes: the minions of the good replicas
	size     int64
	crc      uint32
	repl     int32 // the replication of its file
}

func newNamespace(hooks nsHooks) *namespace {
	return &namespace{blocks: make(map[uint64]*blockEntry), hooks: hooks}
}

// ---- looking things up ----

// maxPathLen is the longest path the namespace takes, in bytes.
const maxPathLen = 4096

// checkPath returns ErrBadPath unless p is absolute and clean.
func checkPath(p string) error {
	if p == "" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || len(p) > maxPathLen {
		return fmt.Errorf("%w: %q (want a clean absolute path such as /dir/name)", ErrBadPath, p)
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: %q contains control characters", ErrBadPath, p)
	}
	return nil
}

// splitPath returns the directory and the name of the clean absolute path
// p other than "/".
func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i == 0 {
		return "/", p[1:]
	}
	return p[:i], p[i+1:]
}

// dir returns the directory at p. A missing one is nil with no error; a
// file on the way is ErrNotDir.
func (ns *namespace) dir(p string) (*dirNode, error) {
	d := &ns.root
	for i := 1; i < len(p); {
		end := len(p)
		if j := strings.IndexByte(p[i:], '/'); j >= 0 {
			end = i + j
		}
		name := p[i:end]
		next := d.dirs[name]
		if next == nil {
			if d.files[name] != nil {
				return nil, fmt.Errorf("%w: %s", ErrNotDir, p[:end])
			}
			return nil, nil
		}
		d, i = next, end+1
	}
	return d, nil
}

// components calls fn with each name of the clean absolute path p, in order.
func components(p string, fn func(name string)) {
	for i := 1; i < len(p); {
		end := len(p)
		if j := strings.IndexByte(p[i:], '/'); j >= 0 {
			end = i + j
		}
		fn(p[i:end])
		i = end + 1
	}
}

// lookup returns the file or the directory at p: at most one is non-nil.
func (ns *namespace) lookup(p string) (*fileEntry, *dirNode) {
	if p == "/" {
		return nil, &ns.root
	}
	parent, name := splitPath(p)
	d, _ := ns.dir(parent)
	if d == nil {
		return nil, nil
	}
	return d.files[name], d.dirs[name]
}

// file returns the file at p, or nil.
func (ns *namespace) file(p string) *fileEntry {
	f, _ := ns.lookup(p)
	return f
}

// isDir reports whether p is a directory.
func (ns *namespace) isDir(p string) bool {
	_, d := ns.lookup(p)
	return d != nil
}

// exists reports whether p is a file or a directory.
func (ns *namespace) exists(p string) bool {
	f, d := ns.lookup(p)
	return f != nil || d != nil
}

// walk calls fn for the file at p, or for every file below the directory
// p in no set order, until fn returns false. It costs in proportion to
// what it visits.
func (ns *namespace) walk(p string, fn func(p string, f *fileEntry) bool) {
	f, d := ns.lookup(p)
	switch {
	case f != nil:
		fn(p, f)
	case d != nil:
		walkDir(strings.TrimSuffix(p, "/"), d, fn)
	}
}

func walkDir(prefix string, d *dirNode, fn func(p string, f *fileEntry) bool) bool {
	for name, f := range d.files {
		if !fn(prefix+"/"+name, f) {
			return false
		}
	}
	for name, sub := range d.dirs {
		if !walkDir(prefix+"/"+name, sub, fn) {
			return false
		}
	}
	return true
}

// walkDirs calls fn for every directory below d, with its path.
func walkDirs(prefix string, d *dirNode, fn func(p string, d *dirNode)) {
	for name, sub := range d.dirs {
		p := prefix + "/" + name
		fn(p, sub)
		walkDirs(p, sub, fn)
	}
}

// filesAt returns p if it is a file, else the paths of every file below
// directory p.
func (ns *namespace) filesAt(p string) []string {
	var out []string
	ns.walk(p, func(fp string, _ *fileEntry) bool { out = append(out, fp); return true })
	return out
}

// fileSize is the sum of f's block sizes.
func (ns *namespace) fileSize(f *fileEntry) int64 {
	var n int64
	for _, id := range f.blocks.list() {
		n += ns.blocks[id].size
	}
	return n
}

// ---- the one door ----

// apply checks e and applies it, and returns the number of files it put,
// removed, moved or set. A refused edit changes nothing.
func (ns *namespace) apply(e *edit) (int, error) {
	if err := ns.check(e); err != nil {
		return 0, err
	}
	switch e.Op {
	case opPut:
		ns.put(&e.File)
		return 1, nil
	case opDelete:
		return ns.remove(e.Path, e.Time), nil
	case opRename:
		return ns.rename(e.Path, e.Dst, e.Time), nil
	case opSetReplication:
		return ns.setReplication(e.Path, e.Replication), nil
	case opMkdir:
		ns.mkdir(e.Path, e.Mode, e.Time)
		return 0, nil
	case opSetMode:
		if f, d := ns.lookup(e.Path); f != nil {
			f.mode = permBits(e.Mode | modeSet)
		} else {
			d.mode = permBits(e.Mode | modeSet)
		}
		return 1, nil
	case opSetTimes:
		if f, d := ns.lookup(e.Path); f != nil {
			f.modTime = e.Time
		} else {
			d.modTime = e.Time
		}
		return 1, nil
	}
	return 0, fmt.Errorf("%w: operation %d is not a namespace change", ErrBadArg, e.Op)
}

// check says whether e may be applied to the namespace as it is. It is the
// only place where a namespace change is checked.
func (ns *namespace) check(e *edit) error {
	if err := checkPath(e.Path); err != nil {
		return err
	}
	switch e.Op {
	case opPut:
		if e.File.Path != e.Path {
			return fmt.Errorf("%w: put of %s records the file %s", ErrBadArg, e.Path, e.File.Path)
		}
		if err := validBlockSize(e.File.BlockSize); err != nil {
			return err // the namespace keeps it in units of bytesPerChecksum
		}
		if e.File.Replication < 1 || e.File.Replication > maxReplication {
			return fmt.Errorf("%w: replication %d (want 1 to %d)", ErrBadArg, e.File.Replication, maxReplication)
		}
		// Records written before real directories never said whether a
		// put may replace a file; the master had checked that it could.
		return ns.checkCreate(e.Path, e.Force || e.V == 0)
	case opDelete:
		return ns.checkRemove(e.Path, e.Recursive)
	case opRename:
		return ns.checkRename(e.Path, e.Dst, e.Force)
	case opSetReplication:
		if e.Replication < 1 || e.Replication > maxReplication {
			return fmt.Errorf("%w: replication %d (want 1 to %d)", ErrBadArg, e.Replication, maxReplication)
		}
		if !ns.exists(e.Path) {
			return fmt.Errorf("%w: %s", ErrNotFound, e.Path)
		}
		return nil
	case opMkdir:
		return ns.checkMkdir(e.Path, e.Parents)
	case opSetTimes, opSetMode:
		if !ns.exists(e.Path) {
			return fmt.Errorf("%w: %s", ErrNotFound, e.Path)
		}
		return nil
	}
	return fmt.Errorf("%w: operation %d is not a namespace change", ErrBadArg, e.Op)
}

// checkCreate says whether a file may be put at p, replacing a file there
// only if force. Missing parents are made by the put.
func (ns *namespace) checkCreate(p string, force bool) error {
	if p == "/" {
		return fmt.Errorf("%w: %s", ErrIsDir, p)
	}
	parent, name := splitPath(p)
	d, err := ns.dir(parent)
	if err != nil {
		return err
	}
	if d == nil {
		return nil // parents made by the put
	}
	switch {
	case d.dirs[name] != nil:
		return fmt.Errorf("%w: %s", ErrIsDir, p)
	case d.files[name] != nil && !force:
		return fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, p)
	}
	return nil
}

func (ns *namespace) checkRemove(p string, recursive bool) error {
	f, d := ns.lookup(p)
	switch {
	case f != nil:
		return nil
	case d == nil:
		return fmt.Errorf("%w: %s", ErrNotFound, p)
	case !d.empty() && !recursive:
		return fmt.Errorf("%w: %s is not empty (use -r to remove it and everything below)", ErrIsDir, p)
	case p == "/" && !recursive:
		return fmt.Errorf("%w: cannot remove /", ErrBadArg)
	}
	return nil
}

// checkRename says whether the file or directory at src may move to the
// path to.
func (ns *namespace) checkRename(src, to string, force bool) error {
	// Not checkPath: older masters logged moves to paths longer than
	// maxPathLen, which the live call refuses now (checkRenameLength).
	if !strings.HasPrefix(to, "/") || path.Clean(to) != to {
		return fmt.Errorf("%w: %q (want a clean absolute path such as /dir/name)", ErrBadPath, to)
	}
	sf, sd := ns.lookup(src)
	switch {
	case src == "/":
		return fmt.Errorf("%w: cannot move /", ErrBadArg)
	case sf == nil && sd == nil:
		return fmt.Errorf("%w: %s", ErrNotFound, src)
	case to == src:
		return nil
	case sd != nil && strings.HasPrefix(to, src+"/"):
		return fmt.Errorf("%w: cannot move directory %s into itself (%s)", ErrBadArg, src, to)
	case to == "/":
		return fmt.Errorf("%w: / is a directory", ErrExists)
	}
	parent, _ := splitPath(to)
	if _, err := ns.dir(parent); err != nil {
		return err
	}
	tf, td := ns.lookup(to)
	switch {
	case td != nil:
		return fmt.Errorf("%w: %s is a directory", ErrExists, to)
	case tf != nil && sd != nil:
		return fmt.Errorf("%w: %s (moving directory %s)", ErrNotDir, to, src)
	case tf != nil && !force:
		return fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, to)
	}
	return nil
}

// checkMkdir says whether directory p may be made; with parents (mkdir -p)
// missing parents are made and an existing directory is no error.
func (ns *namespace) checkMkdir(p string, parents bool) error {
	f, d := ns.lookup(p)
	switch {
	case f != nil:
		return fmt.Errorf("%w: %s is a file", ErrExists, p)
	case d != nil && !parents:
		return fmt.Errorf("%w: %s", ErrExists, p)
	case d != nil:
		return nil
	}
	parent, _ := splitPath(p)
	pd, err := ns.dir(parent)
	if err != nil {
		return err
	}
	if pd == nil && !parents {
		return fmt.Errorf("%w: %s (use -p to make the parents too)", ErrNotFound, parent)
	}
	return nil
}

// ---- the changes, each checked by check ----

// mkdirAll returns the directory at p, made with its missing parents at
// time t. No file is on the way (checked).
func (ns *namespace) mkdirAll(p string, t int64) *dirNode {
	d := &ns.root
	components(p, func(name string) {
		next := d.dirs[name]
		if next == nil {
			next = &dirNode{modTime: t}
			if d.dirs == nil {
				d.dirs = make(map[string]*dirNode)
			}
			d.dirs[name] = next
			d.modTime = max(d.modTime, t)
			ns.dirs++
		}
		d = next
	})
	return d
}

// mkdir makes the directory p (with its missing parents) with mode.
func (ns *namespace) mkdir(p string, mode uint32, t int64) {
	created := !ns.isDir(p)
	d := ns.mkdirAll(p, t)
	if created {
		d.mode = permBits(mode)
	}
}

// touch adds delta bytes to the size of p's directory and each above it,
// and brings their times up to t.
func (ns *namespace) touch(dir string, delta, t int64) {
	d := &ns.root
	d.size += delta
	d.modTime = max(d.modTime, t)
	components(dir, func(name string) {
		d = d.dirs[name]
		d.size += delta
		d.modTime = max(d.modTime, t)
	})
}

// put puts the file imf in the namespace, replacing a file at its path.
func (ns *namespace) put(imf *imageFile) {
	parent, name := splitPath(imf.Path)
	mt := imf.ModTime.UnixNano()
	d := ns.mkdirAll(parent, mt)
	if d.files[name] != nil {
		ns.unlinkFile(parent, d, name, true, mt)
	}
	var size int64
	for _, b := range imf.Blocks {
		be := &blockEntry{size: b.Size, crc: b.CRC, repl: int32(imf.Replication), replicas: ns.hooks.replicaSetOf(b.Replicas)}
		ns.blocks[b.ID] = be
		size += b.Size
		ns.hooks.blockAdded(b.ID, be)
	}
	f := &fileEntry{blocks: blockListOf(imf.Blocks), modTime: mt,
		blockUnits: uint32(imf.BlockSize / bytesPerChecksum), replication: int16(imf.Replication), mode: permBits(imf.Mode)}
	ns.linkFile(parent, d, name, f, size, mt)
}

// linkFile puts f of size bytes in d, the directory dir, as name.
func (ns *namespace) linkFile(dir string, d *dirNode, name string, f *fileEntry, size, t int64) {
	if d.files == nil {
		d.files = make(map[string]*fileEntry)
	}
	d.files[name] = f
	ns.files++
	ns.touch(dir, size, max(t, f.modTime))
}

// unlinkFile takes the file name out of d, the directory dir, and returns
// it; with drop its blocks leave the namespace too.
func (ns *namespace) unlinkFile(dir string, d *dirNode, name string, drop bool, t int64) *fileEntry {
	f := d.files[name]
	delete(d.files, name)
	ns.files--
	ns.touch(dir, -ns.fileSize(f), t)
	if drop {
		ns.dropBlocks(f)
	}
	return f
}

// dropBlocks takes f's blocks out of the namespace.
func (ns *namespace) dropBlocks(f *fileEntry) {
	for _, id := range f.blocks.list() {
		if b := ns.blocks[id]; b != nil {
			delete(ns.blocks, id)
			ns.hooks.blockRemoved(id, b)
		}
	}
}

// remove takes the file or directory at p out of the namespace, with
// everything below it, and returns the number of files that went. rm -r /
// empties the root.
func (ns *namespace) remove(p string, t int64) int {
	if p == "/" {
		n := ns.files
		for name := range ns.root.files {
			ns.unlinkFile("/", &ns.root, name, true, t)
		}
		for name := range ns.root.dirs {
			ns.removeDir("/", &ns.root, name, t)
		}
		return n
	}
	parent, name := splitPath(p)
	d, _ := ns.dir(parent)
	if d.files[name] != nil {
		ns.unlinkFile(parent, d, name, true, t)
		return 1
	}
	return ns.removeDir(parent, d, name, t)
}

// removeDir takes the directory name out of parent, the directory dir,
// with everything below it, and returns the number of files that went.
func (ns *namespace) removeDir(dir string, parent *dirNode, name string, t int64) int {
	sub := parent.dirs[name]
	n := 0
	var drop func(d *dirNode)
	drop = func(d *dirNode) {
		for _, f := range d.files {
			ns.dropBlocks(f)
			n++
		}
		for _, s := range d.dirs {
			drop(s)
			ns.dirs--
		}
	}
	drop(sub)
	delete(parent.dirs, name)
	ns.dirs--
	ns.files -= n
	ns.touch(dir, -sub.size, t)
	return n
}

// rename moves the file or directory at src to the path to, replacing a
// file there, and returns the number of files moved. A directory moves as
// one node, whatever it holds.
func (ns *namespace) rename(src, to string, t int64) int {
	if src == to {
		return 0
	}
	sparent, sname := splitPath(src)
	sd, _ := ns.dir(sparent)
	tparent, tname := splitPath(to)
	if f := sd.files[sname]; f != nil {
		ns.unlinkFile(sparent, sd, sname, false, t)
		td := ns.mkdirAll(tparent, t)
		if td.files[tname] != nil {
			ns.unlinkFile(tparent, td, tname, true, t) // replaced: its blocks go
		}
		ns.linkFile(tparent, td, tname, f, ns.fileSize(f), t)
		return 1
	}
	sub := sd.dirs[sname]
	delete(sd.dirs, sname)
	ns.touch(sparent, -sub.size, t)
	td := ns.mkdirAll(tparent, t)
	if td.dirs == nil {
		td.dirs = make(map[string]*dirNode)
	}
	td.dirs[tname] = sub
	ns.touch(tparent, sub.size, max(t, sub.modTime))
	n := 0
	walkDir("", sub, func(string, *fileEntry) bool { n++; return true })
	return n
}

// setReplication sets the replication of the files at or below p, and of
// their blocks, and returns how many files it set.
func (ns *namespace) setReplication(p string, n int) int {
	files := 0
	ns.walk(p, func(_ string, f *fileEntry) bool {
		files++
		f.replication = int16(n)
		for _, id := range f.blocks.list() {
			if b := ns.blocks[id]; b != nil {
				b.repl = int32(n)
				ns.hooks.replicationSet(id)
			}
		}
		return true
	})
	return files
}
