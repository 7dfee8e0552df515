// client.go is what `dfs put/get/ls/stat/rm` do: metadata calls to the master
// and the data path to the minions.
//
// put: Create at the master (which hands out the first block with it), then
// for each further block AddBlock (which names the block and its pipeline of
// minions); stream the block to the first minion in packets of up to
// packetSize with a CRC32C per 512 bytes, several packets in flight, then
// FinalizeBlock down the pipeline while the next block streams (a block of
// one packet is finalized with it); at the end Complete, which makes the
// file visible. Any failure abandons the put.
//
// get: Stat at the master for the block list, then read each block from its
// first replica, checking every packet against its checksums before a byte
// is written out; on any error go on from the same offset with the next
// replica.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to one dfs cluster. It is safe for concurrent use.
type Client struct {
	// Master is the master's address, or the replicated masters' (ha.go):
	// "A,B,C".
	Master string
	Logger *slog.Logger
	// Timeout bounds each call to the master.
	Timeout time.Duration
	pool    *pool
	masters atomic.Pointer[masterSet] // of Master
}

// NewClient returns a client of the master at addr.
func NewClient(addr string) *Client {
	return &Client{Master: addr, Logger: slog.Default(), Timeout: metaTimeout, pool: newPool(nil, roleClient)}
}

// SetSecurity sets how the client proves itself to the cluster (and the
// cluster to it); call it before the first call.
func (c *Client) SetSecurity(s *Security) { c.pool.setSecurity(s) }

// Close closes the client's connections.
func (c *Client) Close() { c.pool.close() }

// PutOptions tune one put. Zero values take the master's defaults.
type PutOptions struct {
	Replication int
	BlockSize   int64
	Force       bool   // replace an existing file
	Mode        uint32 // permission bits; 0: 0644
}

// RemotePath makes a user's remote path absolute and clean: "a/b" is "/a/b".
func RemotePath(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: empty path", ErrBadPath)
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return path.Clean(p), nil
}

// meta calls a master method. Errors that are not the master's own answer
// say which master could not be reached.
func (c *Client) meta(ctx context.Context, method string, args, reply any) error {
	ms := c.masters.Load()
	if ms == nil || ms.spec != c.Master {
		ms = newMasterSet(c.Master)
		c.masters.Store(ms)
	}
	err := ms.call(ctx, c.pool, masterService+"."+method, args, reply, c.Timeout)
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		if strings.HasPrefix(re.msg, "rpc: can't find") {
			return fmt.Errorf("%s is not a dfs master (%s)", c.Master, re.msg)
		}
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.HasPrefix(err.Error(), "gob:") {
		return fmt.Errorf("master %s: no valid answer, is it a dfs master? (%w)", c.Master, err)
	}
	return fmt.Errorf("master %s: %w", c.Master, err)
}

// Put stores what r yields as the file remote and returns its size. The
// file becomes visible only when every block is on every minion of its
// pipeline and the master has recorded it durably.
//
// A put whose write lease is lost midway (the leader of replicated masters
// changed: leases live in its memory) starts again from the beginning when
// r can seek back, at most twice; nothing of the lost attempt is visible.
func (c *Client) Put(ctx context.Context, r io.Reader, remote string, opt PutOptions) (int64, error) {
	s, _ := r.(io.Seeker)
	var start int64
	if s != nil {
		var err error
		if start, err = s.Seek(0, io.SeekCurrent); err != nil {
			s = nil // a pipe
		}
	}
	for attempt := 0; ; attempt++ {
		n, err := c.putOnce(ctx, r, remote, opt)
		if err == nil || s == nil || attempt == 2 || !errors.Is(err, ErrLease) || ctx.Err() != nil {
			return n, err
		}
		if _, serr := s.Seek(start, io.SeekStart); serr != nil {
			return n, err
		}
		c.Logger.Warn("put: write lease lost (a change of master?); putting again from the start", "path", remote, "err", err)
	}
}

func (c *Client) putOnce(ctx context.Context, r io.Reader, remote string, opt PutOptions) (size int64, err error) {
	if remote, err = RemotePath(remote); err != nil {
		return 0, err
	}
	var cr CreateReply
	ca := &CreateArgs{Path: remote, Replication: opt.Replication, BlockSize: opt.BlockSize, Force: opt.Force, Mode: opt.Mode, FirstBlock: true}
	if err := c.meta(ctx, "Create", ca, &cr); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			c.abandon(cr.Handle)
		}
	}()
	stopRenew := c.renewLease(ctx, cr)
	defer stopRenew()

	bufs := &packetBufs{size: int(min(packetSize, cr.BlockSize))}
	defer bufs.release()
	var blocks []BlockInfo
	var failed []string // minions dropped from a pipeline: not asked again
	var inflight []chan finalized
	// await waits for the finalize in flight, if any, and records its block.
	await := func() error {
		var firstErr error
		for _, ch := range inflight {
			f := <-ch
			if f.err != nil {
				firstErr = cmp.Or(firstErr, fmt.Errorf("block %d: %w", len(blocks), f.err))
				continue
			}
			blocks = append(blocks, f.bi)
			size += f.bi.Size
			for _, addr := range f.pipeline {
				if !slices.Contains(f.bi.Replicas, addr) && !slices.Contains(failed, addr) {
					failed = append(failed, addr)
				}
			}
		}
		inflight = inflight[:0]
		return firstErr
	}
	defer await() // never leave a finalize running behind a failed put
	warned := false
	for {
		// Read ahead before asking for a block: an input that ends on a
		// block boundary must not leave an empty block behind.
		buf := bufs.get()
		n, eof, err := readPacket(r, buf)
		if err != nil {
			return size, fmt.Errorf("read input: %w", err)
		}
		if n == 0 {
			bufs.put(buf)
			break
		}
		var ab AddBlockReply
		if cr.First.BlockID != 0 {
			ab, cr.First = cr.First, AddBlockReply{} // handed out with Create
		} else if err := c.meta(ctx, "AddBlock", &AddBlockArgs{Handle: cr.Handle, Exclude: failed}, &ab); err != nil {
			return size, fmt.Errorf("block %d: %w", len(blocks)+len(inflight), err)
		}
		if ab.Warning != "" && !warned {
			c.Logger.Warn("writing fewer replicas than asked", "path", remote, "why", ab.Warning)
			warned = true
		}
		eof, finish, err := c.writeBlock(ctx, r, bufs, buf[:n], eof, ab, cr.BlockSize)
		if err != nil {
			return size, fmt.Errorf("block %d: %w", len(blocks)+len(inflight), err)
		}
		// The block is finalized (fsynced on its minions) while the next
		// one streams, so the disks and the network do not take turns.
		// One finalize at a time, in order.
		if err := await(); err != nil {
			return size, err
		}
		done := make(chan finalized, 1)
		go func() {
			bi, err := finish()
			done <- finalized{bi, ab.Pipeline, err}
		}()
		inflight = append(inflight, done)
		if eof {
			break
		}
	}
	if err := await(); err != nil {
		return size, err
	}
	if err := c.meta(ctx, "Complete", &CompleteArgs{Handle: cr.Handle, Blocks: blocks}, &Empty{}); err != nil {
		if (!isRemote(err) || errors.Is(err, ErrLeadershipLost)) && c.completed(remote, blocks) {
			// The answer was lost, not the put.
			return size, nil
		}
		return size, err
	}
	return size, nil
}

// completed reports whether the file at remote is the one made of blocks:
// after a Complete whose answer did not arrive, the master may have
// recorded it all the same.
func (c *Client) completed(remote string, blocks []BlockInfo) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	var fi FileInfo
	err := c.meta(ctx, "Stat", &PathArgs{Path: remote, Durable: true}, &fi)
	if err != nil || len(fi.Blocks) != len(blocks) {
		return false
	}
	for i, b := range fi.Blocks {
		if b.ID != blocks[i].ID {
			return false
		}
	}
	return true
}

// renewLease keeps the put of cr alive while its input is slow, until the
// returned function is called.
func (c *Client) renewLease(ctx context.Context, cr CreateReply) (stop func()) {
	every := cr.LeaseTimeout / 3
	if every <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := c.meta(ctx, "Renew", &AbandonArgs{Handle: cr.Handle}, &Empty{}); err != nil && ctx.Err() == nil {
					c.Logger.Debug("renew put lease", "err", err)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// abandon tells the master to drop a failed put. It has its own deadline:
// the put has failed already, perhaps because ctx ended, and if this call
// is lost the master expires the put by itself.
func (c *Client) abandon(handle uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	if err := c.meta(ctx, "Abandon", &AbandonArgs{Handle: handle}, &Empty{}); err != nil {
		c.Logger.Debug("abandon put", "err", err)
	}
}

// readPacket fills buf from r as far as r goes. eof reports that r has
// nothing more after these n bytes.
func readPacket(r io.Reader, buf []byte) (n int, eof bool, err error) {
	n, err = io.ReadFull(r, buf)
	switch err {
	case nil:
		return n, false, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return n, true, nil
	}
	return n, false, err
}

// outPacket is one packet of a block on its way down a pipeline. Its buffer
// is kept until the pipeline acknowledges it, to be sent again if a minion
// fails.
type outPacket struct {
	off   int64
	data  []byte
	crcs  []uint32
	final bool // the whole block: minions finalize it on receipt
	pc    *pendingCall
	reply *PipelineReply
}

// packetBufs recycles packet buffers: a put holds at most packetWindow+1.
// Whole packet buffers come from, and go back to, the process-wide
// packetPool, so that many small puts do not each clear a fresh megabyte.
type packetBufs struct {
	size int
	free [][]byte
}

func (b *packetBufs) get() []byte {
	if n := len(b.free); n > 0 {
		buf := b.free[n-1]
		b.free = b.free[:n-1]
		return buf
	}
	if b.size == packetSize {
		return getPacketBuf()
	}
	return make([]byte, b.size)
}

func (b *packetBufs) put(buf []byte) { b.free = append(b.free, buf[:cap(buf)]) }

// release hands the free buffers back to packetPool.
func (b *packetBufs) release() {
	for _, buf := range b.free {
		putPacketBuf(buf)
	}
	b.free = nil
}

// finalized is the outcome of a block's finalize: the block with the
// minions that hold it, and the pipeline it was given.
type finalized struct {
	bi       BlockInfo
	pipeline []string
	err      error
}

// Get writes the file remote to w and returns its size. Every byte written
// has passed its checksum; when no replica of a block can be read, Get
// stops with an error and writes nothing of that block's remainder.
func (c *Client) Get(ctx context.Context, remote string, w io.Writer) (int64, error) {
	return c.GetRange(ctx, remote, 0, -1, w)
}

// GetRange writes length bytes of the file remote from offset to w (to the
// end if length is negative), reading only the blocks, and of them only the
// checksum chunks, that hold them. Every byte is checked against its chunk's
// checksum, and a block read whole against its CRC32C too, as Get does.
func (c *Client) GetRange(ctx context.Context, remote string, offset, length int64, w io.Writer) (int64, error) {
	fi, err := c.Stat(ctx, remote)
	if err != nil {
		return 0, err
	}
	if fi.Dir {
		return 0, fmt.Errorf("%w: %s", ErrIsDir, fi.Path)
	}
	if offset < 0 || offset > fi.Size {
		return 0, fmt.Errorf("%w: offset %d is outside %s (%d bytes)", ErrBadArg, offset, fi.Path, fi.Size)
	}
	end := fi.Size
	if length >= 0 {
		end = min(end, offset+length)
	}
	return c.readRange(ctx, fi, offset, end, w)
}

// readRange writes bytes [offset, end) of the file fi (as Stat described
// it, with its blocks) to w, checked as GetRange says. The blocks are read
// on goroutines of their own, ahead of the writes to w on this one: while w
// takes one block's packets, the next block's come from its own replica,
// so neither the wire nor w waits for the other. At most two blocks are
// read at once, each with packetWindow packets in flight and getQueue
// ready.
func (c *Client) readRange(ctx context.Context, fi FileInfo, offset, end int64, w io.Writer) (int64, error) {
	var reads []*blockRead
	var start int64
	for i, b := range fi.Blocks {
		lo, hi := max(offset-start, 0), min(end-start, b.Size)
		start += b.Size
		if lo < hi {
			reads = append(reads, &blockRead{i: i, b: b, lo: lo, hi: hi, out: make(chan gotPacket, getQueue)})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	started := 0
	startNext := func() {
		if started < len(reads) {
			r := reads[started]
			started++
			go func() {
				defer close(r.out)
				r.err = c.readBlock(ctx, r.b, r.lo, r.hi, &packetQueue{ctx, r.out})
			}()
		}
	}
	defer func() { // stop the reads and wait for them
		cancel()
		for _, r := range reads[:started] {
			for p := range r.out {
				putPacketBuf(p.buf)
			}
		}
	}()
	startNext()
	startNext()
	var n int64
	for _, r := range reads {
		for p := range r.out {
			err := writeSmall(w, p.part)
			putPacketBuf(p.buf)
			if err != nil {
				return n, &writeError{err}
			}
			n += int64(len(p.part))
		}
		if r.err != nil {
			return n, fmt.Errorf("block %d of %d (%s): %w", r.i+1, len(fi.Blocks), blockName(r.b.ID), r.err)
		}
		startNext()
	}
	return n, nil
}

// getQueue is how many packets of a block may wait, read and checked, for
// the writer of a get.
const getQueue = 4

// blockRead is the read of [lo, hi) of the file's block i, for readRange.
type blockRead struct {
	i      int
	b      BlockInfo
	lo, hi int64
	out    chan gotPacket // the bytes, in order; closed when the read ends
	err    error          // why it ended early; set before out is closed
}

// gotPacket is part of a packet buffer, read and checked, to write and then give back.
type gotPacket struct{ buf, part []byte }

// packetTaker is a writer that takes a packet's buffer rather than a copy
// of its bytes: part (of buf) is what is to be written, and buf is the
// taker's from then on (it gives it back with putPacketBuf).
type packetTaker interface {
	takePacket(buf, part []byte) error
}

// packetQueue hands packets to readRange's writer.
type packetQueue struct {
	ctx context.Context
	out chan<- gotPacket
}

func (q *packetQueue) Write(p []byte) (int, error) { // not used: readBlock takes packets
	buf := getPacketBuf()
	n := copy(buf, p)
	return n, q.takePacket(buf, buf[:n])
}

func (q *packetQueue) takePacket(buf, part []byte) error {
	select {
	case q.out <- gotPacket{buf, part}:
		return nil
	case <-q.ctx.Done():
		putPacketBuf(buf)
		return q.ctx.Err()
	}
}

// writeError marks a failure to write the output, which no other replica
// can fix.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write output: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// reportBad tells the master that the replica of block id at addr failed
// its checksums, so that it is replaced. It is best effort.
func (c *Client) reportBad(id uint64, addr string, why error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	if err := c.meta(ctx, "ReportBad", &ReportBadArgs{BlockID: id, Addr: addr, Reason: why.Error()}, &Empty{}); err != nil {
		c.Logger.Debug("report bad replica", "err", err)
	}
}

// readBlock copies bytes [lo, hi) of block b to w (handing it the packets'
// buffers if it is a packetTaker), going through its replicas in order and
// resuming each at the offset where the last one failed. The reads start and end on checksum chunks; a block read whole is
// checked against its CRC32C too.
func (c *Client) readBlock(ctx context.Context, b BlockInfo, lo, hi int64, w io.Writer) error {
	if len(b.Replicas) == 0 {
		return errors.New("no live replica: every minion that holds it is down")
	}
	off := lo - lo%bytesPerChecksum
	end := min(b.Size, (hi+bytesPerChecksum-1)/bytesPerChecksum*bytesPerChecksum)
	whole := lo == 0 && hi == b.Size
	var (
		sum     uint32
		lastErr error
	)
	for _, addr := range b.Replicas {
		err := readBlockRange(ctx, c.pool, addr, b.ID, end, &off, func(data []byte, _ []uint32) error {
			if whole {
				sum = crc32.Update(sum, castagnoli, data)
			}
			// The packet covers [off, off+len(data)); write the part
			// in [lo, hi).
			from, to := max(lo-off, 0), min(hi-off, int64(len(data)))
			if t, ok := w.(packetTaker); ok {
				if err := t.takePacket(data, data[from:max(from, to)]); err != nil {
					return &writeError{err}
				}
				return nil
			}
			defer putPacketBuf(data)
			if from < to {
				if _, err := w.Write(data[from:to]); err != nil {
					return &writeError{err}
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		var we *writeError
		if errors.As(err, &we) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, ErrChecksum) {
			c.reportBad(b.ID, addr, err)
		}
		c.Logger.Warn("replica failed; trying the next one", "block", blockName(b.ID), "minion", addr, "offset", off, "err", err)
		lastErr = fmt.Errorf("minion %s: %w", addr, err)
	}
	if off < end {
		return fmt.Errorf("all %d replicas failed; last: %w", len(b.Replicas), lastErr)
	}
	if whole && sum != b.CRC {
		return fmt.Errorf("%w: whole-block CRC32C is %08x, the master recorded %08x", ErrChecksum, sum, b.CRC)
	}
	return nil
}

// Stat describes the file or directory remote, with block locations.
func (c *Client) Stat(ctx context.Context, remote string) (FileInfo, error) {
	remote, err := RemotePath(remote)
	if err != nil {
		return FileInfo{}, err
	}
	var fi FileInfo
	err = c.meta(ctx, "Stat", &PathArgs{Path: remote}, &fi)
	return fi, err
}

// List lists a directory (or names one file), every file below it if recursive.
func (c *Client) List(ctx context.Context, remote string, recursive bool) ([]FileInfo, error) {
	remote, err := RemotePath(remote)
	if err != nil {
		return nil, err
	}
	var reply ListReply
	err = c.meta(ctx, "List", &ListArgs{Path: remote, Recursive: recursive}, &reply)
	return reply.Entries, err
}

// Remove deletes a file, or with recursive a directory and all below it,
// and returns how many files went. Minions free the space at their next
// heartbeats.
func (c *Client) Remove(ctx context.Context, remote string, recursive bool) (int, error) {
	remote, err := RemotePath(remote)
	if err != nil {
		return 0, err
	}
	var reply DeleteReply
	err = c.meta(ctx, "Delete", &DeleteArgs{Path: remote, Recursive: recursive}, &reply)
	return reply.Removed, err
}

// Mkdir makes the directory remote; with parents, its missing parents too,
// and an existing directory is no error.
func (c *Client) Mkdir(ctx context.Context, remote string, parents bool) error {
	return c.MkdirMode(ctx, remote, parents, 0)
}

// MkdirMode is Mkdir giving the new directory remote the permission bits
// mode (0: 0755).
func (c *Client) MkdirMode(ctx context.Context, remote string, parents bool, mode uint32) error {
	remote, err := RemotePath(remote)
	if err != nil {
		return err
	}
	return c.meta(ctx, "Mkdir", &MkdirArgs{Path: remote, Parents: parents, Mode: mode}, &Empty{})
}

// SetMode sets the permission bits of the file or directory remote.
func (c *Client) SetMode(ctx context.Context, remote string, mode uint32) error {
	remote, err := RemotePath(remote)
	if err != nil {
		return err
	}
	return c.meta(ctx, "SetMode", &SetModeArgs{Path: remote, Mode: mode}, &Empty{})
}

// SetModTime sets the modification time of the file or directory remote.
func (c *Client) SetModTime(ctx context.Context, remote string, mtime time.Time) error {
	p, err := RemotePath(remote)
	if err != nil {
		return err
	}
	return c.meta(ctx, "SetTimes", &SetTimesArgs{Path: p, ModTime: mtime}, &Empty{})
}

// SetReplication sets the replication of the file at remote, or of every
// file below it, and returns how many files it set. The master copies or
// trims their blocks in the background; Fsck shows when they are done.
func (c *Client) SetReplication(ctx context.Context, remote string, n int) (int, error) {
	remote, err := RemotePath(remote)
	if err != nil {
		return 0, err
	}
	var reply SetReplicationReply
	err = c.meta(ctx, "SetReplication", &SetReplicationArgs{Path: remote, Replication: n}, &reply)
	return reply.Files, err
}

// Rename moves the file or directory src to dst, or into dst when dst is a
// directory, and returns the path it moved to. With force it replaces a
// file at that path.
func (c *Client) Rename(ctx context.Context, src, dst string, force bool) (string, error) {
	src, err := RemotePath(src)
	if err != nil {
		return "", err
	}
	if dst, err = RemotePath(dst); err != nil {
		return "", err
	}
	var reply RenameReply
	err = c.meta(ctx, "Rename", &RenameArgs{Src: src, Dst: dst, Force: force}, &reply)
	return reply.Path, err
}

// Report returns the state of the cluster and of every minion.
func (c *Client) Report(ctx context.Context) (*ReportReply, error) {
	var r ReportReply
	if err := c.meta(ctx, "Report", &ReportArgs{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AddMaster adds the master id, whose Raft listens on raftAddr, to the
// replicated masters; the new master runs with --join.
func (c *Client) AddMaster(ctx context.Context, id, raftAddr string) error {
	return c.meta(ctx, "ChangePeers", &PeerArgs{ID: id, Addr: raftAddr}, &Empty{})
}

// RemoveMaster removes the master id from the replicated masters.
func (c *Client) RemoveMaster(ctx context.Context, id string) error {
	return c.meta(ctx, "ChangePeers", &PeerArgs{ID: id}, &Empty{})
}

// Fsck returns the health of every block at or below remote.
func (c *Client) Fsck(ctx context.Context, remote string) (*FsckReply, error) {
	remote, err := RemotePath(remote)
	if err != nil {
		return nil, err
	}
	var r FsckReply
	if err := c.meta(ctx, "Fsck", &FsckArgs{Path: remote}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Decommission starts draining the minion at addr: its blocks are copied
// elsewhere; Report shows it "decommissioned" when it is safe to stop. The
// master warns when the drain cannot finish with the minions it has.
func (c *Client) Decommission(ctx context.Context, addr string) (warning string, err error) {
	var r DecommissionReply
	err = c.meta(ctx, "Decommission", &DecommissionArgs{Addr: addr}, &r)
	return r.Warning, err
}
