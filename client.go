// client.go is what `dfs put/get/ls/stat/rm` do: metadata calls to the master
// and the data path to the minions.
//
// put: Create at the master, then for each block AddBlock (which names the
// block and its pipeline of minions), stream the block to the first minion
// in packets of up to packetSize with a CRC32C per 512 bytes, several
// packets in flight, then FinalizeBlock down the pipeline; at the end
// Complete, which makes the file visible. Any failure abandons the put.
//
// get: Stat at the master for the block list, then read each block from its
// first replica, checking every packet against its checksums before a byte
// is written out; on any error go on from the same offset with the next
// replica.
package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"path"
	"strings"
	"time"
)

// Client talks to one dfs cluster. It is safe for concurrent use.
type Client struct {
	Master string
	Logger *slog.Logger
	// Timeout bounds each call to the master.
	Timeout time.Duration
	pool    *pool
}

// NewClient returns a client of the master at addr.
func NewClient(addr string) *Client {
	return &Client{Master: addr, Logger: slog.Default(), Timeout: metaTimeout, pool: newPool()}
}

// Close closes the client's connections.
func (c *Client) Close() { c.pool.close() }

// PutOptions tune one put. Zero values take the master's defaults.
type PutOptions struct {
	Replication int
	BlockSize   int64
	Force       bool // replace an existing file
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
	err := c.pool.call(ctx, c.Master, masterService+"."+method, args, reply, c.Timeout)
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
func (c *Client) Put(ctx context.Context, r io.Reader, remote string, opt PutOptions) (size int64, err error) {
	if remote, err = RemotePath(remote); err != nil {
		return 0, err
	}
	var cr CreateReply
	if err := c.meta(ctx, "Create", &CreateArgs{Path: remote, Replication: opt.Replication, BlockSize: opt.BlockSize, Force: opt.Force}, &cr); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			c.abandon(cr.Handle)
		}
	}()

	buf := make([]byte, min(packetSize, cr.BlockSize))
	var blocks []BlockInfo
	warned := false
	for {
		// Read ahead before asking for a block: an input that ends on a
		// block boundary must not leave an empty block behind.
		n, eof, err := readPacket(r, buf)
		if err != nil {
			return size, fmt.Errorf("read input: %w", err)
		}
		if n == 0 {
			break
		}
		var ab AddBlockReply
		if err := c.meta(ctx, "AddBlock", &AddBlockArgs{Handle: cr.Handle}, &ab); err != nil {
			return size, fmt.Errorf("block %d: %w", len(blocks), err)
		}
		if ab.Warning != "" && !warned {
			c.Logger.Warn("writing fewer replicas than asked", "path", remote, "why", ab.Warning)
			warned = true
		}
		bi, eof, err := c.writeBlock(ctx, r, buf, n, eof, ab, cr.BlockSize)
		if err != nil {
			return size, fmt.Errorf("block %d: %w", len(blocks), err)
		}
		blocks = append(blocks, bi)
		size += bi.Size
		if eof {
			break
		}
	}
	if err := c.meta(ctx, "Complete", &CompleteArgs{Handle: cr.Handle, Blocks: blocks}, &Empty{}); err != nil {
		return size, err
	}
	return size, nil
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

// writeBlock streams one block, whose first n bytes are in buf already, to
// the pipeline of ab, and finalizes it there.
func (c *Client) writeBlock(ctx context.Context, r io.Reader, buf []byte, n int, eof bool, ab AddBlockReply, blockSize int64) (BlockInfo, bool, error) {
	if len(ab.Pipeline) == 0 {
		return BlockInfo{}, false, fmt.Errorf("%w: master returned an empty pipeline", ErrNoMinions)
	}
	head, rest := ab.Pipeline[0], ab.Pipeline[1:]
	fail := func(err error) (BlockInfo, bool, error) {
		return BlockInfo{}, false, fmt.Errorf("minion %s: %w", head, err)
	}
	conn, err := c.pool.get(ctx, head)
	if err != nil {
		return fail(err)
	}
	var (
		off      int64
		sum      uint32
		crcs     = make([]uint32, 0, len(buf)/bytesPerChecksum+1)
		inflight []*pendingCall
	)
	for {
		data := buf[:n]
		crcs = checksums(crcs[:0], data)
		sum = crc32.Update(sum, castagnoli, data)
		if len(inflight) == packetWindow {
			if err := inflight[0].wait(ctx, hops(packetHopTimeout, len(ab.Pipeline))); err != nil {
				return fail(err)
			}
			inflight = inflight[1:]
		}
		// start has written the request when it returns, so buf and
		// crcs are free to take the next packet.
		args := &WriteBlockArgs{BlockID: ab.BlockID, Offset: off, Data: data, CRCs: crcs, Next: rest}
		inflight = append(inflight, c.pool.start(head, conn, minionService+".WriteBlock", args, &Empty{}))
		off += int64(n)
		if eof || off == blockSize {
			break
		}
		var err error
		if n, eof, err = readPacket(r, buf[:min(int64(len(buf)), blockSize-off)]); err != nil {
			return BlockInfo{}, false, fmt.Errorf("read input: %w", err)
		}
		if n == 0 {
			break
		}
	}
	for _, pc := range inflight {
		if err := pc.wait(ctx, hops(packetHopTimeout, len(ab.Pipeline))); err != nil {
			return fail(err)
		}
	}
	fa := &FinalizeBlockArgs{BlockID: ab.BlockID, Size: off, Next: rest}
	if err := c.pool.call(ctx, head, minionService+".FinalizeBlock", fa, &Empty{}, hops(finalizeHopTimeout, len(ab.Pipeline))); err != nil {
		return fail(err)
	}
	return BlockInfo{ID: ab.BlockID, Size: off, CRC: sum}, eof, nil
}

// Get writes the file remote to w and returns its size. Every byte written
// has passed its checksum; when no replica of a block can be read, Get
// stops with an error and writes nothing of that block's remainder.
func (c *Client) Get(ctx context.Context, remote string, w io.Writer) (int64, error) {
	fi, err := c.Stat(ctx, remote)
	if err != nil {
		return 0, err
	}
	if fi.Dir {
		return 0, fmt.Errorf("%w: %s", ErrIsDir, fi.Path)
	}
	var n int64
	for i, b := range fi.Blocks {
		err := c.readBlock(ctx, b, w)
		if err != nil {
			return n, fmt.Errorf("block %d of %d (%s): %w", i+1, len(fi.Blocks), blockName(b.ID), err)
		}
		n += b.Size
	}
	return n, nil
}

// writeError marks a failure to write the output, which no other replica
// can fix.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write output: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// readBlock copies block b to w, going through its replicas in order and
// resuming each at the offset where the last one failed.
func (c *Client) readBlock(ctx context.Context, b BlockInfo, w io.Writer) error {
	if len(b.Replicas) == 0 {
		return errors.New("no live replica: every minion that holds it is down")
	}
	var (
		off     int64
		sum     uint32
		lastErr error
	)
	for _, addr := range b.Replicas {
		err := c.readFrom(ctx, addr, b, &off, &sum, w)
		if err == nil {
			break
		}
		var we *writeError
		if errors.As(err, &we) || ctx.Err() != nil {
			return err
		}
		c.Logger.Warn("replica failed; trying the next one", "block", blockName(b.ID), "minion", addr, "offset", off, "err", err)
		lastErr = fmt.Errorf("minion %s: %w", addr, err)
	}
	if off < b.Size {
		return fmt.Errorf("all %d replicas failed; last: %w", len(b.Replicas), lastErr)
	}
	if sum != b.CRC {
		return fmt.Errorf("%w: whole-block CRC32C is %08x, the master recorded %08x", ErrChecksum, sum, b.CRC)
	}
	return nil
}

// readFrom reads b from the minion at addr, from *off to its end, with up
// to packetWindow reads in flight. It advances *off and *sum past every
// packet that was checked and written to w.
func (c *Client) readFrom(ctx context.Context, addr string, b BlockInfo, off *int64, sum *uint32, w io.Writer) error {
	conn, err := c.pool.get(ctx, addr)
	if err != nil {
		return err
	}
	type read struct {
		off   int64
		reply *ReadBlockReply // a fresh one per call: gob leaves zero fields alone
		pc    *pendingCall
	}
	var queue []read
	next := *off
	for *off < b.Size {
		for len(queue) < packetWindow && next < b.Size {
			length := min(int64(packetSize), b.Size-next)
			reply := new(ReadBlockReply)
			pc := c.pool.start(addr, conn, minionService+".ReadBlock", &ReadBlockArgs{BlockID: b.ID, Offset: next, Length: length}, reply)
			queue = append(queue, read{off: next, reply: reply, pc: pc})
			next += length
		}
		r := queue[0]
		queue = queue[1:]
		if err := r.pc.wait(ctx, packetHopTimeout); err != nil {
			return err
		}
		want := min(int64(packetSize), b.Size-r.off)
		if int64(len(r.reply.Data)) != want {
			return fmt.Errorf("short read: %d bytes at offset %d, want %d", len(r.reply.Data), r.off, want)
		}
		if err := verifyChecksums(r.reply.Data, r.reply.CRCs, r.off); err != nil {
			return err
		}
		if _, err := w.Write(r.reply.Data); err != nil {
			return &writeError{err}
		}
		*sum = crc32.Update(*sum, castagnoli, r.reply.Data)
		*off += want
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
