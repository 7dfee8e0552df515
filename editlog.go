// editlog.go is the master's write-ahead log of namespace changes.
//
// Every change a client is told about (a completed put, a delete) is
// appended here and fsynced before the RPC answers. Appends happen under the
// master's lock, in memory, so the log's order is the order in which the
// changes were applied; sync then writes and fsyncs outside that lock, and
// whoever syncs takes every record appended so far with it: concurrent
// writers share one fsync (group commit).
//
// The log is a series of segment files, DIR/edits-<first seq, 20 digits>.
// A record is framed as
//
//	length uint32 | seq uint64 | body crc32c uint32 | header crc32c uint32 | gob(edit)
//
// (big-endian), where length counts the gob bytes, the body CRC covers them
// and the header CRC covers the 16 bytes before it, so a damaged length is
// never trusted. A checkpoint (master.go) rolls to a new segment, writes the
// image with the last seq it contains, and removes the segments the image
// covers. Start-up loads the image and replays the records after its seq. A
// torn record at the very end of the last segment (a crash in the middle of
// an append, which no client was told about) is cut off: a bad record counts
// as torn only when no good record follows it. Any other damage stops the
// master with an error naming the file and offset.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrBadEditLog is returned when the edit log is damaged other than by a
// torn last record.
var ErrBadEditLog = errors.New("edit log is damaged")

const (
	editHeaderSize = 20
	maxEditSize    = 64 << 20
	segmentPrefix  = "edits-"
)

type editOp uint8

const (
	// opPut records a completed put: the file replaces whatever was at Path.
	opPut editOp = 1
	// opDelete records the removal of Path (and all below it if Recursive).
	opDelete editOp = 2
	// opMinion records a minion's id and address, so that a restarted
	// master can hand out replica addresses before the minions report in.
	opMinion editOp = 3
	// opRename records the move of the file or directory at Path to Dst
	// (replacing a file there if Force).
	opRename editOp = 4
	// opSetReplication records a new replication for the file at Path, or
	// every file below it.
	opSetReplication editOp = 5
	// opMkdir records a new directory at Path (with its missing parents
	// if Parents).
	opMkdir editOp = 6
	// opSetTimes records Time as the modification time of the file or
	// directory at Path (utimes, touch).
	opSetTimes editOp = 7
	// opSetMode records Mode as the permission bits of the file or
	// directory at Path (chmod).
	opSetMode editOp = 8
	// opFormat records a new cluster of replicated masters (ha.go): its
	// id (Cluster) and the key that signs write tokens (Key).
	opFormat editOp = 9
	// opMaster records one of replicated masters (ha.go): its id and the
	// addresses it serves clients on.
	opMaster editOp = 10
)

// editVersion is the V of the records this master writes. Records of
// version 0 were written before real directories: their puts always
// replaced a file at their path.
const editVersion = 1

// edit is one change of the master's persisted state: of the namespace
// (namespace.go applies it) or of the minion registry (opMinion). It
// carries everything its apply needs, times included, so that applying it
// is deterministic.
type edit struct {
	Op          editOp
	V           uint8 // editVersion when written
	Path        string
	File        imageFile   // opPut
	Recursive   bool        // opDelete
	Minion      imageMinion // opMinion
	Dst         string      // opRename
	Force       bool        // opPut, opRename: replace a file there
	Replication int         // opSetReplication
	Parents     bool        // opMkdir
	Mode        uint32      // opMkdir (of Path; 0: the default), opSetMode
	Cluster     string      // opFormat
	Key         []byte      // opFormat
	Master      imageMaster // opMaster
	// Call names the client's call that made the change, if it may send
	// it again (retrycache.go): opDelete, opRename, opMkdir.
	Call CallID
	// Time is when the change was made (Unix nanoseconds): the new
	// modification time of the directories it changes; of Path itself
	// for opSetTimes.
	Time int64
}

// editLog appends edits to the current segment. It is safe for concurrent use.
type editLog struct {
	dir string

	// mu guards the fields below; cond signals the end of a sync.
	mu        sync.Mutex
	cond      *sync.Cond
	f         *os.File // current segment
	pending   []byte   // framed records not yet written
	lastSeq   uint64   // last seq appended
	syncedSeq uint64   // last seq on disk
	syncing   bool     // a sync (or a roll) is writing
	segBytes  int64    // bytes written to the current segment
	syncs     uint64   // fsyncs done: fewer than records under group commit
	err       error    // sticky: after a failed write the log takes no more

	enc gobRecord[edit]
}

func segmentName(first uint64) string { return fmt.Sprintf("%s%020d", segmentPrefix, first) }

// openEditLog starts a new segment whose first record will be lastSeq+1.
func openEditLog(dir string, lastSeq uint64) (*editLog, error) {
	l := &editLog{dir: dir, lastSeq: lastSeq, syncedSeq: lastSeq}
	l.cond = sync.NewCond(&l.mu)
	f, err := l.createSegment(lastSeq + 1)
	if err != nil {
		return nil, err
	}
	l.f = f
	return l, nil
}

// createSegment creates (or empties) the segment that starts at first and
// makes its name durable.
func (l *editLog) createSegment(first uint64) (*os.File, error) {
	p := filepath.Join(l.dir, segmentName(first))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("edit log: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("edit log: %w", err)
	}
	return f, nil
}

// append adds e to the log in memory and returns its seq; sync(seq) makes
// it durable. The caller holds the master's lock, so seqs follow the order
// in which changes are applied.
func (l *editLog) append(e *edit) (uint64, error) {
	rec, err := l.enc.encode(make([]byte, editHeaderSize, 512), e)
	if err != nil {
		return 0, fmt.Errorf("edit log: encode: %w", err)
	}
	if len(rec)-editHeaderSize > maxEditSize {
		return 0, fmt.Errorf("edit log: record of %d bytes is too large", len(rec))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	l.lastSeq++
	binary.BigEndian.PutUint32(rec[0:], uint32(len(rec)-editHeaderSize))
	binary.BigEndian.PutUint64(rec[4:], l.lastSeq)
	binary.BigEndian.PutUint32(rec[12:], crc32.Checksum(rec[editHeaderSize:], castagnoli))
	binary.BigEndian.PutUint32(rec[16:], crc32.Checksum(rec[:16], castagnoli))
	l.pending = append(l.pending, rec...)
	return l.lastSeq, nil
}

// sync returns once every record up to seq is on disk.
func (l *editLog) sync(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.syncedSeq < seq {
		if l.err != nil {
			return l.err
		}
		if l.syncing {
			l.cond.Wait()
			continue
		}
		l.syncing = true
		buf, upto, f := l.pending, l.lastSeq, l.f
		l.pending = nil
		l.mu.Unlock()
		_, err := f.Write(buf)
		if err == nil {
			err = timedSync(fsyncEditLog, func() error { return fdatasync(f) })
		}
		l.mu.Lock()
		l.syncing = false
		if err != nil {
			l.err = fmt.Errorf("edit log: %w", err)
		} else {
			l.syncedSeq = upto
			l.segBytes += int64(len(buf))
			l.syncs++
		}
		l.cond.Broadcast()
	}
	return nil
}

// fdatasync flushes f's data and the metadata needed to read it back (its
// size), which is all an append-only log needs.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// synced is the last record on disk.
func (l *editLog) synced() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncedSeq
}

// last is the last record appended.
func (l *editLog) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastSeq
}

// size is the number of bytes written to the current segment.
func (l *editLog) size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.segBytes
}

// roll closes the current segment and starts a new one; records not yet
// written go to the new one. Appends go on meanwhile; syncs wait. It
// returns the last record of the closed segments.
func (l *editLog) roll() (uint64, error) {
	l.mu.Lock()
	for l.syncing {
		l.cond.Wait()
	}
	if l.err != nil {
		l.mu.Unlock()
		return 0, l.err
	}
	l.syncing = true // keeps syncs off both files while they change
	first := l.syncedSeq + 1
	old := l.f
	l.mu.Unlock()

	f, err := l.createSegment(first)

	l.mu.Lock()
	l.syncing = false
	if err == nil {
		l.f, l.segBytes = f, 0
	}
	l.cond.Broadcast()
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return first - 1, old.Close()
}

// close syncs what is pending and closes the segment.
func (l *editLog) close() error {
	l.mu.Lock()
	last := l.lastSeq
	l.mu.Unlock()
	err := l.sync(last)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = errors.New("edit log closed")
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// segments lists the segment files in dir with their first seqs, in order.
func segments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, e := range entries {
		s, ok := strings.CutPrefix(e.Name(), segmentPrefix)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || segmentName(n) != e.Name() {
			continue
		}
		firsts = append(firsts, n)
	}
	slices.Sort(firsts)
	return firsts, nil
}

// removeSegmentsBefore deletes the segments all of whose records are at or
// below seq: those followed by a segment that starts at or below seq+1.
func removeSegmentsBefore(dir string, seq uint64) error {
	firsts, err := segments(dir)
	if err != nil {
		return err
	}
	removed := false
	for i := 0; i+1 < len(firsts); i++ {
		if firsts[i+1] <= seq+1 {
			if err := os.Remove(filepath.Join(dir, segmentName(firsts[i]))); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}

// replayEdits calls apply for every record after seq after, in order, and
// returns the last seq found. It cuts a torn record off the end of the last
// segment, and says so with torn.
func replayEdits(dir string, after uint64, apply func(*edit) error) (last uint64, torn bool, err error) {
	return replayEditsUpTo(dir, after, math.MaxUint64, apply)
}

// replayEditsUpTo is replayEdits of the segments that start at or before
// upTo only. Short of the end of the log, a torn record is damage.
func replayEditsUpTo(dir string, after, upTo uint64, apply func(*edit) error) (last uint64, torn bool, err error) {
	firsts, err := segments(dir)
	if err != nil {
		return 0, false, err
	}
	firsts = slices.DeleteFunc(firsts, func(first uint64) bool { return first > upTo })
	last = after
	for i, first := range firsts {
		p := filepath.Join(dir, segmentName(first))
		isLast := i == len(firsts)-1 && upTo == math.MaxUint64
		if first > last+1 {
			return 0, false, fmt.Errorf("%w: %s starts at record %d but the image and earlier segments end at %d",
				ErrBadEditLog, p, first, last)
		}
		if last, torn, err = replaySegment(p, isLast, last, apply); err != nil {
			return 0, false, err
		}
	}
	return last, torn, nil
}

// recordHeader is a decoded record header; ok is false when its CRC fails.
type recordHeader struct {
	length  int64
	seq     uint64
	bodyCRC uint32
	ok      bool
}

func parseHeader(b []byte) recordHeader {
	return recordHeader{
		length:  int64(binary.BigEndian.Uint32(b[0:])),
		seq:     binary.BigEndian.Uint64(b[4:]),
		bodyCRC: binary.BigEndian.Uint32(b[12:]),
		ok:      crc32.Checksum(b[:16], castagnoli) == binary.BigEndian.Uint32(b[16:]),
	}
}

// goodRecordAfter reports whether a whole, good record starts anywhere in
// data at or after from: then a bad record before it is damage, not a torn
// append.
func goodRecordAfter(data []byte, from int64) bool {
	for p := from; p+editHeaderSize <= int64(len(data)); p++ {
		h := parseHeader(data[p:])
		end := p + editHeaderSize + h.length
		if h.ok && h.length <= maxEditSize && end <= int64(len(data)) &&
			crc32.Checksum(data[p+editHeaderSize:end], castagnoli) == h.bodyCRC {
			return true
		}
	}
	return false
}

// replaySegment applies the records of one segment after seq last and
// returns the new last seq; torn reports that it cut a torn record off the
// end.
func replaySegment(path string, isLast bool, last uint64, apply func(*edit) error) (_ uint64, torn bool, err error) {
	// The records are read one at a time, through a small buffer: a
	// segment is up to about CheckpointBytes, and a checkpoint behind the
	// live namespace replays it while the master runs.
	f, err := os.Open(path)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	size := st.Size()
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	bad := func(why string) (uint64, bool, error) {
		if !isLast {
			return 0, false, fmt.Errorf("%w: %s at offset %d: %s", ErrBadEditLog, path, off, why)
		}
		// Tell a bad record from a torn one by looking past it (the only
		// time the rest of a segment is read at once).
		rest := make([]byte, size-off)
		if _, err := f.ReadAt(rest, off); err != nil {
			return 0, false, err
		}
		if goodRecordAfter(rest, 1) {
			return 0, false, fmt.Errorf("%w: %s at offset %d: %s", ErrBadEditLog, path, off, why)
		}
		// The crash came in the middle of this append; its put was never
		// acknowledged. Cut it off so that the next record follows a good one.
		if err := os.Truncate(path, off); err != nil {
			return 0, false, err
		}
		if err := syncFile(path); err != nil {
			return 0, false, err
		}
		torn = true
		return last, torn, nil
	}
	hdr := make([]byte, editHeaderSize)
	var body []byte
	var rec gobRecord[edit]
	for off < size {
		if size-off < editHeaderSize {
			return bad(fmt.Sprintf("record header cut short after %d bytes", size-off))
		}
		if _, err := io.ReadFull(r, hdr); err != nil {
			return 0, false, fmt.Errorf("%s at offset %d: %w", path, off, err)
		}
		h := parseHeader(hdr)
		if !h.ok {
			return bad("record header checksum mismatch")
		}
		end := off + editHeaderSize + h.length
		if h.length > maxEditSize {
			return bad(fmt.Sprintf("bad record length %d", h.length))
		}
		if end > size {
			return bad(fmt.Sprintf("record of %d bytes runs past the end of the file", h.length))
		}
		if cap(body) < int(h.length) {
			body = make([]byte, h.length)
		}
		body = body[:h.length]
		if _, err := io.ReadFull(r, body); err != nil {
			return 0, false, fmt.Errorf("%s at offset %d: %w", path, off, err)
		}
		if crc32.Checksum(body, castagnoli) != h.bodyCRC {
			return bad("record checksum mismatch")
		}
		if h.seq <= last {
			off = end
			continue // covered by the image already
		}
		if h.seq != last+1 {
			return 0, false, fmt.Errorf("%w: %s at offset %d: record %d follows record %d", ErrBadEditLog, path, off, h.seq, last)
		}
		e := new(edit)
		if err := rec.decode(body, e); err != nil {
			return 0, false, fmt.Errorf("%w: %s at offset %d: %v", ErrBadEditLog, path, off, err)
		}
		if err := apply(e); err != nil {
			return 0, false, fmt.Errorf("%w: %s at offset %d: record %d: %v", ErrBadEditLog, path, off, h.seq, err)
		}
		last = h.seq
		off = end
	}
	return last, torn, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
