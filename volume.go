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
//	magic "DFSV" | kind u8 | 3 bytes zero | block id u64 | size u32 | header CRC32C u32
//	data (size bytes) | one CRC32C per 512 bytes of data
//
// A record of kind recDelete (a tombstone: size 0, nothing follows) drops
// the block from the index at load. Volumes are written one at a time by
// one goroutine, batch by batch: a batch is written, fdatasynced and only
// then acknowledged, and a full volume is synced before the next begins,
// so only the newest volume can end in a torn batch. Load checks the
// records of the newest volume against their CRCs and cuts a bad tail off;
// a damaged record anywhere is skipped (and logged).
//
// Deleted blocks leave garbage; a volume whose live records take less than
// half of it is compacted: its live records are appended anew and the file
// removed. A tombstone removed with its volume may let a deleted block
// come back at the next load; the master deletes it again as an orphan.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

var volumeMagic = [4]byte{'D', 'F', 'S', 'V'}

const (
	volumeHeaderSize = 24
	recBlock         = 1
	recDelete        = 2
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

	mu     sync.RWMutex
	f      *os.File
	closed bool

	// Guarded by the store's mu.
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

// appendRecord appends a record to dst.
func appendRecord(dst []byte, kind byte, id uint64, data []byte, crcs []uint32) []byte {
	var h [volumeHeaderSize]byte
	copy(h[:], volumeMagic[:])
	h[4] = kind
	binary.BigEndian.PutUint64(h[8:], id)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[20:], crc32.Checksum(h[:20], castagnoli))
	dst = append(dst, h[:]...)
	dst = append(dst, data...)
	for _, c := range crcs {
		dst = binary.BigEndian.AppendUint32(dst, c)
	}
	return dst
}

// volumeHeader is a decoded record header.
type volumeHeader struct {
	kind byte
	id   uint64
	size int64
}

// parseHeader decodes h, or reports that it is not a good header.
func parseRecordHeader(h []byte) (volumeHeader, bool) {
	if len(h) < volumeHeaderSize || [4]byte(h[:4]) != volumeMagic ||
		crc32.Checksum(h[:20], castagnoli) != binary.BigEndian.Uint32(h[20:]) {
		return volumeHeader{}, false
	}
	v := volumeHeader{kind: h[4], id: binary.BigEndian.Uint64(h[8:]), size: int64(binary.BigEndian.Uint32(h[16:]))}
	ok := h[5] == 0 && h[6] == 0 && h[7] == 0 &&
		(v.kind == recBlock && v.size <= packetSize || v.kind == recDelete && v.size == 0)
	return v, ok
}

// volumeScan reads a volume's records in order.
type volumeScan struct {
	f    *os.File
	size int64
	buf  []byte
	// headersOnly skips the check of records' data against their CRCs.
	headersOnly bool
}

// record checks the record at off and returns its header. ok is false if
// there is no good record at off (bad header, past the end or bad CRCs);
// h.kind is 0 unless the header itself is good.
func (v *volumeScan) record(off int64) (h volumeHeader, ok bool, err error) {
	if off+volumeHeaderSize > v.size {
		return h, false, nil
	}
	var hb [volumeHeaderSize]byte
	if _, err := v.f.ReadAt(hb[:], off); err != nil {
		return h, false, err
	}
	if h, ok = parseRecordHeader(hb[:]); !ok || off+recordSize(h.size) > v.size {
		return volumeHeader{}, false, nil
	}
	if h.kind == recDelete || v.headersOnly {
		return h, true, nil
	}
	n := recordSize(h.size) - volumeHeaderSize
	if int64(cap(v.buf)) < n {
		v.buf = make([]byte, n)
	}
	body := v.buf[:n]
	if _, err := v.f.ReadAt(body, off+volumeHeaderSize); err != nil {
		return h, false, err
	}
	data, raw := body[:h.size], body[h.size:]
	crcs := make([]uint32, len(raw)/4)
	for i := range crcs {
		crcs[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	return h, verifyChecksums(data, crcs, 0) == nil, nil
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
			if _, ok, err := v.record(pos + int64(i)); err != nil {
				return -1, err
			} else if ok {
				return pos + int64(i), nil
			}
		}
	}
	return -1, nil
}

// scan calls fn for every good record of the volume in order and returns
// the end of the last good one. Damaged stretches are skipped and logged;
// a block whose record has a good header but bad data, with good records
// after it, is passed to damaged.
func (v *volumeScan) scan(name string, logger *slog.Logger, fn func(h volumeHeader, off int64), damaged func(id uint64)) (end int64, err error) {
	for off := int64(0); off < v.size; {
		h, ok, err := v.record(off)
		if err != nil {
			return end, err
		}
		if ok {
			fn(h, off)
			off += recordSize(h.size)
			end = off
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
		if h.kind == recBlock && damaged != nil {
			damaged(h.id)
		}
		off = nxt
	}
	return end, nil
}

// packReq is an append waiting for the group commit, or a roll request.
type packReq struct {
	rec  []byte
	roll bool // close the active volume; no record
	// durable, if set, is called with the store's lock held once rec is
	// durable, before anyone is answered: the index never lags the disk.
	durable func(packedLoc)
	done    chan<- error // nil: nobody waits (tombstones)
}

// packer appends records to the active volume, one batch at a time.
type packer struct {
	dir    string
	logger *slog.Logger
	// lock is the store's lock, taken to index a batch.
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
// is called first, with the store's lock held.
func (p *packer) append(rec []byte, durable func(packedLoc)) error {
	ch := make(chan error, 1)
	if !p.send(packReq{rec: rec, durable: durable, done: ch}) {
		return errStoreClosed
	}
	select {
	case err := <-ch:
		return err
	case <-p.done:
		return errStoreClosed
	}
}

// appendAsync queues rec and returns at once. Never call it with the
// store's lock held: a full queue waits for the packer, which may be
// waiting for that lock.
func (p *packer) appendAsync(rec []byte) { p.send(packReq{rec: rec}) }

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
			// Write what is queued (tombstones, mostly) and stop.
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
			if r.done != nil {
				r.done <- err
			} else if err != nil {
				p.logger.Warn("volume: tombstone not written; the block may come back after a restart", "err", err)
			}
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
		err = fdatasync(v.f)
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
	p.nextSeq++
	v := &volume{seq: seq, path: path, f: f}
	p.lock.Lock()
	p.opened(v)
	p.lock.Unlock()
	return v, nil
}

// ---- the store's side ----

// compactMinGarbage is the least garbage worth compacting a volume for.
const compactMinGarbage = 4 << 20

func (s *blockStore) volumeDir() string { return filepath.Join(s.dir, "volumes") }

// openVolumes indexes the blocks of every volume and starts the packer
// and the compactor.
func (s *blockStore) openVolumes() error {
	dir := s.volumeDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var seqs []uint32
	for _, e := range ents {
		if seq, ok := parseVolumeName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for i, seq := range seqs {
		if err := s.loadVolume(seq, i == len(seqs)-1); err != nil {
			for _, v := range s.volumes {
				v.f.Close()
			}
			return err
		}
	}
	s.pack = &packer{dir: dir, logger: s.logger, lock: &s.mu, opened: func(v *volume) {
		s.volumes[v.seq] = v
		s.activeVol = v
	}}
	if len(seqs) > 0 {
		s.pack.nextSeq = seqs[len(seqs)-1] + 1
	}
	s.pack.start()
	for _, id := range s.damaged {
		if _, ok := s.packed[id]; !ok { // not stored again further on
			s.tombstone(id)
		}
	}
	s.damaged = nil
	s.compactWake = make(chan struct{}, 1)
	s.compactDone = make(chan struct{})
	go s.compactor()
	s.wakeCompactor() // for what an earlier process left
	return nil
}

// loadVolume indexes volume seq. Only the newest volume can hold a batch
// that was never acknowledged: its records are checked against their CRCs
// and a bad tail is cut off. The others were synced whole before the next
// one began and were checked when they were the newest, so only their
// headers are read (the scrubber checks the data later, as for files).
func (s *blockStore) loadVolume(seq uint32, newest bool) error {
	path := filepath.Join(s.volumeDir(), volumeName(seq))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	v := &volume{seq: seq, path: path, f: f}
	sc := &volumeScan{f: f, size: fi.Size(), headersOnly: !newest}
	end, err := sc.scan(volumeName(seq), s.logger, func(h volumeHeader, off int64) {
		if old, ok := s.packed[h.id]; ok {
			size := s.blocks[h.id]
			old.vol.live -= recordSize(size)
			s.used -= size
			delete(s.packed, h.id)
			delete(s.blocks, h.id)
		}
		if h.kind == recDelete {
			return
		}
		if _, ok := s.blocks[h.id]; ok {
			return // a file of the same block: keep that one
		}
		s.packed[h.id] = packedLoc{vol: v, off: off}
		s.blocks[h.id] = h.size
		s.used += h.size
		v.live += recordSize(h.size)
	}, func(id uint64) {
		// Only the newest volume's data is checked at load: a
		// tombstone keeps the block out when this one is older.
		s.damaged = append(s.damaged, id)
	})
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", path, err)
	}
	v.size = end
	if end < fi.Size() {
		if !newest {
			v.size = fi.Size() // damage, logged by scan; counted as garbage
		} else {
			s.logger.Warn("volume: cut off a torn tail (a write that was never acknowledged)",
				"volume", volumeName(seq), "at", end, "size", fi.Size())
			if err := f.Truncate(end); err == nil {
				err = f.Sync()
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("truncate %s: %w", path, err)
			}
		}
	}
	s.volumes[seq] = v
	return nil
}

// packBlock appends block id to a volume and indexes it, once it is durable.
func (s *blockStore) packBlock(id uint64, data []byte, crcs []uint32) error {
	size := int64(len(data))
	rec := appendRecord(make([]byte, 0, recordSize(size)), recBlock, id, data, crcs)
	return s.pack.append(rec, func(loc packedLoc) {
		if _, ok := s.blocks[id]; ok {
			return // stored meanwhile (a resend); this record is garbage
		}
		s.packed[id] = loc
		s.blocks[id] = size
		s.used += size
		loc.vol.live += recordSize(size)
	})
}

// unpackLocked takes packed block id (of size bytes) out of the volume
// index and reports whether it was there; the caller then writes its
// tombstone, without s.mu. s.mu is held.
func (s *blockStore) unpackLocked(id uint64, size int64) bool {
	loc, ok := s.packed[id]
	if !ok {
		return false
	}
	delete(s.packed, id)
	loc.vol.live -= recordSize(size)
	if s.compactable(loc.vol) {
		s.wakeCompactor()
	}
	return true
}

// tombstone records that packed block id is gone. It is not waited for:
// a block that comes back after a crash is deleted again by the master.
func (s *blockStore) tombstone(id uint64) {
	s.pack.appendAsync(appendRecord(nil, recDelete, id, nil, nil))
}

// readPacked fills data from offset off of packed block id (of size
// bytes) and returns its checksums; ok is false if id is not packed.
func (s *blockStore) readPacked(id uint64, size, off int64, data []byte) (crcs []uint32, ok bool, err error) {
	for range 3 {
		s.mu.Lock()
		loc, ok := s.packed[id]
		s.mu.Unlock()
		if !ok {
			return nil, false, nil
		}
		v := loc.vol
		v.mu.RLock()
		if v.closed {
			v.mu.RUnlock()
			continue // compacted under us: it lives elsewhere now
		}
		crcs, err := readRecordRange(v.f, loc.off, size, off, data)
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
	crcs := make([]uint32, n)
	for i := range crcs {
		crcs[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	return crcs, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (s *blockStore) wakeCompactor() {
	select {
	case s.compactWake <- struct{}{}:
	default:
	}
}

// compactable reports whether v is worth compacting: it takes no more
// records and holds no live one, or live records take less than half of
// it and the rest is worth the copying. s.mu is held.
func (s *blockStore) compactable(v *volume) bool {
	if v.live == 0 && v != s.activeVol {
		return true
	}
	return v.live*2 < v.size && v.size-v.live >= compactMinGarbage
}

// compactor compacts volumes, when a delete (or the start) wakes it.
func (s *blockStore) compactor() {
	defer close(s.compactDone)
	for {
		select {
		case <-s.compactWake:
		case <-s.pack.quit:
			return
		}
		for {
			s.mu.Lock()
			var v *volume
			for _, c := range s.volumes {
				if s.compactable(c) {
					v = c
					break
				}
			}
			s.mu.Unlock()
			if v == nil {
				break
			}
			if err := s.compact(v); err != nil {
				if !errors.Is(err, errStoreClosed) {
					s.logger.Warn("volume: compaction failed", "volume", volumeName(v.seq), "err", err)
				}
				break
			}
		}
	}
}

// compact moves v's live blocks to the active volume and removes v.
func (s *blockStore) compact(v *volume) error {
	s.mu.Lock()
	active := v == s.activeVol
	var ids []uint64
	for id, loc := range s.packed {
		if loc.vol == v {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	if active {
		s.pack.roll() // it must take no more records
	}
	moved := 0
	for _, id := range ids {
		s.mu.Lock()
		loc, ok := s.packed[id]
		size := s.blocks[id]
		s.mu.Unlock()
		if !ok || loc.vol != v {
			continue // deleted meanwhile
		}
		data := make([]byte, size)
		crcs, err := readRecordRange(v.f, loc.off, size, 0, data)
		if err == nil {
			err = verifyChecksums(data, crcs, 0)
		}
		if err != nil {
			// Not copied: the next block report tells the master
			// this replica is gone, and it copies the block again.
			s.logger.Error("volume: block unreadable in compaction; dropped", "block", blockName(id), "volume", volumeName(v.seq), "err", err)
			s.mu.Lock()
			if s.packed[id] == loc && s.unpackLocked(id, size) {
				delete(s.blocks, id)
				s.used -= size
			}
			s.mu.Unlock()
			continue
		}
		gone := false
		rec := appendRecord(make([]byte, 0, recordSize(size)), recBlock, id, data, crcs)
		err = s.pack.append(rec, func(nloc packedLoc) {
			if cur, ok := s.packed[id]; !ok || cur != loc {
				gone = true // deleted while it moved
				return
			}
			s.packed[id] = nloc
			v.live -= recordSize(size)
			nloc.vol.live += recordSize(size)
		})
		if err != nil {
			return err
		}
		if gone {
			s.tombstone(id)
		}
		moved++
	}
	s.mu.Lock()
	delete(s.volumes, v.seq)
	s.mu.Unlock()
	v.mu.Lock()
	v.closed = true
	v.f.Close()
	v.mu.Unlock()
	if err := os.Remove(v.path); err != nil {
		return err
	}
	s.logger.Debug("volume: compacted", "volume", volumeName(v.seq), "moved", moved)
	return syncDir(s.volumeDir())
}

// closeVolumes stops the packer and the compactor and closes the files.
// It may be called more than once.
func (s *blockStore) closeVolumes() {
	s.closeOnce.Do(func() {
		s.pack.stop()
		<-s.compactDone
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, v := range s.volumes {
			v.mu.Lock()
			v.closed = true
			v.f.Close()
			v.mu.Unlock()
		}
	})
}
