package main

// mount.go is `dfs mount DIR`: the namespace as a FUSE file system
// (github.com/hanwen/go-fuse/v2, its fs package), so that unmodified
// programs read and write dfs files.
//
// Every operation is a client call: lookups, listings and attributes ask
// the master; reads and writes go to the minions as `dfs get` and `dfs put`
// do, through the same Client. Files follow the HDFS model:
//
//   - A read opens the file once (its blocks and replicas) and serves any
//     offset from the checksum chunks that hold it, verified, falling back
//     to the next replica. Sequential readers get read-ahead: up to
//     readAhead chunks of chunkSize bytes fetched in the background. Files
//     are open with direct I/O: the kernel sends each read on, and the
//     answer goes from the chunks' buffers to the reader with no page
//     cache in between.
//   - A write streams into a new file's blocks as they fill (a Put fed by
//     a pipe, one packet buffer at a time); the file appears when the
//     writer closes it. An open with O_TRUNC writes a new version that
//     replaces the old one at close, atomically. A write anywhere but at
//     the end is refused with EOPNOTSUPP. fsync ends the file there: it
//     returns once the file is durable and visible, as close does, and a
//     later write is refused.
//   - Modification times and permission bits are kept (utimes, chmod,
//     tar, rsync -a); owners are not: everything is the mount's user's, and
//     a chown to anyone else is refused with EPERM. There are no access
//     checks beyond the kernel's default_permissions on those bits.
//
// The kernel caches attributes and names for attrTimeout.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

const (
	// chunkSize is the unit of a mount's reads from the minions: a packet.
	chunkSize = packetSize
	// readAhead is how many chunks a sequential reader has in flight or
	// ready beyond the one it reads: its memory is (readAhead+1) chunks.
	readAhead = 8
	// attrTimeout is how long the kernel trusts a name or attributes.
	attrTimeout = time.Second
)

// MountOptions are `dfs mount`'s settings.
type MountOptions struct {
	ReadOnly   bool
	AllowOther bool
	Logger     *slog.Logger
}

// mountFS is what every node of one mount shares.
type mountFS struct {
	c        *Client
	ctx      context.Context
	readOnly bool
	uid, gid uint32
	log      *slog.Logger

	// writing holds the files this mount is writing, by path: they are
	// not in the namespace before their close, but ls and stat show them.
	mu      sync.Mutex
	writing map[string]*node
}

// written returns the node of the file at p that this mount is writing,
// or nil.
func (m *mountFS) written(p string) *node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writing[p]
}

func (m *mountFS) setWriting(p string, n *node, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case on:
		m.writing[p] = n
	case m.writing[p] == n:
		delete(m.writing, p)
	}
}

// node is a file or a directory of the mount; its dfs path is its place
// in the kernel's tree.
type node struct {
	fs.Inode
	m *mountFS

	mu sync.Mutex
	w  *writeHandle // the open write, if any: its size is the file's
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeReaddirer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRmdirer   = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
)

// path is the node's dfs path.
func (n *node) path() string { return "/" + n.Path(nil) }

func (n *node) child(name string) string { return path.Join(n.path(), name) }

// errno maps a client error to the errno a program expects, logging the
// ones that are not a plain answer about the namespace.
func (m *mountFS) errno(op, p string, err error) syscall.Errno {
	var re *RefusedError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, ErrExists):
		return syscall.EEXIST
	case errors.Is(err, ErrIsDir):
		return syscall.EISDIR
	case errors.Is(err, ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, ErrBusy):
		return syscall.EBUSY
	case errors.Is(err, ErrBadPath):
		return syscall.EINVAL
	case errors.Is(err, ErrNoMinions):
		m.log.Warn("mount: "+op, "path", p, "err", err)
		return syscall.ENOSPC
	case errors.As(err, &re):
		m.log.Error("mount: "+op, "path", p, "err", err)
		return syscall.EACCES
	}
	m.log.Error("mount: "+op, "path", p, "err", err)
	return syscall.EIO
}

// fill sets out from a file or directory of the namespace.
func (m *mountFS) fill(fi *FileInfo, out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | fi.Mode&0o7777
	out.Nlink = 1
	if fi.Dir {
		out.Mode = syscall.S_IFDIR | fi.Mode&0o7777
		out.Nlink = 2
	}
	out.Size = uint64(fi.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = chunkSize
	out.Owner = fuse.Owner{Uid: m.uid, Gid: m.gid}
	out.SetTimes(nil, &fi.ModTime, &fi.ModTime)
}

func stableAttr(dir bool) fs.StableAttr {
	if dir {
		return fs.StableAttr{Mode: syscall.S_IFDIR}
	}
	return fs.StableAttr{Mode: syscall.S_IFREG}
}

func (n *node) newChild(ctx context.Context, dir bool) *fs.Inode {
	return n.NewInode(ctx, &node{m: n.m}, stableAttr(dir))
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	p := n.child(name)
	fi, err := n.m.c.Stat(ctx, p)
	if errors.Is(err, ErrNotFound) {
		if wn := n.m.written(p); wn != nil {
			if w := wn.writer(); w != nil {
				size, mtime, mode := w.state()
				n.m.fill(&FileInfo{Size: size, ModTime: mtime, Mode: mode}, &out.Attr)
				return wn.EmbeddedInode(), 0
			}
		}
	}
	if err != nil {
		return nil, n.m.errno("lookup", p, err)
	}
	n.m.fill(&fi, &out.Attr)
	out.SetEntryTimeout(attrTimeout)
	out.SetAttrTimeout(attrTimeout)
	return n.newChild(ctx, fi.Dir), 0
}

// writer is the node's write handle while it writes a version: until the
// version is committed, the file's size and times are the handle's.
func (n *node) writer() *writeHandle {
	n.mu.Lock()
	w := n.w
	n.mu.Unlock()
	if w == nil || !w.writing() {
		return nil
	}
	return w
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if w := n.writer(); w != nil { // being written: not in the namespace until close
		size, mtime, mode := w.state()
		n.m.fill(&FileInfo{Size: size, ModTime: mtime, Mode: mode}, &out.Attr)
		return 0
	}
	fi, err := n.m.c.Stat(ctx, n.path())
	if err != nil {
		return n.m.errno("getattr", n.path(), err)
	}
	n.m.fill(&fi, &out.Attr)
	out.SetTimeout(attrTimeout)
	return 0
}

// Setattr keeps what the namespace keeps: the modification time, the
// permission bits, and a size only where it is no change (or 0, a new
// empty version). An owner other than the mount's user is refused. On a
// file being written, the time and mode are set once it is in the
// namespace.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.m.readOnly {
		return syscall.EROFS
	}
	if uid, ok := in.GetUID(); ok && uid != n.m.uid {
		return syscall.EPERM
	}
	if gid, ok := in.GetGID(); ok && gid != n.m.gid {
		return syscall.EPERM
	}
	w := n.writer()
	if size, ok := in.GetSize(); ok {
		// An open with O_TRUNC truncates after the open, without the
		// handle (the kernel sends none): the node's newest is it.
		h, _ := f.(*writeHandle)
		if h == nil {
			n.mu.Lock()
			h = n.w
			n.mu.Unlock()
		}
		var errno syscall.Errno
		if h != nil {
			errno = h.truncate(int64(size))
		} else {
			errno = n.truncate(ctx, int64(size))
		}
		if errno != 0 {
			return errno
		}
	}
	if mode, ok := in.GetMode(); ok {
		if w != nil {
			w.setMode(mode & 0o7777)
		} else if err := n.m.c.SetMode(ctx, n.path(), mode&0o7777|modeSet); err != nil {
			return n.m.errno("chmod", n.path(), err)
		}
	}
	if mtime, ok := in.GetMTime(); ok {
		if w != nil {
			w.setModTime(mtime)
		} else if err := n.m.c.SetModTime(ctx, n.path(), mtime); err != nil {
			return n.m.errno("utimes", n.path(), err)
		}
	}
	return n.Getattr(ctx, f, out)
}

// truncate sets the size of the file: to what it is (nothing to do), or
// to 0 by a new empty version. Any other size cannot be had in a
// write-once file.
func (n *node) truncate(ctx context.Context, size int64) syscall.Errno {
	fi, err := n.m.c.Stat(ctx, n.path())
	switch {
	case err != nil:
		return n.m.errno("truncate", n.path(), err)
	case fi.Dir:
		return syscall.EISDIR
	case fi.Size == size:
		return 0
	case size != 0:
		return syscall.EOPNOTSUPP
	}
	if _, err := n.m.c.Put(ctx, eofReader{}, n.path(), PutOptions{Force: true, Replication: fi.Replication, Mode: fi.Mode | modeSet}); err != nil {
		return n.m.errno("truncate", n.path(), err)
	}
	return 0
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	entries, err := n.m.c.List(ctx, n.path(), false)
	if err != nil {
		return nil, n.m.errno("readdir", n.path(), err)
	}
	out := make([]fuse.DirEntry, 0, len(entries))
	listed := make(map[string]bool, len(entries))
	for _, e := range entries {
		mode := uint32(syscall.S_IFREG)
		if e.Dir {
			mode = syscall.S_IFDIR
		}
		out = append(out, fuse.DirEntry{Name: path.Base(e.Path), Mode: mode})
		listed[path.Base(e.Path)] = true
	}
	// New files this mount is writing here.
	n.m.mu.Lock()
	for p := range n.m.writing {
		if dir, name := path.Split(p); path.Clean(dir) == n.path() && !listed[name] {
			out = append(out, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG})
		}
	}
	n.m.mu.Unlock()
	return fs.NewListDirStream(out), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	r, err := n.m.c.Report(ctx)
	if err != nil {
		return n.m.errno("statfs", "/", err)
	}
	var capacity, free int64
	for _, mn := range r.Minions {
		if mn.State != stateDead {
			capacity, free = capacity+mn.Capacity, free+mn.Free
		}
	}
	const bsize = 4096
	out.Bsize, out.Frsize, out.NameLen = bsize, bsize, 255
	out.Blocks, out.Bfree, out.Bavail = uint64(capacity/bsize), uint64(free/bsize), uint64(free/bsize)
	out.Files = uint64(r.Files)
	return 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.m.readOnly {
		return nil, syscall.EROFS
	}
	p := n.child(name)
	if err := n.m.c.MkdirMode(ctx, p, false, mode&0o7777|modeSet); err != nil {
		return nil, n.m.errno("mkdir", p, err)
	}
	n.m.fill(&FileInfo{Dir: true, ModTime: time.Now(), Mode: mode & 0o7777}, &out.Attr)
	return n.newChild(ctx, true), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.m.readOnly {
		return syscall.EROFS
	}
	p := n.child(name)
	_, err := n.m.c.Remove(ctx, p, false)
	return n.m.errno("unlink", p, err)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.m.readOnly {
		return syscall.EROFS
	}
	p := n.child(name)
	fi, err := n.m.c.Stat(ctx, p)
	switch {
	case err != nil:
		return n.m.errno("rmdir", p, err)
	case !fi.Dir:
		return syscall.ENOTDIR
	}
	if _, err := n.m.c.Remove(ctx, p, false); errors.Is(err, ErrIsDir) {
		return syscall.ENOTEMPTY
	} else if err != nil {
		return n.m.errno("rmdir", p, err)
	}
	return 0
}

// Rename moves a file or a directory as rename(2) does: a file there is
// replaced; an empty directory there is replaced by a directory; a
// directory there takes no file.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.m.readOnly {
		return syscall.EROFS
	}
	const renameNoReplace, renameExchange = 1, 2
	if flags&renameExchange != 0 {
		return syscall.EINVAL
	}
	src := n.child(name)
	dst := path.Join("/"+newParent.EmbeddedInode().Path(nil), newName)
	if fi, err := n.m.c.Stat(ctx, dst); err == nil {
		if flags&renameNoReplace != 0 {
			return syscall.EEXIST
		}
		if fi.Dir {
			sfi, err := n.m.c.Stat(ctx, src)
			if err != nil {
				return n.m.errno("rename", src, err)
			}
			if !sfi.Dir {
				return syscall.EISDIR
			}
			// The master would move src into the directory there;
			// rename(2) replaces it if it is empty.
			if _, err := n.m.c.Remove(ctx, dst, false); errors.Is(err, ErrIsDir) {
				return syscall.ENOTEMPTY
			} else if err != nil {
				return n.m.errno("rename", dst, err)
			}
		}
	}
	_, err := n.m.c.Rename(ctx, src, dst, flags&renameNoReplace == 0)
	return n.m.errno("rename", src, err)
}

// ---- files ----

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		fi, err := n.m.c.Stat(ctx, n.path())
		if err != nil {
			return nil, 0, n.m.errno("open", n.path(), err)
		}
		if fi.Dir {
			return nil, 0, syscall.EISDIR
		}
		// Direct I/O: a read goes from the chunk buffers to the
		// reader's in one copy, with no page cache between (the kernel
		// would drop it at the next open anyway, and it halves the
		// rate of cat). mmap still works (CAP_DIRECT_IO_ALLOW_MMAP).
		return newReadHandle(n.m, fi), fuse.FOPEN_DIRECT_IO, 0
	}
	if n.m.readOnly {
		return nil, 0, syscall.EROFS
	}
	if flags&syscall.O_APPEND != 0 {
		return nil, 0, syscall.EOPNOTSUPP
	}
	fi, err := n.m.c.Stat(ctx, n.path())
	if err != nil {
		return nil, 0, n.m.errno("open", n.path(), err)
	}
	w := n.newWriteHandle(ctx, n.path(), fi.Replication, fi.Mode, true)
	if flags&syscall.O_TRUNC != 0 || fi.Size == 0 {
		w.begin()
	} else {
		// The kernel truncates after the open (a setattr of size 0
		// on this handle starts the new version); a write before that
		// would change the file in place, which is refused.
		w.size = fi.Size
	}
	return w, fuse.FOPEN_DIRECT_IO, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.m.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	ch := &node{m: n.m}
	inode := n.NewInode(ctx, ch, stableAttr(false))
	w := ch.newWriteHandle(ctx, n.child(name), 0, mode&0o7777, false)
	w.begin()
	n.m.fill(&FileInfo{ModTime: time.Now(), Mode: mode & 0o7777}, &out.Attr)
	return inode, w, fuse.FOPEN_DIRECT_IO, 0
}

// writeHandle is a file open for writing: a Put fed through a pipe. The
// file appears (or replaces the old version) when the process that opened
// it closes it (see Flush), or fsyncs it. A handle flushed with nothing written
// commits an empty file; a later write to it starts a new version, since
// a shell's `cmd > f` closes a duplicate of the descriptor before cmd
// writes a byte.
type writeHandle struct {
	n           *node
	path        string
	replication int
	mode        uint32 // permission bits of the new version
	force       bool

	// wmu orders the writes and the commits; the fields below it are
	// mu's, so that a getattr never waits behind a write.
	wmu  sync.Mutex
	pw   *io.PipeWriter // nil when no version is being written
	done chan error     // the Put's answer

	mu    sync.Mutex
	size  int64 // bytes written (of the version being written, or committed)
	mtime time.Time
	// opener is the process (thread group) that opened the file: its
	// close commits; a close by another one (a child's copy of the
	// descriptor, closed at exec or exit) does not.
	opener int
	utimes bool // mtime was set by utimes: set it after the commit
	chmod  bool // mode was set by chmod: set it after the commit
	active bool // a version is being written
}

var (
	_ fs.FileWriter   = (*writeHandle)(nil)
	_ fs.FileFlusher  = (*writeHandle)(nil)
	_ fs.FileFsyncer  = (*writeHandle)(nil)
	_ fs.FileReleaser = (*writeHandle)(nil)
)

// newWriteHandle returns a write handle of the file p of n for the caller
// in ctx, which has no version started yet.
func (n *node) newWriteHandle(ctx context.Context, p string, replication int, mode uint32, force bool) *writeHandle {
	w := &writeHandle{n: n, path: p, replication: replication, mode: mode, force: force, mtime: time.Now(), opener: callerProcess(ctx)}
	n.mu.Lock()
	n.w = w
	n.mu.Unlock()
	return w
}

// truncate sets the size of the file open for writing: to 0, which
// starts a new version (the old stays until it is committed), or to the
// size it has. Any other size cannot be had in a write-once file.
func (w *writeHandle) truncate(size int64) syscall.Errno {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	cur, _, _ := w.state()
	switch {
	case size == cur:
		return 0
	case size == 0 && w.pw == nil:
		w.begin()
		return 0
	}
	return syscall.EOPNOTSUPP
}

// begin starts a version. The caller holds wmu (or owns w alone).
func (w *writeHandle) begin() {
	pr, pw := io.Pipe()
	w.pw, w.done = pw, make(chan error, 1)
	force := w.force
	w.mu.Lock()
	mode := w.mode
	w.mu.Unlock()
	go func() {
		_, err := w.n.m.c.Put(w.n.m.ctx, pr, w.path, PutOptions{Replication: w.replication, Force: force, Mode: mode | modeSet})
		if err != nil {
			pr.CloseWithError(err) // a writer blocked on the pipe gets it
		}
		w.done <- err
	}()
	w.force = true // a later version replaces this one
	w.mu.Lock()
	w.size, w.active = 0, true
	w.mu.Unlock()
	w.n.m.setWriting(w.path, w.n, true)
}

// ended marks the version being written as ended (committed or given up).
func (w *writeHandle) ended() {
	w.mu.Lock()
	w.active = false
	w.mu.Unlock()
	w.n.m.setWriting(w.path, w.n, false)
}

func (w *writeHandle) writing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}

func (w *writeHandle) state() (size int64, mtime time.Time, mode uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size, w.mtime, w.mode
}

func (w *writeHandle) setMode(mode uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mode, w.chmod = mode, true
}

func (w *writeHandle) setModTime(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mtime, w.utimes = t, true
}

func (w *writeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	size, _, _ := w.state()
	if w.pw == nil {
		if size != 0 || off != 0 {
			return 0, syscall.EOPNOTSUPP // committed: write once
		}
		w.begin()
	}
	if off != size {
		return 0, syscall.EOPNOTSUPP // only at the end
	}
	n, err := w.pw.Write(data)
	w.mu.Lock()
	w.size += int64(n)
	w.mu.Unlock()
	if err != nil {
		w.pw = nil // the put failed: this version is gone
		w.ended()
		return uint32(n), w.n.m.errno("write", w.path, err)
	}
	return uint32(n), 0
}

// commit ends the version being written, if any, and waits until the
// file is in the namespace, durably.
func (w *writeHandle) commit(ctx context.Context) syscall.Errno {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.pw == nil {
		return 0
	}
	w.pw.Close()
	w.pw = nil
	err := <-w.done
	w.ended()
	if err != nil {
		return w.n.m.errno("close", w.path, err)
	}
	w.mu.Lock()
	mtime, utimes, mode, chmod := w.mtime, w.utimes, w.mode, w.chmod
	w.mu.Unlock()
	if chmod {
		if err := w.n.m.c.SetMode(ctx, w.path, mode|modeSet); err != nil {
			return w.n.m.errno("chmod", w.path, err)
		}
	}
	if utimes {
		if err := w.n.m.c.SetModTime(ctx, w.path, mtime); err != nil {
			return w.n.m.errno("utimes", w.path, err)
		}
	}
	return 0
}

// Flush is a close of a descriptor of the file. The opener's commits the
// file; another process's (a child that got a copy of the descriptor at
// fork, closing it at exec or exit) does not.
func (w *writeHandle) Flush(ctx context.Context) syscall.Errno {
	if p := callerProcess(ctx); p != 0 && w.opener != 0 && p != w.opener {
		return 0
	}
	return w.commit(ctx)
}

// callerProcess is the process (thread group id) of the request in ctx,
// 0 if it is not known. FUSE names the calling thread.
func callerProcess(ctx context.Context) int {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Pid == 0 {
		return 0
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", caller.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			tgid, _ := strconv.Atoi(strings.TrimSpace(v))
			return tgid
		}
	}
	return 0
}

// Fsync commits the file: it is durable and visible when fsync returns.
func (w *writeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return w.commit(ctx) }

func (w *writeHandle) Release(ctx context.Context) syscall.Errno {
	w.wmu.Lock()
	if w.pw != nil { // not flushed: the writer went away
		w.pw.CloseWithError(errors.New("file released before it was closed"))
		w.pw = nil
		<-w.done
		w.ended()
	}
	w.wmu.Unlock()
	w.n.mu.Lock()
	if w.n.w == w {
		w.n.w = nil
	}
	w.n.mu.Unlock()
	return 0
}

// readHandle is a file open for reading: its blocks as they were at open,
// read in chunks, with read-ahead for a sequential reader.
type readHandle struct {
	m      *mountFS
	fi     FileInfo
	starts []int64 // offset of each block in the file

	mu     sync.Mutex
	chunks map[int64]*chunk // by offset in the file
	next   int64            // where a sequential reader reads next
}

// chunk is [off, off+len(data)) of the file, being read or read. Its
// buffer is a packet buffer, given back to packetPool when the last of its
// holders lets go: chunks (the handle's map), the read that fills it, and
// each answer to the kernel that is made of it.
type chunk struct {
	off  int64
	end  int64
	data []byte
	buf  []byte // the packet buffer data is in, if any
	err  error
	done chan struct{}
	refs int // guarded by the handle's mu
}

var (
	_ fs.FileReader   = (*readHandle)(nil)
	_ fs.FileReleaser = (*readHandle)(nil)
)

func newReadHandle(m *mountFS, fi FileInfo) *readHandle {
	h := &readHandle{m: m, fi: fi, chunks: make(map[int64]*chunk)}
	var off int64
	for _, b := range fi.Blocks {
		h.starts = append(h.starts, off)
		off += b.Size
	}
	return h
}

// span returns the chunk of the file that holds byte pos: chunks never
// cross a block's end.
func (h *readHandle) span(pos int64) (off, end int64, block int) {
	i := sort.Search(len(h.starts), func(i int) bool { return h.starts[i] > pos }) - 1
	start, size := h.starts[i], h.fi.Blocks[i].Size
	off = start + (pos-start)/chunkSize*chunkSize
	return off, min(off+chunkSize, start+size), i
}

// get returns the chunk that holds pos, starting its read if needed. The
// caller holds mu.
func (h *readHandle) get(pos int64) *chunk {
	off, end, i := h.span(pos)
	if c := h.chunks[off]; c != nil {
		return c
	}
	c := &chunk{off: off, end: end, done: make(chan struct{}), refs: 2} // the map and the read
	h.chunks[off] = c
	go func() {
		buf := &chunkWriter{}
		start := h.starts[i]
		c.err = h.m.c.readBlock(h.m.ctx, h.fi.Blocks[i], off-start, end-start, buf)
		c.data, c.buf = buf.b, buf.buf
		close(c.done)
		h.mu.Lock()
		h.unref(c)
		h.mu.Unlock()
	}()
	return c
}

// drop takes the chunk at off out of the map. The caller holds mu.
func (h *readHandle) drop(off int64) {
	if c := h.chunks[off]; c != nil {
		delete(h.chunks, off)
		h.unref(c)
	}
}

// unref lets go of c; the last holder gives its buffer back. The caller
// holds mu.
func (h *readHandle) unref(c *chunk) {
	if c.refs--; c.refs == 0 {
		putPacketBuf(c.buf)
		c.data, c.buf = nil, nil
	}
}

// chunkWriter collects a chunk. A chunk is one packet of its block
// (chunkSize is packetSize, and chunks start on packet boundaries), so its
// bytes come in one packet, whose buffer it takes (no copy). Bytes written
// to it are copied (readRandom's, of any length).
type chunkWriter struct {
	b   []byte
	buf []byte // the packet buffer b is in, if taken
}

func (w *chunkWriter) takePacket(buf, part []byte) error {
	if w.b == nil && w.buf == nil {
		w.b, w.buf = part, buf
		return nil
	}
	_, err := w.Write(part)
	putPacketBuf(buf)
	return err
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	w.b = append(slices.Clip(w.b), p...) // never into a taken buffer's spare room
	return len(p), nil
}

// chunkResult is the answer to a read, made of the chunks that hold its
// bytes: go-fuse writes their slices to the kernel in one writev, with no
// copy, and calls Done once they are written; until then the chunks are
// held.
type chunkResult struct {
	h     *readHandle
	parts [][]byte
	held  []*chunk
}

func (r *chunkResult) Slices() ([][]byte, fuse.Status) { return r.parts, fuse.OK }

func (r *chunkResult) Size() int {
	n := 0
	for _, p := range r.parts {
		n += len(p)
	}
	return n
}

func (r *chunkResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if len(r.parts) == 1 {
		return r.parts[0], fuse.OK
	}
	out := buf[:0]
	for _, p := range r.parts {
		out = append(out, p...)
	}
	return out, fuse.OK
}

func (r *chunkResult) Done() {
	r.h.mu.Lock()
	for _, c := range r.held {
		r.h.unref(c)
	}
	r.held = nil
	r.h.mu.Unlock()
}

func (h *readHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(off+int64(len(dest)), h.fi.Size)
	if off >= end {
		return fuse.ReadResultData(nil), 0
	}
	h.mu.Lock()
	// The kernel's read-ahead sends several reads at once, which may
	// arrive out of order: a read near where the last ended is still
	// sequential.
	sequential := off >= h.next-2*chunkSize && off <= h.next+2*chunkSize
	if key, _, _ := h.span(off); !sequential && h.chunks[key] == nil {
		h.next = end
		h.mu.Unlock()
		return h.readRandom(ctx, off, end)
	}
	r := &chunkResult{h: h}
	for pos := off; pos < end; {
		c := h.get(pos)
		c.refs++ // this answer's
		r.held = append(r.held, c)
		pos = c.end
	}
	if sequential {
		pos := r.held[len(r.held)-1].end
		for range readAhead {
			if pos >= h.fi.Size {
				break
			}
			pos = h.get(pos).end
		}
	}
	if sequential {
		h.next = max(h.next, end)
	} else {
		h.next = end
	}
	// Keep what a reader may still ask for: the chunks from two before
	// this read's first (a read sent with it may arrive after it) to
	// readAhead beyond its last.
	first, last := r.held[0].off, r.held[len(r.held)-1].off
	for o, c := range h.chunks {
		if c.end <= first-2*chunkSize || o > last+readAhead*chunkSize {
			h.drop(o)
		}
	}
	h.mu.Unlock()

	for _, c := range r.held {
		if errno := h.wait(ctx, c); errno != 0 {
			r.Done()
			return nil, errno
		}
		from, to := max(off-c.off, 0), min(end-c.off, int64(len(c.data)))
		r.parts = append(r.parts, c.data[from:to])
	}
	return r, 0
}

// readRandom reads [off, end) for a reader that jumps about: only the
// checksum chunks that hold it, not whole chunks, and nothing ahead.
func (h *readHandle) readRandom(ctx context.Context, off, end int64) (fuse.ReadResult, syscall.Errno) {
	out := make([]byte, 0, end-off)
	for pos := off; pos < end; {
		_, cend, i := h.span(pos)
		start, to := h.starts[i], min(end, cend)
		buf := &chunkWriter{}
		if err := h.m.c.readBlock(ctx, h.fi.Blocks[i], pos-start, to-start, buf); err != nil {
			return nil, h.m.errno("read", h.fi.Path, err)
		}
		out = append(out, buf.b...)
		pos = to
	}
	return fuse.ReadResultData(out), 0
}

// wait waits for c to be read.
func (h *readHandle) wait(ctx context.Context, c *chunk) syscall.Errno {
	select {
	case <-c.done:
	case <-ctx.Done():
		return syscall.EINTR
	}
	if c.err != nil {
		h.mu.Lock()
		if h.chunks[c.off] == c {
			h.drop(c.off) // the next read tries again
		}
		h.mu.Unlock()
		return h.m.errno("read", h.fi.Path, c.err)
	}
	return 0
}

// Release gives the chunks back when the file is closed; reads still in
// flight give theirs when they end.
func (h *readHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	for o := range h.chunks {
		h.drop(o)
	}
	h.mu.Unlock()
	return 0
}

// ---- mounting ----

// Mount serves the cluster of c at dir until ctx ends or the file system
// is unmounted (fusermount -u, umount), then unmounts it.
func Mount(ctx context.Context, c *Client, dir string, opt MountOptions) error {
	if err := checkMountpoint(dir); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("mount %s: no FUSE here (/dev/fuse: %w); load the fuse module or install fuse3", dir, errors.Unwrap(err))
	}
	// The cluster must answer before the kernel sees a mount.
	if _, err := c.Stat(ctx, "/"); err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &mountFS{c: c, ctx: mctx, readOnly: opt.ReadOnly, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), log: opt.Logger,
		writing: make(map[string]*node)}
	timeout := attrTimeout
	mo := fuse.MountOptions{
		FsName:     "dfs://" + c.Master,
		Name:       "dfs",
		AllowOther: opt.AllowOther,
		// Requests of up to a chunk (the kernel's max_read and largest
		// write; 128 KiB by default): eight times fewer of them.
		MaxWrite:      chunkSize,
		MaxReadAhead:  chunkSize,
		DisableXAttrs: true,
		// Reads the kernel sends at once (each holds a request buffer of
		// MaxWrite here): enough to keep the read-ahead busy.
		MaxBackground: 12,
		// Files are open with direct I/O (the mount's read-ahead, not the
		// kernel's page cache); a shared mmap of one is still allowed.
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		Logger:            slog.NewLogLogger(opt.Logger.Handler(), slog.LevelDebug),
	}
	// The kernel checks access against the modes it is shown.
	mo.Options = append(mo.Options, "default_permissions")
	if opt.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	srv, err := fs.Mount(dir, &node{m: m}, &fs.Options{MountOptions: mo, EntryTimeout: &timeout, AttrTimeout: &timeout, NegativeTimeout: &timeout})
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	opt.Logger.Info("mounted", "dir", dir, "master", c.Master, "read_only", opt.ReadOnly)
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	select {
	case <-served: // unmounted from outside
	case <-ctx.Done():
		if err := unmount(srv, dir); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		<-served
	}
	opt.Logger.Info("unmounted", "dir", dir)
	return nil
}

// unmount unmounts srv, lazily if the file system is busy (a shell's cwd
// in it), so that a Ctrl+C always ends the mount.
func unmount(srv *fuse.Server, dir string) error {
	if err := srv.Unmount(); err == nil {
		return nil
	}
	return syscall.Unmount(dir, syscall.MNT_DETACH)
}

// checkMountpoint says why dir cannot take a mount: missing, not a
// directory, not empty, or a mount point already.
func checkMountpoint(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.ENOTCONN {
			return fmt.Errorf("mount %s: a mount that has lost its process is there (run: fusermount -u %s)", dir, dir)
		}
		return fmt.Errorf("mount %s: %w", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount %s: not a directory", dir)
	}
	parent, err := os.Stat(path.Join(dir, ".."))
	if err == nil && parent.Sys().(*syscall.Stat_t).Dev != fi.Sys().(*syscall.Stat_t).Dev {
		return fmt.Errorf("mount %s: something is mounted there already", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("mount %s: the directory is not empty", dir)
	}
	return nil
}
