// repair.go is a minion's part in keeping replicas healthy: copying a block
// from another minion when the master asks (re-replication), and the
// scrubber, which re-reads every stored block at a bounded rate and reports
// those that fail their checksums.
package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"syscall"
	"time"
)

// maxCopies bounds the copies a minion runs at once, whatever it is asked.
const maxCopies = 8

// startCopy runs cmd in the background unless the block is here or coming.
func (m *Minion) startCopy(cmd CopyCommand) {
	m.mu.Lock()
	if m.copying[cmd.BlockID] || len(m.copying) >= maxCopies {
		m.mu.Unlock()
		return // the master asks again after copyTimeout
	}
	m.copying[cmd.BlockID] = true
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		src, err := m.copyBlock(cmd)
		if err == nil && src != "" {
			m.metrics.written.WithLabelValues("replication").Add(float64(cmd.Size))
		}
		if err != nil && m.ctx.Err() == nil {
			m.Logger.Warn("copy block", "block", blockName(cmd.BlockID), "err", err)
		}
		m.mu.Lock()
		delete(m.copying, cmd.BlockID)
		m.mu.Unlock()
		m.reportCopy(cmd, src, err)
	}()
}

// copyBlock fetches block cmd.BlockID from the first source that can
// serve it whole, checking every packet, and stores it. It returns the
// source that served it ("" if the block was here already).
func (m *Minion) copyBlock(cmd CopyCommand) (source string, _ error) {
	if m.store.has(cmd.BlockID) {
		return "", nil
	}
	var lastErr error
	for _, src := range cmd.Sources {
		// Start over from 0 with each source: a partial block is dropped.
		m.store.abort(cmd.BlockID)
		var off int64
		var sum uint32
		// A block of one packet is checked whole and then stored with
		// put (packed, if small); a larger one is written as it comes.
		var whole []byte
		var crcList []uint32
		err := readBlockRange(m.ctx, m.pool, src, cmd.BlockID, cmd.Size, &off, func(data []byte, crcs []uint32) error {
			defer putPacketBuf(data)
			sum = crc32.Update(sum, castagnoli, data)
			if cmd.Size <= packetSize {
				whole, crcList = append(whole, data...), append(crcList, crcs...)
				return nil
			}
			return m.store.write(cmd.BlockID, off, data, crcs)
		})
		if err == nil && sum != cmd.CRC {
			err = fmt.Errorf("%w: whole-block CRC32C %08x, want %08x", ErrChecksum, sum, cmd.CRC)
		}
		if err == nil && cmd.Size <= packetSize {
			return src, m.store.put(cmd.BlockID, whole, crcList)
		}
		if err == nil {
			return src, m.store.finalize(cmd.BlockID, cmd.Size)
		}
		if errors.Is(err, ErrChecksum) {
			m.reportBad(cmd.BlockID, src, err)
		}
		lastErr = fmt.Errorf("from %s: %w", src, err)
	}
	m.store.abort(cmd.BlockID)
	if lastErr == nil {
		lastErr = errors.New("no source")
	}
	return "", lastErr
}

// reportCopy tells the master how a copy went; a copy the master no longer
// wants is deleted.
func (m *Minion) reportCopy(cmd CopyCommand, source string, copyErr error) {
	m.mu.Lock()
	args := &BlockReceivedArgs{MinionID: m.ident.MinionID, BlockID: cmd.BlockID, Size: cmd.Size, Failed: copyErr != nil, Source: source}
	m.mu.Unlock()
	var reply BlockReceivedReply
	if err := m.masters.call(m.ctx, m.pool, masterService+".BlockReceived", args, &reply, metaTimeout); err != nil {
		// The next block report tells the master about the block.
		m.Logger.Debug("report copied block", "block", blockName(cmd.BlockID), "err", err)
		return
	}
	if reply.Delete {
		m.deleteBlocks([]uint64{cmd.BlockID})
	}
}

// reportBad tells the master that the replica of block id at addr failed
// its checksums.
func (m *Minion) reportBad(id uint64, addr string, why error) {
	args := &ReportBadArgs{BlockID: id, Addr: addr, Reason: why.Error()}
	if err := m.masters.call(m.ctx, m.pool, masterService+".ReportBad", args, &Empty{}, metaTimeout); err != nil {
		m.Logger.Debug("report bad replica", "block", blockName(id), "err", err)
	}
}

// check re-reads block id whole against its checksums; if it is corrupt,
// the block is moved to corrupt/ and reported to the master, and check
// returns true. why names the asker in the log.
func (m *Minion) check(id uint64, why string) (corrupt bool) {
	err := m.store.verify(id)
	if err == nil || m.ctx.Err() != nil {
		return false
	}
	if errors.Is(err, ErrBlockNotFound) {
		if why == "verify" {
			// The master lists it here (a damaged record is dropped
			// at start, for one): say it is not.
			m.reportBad(id, m.advertised(), err)
		}
		return false // for the scrubber: deleted meanwhile
	}
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) {
		// Not the block's fault: try it again later. Anything else (a
		// bad checksum, a short file, EIO from a bad sector) means this
		// replica cannot be trusted.
		m.Logger.Warn(why+": cannot read block", "block", blockName(id), "err", err)
		return false
	}
	m.Logger.Warn(why+": corrupt block", "block", blockName(id), "moved_to", "corrupt/", "err", err)
	// Out of the store first: the minion must neither serve it nor
	// report it as good again, whatever becomes of this report.
	if qerr := m.store.quarantine(id); qerr != nil {
		m.Logger.Error(why+": quarantine", "block", blockName(id), "err", qerr)
	}
	m.reportBad(id, m.advertised(), err)
	return true
}

// verifyLoop checks the blocks the master asks it to (others found them
// corrupt here), one at a time.
func (m *Minion) verifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case id := <-m.verifyQ:
			m.check(id, "verify")
		}
	}
}

// scrubLoop starts a pass over every block each ScrubInterval.
func (m *Minion) scrubLoop() {
	defer m.wg.Done()
	for {
		start := time.Now()
		n, bad := m.scrub(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		if n > 0 {
			m.Logger.Debug("scrub pass done", "blocks", n, "corrupt", bad, "took", time.Since(start))
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(max(0, m.ScrubInterval-time.Since(start))):
		}
	}
}

// scrub re-reads every block once, at most ScrubRate bytes a second, and
// reports each that fails its checksums. It returns the blocks read and
// how many were bad.
func (m *Minion) scrub(ctx context.Context) (n, bad int) {
	rate := m.ScrubRate
	if rate <= 0 {
		rate = DefaultScrubRate
	}
	blocks := m.store.report()
	m.scrubbing.begin(blocks)
	defer func() { m.scrubbing.end(ctx.Err() == nil) }()
	for _, r := range blocks {
		start := time.Now()
		corrupt := m.check(r.ID, "scrub")
		if ctx.Err() != nil {
			return n, bad
		}
		n++
		m.metrics.scrubbed.Add(float64(r.Size))
		m.scrubbing.step(r.Size, corrupt)
		if corrupt {
			bad++
		}
		// Pace the pass: this block may take size/rate seconds.
		pause := time.Duration(float64(r.Size)/float64(rate)*float64(time.Second)) - time.Since(start)
		if pause > 0 {
			select {
			case <-ctx.Done():
				return n, bad
			case <-time.After(pause):
			}
		}
	}
	return n, bad
}
