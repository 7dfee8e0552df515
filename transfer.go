// transfer.go is the reading half of the data path, shared by a client's
// get and a minion's copy of a block: packets of a block read from one
// minion with several in flight, each checked against its checksums before
// it is used, then handed over in its buffer (no copy).
package main

import (
	"context"
	"fmt"
)

// readBlockRange reads block id, which has size bytes, from the minion at
// addr, from *off to the end, with up to packetWindow reads in flight. Each
// packet is checked against the checksums the minion stored with it and
// handed to fn in order; then *off moves past it. data's buffer is fn's from
// then on: it gives it back with putPacketBuf when it is done with it (or
// keeps it). crcs must not be kept: their memory takes a later packet. It
// stops at the first error, with *off at the first byte not handed over.
func readBlockRange(ctx context.Context, p *pool, addr string, id uint64, size int64, off *int64, fn func(data []byte, crcs []uint32) error) error {
	type read struct {
		off   int64
		reply *ReadBlockReply
		pc    *pendingCall
	}
	// Replies are reused: the codec reads a payload into the reply's
	// buffer when it has room (ReadBlockReply.payloadIn), so a get
	// allocates a window of buffers instead of one per packet (and the
	// garbage collector has nothing to do). A reused reply is emptied
	// first: gob leaves out zero fields, and a stale one must not pass
	// for checksums. A reply is reused only for a later packet of this
	// call: fn may keep the data of a read of one packet (the mount does).
	var free []*ReadBlockReply
	var queue []read
	next := *off
	for *off < size {
		for len(queue) < packetWindow && next < size {
			length := min(int64(packetSize), size-next)
			reply := new(ReadBlockReply)
			if n := len(free); n > 0 {
				reply, free = free[n-1], free[:n-1]
				reply.CRCs = reply.CRCs[:0]
			}
			pc, err := p.start(ctx, addr, minionService+".ReadBlock", &ReadBlockArgs{BlockID: id, Offset: next, Length: length}, reply)
			if err != nil {
				return err
			}
			queue = append(queue, read{off: next, reply: reply, pc: pc})
			next += length
		}
		r := queue[0]
		queue = queue[1:]
		if err := r.pc.wait(ctx, packetHopTimeout); err != nil {
			return err
		}
		want := min(int64(packetSize), size-r.off)
		data := r.reply.Data
		r.reply.Data = nil // fn's, or back to the pool
		if int64(len(data)) != want {
			putPacketBuf(data)
			return fmt.Errorf("short read: %d bytes at offset %d, want %d", len(data), r.off, want)
		}
		if err := verifyChecksums(data, r.reply.CRCs, r.off); err != nil {
			putPacketBuf(data)
			return err
		}
		if err := fn(data, r.reply.CRCs); err != nil {
			return err
		}
		*off += want
		free = append(free, r.reply)
	}
	return nil
}
