// blockstore.go keeps a minion's blocks on its local disk.
//
// Layout under the minion's dir:
//
//	blocks/XX/blk_<id>        the block's bytes, nothing else (XX: low byte of id)
//	blocks/XX/blk_<id>.meta   a 16-byte header, then one CRC32C per 512 bytes
//	tmp/blk_<id>[.meta]       blocks being received; emptied at start
//	corrupt/blk_<id>[.meta]   blocks the scrubber found damaged, kept for salvage
//
// A block is received into tmp/ in packets that may arrive in any order, each
// checked against its CRCs before it is written. finalize checks that every
// byte arrived, fsyncs both files, renames the .meta and then the data into
// blocks/ and fsyncs that directory: the rename of the data file is the
// commit point. At start a .meta without its data file is a leftover and is
// removed; a data file without .meta cannot happen (the .meta goes first).
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// metaMagic starts every .meta file; metaHeaderSize bytes of header follow
// it: magic, version, bytes per checksum, reserved.
var metaMagic = [4]byte{'D', 'F', 'S', 'B'}

const (
	metaVersion    = 1
	metaHeaderSize = 16
)

// blockName is the file name of a block. Ids are numbers, so no name built
// here can leave the store's directory.
func blockName(id uint64) string { return fmt.Sprintf("blk_%016x", id) }

// parseBlockName is the inverse of blockName.
func parseBlockName(name string) (uint64, bool) {
	hex, ok := strings.CutPrefix(name, "blk_")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	return id, err == nil && blockName(id) == name // lower-case hex only
}

// checksums appends the CRC32C of every bytesPerChecksum of data to dst.
func checksums(dst []uint32, data []byte) []uint32 {
	for len(data) > 0 {
		n := min(len(data), bytesPerChecksum)
		dst = append(dst, crc32.Checksum(data[:n], castagnoli))
		data = data[n:]
	}
	return dst
}

// verifyChecksums returns ErrChecksum, with the offset of the first bad
// chunk, if data does not match crcs. base is the offset of data in its block.
func verifyChecksums(data []byte, crcs []uint32, base int64) error {
	if want := (len(data) + bytesPerChecksum - 1) / bytesPerChecksum; len(crcs) != want {
		return fmt.Errorf("%w: %d checksums for %d bytes", ErrChecksum, len(crcs), len(data))
	}
	for i, sum := range crcs {
		chunk := data[i*bytesPerChecksum : min(len(data), (i+1)*bytesPerChecksum)]
		if crc32.Checksum(chunk, castagnoli) != sum {
			return fmt.Errorf("%w: at offset %d", ErrChecksum, base+int64(i*bytesPerChecksum))
		}
	}
	return nil
}

// blockStore is the set of blocks in one directory: the finalized blocks
// kept as files, those packed into volumes (vols), and the blocks being
// received. It is safe for concurrent use.
type blockStore struct {
	dir string
	// packMax is the size of the largest block packed into a volume
	// (volume.go) when it arrives whole, in one packet; 0 packs none.
	packMax int64
	logger  *slog.Logger
	// vols holds the packed blocks, under its own lock. It calls hasFile
	// with that lock held, so s.mu is never held while calling vols: the
	// lock order is a blockWriter's mu, then vols' locks, then s.mu.
	vols *volumeSet

	// open holds the files of the finalized blocks being read.
	open openBlocks

	// mu guards the fields below.
	mu    sync.Mutex
	files map[uint64]int64 // finalized block kept as a file -> size in bytes
	// used is the bytes of the blocks in files.
	used    int64
	writers map[uint64]*blockWriter
	// refused holds the blocks whose writing failed here (a full disk,
	// an I/O error): packets of them still in flight are refused rather
	// than starting them again (see writeFailed).
	refused map[uint64]refusal
}

// blockWriter is a block being received into tmp/.
type blockWriter struct {
	id         uint64
	data, meta *os.File

	// mu guards the fields below.
	mu       sync.Mutex
	have     []uint64 // bitmap of received checksum chunks
	end      int64    // highest byte offset written
	lastUsed time.Time
	done     bool // finalized or aborted; the files are closed
}

// openBlockStore opens (creating if needed) the store in dir, removes what an
// earlier process left in tmp/ and indexes the finalized blocks. Blocks of
// up to packMax bytes that arrive whole are packed into volumes.
func openBlockStore(dir string, packMax int64, logger *slog.Logger) (*blockStore, error) {
	s := &blockStore{dir: dir, packMax: packMax, logger: logger, files: make(map[uint64]int64),
		writers: make(map[uint64]*blockWriter), refused: make(map[uint64]refusal)}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("clean %s: %w", s.tmpDir(), err)
	}
	for _, d := range []string{s.tmpDir(), filepath.Join(dir, "blocks")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	err := filepath.WalkDir(filepath.Join(dir, "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		base, isMeta := strings.CutSuffix(name, ".meta")
		id, ok := parseBlockName(base)
		if !ok || filepath.Dir(p) != s.subDir(id) {
			return nil // not ours; leave it alone
		}
		if isMeta {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), base)); errors.Is(err, fs.ErrNotExist) {
				return os.Remove(p) // interrupted finalize: never committed
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s.files[id] = info.Size()
		s.used += info.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index blocks in %s: %w", dir, err)
	}
	// After the files: a block kept both ways is served from its file.
	if s.vols, err = openVolumeSet(filepath.Join(dir, "volumes"), logger, s); err != nil {
		return nil, fmt.Errorf("index volumes in %s: %w", dir, err)
	}
	return s, nil
}

func (s *blockStore) tmpDir() string { return filepath.Join(s.dir, "tmp") }

func (s *blockStore) subDir(id uint64) string {
	return filepath.Join(s.dir, "blocks", fmt.Sprintf("%02x", id&0xff))
}

func (s *blockStore) dataPath(id uint64) string {
	return filepath.Join(s.subDir(id), blockName(id))
}

// writer returns the writer of block id, creating it on the first packet.
func (s *blockStore) writer(id uint64) (*blockWriter, error) {
	// The volumes are asked before s.mu is taken (see blockStore.vols),
	// the files under it, at once with the making of the writer.
	_, packed := s.vols.sizeOf(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.files[id]; ok || packed {
		return nil, fmt.Errorf("block %s already stored", blockName(id))
	}
	if w, ok := s.writers[id]; ok {
		return w, nil
	}
	if r, ok := s.refused[id]; ok {
		return nil, fmt.Errorf("block %s: an earlier write of it failed here: %w", blockName(id), r.err)
	}
	tmp := filepath.Join(s.tmpDir(), blockName(id))
	data, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	meta, err := os.OpenFile(tmp+".meta", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		data.Close()
		os.Remove(tmp)
		return nil, err
	}
	if _, err := meta.Write(metaHeader()); err != nil {
		data.Close()
		meta.Close()
		os.Remove(tmp)
		os.Remove(tmp + ".meta")
		return nil, err
	}
	w := &blockWriter{id: id, data: data, meta: meta, lastUsed: time.Now()}
	s.writers[id] = w
	return w, nil
}

// metaHeader is the header of a .meta file.
func metaHeader() []byte {
	hdr := make([]byte, metaHeaderSize)
	copy(hdr, metaMagic[:])
	binary.BigEndian.PutUint32(hdr[4:], metaVersion)
	binary.BigEndian.PutUint32(hdr[8:], bytesPerChecksum)
	return hdr
}

// appendCRCs appends crcs to dst as they are stored (.meta files, volume
// records): 4 bytes each, big-endian.
func appendCRCs(dst []byte, crcs []uint32) []byte {
	for _, c := range crcs {
		dst = binary.BigEndian.AppendUint32(dst, c)
	}
	return dst
}

// parseCRCs decodes checksums stored by appendCRCs.
func parseCRCs(raw []byte) []uint32 {
	crcs := make([]uint32, len(raw)/4)
	for i := range crcs {
		crcs[i] = binary.BigEndian.Uint32(raw[4*i:])
	}
	return crcs
}

// put stores block id, whole in data, checked against crcs, and makes it
// durable: packed into a volume if it is small, else as a file.
func (s *blockStore) put(id uint64, data []byte, crcs []uint32) error {
	if len(data) == 0 {
		return s.finalize(id, 0)
	}
	if int64(len(data)) > s.packMax {
		if err := s.write(id, 0, data, crcs); err != nil {
			return err
		}
		return s.finalize(id, int64(len(data)))
	}
	if len(data) > packetSize {
		return fmt.Errorf("%w: packet of %d bytes", ErrBadArg, len(data))
	}
	if err := verifyChecksums(data, crcs, 0); err != nil {
		return err
	}
	if s.has(id) {
		return fmt.Errorf("block %s already stored", blockName(id))
	}
	s.abort(id) // what an earlier, failed attempt left
	if err := s.vols.put(id, data, crcs); err != nil {
		return fmt.Errorf("store %s: %w", blockName(id), err)
	}
	return nil
}

// write stores one packet of block id at off after checking it against crcs.
// Packets of one block may come concurrently and in any order.
func (s *blockStore) write(id uint64, off int64, data []byte, crcs []uint32) error {
	if off < 0 || off%bytesPerChecksum != 0 || len(data) == 0 || len(data) > packetSize || off+int64(len(data)) > maxBlockSize {
		return fmt.Errorf("%w: packet of %d bytes at offset %d", ErrBadArg, len(data), off)
	}
	if err := verifyChecksums(data, crcs, off); err != nil {
		return err
	}
	w, err := s.writer(id)
	if err != nil {
		return err
	}
	// The files are written outside w.mu: pwrite at distinct offsets is
	// safe concurrently, and a slow disk must not serialise the packets.
	if _, err := w.data.WriteAt(data, off); err != nil {
		return s.writeFailed(w, err)
	}
	if _, err := w.meta.WriteAt(appendCRCs(nil, crcs), metaHeaderSize+4*(off/bytesPerChecksum)); err != nil {
		return s.writeFailed(w, err)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("block %s: write after finalize or abort", blockName(id))
	}
	first := off / bytesPerChecksum
	for i := range int64(len(crcs)) {
		c := first + i
		for int64(len(w.have)) <= c/64 {
			w.have = append(w.have, 0)
		}
		w.have[c/64] |= 1 << (c % 64)
	}
	w.end = max(w.end, off+int64(len(data)))
	w.lastUsed = time.Now()
	return nil
}

// refuseFor is how long packets of a block whose writing failed are
// refused: far longer than a packet stays in flight.
const refuseFor = 10 * time.Minute

// refusal is why and since when packets of a block are refused.
type refusal struct {
	at  time.Time
	err error
}

// writeFailed gives block w up after a write of it failed with err: with a
// hole in it, it can never be finalized here (the writer drops this minion
// from its pipeline). Its files go now, giving their space back (on a full
// disk, at once rather than when the writer's idle time runs out), and
// packets of it still in flight are refused for refuseFor rather than
// starting it again. It returns the block's first error.
func (s *blockStore) writeFailed(w *blockWriter, err error) error {
	s.mu.Lock()
	if s.writers[w.id] == w {
		delete(s.writers, w.id)
	}
	r, ok := s.refused[w.id]
	if !ok {
		r = refusal{time.Now(), err}
		s.refused[w.id] = r
	}
	s.mu.Unlock()
	w.abort()
	// The first error says why: the packets that failed after it, on the
	// files it closed, say so too.
	return r.err
}

// complete reports whether exactly the bytes [0, size) were received.
func (w *blockWriter) complete(size int64) bool {
	if w.end != size {
		return false
	}
	chunks := (size + bytesPerChecksum - 1) / bytesPerChecksum
	for c := range chunks {
		if int(c/64) >= len(w.have) || w.have[c/64]&(1<<(c%64)) == 0 {
			return false
		}
	}
	return true
}

// finalize makes block id durable and visible once every byte of [0, size)
// has arrived. An empty block (size 0) needs no packet.
func (s *blockStore) finalize(id uint64, size int64) error {
	if size < 0 || size > maxBlockSize {
		return fmt.Errorf("%w: block size %d", ErrBadArg, size)
	}
	if s.sizeOf(id) == size {
		return nil // finalized already: a retried call whose reply was lost
	}
	var w *blockWriter
	if size == 0 {
		var err error
		if w, err = s.writer(id); err != nil {
			return err
		}
	} else {
		s.mu.Lock()
		w = s.writers[id]
		s.mu.Unlock()
		if w == nil {
			return fmt.Errorf("%w: %s was never written here", ErrBlockNotFound, blockName(id))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		if s.sizeOf(id) == size {
			return nil // a concurrent finalize of the same block won
		}
		return fmt.Errorf("block %s: aborted", blockName(id))
	}
	if !w.complete(size) {
		return fmt.Errorf("block %s: incomplete: %d bytes expected, packets end at %d or have gaps", blockName(id), size, w.end)
	}
	err := s.commit(w, size)
	w.done = true
	s.mu.Lock()
	delete(s.writers, id)
	if err == nil {
		s.files[id] = size
		s.used += size
	}
	s.mu.Unlock()
	if err != nil {
		os.Remove(w.data.Name())
		os.Remove(w.meta.Name())
		return fmt.Errorf("finalize %s: %w", blockName(id), err)
	}
	return nil
}

// commit fsyncs and closes w's files and moves them into blocks/.
func (s *blockStore) commit(w *blockWriter, size int64) error {
	var errs []error
	for _, f := range []*os.File{w.data, w.meta} {
		errs = append(errs, timedSync(fsyncBlock, f.Sync), f.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	dir := s.subDir(w.id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	final := filepath.Join(dir, blockName(w.id))
	if err := os.Rename(w.meta.Name(), final+".meta"); err != nil {
		return err
	}
	if err := os.Rename(w.data.Name(), final); err != nil {
		os.Remove(final + ".meta")
		return err
	}
	return syncDir(dir)
}

// abort drops a block being received. It is a no-op for unknown ids.
func (s *blockStore) abort(id uint64) {
	s.mu.Lock()
	w := s.writers[id]
	delete(s.writers, id)
	s.mu.Unlock()
	if w != nil {
		w.abort()
	}
}

func (w *blockWriter) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	w.data.Close()
	w.meta.Close()
	os.Remove(w.data.Name())
	os.Remove(w.meta.Name())
}

// expire aborts blocks that received nothing for idle: their writer is gone.
// It also closes the files of blocks no longer read (openBlockIdle).
func (s *blockStore) expire(idle time.Duration) []uint64 {
	s.open.closeIdle(openBlockIdle)
	// Lock order is w.mu before s.mu (see finalize), so look at the
	// writers without holding s.mu.
	s.mu.Lock()
	for id, r := range s.refused {
		if time.Since(r.at) > refuseFor {
			delete(s.refused, id)
		}
	}
	all := make([]*blockWriter, 0, len(s.writers))
	for _, w := range s.writers {
		all = append(all, w)
	}
	s.mu.Unlock()
	var ids []uint64
	for _, w := range all {
		w.mu.Lock()
		stale := !w.done && time.Since(w.lastUsed) > idle
		w.mu.Unlock()
		if !stale {
			continue
		}
		s.mu.Lock()
		if s.writers[w.id] == w {
			delete(s.writers, w.id)
		}
		s.mu.Unlock()
		w.abort()
		ids = append(ids, w.id)
	}
	return ids
}

// read returns up to length bytes of block id from off, with the stored
// checksums that cover them. off must be a multiple of bytesPerChecksum.
func (s *blockStore) read(id uint64, off, length int64) ([]byte, []uint32, error) {
	if off < 0 || off%bytesPerChecksum != 0 || length <= 0 || length > packetSize {
		return nil, nil, fmt.Errorf("%w: read of %d bytes at offset %d", ErrBadArg, length, off)
	}
	size := s.sizeOf(id)
	if size < 0 {
		return nil, nil, fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	if off >= size {
		return nil, nil, fmt.Errorf("%w: offset %d past the end of %s (%d bytes)", ErrBadArg, off, blockName(id), size)
	}
	length = min(length, size-off)
	data := getPacketBuf()[:length] // length <= packetSize; see ReadBlockReply.release
	if crcs, ok, err := s.vols.read(id, off, data); ok {
		if err != nil {
			putPacketBuf(data)
			return nil, nil, err
		}
		return data, crcs, nil
	}
	b, opened, err := s.open.get(id, s.dataPath(id))
	if err != nil {
		putPacketBuf(data)
		return nil, nil, s.readErr(id, err)
	}
	defer s.open.release(b)
	if opened && !s.has(id) {
		// Removed (or quarantined) while its files were being opened,
		// perhaps after its drop: they must not stay cached, holding
		// the space of a deleted block.
		s.open.drop(id)
		putPacketBuf(data)
		return nil, nil, fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	n := (length + bytesPerChecksum - 1) / bytesPerChecksum
	raw := make([]byte, 4*n)
	if err := readFull(b.data, data, off); err != nil {
		s.open.drop(id) // opened afresh by the next read
		putPacketBuf(data)
		return nil, nil, s.readErr(id, err)
	}
	if err := readFull(b.meta, raw, metaHeaderSize+4*(off/bytesPerChecksum)); err != nil {
		s.open.drop(id)
		putPacketBuf(data)
		return nil, nil, s.readErr(id, err)
	}
	return data, parseCRCs(raw), nil
}

// readErr is err, of a read of block id's files, unless the files are
// missing because the block was removed (or packed, then removed) since
// the read began: then the block is simply not found.
func (s *blockStore) readErr(id uint64, err error) error {
	if errors.Is(err, fs.ErrNotExist) && !s.has(id) {
		return fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	return err
}

// verify re-reads block id and checks it against its stored checksums.
func (s *blockStore) verify(id uint64) error {
	size := s.sizeOf(id)
	if size < 0 {
		return fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	for off := int64(0); off < size; off += packetSize {
		data, crcs, err := s.read(id, off, min(packetSize, size-off))
		if err != nil {
			if !s.has(id) {
				return fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
			}
			return err
		}
		err = verifyChecksums(data, crcs, off)
		putPacketBuf(data)
		if err != nil {
			return err
		}
	}
	return nil
}

// readFull fills buf from f at off.
func readFull(f *os.File, buf []byte, off int64) error {
	if _, err := f.ReadAt(buf, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read %s: %w", filepath.Base(f.Name()), err)
	}
	return nil
}

// unindex takes block id out of the index of files and reports whether it
// was there, for the caller to move or remove its files.
func (s *blockStore) unindex(id uint64) (found bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	size, found := s.files[id]
	delete(s.files, id)
	s.used -= size
	return found
}

// remove deletes block id. Removing a block that is not there is not an error.
func (s *blockStore) remove(id uint64) error {
	return s.removeAll([]uint64{id})
}

// removeAll deletes the blocks ids, as a minion does with the deletes of a
// heartbeat: the records of packed ones are deleted together, with one
// fdatasync per volume (see volumeSet.remove). Removing a block that is
// not there is not an error.
func (s *blockStore) removeAll(ids []uint64) error {
	var errs []error
	for _, id := range s.vols.remove(ids) {
		if !s.unindex(id) {
			s.abort(id)
			continue
		}
		s.open.drop(id)
		p := s.dataPath(id)
		// Data first: a .meta left alone is cleaned at the next start.
		for _, f := range []string{p, p + ".meta"} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// corruptDir returns DIR/corrupt/, made if need be, where damaged blocks
// are kept for an operator to salvage.
func (s *blockStore) corruptDir() (string, error) {
	dir := filepath.Join(s.dir, "corrupt")
	return dir, os.MkdirAll(dir, 0o755)
}

// quarantine moves block id out of the store into DIR/corrupt/, where an
// operator may still salvage it; the minion stops serving and reporting it.
func (s *blockStore) quarantine(id uint64) error {
	dir, err := s.corruptDir()
	if err != nil {
		return err
	}
	if s.vols.quarantine(id) || !s.unindex(id) {
		return nil
	}
	s.open.drop(id)
	p := s.dataPath(id)
	for _, suffix := range []string{"", ".meta"} {
		if err := os.Rename(p+suffix, filepath.Join(dir, blockName(id)+suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// keepCorrupt writes a damaged block, data and stored checksums, into
// DIR/corrupt/ as a block file and its .meta (for volumeOwner).
func (s *blockStore) keepCorrupt(id uint64, data []byte, crcs []uint32) error {
	dir, err := s.corruptDir()
	if err != nil {
		return err
	}
	p := filepath.Join(dir, blockName(id))
	return errors.Join(os.WriteFile(p, data, 0o644), os.WriteFile(p+".meta", appendCRCs(metaHeader(), crcs), 0o644))
}

// report lists the finalized blocks.
func (s *blockStore) report() []BlockReport {
	out := s.vols.report()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, size := range s.files {
		out = append(out, BlockReport{ID: id, Size: size})
	}
	return out
}

// usage returns the bytes and number of finalized blocks.
func (s *blockStore) usage() (used int64, n int) {
	used, n = s.vols.usage()
	s.mu.Lock()
	defer s.mu.Unlock()
	return used + s.used, n + len(s.files)
}

// sizeOf returns the size of finalized block id, or -1.
func (s *blockStore) sizeOf(id uint64) int64 {
	if size, ok := s.vols.sizeOf(id); ok {
		return size
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if size, ok := s.files[id]; ok {
		return size
	}
	return -1
}

// has reports whether block id is finalized here.
func (s *blockStore) has(id uint64) bool { return s.sizeOf(id) >= 0 }

// hasFile reports whether finalized block id is kept as a file (for
// volumeOwner).
func (s *blockStore) hasFile(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.files[id]
	return ok
}

// close aborts every block being received. Finalized blocks are on disk
// already; there is nothing else to flush.
func (s *blockStore) close() {
	s.mu.Lock()
	ws := s.writers
	s.writers = make(map[uint64]*blockWriter)
	s.mu.Unlock()
	for _, w := range ws {
		w.abort()
	}
	s.open.closeAll()
	s.vols.close()
}
