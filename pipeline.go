// pipeline.go is the client's write of one block down its pipeline of
// minions (client -> minion -> minion), with pipeline recovery.
//
// The client sends the block's packets to the first minion, packetWindow
// of them in flight; each minion stores a packet and forwards it to the
// next, and answers when both are done. A minion's answer names the
// deepest minion that failed, if any (PipelineReply, as a *MinionError
// here); a first minion that does not answer at all is to blame itself. The
// failed minion leaves the pipeline, and the packets not yet acknowledged
// are sent again to the rest: every acknowledged packet is on every minion
// left already. The write fails only when no minion is left. The master
// copies the block to more minions afterwards.
package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// blockWrite is the write of one block. It is not safe for concurrent
// use; finish may run in another goroutine once stream has returned.
type blockWrite struct {
	c        *Client
	ctx      context.Context
	id       uint64
	pipeline []string    // the minions still in it, by address; the first is sent to
	token    *WriteToken // the master's permission for the block (token.go)
	inflight []*outPacket
	off      int64  // bytes of the block sent
	sum      uint32 // CRC32C of those bytes
	single   bool   // the block was one final packet, finalized already
}

// writeBlock streams one block, whose first packet is first, to the
// pipeline of ab. It returns whether the input ended, and finish, which
// finalizes the block on the pipeline and returns it with the minions that
// hold it; finish may run while the next block streams.
func (c *Client) writeBlock(ctx context.Context, r io.Reader, bufs *packetBufs, first []byte, eof bool, ab AddBlockReply, blockSize int64) (bool, func() (BlockInfo, error), error) {
	if len(ab.Pipeline) == 0 {
		return false, nil, fmt.Errorf("%w: master returned an empty pipeline", ErrNoMinions)
	}
	w := &blockWrite{c: c, ctx: ctx, id: ab.BlockID, pipeline: slices.Clone(ab.Pipeline), token: ab.Token}
	eof, err := w.stream(r, bufs, first, eof, blockSize)
	if err != nil {
		return false, nil, err
	}
	return eof, w.finish, nil
}

// stream sends the packets of the block, next (read already, with eof)
// and then what r yields, until the block is full or the input ends, and
// waits until the pipeline has acknowledged every one. It returns whether
// the input ended.
func (w *blockWrite) stream(r io.Reader, bufs *packetBufs, next []byte, eof bool, blockSize int64) (bool, error) {
	inputDone := false
	for {
		for !inputDone && len(w.inflight) < packetWindow {
			data, last := next, eof
			next = nil
			if data == nil {
				buf := bufs.get()
				n, e, err := readPacket(r, buf[:min(int64(len(buf)), blockSize-w.off)])
				if err != nil {
					return false, fmt.Errorf("read input: %w", err)
				}
				if n == 0 {
					bufs.put(buf)
					inputDone = true
					break
				}
				data, last = buf[:n], e
			}
			p := &outPacket{off: w.off, data: data, crcs: checksums(nil, data)}
			w.sum = crc32.Update(w.sum, castagnoli, data)
			w.off += int64(len(data))
			eof = last
			inputDone = last || w.off == blockSize
			// A block of one packet (a small file, or small blocks) is
			// finalized with that packet: one round trip fewer.
			p.final = inputDone && p.off == 0
			w.single = p.final
			w.inflight = append(w.inflight, p)
			if err := w.send(p); err != nil {
				if err := w.recover(err); err != nil {
					return false, err
				}
			}
		}
		if len(w.inflight) == 0 {
			return eof, nil
		}
		p := w.inflight[0]
		if err := w.ack(p); err != nil {
			if err := w.recover(err); err != nil {
				return false, err
			}
			continue
		}
		w.inflight = w.inflight[1:]
		bufs.put(p.data)
	}
}

// send sends packet p to the first minion of the pipeline.
func (w *blockWrite) send(p *outPacket) (err error) {
	p.reply = new(PipelineReply)
	args := &WriteBlockArgs{BlockID: w.id, Offset: p.off, Data: p.data, CRCs: p.crcs, Next: w.pipeline[1:], Final: p.final, Token: w.token}
	p.pc, err = w.c.pool.start(w.ctx, w.pipeline[0], minionService+".WriteBlock", args, p.reply)
	return err
}

// ack waits until every minion of the pipeline has packet p. Each minion
// waits one hop timeout per minion after it, so the one before a silent
// minion gives up first and names it.
func (w *blockWrite) ack(p *outPacket) error {
	timeout := hops(packetHopTimeout, len(w.pipeline))
	if p.final {
		timeout = hops(smallBlockHopTimeout, len(w.pipeline))
	}
	if err := p.pc.wait(w.ctx, timeout); err != nil {
		return err
	}
	if err := p.reply.err(); err != nil {
		return err
	}
	return nil
}

// recover drops the minion that cause blames and sends the packets in
// flight again to the rest, as often as minions fail, until it succeeds or
// no minion is left.
func (w *blockWrite) recover(cause error) error {
	for {
		if err := w.drop(cause); err != nil {
			return err
		}
		cause = nil
		for _, p := range w.inflight {
			if cause = w.send(p); cause != nil {
				break
			}
		}
		if cause == nil {
			return nil
		}
	}
}

// drop takes the minion that cause blames out of the pipeline: the one a
// *MinionError names, or else the first (it did not answer at all). It
// fails when that was the last minion.
func (w *blockWrite) drop(cause error) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	bad := w.pipeline[0]
	var me *MinionError
	if errors.As(cause, &me) && slices.Contains(w.pipeline, me.Addr) {
		bad = me.Addr
	} else {
		cause = &MinionError{Addr: bad, Err: cause}
	}
	if len(w.pipeline) == 1 {
		return cause
	}
	w.c.Logger.Warn("pipeline recovery: going on without a minion", "block", blockName(w.id), "minion", bad, "err", cause)
	w.pipeline = slices.DeleteFunc(w.pipeline, func(a string) bool { return a == bad })
	return nil
}

// finish makes the block durable on every minion left in the pipeline and
// returns it with them. Finalizing again on minions that did already is
// harmless.
func (w *blockWrite) finish() (BlockInfo, error) {
	for !w.single {
		reply := new(PipelineReply)
		fa := &FinalizeBlockArgs{BlockID: w.id, Size: w.off, Next: w.pipeline[1:], Token: w.token}
		err := w.c.pool.call(w.ctx, w.pipeline[0], minionService+".FinalizeBlock", fa, reply, hops(finalizeHopTimeout, len(w.pipeline)))
		if err == nil {
			if me := reply.err(); me != nil {
				err = me
			}
		}
		if err == nil {
			break
		}
		if err := w.drop(err); err != nil {
			return BlockInfo{}, err
		}
	}
	return BlockInfo{ID: w.id, Size: w.off, CRC: w.sum, Replicas: w.pipeline}, nil
}
