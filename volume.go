// volume.go packs small blocks into append-only volume files, as Haystack
// and SeaweedFS do. A block of a file costs a create, two fsyncs, two
// renames and a directory fsync; a packed block costs one append to a
// shared file, and the appends of concurrent writers share one fdatasync
// (group commit). Blocks of up to the minion's --pack-max bytes that
// arrive whole, in one packet, are packed; the others get files
// (blockstore.go).
//
// Layout: DIR/volumes/vol_<8 hex digits>, numbered in the order written.
// A volume is a sequence of records:
//
//	magic "DFSV" | kind u8 (1) | state u8 | 2 bytes zero | block id u64 | size u32 | header CRC32C u32
//	data (size bytes) | one CRC32C per 512 bytes of data
//
// The header CRC covers every header byte but state, which is 0 while the
// block is live. Deleting a block writes stateDeleted over that one byte
// in place (a one-byte write cannot tear): the record stays, as garbage,
// and nothing else refers to it, so no tombstone can be lost or outlive
// its record. The mark is synced before the space of the record's data is
// given back (a hole punched), but a delete does not fail when the mark
// cannot be written or synced: a block whose mark was lost comes back, and
// the master deletes it again as an orphan.
//
// Volumes are written by one goroutine, batch by batch: a batch is
// written, fdatasynced and only then acknowledged, and a full volume is
// synced before the next begins, so only the newest volume can end in a
// torn batch. Load checks the records of the newest volume against their
// CRCs, marks damaged ones deleted and cuts a bad tail off, then goes on
// appending to it; older volumes were checked when they were the newest,
// and only their headers are read. A record with a good header is skipped
// by its length, never searched for records inside (a block's bytes may
// look like records); only after a bad header does the scan look for the
// next good record.
//
// Deleted blocks leave garbage; a volume whose live records take less than
// half of it (and at least compactMinGarbage), or none, is compacted: its
// live records are appended anew, and the file removed.
//
// A volumeSet owns all of this for a blockStore: the files, the index of
// live records, the packer, delete marks and compaction, under its own
// lock. The store hands it the small blocks it puts, and asks it first
// when it reads, verifies, removes, reports or counts a block.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var volumeMagic = [4]byte{'D', 'F', 'S', 'V'}

const (
	volumeHeaderSize = 24
	recBlock         = 1    // the only kind of record
	stateDeleted     = 0xDD // header byte 5 of a deleted block's record
	// volumeMaxSize is the size past which appends go to a new volume.
	volumeMaxSize = 64 << 20
	// maxBatchBytes bounds the bytes of one group commit.
	maxBatchBytes = 8 << 20
	// DefaultPackMax is the largest block packed into a volume: one packet.
	DefaultPackMax = packetSize
)

// volume is one volume file. Readers hold mu for reading while they use f;
// retiring the volume takes it for writing before it closes f.
type volume struct {
	seq  uint32
	path string

	mu sync.RWMutex
	f  *os.File
	// marks is a second handle, for delete marks and their syncs only:
	// Linux reports a writeback error to one sync per open file, and a
	// packer's sync on f must not take the error of a mark's page, which
	// would let its delete punch a hole under a mark that is not on disk.
	marks  *os.File
	closed bool

	// Guarded by the volume set's mu.
	size int64 // bytes of records written (and synced)
	live int64 // bytes of the records of blocks in the index
}

// packedLoc is where a packed block's record starts.
type packedLoc struct {
	vol *volume
	off int64
}

func volumeName(seq uint32) string { return fmt.Sprintf("vol_%08x", seq) }

func parseVolumeName(name string) (uint32, bool) {
	hex, ok := strings.CutPrefix(name, "vol_")
	if !ok || len(hex) != 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 32)
	return uint32(n), err == nil && volumeName(uint32(n)) == name
}

// recordSize is the bytes of the record of a block of size bytes.
func recordSize(size int64) int64 {
	return volumeHeaderSize + size + 4*((size+bytesPerChecksum-1)/bytesPerChecksum)
}

// headerCRC is the CRC32C of a record header's first 20 bytes but its
// state byte (5), which changes in place.
func headerCRC(h []byte) uint32 {
	return crc32.Update(crc32.Checksum(h[:5], castagnoli), castagnoli, h[6:20])
}

// appendRecord appends the record of block id to dst.
func appendRecord(dst []byte, id uint64, data []byte, crcs []uint32) []byte {
	var h [volumeHeaderSize]byte
	copy(h[:], volumeMagic[:])
	h[4] = recBlock
	binary.BigEndian.PutUint64(h[8:], id)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[20:], headerCRC(h[:]))
	dst = append(dst, h[:]...)
	dst = append(dst, data...)
	return appendCRCs(dst, crcs)
}

// volumeHeader is a decoded record header.
type volumeHeader struct {
	id      uint64
	size    int64
	deleted bool // any state but 0 (a flipped bit too) counts as deleted
}

// parseRecordHeader decodes h, or reports that it is not a good header.
func parseRecordHeader(h []byte) (volumeHeader, bool) {
	if len(h) < volumeHeaderSize || [4]byte(h[:4]) != volumeMagic || headerCRC(h) != binary.BigEndian.Uint32(h[20:]) {
		return volumeHeader{}, false
	}
	v := volumeHeader{id: binary.BigEndian.Uint64(h[8:]), size: int64(binary.BigEndian.Uint32(h[16:])), deleted: h[5] != 0}
	return v, h[4] == recBlock && h[6] == 0 && h[7] == 0 && v.size <= packetSize
}

// volumeScan reads a volume's records in order.
type volumeScan struct {
	f    *os.File
	size int64
	buf  []byte
	// headersOnly skips the check of records' data against their CRCs.
	headersOnly bool
	// win is a window of the file from winOff, through which headers are
	// read: one read for many small records.
	win    []byte
	winOff int64
}

// scanWindow is the size of volumeScan's window onto the file.
const scanWindow = 256 << 10

// header returns the volumeHeaderSize bytes at off (off+volumeHeaderSize
// <= v.size), from the window if they are in it.
func (v *volumeScan) header(off int64) ([]byte, error) {
	if off < v.winOff || off+volumeHeaderSize > v.winOff+int64(len(v.win)) {
		if v.win == nil {
			v.win = make([]byte, scanWindow)
		}
		n := min(int64(scanWindow), v.size-off)
		if _, err := v.f.ReadAt(v.win[:n], off); err != nil {
			v.win = v.win[:0]
			return nil, err
		}
		v.win, v.winOff = v.win[:n], off
	}
	return v.win[off-v.winOff:][:volumeHeaderSize], nil
}

// recordState is what record finds at an offset.
type recordState int

const (
	recGood      recordState = iota // a whole record, its data checked (unless headersOnly or deleted)
	recBadHeader                    // no good header: the record's length is not known
	recCut                          // a good header, cut short by the end of the file
	recBadData                      // a good header, data that fails its CRCs
)

// record reads and checks the record at off.
func (v *volumeScan) record(off int64) (volumeHeader, recordState, error) {
	if off+volumeHeaderSize > v.size {
		return volumeHeader{}, recBadHeader, nil
	}
	hb, err := v.header(off)
	if err != nil {
		return volumeHeader{}, recBadHeader, err
	}
	h, ok := parseRecordHeader(hb)
	switch {
	case !ok:
		return volumeHeader{}, recBadHeader, nil
	case off+recordSize(h.size) > v.size:
		return h, recCut, nil
	case h.deleted || v.headersOnly:
		return h, recGood, nil
	}
	n := recordSize(h.size) - volumeHeaderSize
	if int64(cap(v.buf)) < n {
		v.buf = make([]byte, n)
	}
	body := v.buf[:n]
	if _, err := v.f.ReadAt(body, off+volumeHeaderSize); err != nil {
		return h, recBadData, err
	}
	if verifyChecksums(body[:h.size], parseCRCs(body[h.size:]), 0) != nil {
		return h, recBadData, nil
	}
	return h, recGood, nil
}

// next finds the first good record after off, for a scan to resume past
// damage. It returns -1 if there is none.
func (v *volumeScan) next(off int64) (int64, error) {
	const window = 1 << 20
	buf := make([]byte, window+volumeHeaderSize)
	for pos := off + 1; pos+volumeHeaderSize <= v.size; pos += window {
		n, err := v.f.ReadAt(buf[:min(int64(len(buf)), v.size-pos)], pos)
		if err != nil && err != io.EOF {
			return -1, err
		}
		for i := 0; ; i++ {
			j := bytes.Index(buf[i:n], volumeMagic[:])
			if j < 0 || i+j >= window {
				break
			}
			i += j
			if _, st, err := v.record(pos + int64(i)); err != nil {
				return -1, err
			} else if st == recGood {
				return pos + int64(i), nil
			}
		}
	}
	return -1, nil
}

// scan calls fn for every good record of the volume in order (deleted ones
// too: h.deleted) and returns the end of the last good one.
// A record with a good header and bad data is passed to damaged and
// skipped; a record cut short by the end of the file ends the scan (a torn
// tail); after a bad header the scan goes on at the next good record, if
// any, and logs what it skipped.
func (v *volumeScan) scan(name string, logger *slog.Logger, fn func(h volumeHeader, off int64), damaged func(h volumeHeader, off int64)) (end int64, err error) {
	for off := int64(0); off < v.size; {
		h, st, err := v.record(off)
		if err != nil {
			return end, err
		}
		switch st {
		case recGood:
			fn(h, off)
			off += recordSize(h.size)
			end = off
			continue
		case recCut:
			return end, nil
		case recBadData:
			logger.Error("volume: a damaged block, dropped here; the master copies it again from other replicas",
				"volume", name, "block", blockName(h.id), "at", off)
			if damaged != nil {
				damaged(h, off)
			}
			off += recordSize(h.size)
			continue
		}
		nxt, err := v.next(off)
		if err != nil {
			return end, err
		}
		if nxt < 0 {
			break // a torn tail, or damage up to the end
		}
		logger.Error("volume: skipped damaged records; their blocks are lost here and copied again from other replicas",
			"volume", name, "from", off, "to", nxt)
		off = nxt
	}
	return end, nil
}

// packReq is an append waiting for the group commit, or a roll request.
type packReq struct {
	rec  []byte
	roll bool // close the active volume; no record
	// durable, if set, is called with the set's lock held once rec is
	// durable, before anyone is answered: the index never lags the disk.
	durable func(packedLoc)
	done    chan<- error // the outcome: nil once durable (or rolled)
}

// packer appends records to the active volume, one batch at a time.
type packer struct {
	dir    string
	logger *slog.Logger
	// lock is the volume set's mu, taken to index a batch.
	lock sync.Locker
	// opened is called, with lock held, with every new volume before its
	// first record.
	opened func(*volume)

	reqs chan packReq
	quit chan struct{}
	done chan struct{}

	// Owned by run.
	active  *volume
	nextSeq uint32
	buf     []byte
}

func (p *packer) start() {
	p.reqs = make(chan packReq, 256)
	p.quit = make(chan struct{})
	p.done = make(chan struct{})
	go p.run()
}

var errStoreClosed = errors.New("block store closed")

// append queues rec and waits until it is durable; durable (if not nil)
// is called first, with the set's lock held.
func (p *packer) append(rec []byte, durable func(packedLoc)) error {
	return p.queue(rec, durable)()
}

// queue queues rec and returns the wait for it, so that several records
// may be queued and then waited for together.
func (p *packer) queue(rec []byte, durable func(packedLoc)) (wait func() error) {
	ch := make(chan error, 1)
	if !p.send(packReq{rec: rec, durable: durable, done: ch}) {
		return func() error { return errStoreClosed }
	}
	return func() error {
		select {
		case err := <-ch:
			return err
		case <-p.done:
			return errStoreClosed
		}
	}
}

// roll makes the next append start a new volume and returns once the
// active one takes no more records.
func (p *packer) roll() {
	ch := make(chan error, 1)
	if p.send(packReq{roll: true, done: ch}) {
		select {
		case <-ch:
		case <-p.done:
		}
	}
}

func (p *packer) send(r packReq) bool {
	select {
	case p.reqs <- r:
		return true
	case <-p.quit:
		return false
	}
}

func (p *packer) stop() {
	close(p.quit)
	<-p.done
}

func (p *packer) run() {
	defer close(p.done)
	for {
		var batch []packReq
		select {
		case r := <-p.reqs:
			batch = append(batch, r)
		case <-p.quit:
			// Write what is queued and stop.
			for drained := false; !drained; {
				select {
				case r := <-p.reqs:
					if r.roll {
						r.done <- nil
					} else {
						batch = append(batch, r)
					}
				default:
					drained = true
				}
			}
			if len(batch) > 0 {
				p.commit(batch)
			}
			return
		}
		n := len(batch[0].rec)
	drain:
		for n < maxBatchBytes && !batch[len(batch)-1].roll {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
				n += len(r.rec)
			default:
				break drain
			}
		}
		p.commit(batch)
	}
}

// commit writes and syncs the records of batch (a roll, if any, comes
// last), indexes them and answers each request.
func (p *packer) commit(batch []packReq) {
	recs := batch
	var roll *packReq
	if last := &batch[len(batch)-1]; last.roll {
		recs, roll = batch[:len(batch)-1], last
	}
	if len(recs) > 0 {
		err := p.write(recs)
		for _, r := range recs {
			r.done <- err
		}
	}
	if roll != nil {
		p.active = nil
		roll.done <- nil
	}
}

// write appends recs to the active volume, starting a new one when it is
// full, fdatasyncs it and indexes them. After a failed write the volume
// takes no more records.
func (p *packer) write(recs []packReq) error {
	var n int64
	for _, r := range recs {
		n += int64(len(r.rec))
	}
	if p.active != nil && p.active.size > 0 && p.active.size+n > volumeMaxSize {
		p.active = nil // all synced already, by the batches that wrote it
	}
	if p.active == nil {
		v, err := p.create()
		if err != nil {
			return err
		}
		p.active = v
	}
	v := p.active
	p.buf = p.buf[:0]
	for _, r := range recs {
		p.buf = append(p.buf, r.rec...)
	}
	_, err := v.f.WriteAt(p.buf, v.size)
	if err == nil {
		err = timedSync(fsyncVolume, func() error { return fdatasync(v.f) })
	}
	if cap(p.buf) > 2*maxBatchBytes {
		p.buf = nil
	}
	if err != nil {
		// Take back what may have reached the file, so that no part of
		// an unacknowledged batch is read as a block at the next load,
		// and start a new volume.
		if terr := v.f.Truncate(v.size); terr != nil {
			p.logger.Warn("volume: could not cut off a failed append", "volume", v.path, "err", terr)
		}
		p.active = nil
		return fmt.Errorf("append to %s: %w", v.path, err)
	}
	p.lock.Lock()
	defer p.lock.Unlock()
	off := v.size
	for _, r := range recs {
		if r.durable != nil {
			r.durable(packedLoc{vol: v, off: off})
		}
		off += int64(len(r.rec))
	}
	v.size = off
	return nil
}

// create makes the next volume file, durable in its directory.
func (p *packer) create() (*volume, error) {
	seq := p.nextSeq
	path := filepath.Join(p.dir, volumeName(seq))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syncDir(p.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	marks, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	p.nextSeq++
	v := &volume{seq: seq, path: path, f: f, marks: marks}
	p.lock.Lock()
	p.opened(v)
	p.lock.Unlock()
	return v, nil
}

// ---- the volume set ----

// compactMinGarbage is the least garbage worth compacting a volume for.
const compactMinGarbage = 4 << 20

// volumeOwner is what a volumeSet asks of the store that holds it.
type volumeOwner interface {
	// hasFile reports whether block id is kept outside the volumes, in a
	// file of its own. Such a block's file wins over a record of it, at
	// load and when a packed copy becomes durable: the record is garbage.
	// The set calls it with its mu held, so it must not call back into
	// the set.
	hasFile(id uint64) bool
	// keepCorrupt keeps a damaged block, data and stored checksums, for
	// an operator to salvage. The set calls it without its mu.
	keepCorrupt(id uint64, data []byte, crcs []uint32) error
}

// volumeSet is the packed blocks of a store: the volume files of one
// directory, the index of their live records, the packer that appends to
// them and the compactor that rewrites them. It is safe for concurrent
// use.
//
// Durability: put returns once the record is fdatasynced (with those of
// concurrent puts: group commit), and the block enters the index only
// then, so the index never lags the disk. remove takes blocks out of the
// index at once; their records are marked deleted, the marks synced, and
// only then the space of their data given back (deleteRecords).
//
// Lock order: a volume's mu, then the set's mu, then the owner's lock
// (hasFile). Readers hold a volume's mu while they check that the index
// still places their block there (read, compact), and the packer indexes
// a batch with the set's mu held (packer.write).
type volumeSet struct {
	dir    string
	logger *slog.Logger
	owner  volumeOwner

	// mu guards the fields below and the accounting (size, live) of
	// every volume.
	mu      sync.Mutex
	index   map[uint64]packedRec // the live records: block id -> record
	volumes map[uint32]*volume
	// active is the volume appended to, or the last one if rolled.
	active *volume
	used   int64 // bytes of the blocks in index

	pack        *packer
	compactWake chan struct{}
	compactDone chan struct{}
	closeOnce   sync.Once
}

// packedRec is the record at loc of a block of size bytes.
type packedRec struct {
	loc  packedLoc
	size int64
}

// openVolumeSet indexes the blocks of every volume in dir (made if need
// be) and starts the packer, appending to the newest volume, and the
// compactor. Blocks that owner keeps as files are left out of the index.
func openVolumeSet(dir string, logger *slog.Logger, owner volumeOwner) (*volumeSet, error) {
	vs := &volumeSet{dir: dir, logger: logger, owner: owner, index: make(map[uint64]packedRec), volumes: make(map[uint32]*volume),
		compactWake: make(chan struct{}, 1), compactDone: make(chan struct{})}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []uint32
	for _, e := range ents {
		if seq, ok := parseVolumeName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	var appendTo *volume // the newest, if appends may go on in it
	for i, seq := range seqs {
		v, whole, err := vs.load(seq, i == len(seqs)-1)
		if err != nil {
			for _, v := range vs.volumes {
				v.closeFiles()
			}
			return nil, err
		}
		if whole && v.size < volumeMaxSize {
			appendTo = v
		} else {
			appendTo = nil
		}
	}
	vs.pack = &packer{dir: dir, logger: logger, lock: &vs.mu, opened: func(v *volume) {
		vs.volumes[v.seq] = v
		vs.active = v
	}}
	if len(seqs) > 0 {
		vs.pack.nextSeq = seqs[len(seqs)-1] + 1
	}
	if appendTo != nil {
		vs.pack.active, vs.active = appendTo, appendTo
	}
	vs.pack.start()
	go vs.compactor()
	vs.wakeCompactor() // for what an earlier process left
	return vs, nil
}

// load indexes volume seq. Only the newest volume can hold a batch that
// was never acknowledged: its records are checked against their CRCs,
// damaged ones are marked deleted and a bad tail is cut off. The others
// were synced whole before the next one began and were checked when they
// were the newest, so only their headers are read (the scrubber checks the
// data later, as for block files). A volume that cannot be read to its end
// keeps what was read before the error, and whole is false: it takes no
// appends. It runs before the packer and the compactor start.
func (vs *volumeSet) load(seq uint32, newest bool) (*volume, bool, error) {
	path := filepath.Join(vs.dir, volumeName(seq))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	marks, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		f.Close()
		return nil, false, err
	}
	v := &volume{seq: seq, path: path, f: f, marks: marks}
	var damaged []int64
	sc := &volumeScan{f: f, size: fi.Size(), headersOnly: !newest}
	end, err := sc.scan(volumeName(seq), vs.logger, func(h volumeHeader, off int64) {
		if h.deleted {
			return
		}
		// Stored twice (a copy after a delete whose mark a crash lost):
		// the later record wins.
		vs.unindexLocked(h.id)
		if vs.owner.hasFile(h.id) {
			return // a file of the same block: keep that one
		}
		vs.indexLocked(h.id, packedRec{packedLoc{vol: v, off: off}, h.size})
	}, func(h volumeHeader, off int64) {
		damaged = append(damaged, off)
	})
	v.size = fi.Size()
	switch {
	case err != nil:
		vs.logger.Error("volume: read failed; its blocks after the failure are not served", "volume", path, "at", end, "err", err)
		vs.volumes[seq] = v
		return v, false, nil
	case newest:
		// Damaged records that good ones follow are marked, so that they
		// stay out when this volume is read headers only; a damaged or
		// torn tail is a batch never acknowledged: it is cut off.
		for _, off := range damaged {
			if off < end {
				markDeleted(f, off)
			}
		}
		if end < fi.Size() {
			vs.logger.Warn("volume: cut off a torn tail (a write that was never acknowledged)",
				"volume", volumeName(seq), "at", end, "size", fi.Size())
			if err := f.Truncate(end); err != nil {
				v.closeFiles()
				return nil, false, fmt.Errorf("truncate %s: %w", path, err)
			}
			v.size = end
		}
		if len(damaged) > 0 || end < fi.Size() {
			if err := f.Sync(); err != nil {
				v.closeFiles()
				return nil, false, fmt.Errorf("sync %s: %w", path, err)
			}
		}
	}
	vs.volumes[seq] = v
	return v, true, nil
}

// markDeleted marks the record at off of f deleted, in place. It is best
// effort: an unmarked record comes back as an orphan, which the master
// deletes again.
func markDeleted(f *os.File, off int64) error {
	_, err := f.WriteAt([]byte{stateDeleted}, off+5)
	return err
}

// put appends the record of block id, whole in data (one packet at most,
// checked against crcs by the caller), and returns once it is durable;
// only then is the block indexed, and readable. A block that is in the
// index already, or that the owner keeps as a file, by then (a resend)
// stays as it was: the new record is garbage and deleted again.
func (vs *volumeSet) put(id uint64, data []byte, crcs []uint32) error {
	size := int64(len(data))
	rec := appendRecord(make([]byte, 0, recordSize(size)), id, data, crcs)
	var dup packedLoc
	err := vs.pack.append(rec, func(loc packedLoc) {
		if _, ok := vs.index[id]; ok || vs.owner.hasFile(id) {
			dup = loc // stored meanwhile (a resend): this record is garbage
			return
		}
		vs.indexLocked(id, packedRec{loc, size})
	})
	if err == nil && dup.vol != nil {
		vs.deleteRecords([]packedRec{{dup, size}})
	}
	return err
}

// indexLocked puts block id, not in the index, in it at rec. vs.mu is
// held.
func (vs *volumeSet) indexLocked(id uint64, rec packedRec) {
	vs.index[id] = rec
	vs.used += rec.size
	rec.loc.vol.live += recordSize(rec.size)
}

// unindexLocked takes block id out of the index and returns where its
// record is, for the caller to delete it without vs.mu (deleteRecords).
// vs.mu is held.
func (vs *volumeSet) unindexLocked(id uint64) (packedRec, bool) {
	rec, ok := vs.index[id]
	if !ok {
		return packedRec{}, false
	}
	delete(vs.index, id)
	vs.used -= rec.size
	rec.loc.vol.live -= recordSize(rec.size)
	if vs.compactable(rec.loc.vol) {
		vs.wakeCompactor()
	}
	return rec, true
}

// remove deletes the packed blocks among ids, together: their records
// with one fdatasync per volume (see deleteRecords). It returns the ids
// that are not packed, for the owner to look for elsewhere.
func (vs *volumeSet) remove(ids []uint64) (others []uint64) {
	var recs []packedRec
	vs.mu.Lock()
	for _, id := range ids {
		if rec, ok := vs.unindexLocked(id); ok {
			recs = append(recs, rec)
		} else {
			others = append(others, id)
		}
	}
	vs.mu.Unlock()
	vs.deleteRecords(recs)
	return others
}

// quarantine removes packed block id after handing a copy of it, as it
// is, to the owner's keepCorrupt, and reports whether id was packed. A
// block that cannot be read whole (EIO, cut short) is removed all the
// same.
func (vs *volumeSet) quarantine(id uint64) bool {
	if size, ok := vs.sizeOf(id); ok {
		data := make([]byte, size)
		crcs, ok, err := vs.read(id, 0, data)
		if ok && err == nil {
			err = vs.owner.keepCorrupt(id, data, crcs)
		}
		if err != nil {
			vs.logger.Warn("quarantine: could not keep a copy", "block", blockName(id), "err", err)
		}
	}
	return len(vs.remove([]uint64{id})) == 0
}

// deleteRecords marks the records recs deleted, out of the index already,
// and gives the disk space of their data back at once, by punching holes
// in their volumes: a full disk need not wait for compaction, which itself
// needs room to copy. The marks are made durable first, with one
// fdatasync per volume: a hole under a record still marked live after a
// power loss would come back, in a volume read by its headers only, as a
// block of zeros. If a mark cannot be made durable, no hole is punched
// (compaction frees the space). Volumes gone meanwhile are skipped. Holes
// are punched with v.mu held for writing, so readers that found a record
// before it left the index are done with it, or see that it left (read).
func (vs *volumeSet) deleteRecords(recs []packedRec) {
	var vols []*volume
	marked := make([]bool, len(recs))
	for i, r := range recs {
		v := r.loc.vol
		v.mu.RLock()
		if !v.closed {
			if err := markDeleted(v.marks, r.loc.off); err != nil {
				vs.logger.Warn("volume: could not mark a deleted block; compaction will free its space", "volume", volumeName(v.seq), "err", err)
			} else {
				marked[i] = true
			}
		}
		v.mu.RUnlock()
		if !slices.Contains(vols, v) {
			vols = append(vols, v)
		}
	}
	synced := make(map[*volume]bool, len(vols))
	for _, v := range vols {
		v.mu.RLock()
		if !v.closed {
			if err := fdatasync(v.marks); err != nil {
				vs.logger.Warn("volume: could not sync delete marks; compaction will free their space", "volume", volumeName(v.seq), "err", err)
			} else {
				synced[v] = true
			}
		}
		v.mu.RUnlock()
	}
	for i, r := range recs {
		v := r.loc.vol
		if !synced[v] || !marked[i] {
			continue
		}
		v.mu.Lock()
		if !v.closed {
			if err := punchHole(v.f, r.loc.off+volumeHeaderSize, recordSize(r.size)-volumeHeaderSize); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
				vs.logger.Warn("volume: could not free a deleted block's space; compaction will", "volume", volumeName(v.seq), "err", err)
			}
		}
		v.mu.Unlock()
	}
}

// sizeOf returns the size of packed block id, and whether it is packed.
func (vs *volumeSet) sizeOf(id uint64) (int64, bool) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	rec, ok := vs.index[id]
	return rec.size, ok
}

// stillAt reports whether block id's record is still at loc.
func (vs *volumeSet) stillAt(id uint64, loc packedLoc) bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.index[id].loc == loc
}

// read fills data from offset off of packed block id and returns the
// stored checksums that cover it; ok is false if id is not packed. off is
// a multiple of bytesPerChecksum. The volume's mu is held for reading
// while its file is read, so no hole is punched and no file closed under
// the read; a block that moved (compaction) or left (remove) before is
// looked up again.
func (vs *volumeSet) read(id uint64, off int64, data []byte) (crcs []uint32, ok bool, err error) {
	for range 3 {
		vs.mu.Lock()
		rec, ok := vs.index[id]
		vs.mu.Unlock()
		if !ok {
			return nil, false, nil
		}
		if off+int64(len(data)) > rec.size {
			return nil, true, fmt.Errorf("%w: read of %d bytes at offset %d of %s (%d bytes)", ErrBadArg, len(data), off, blockName(id), rec.size)
		}
		v := rec.loc.vol
		v.mu.RLock()
		if v.closed || !vs.stillAt(id, rec.loc) {
			v.mu.RUnlock()
			continue // compacted or deleted under us: look again
		}
		crcs, err := readRecordRange(v.f, rec.loc.off, rec.size, off, data)
		v.mu.RUnlock()
		if err != nil {
			err = fmt.Errorf("read %s in %s: %w", blockName(id), volumeName(v.seq), err)
		}
		return crcs, true, err
	}
	return nil, true, fmt.Errorf("read %s: its volume keeps moving", blockName(id))
}

// readRecordRange fills data from the record at rec (of a block of size
// bytes), from offset off of the block, and returns the checksums of it.
func readRecordRange(f *os.File, rec, size, off int64, data []byte) ([]uint32, error) {
	if _, err := f.ReadAt(data, rec+volumeHeaderSize+off); err != nil {
		return nil, noEOF(err)
	}
	n := (int64(len(data)) + bytesPerChecksum - 1) / bytesPerChecksum
	raw := make([]byte, 4*n)
	if _, err := f.ReadAt(raw, rec+volumeHeaderSize+size+4*(off/bytesPerChecksum)); err != nil {
		return nil, noEOF(err)
	}
	return parseCRCs(raw), nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// report lists the packed blocks.
func (vs *volumeSet) report() []BlockReport {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	out := make([]BlockReport, 0, len(vs.index))
	for id, rec := range vs.index {
		out = append(out, BlockReport{ID: id, Size: rec.size})
	}
	return out
}

// usage returns the bytes and number of packed blocks.
func (vs *volumeSet) usage() (used int64, n int) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.used, len(vs.index)
}

func (vs *volumeSet) wakeCompactor() {
	select {
	case vs.compactWake <- struct{}{}:
	default:
	}
}

// compactable reports whether v is worth compacting: it takes no more
// records and holds no live one, or live records take less than half of
// it and the rest is worth the copying. vs.mu is held.
func (vs *volumeSet) compactable(v *volume) bool {
	if v.live == 0 && v != vs.active {
		return true
	}
	return v.live*2 < v.size && v.size-v.live >= compactMinGarbage
}

// compactor compacts volumes, oldest first, when a delete (or the start)
// wakes it.
func (vs *volumeSet) compactor() {
	defer close(vs.compactDone)
	for {
		select {
		case <-vs.compactWake:
		case <-vs.pack.quit:
			return
		}
		for {
			vs.mu.Lock()
			var v *volume
			for _, c := range vs.volumes {
				if vs.compactable(c) && (v == nil || c.seq < v.seq) {
					v = c
				}
			}
			vs.mu.Unlock()
			if v == nil {
				break
			}
			if err := vs.compact(v); err != nil {
				if !errors.Is(err, errStoreClosed) {
					vs.logger.Warn("volume: compaction failed", "volume", volumeName(v.seq), "err", err)
				}
				break
			}
		}
	}
}

// compact moves v's live blocks to the active volume and removes v.
func (vs *volumeSet) compact(v *volume) error {
	vs.mu.Lock()
	active := v == vs.active
	vs.mu.Unlock()
	if active {
		// It must take no more records. Once roll returns, every
		// record the packer put in v is in the index.
		vs.pack.roll()
	}
	vs.mu.Lock()
	size := v.size
	vs.mu.Unlock()
	// The live records of v, from its headers: the blocks the index
	// still places there.
	type move struct {
		id   uint64
		loc  packedLoc
		size int64
	}
	var moves []move
	sc := &volumeScan{f: v.f, size: size, headersOnly: true}
	_, err := sc.scan(volumeName(v.seq), vs.logger, func(h volumeHeader, off int64) {
		if h.deleted {
			return
		}
		loc := packedLoc{vol: v, off: off}
		if vs.stillAt(h.id, loc) {
			moves = append(moves, move{h.id, loc, h.size})
		}
	}, nil)
	if err != nil {
		return err
	}
	// Appended in groups of up to maxBatchBytes, waited for together:
	// one fdatasync a group rather than one a block.
	var waits []func() error
	var gone []packedRec // new copies of blocks deleted while they moved
	var queued int64
	flush := func() error {
		var first error
		for _, w := range waits {
			if err := w(); err != nil && first == nil {
				first = err
			}
		}
		waits, queued = waits[:0], 0
		return first
	}
	for _, m := range moves {
		data := make([]byte, m.size)
		v.mu.RLock() // a delete punches its hole with v.mu held for writing
		if !vs.stillAt(m.id, m.loc) {
			v.mu.RUnlock()
			continue // deleted since it was listed: its data may be a hole
		}
		crcs, err := readRecordRange(v.f, m.loc.off, m.size, 0, data)
		v.mu.RUnlock()
		if err == nil {
			err = verifyChecksums(data, crcs, 0)
		}
		if err != nil {
			// Kept in corrupt/ and dropped: the next block report
			// tells the master this replica is gone, and it copies the
			// block again.
			vs.logger.Error("volume: block damaged, found in compaction; moved to corrupt/", "block", blockName(m.id), "volume", volumeName(v.seq), "err", err)
			if crcs != nil { // read whole, failed its checksums: keep it
				if err := vs.owner.keepCorrupt(m.id, data, crcs); err != nil {
					vs.logger.Warn("volume: could not keep a copy of a damaged block", "block", blockName(m.id), "err", err)
				}
			}
			vs.mu.Lock()
			if vs.index[m.id].loc == m.loc {
				vs.unindexLocked(m.id)
			}
			vs.mu.Unlock()
			continue
		}
		rec := appendRecord(make([]byte, 0, recordSize(m.size)), m.id, data, crcs)
		waits = append(waits, vs.pack.queue(rec, func(nloc packedLoc) {
			if vs.index[m.id].loc != m.loc {
				gone = append(gone, packedRec{nloc, m.size}) // deleted while it moved
				return
			}
			vs.index[m.id] = packedRec{nloc, m.size}
			v.live -= recordSize(m.size)
			nloc.vol.live += recordSize(m.size)
		}))
		if queued += int64(len(rec)); queued >= maxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	vs.deleteRecords(gone) // read after the waits: the packer is done with it
	vs.mu.Lock()
	delete(vs.volumes, v.seq)
	vs.mu.Unlock()
	v.mu.Lock()
	v.closed = true
	v.closeFiles()
	v.mu.Unlock()
	if err := os.Remove(v.path); err != nil {
		return err
	}
	vs.logger.Debug("volume: compacted", "volume", volumeName(v.seq), "moved", len(moves))
	return syncDir(vs.dir)
}

// close stops the packer, once the records queued are durable, and the
// compactor, and closes the files; puts after it fail with errStoreClosed.
// It may be called more than once.
func (vs *volumeSet) close() {
	vs.closeOnce.Do(func() {
		vs.pack.stop()
		<-vs.compactDone
		// Not under vs.mu: readers take it while they hold a v.mu.
		vs.mu.Lock()
		vols := slices.Collect(maps.Values(vs.volumes))
		vs.mu.Unlock()
		for _, v := range vols {
			v.mu.Lock()
			v.closed = true
			v.closeFiles()
			v.mu.Unlock()
		}
	})
}

// closeFiles closes v's file handles.
func (v *volume) closeFiles() {
	v.f.Close()
	v.marks.Close()
}
