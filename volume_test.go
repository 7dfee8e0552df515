package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// mustOpenPackedStore opens the store in dir packing blocks of up to 1 MiB,
// as a minion does by default, and closes it at cleanup.
func mustOpenPackedStore(t *testing.T, dir string) *blockStore {
	t.Helper()
	s, err := openBlockStore(dir, DefaultPackMax, testLogger(t))
	if err != nil {
		t.Fatalf("openBlockStore(%s): %v", dir, err)
	}
	t.Cleanup(s.close)
	return s
}

// mustPutBlock puts block id, whole in data, into s: a blockStore or a
// volumeSet.
func mustPutBlock(t *testing.T, s interface {
	put(id uint64, data []byte, crcs []uint32) error
}, id uint64, data []byte) {
	t.Helper()
	if err := s.put(id, data, checksums(nil, data)); err != nil {
		t.Fatalf("put %s: %v", blockName(id), err)
	}
}

// readBlock reads block id whole from s, packet by packet, checking it.
func readBlock(s *blockStore, id uint64) ([]byte, error) {
	size := s.sizeOf(id)
	if size < 0 {
		return nil, fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	var out []byte
	for off := int64(0); off < size; off += packetSize {
		data, crcs, err := s.read(id, off, packetSize)
		if err != nil {
			return nil, err
		}
		if err := verifyChecksums(data, crcs, off); err != nil {
			return nil, err
		}
		out = append(out, data...)
		putPacketBuf(data)
	}
	return out, nil
}

// checkBlocks fails unless s holds exactly want, byte for byte.
func checkBlocks(t *testing.T, s *blockStore, want map[uint64][]byte) {
	t.Helper()
	if _, n := s.usage(); n != len(want) {
		t.Errorf("store holds %d blocks, want %d", n, len(want))
	}
	for id, data := range want {
		got, err := readBlock(s, id)
		if err != nil {
			t.Errorf("read %s: %v", blockName(id), err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("read %s: %d bytes differ from the %d put", blockName(id), len(got), len(data))
		}
	}
}

func volumePaths(t *testing.T, dir string) []string {
	t.Helper()
	ps, err := filepath.Glob(filepath.Join(dir, "volumes", "vol_*"))
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestVolume_PutReadRestart(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	want := map[uint64][]byte{}
	sizes := []int{1, 511, 512, 513, 4096, 64 << 10, packetSize}
	for i, n := range sizes {
		id := uint64(100 + i)
		want[id] = blockBytes(byte(i), n)
		mustPutBlock(t, s, id, want[id])
	}
	// Past the packing limit: a file of its own, as before.
	s2, err := openBlockStore(t.TempDir(), 4096, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close()
	mustPutBlock(t, s2, 1, blockBytes(1, 8192))
	if _, err := os.Stat(s2.dataPath(1)); err != nil {
		t.Errorf("a block over --pack-max is not a file: %v", err)
	}

	checkBlocks(t, s, want)
	if got := len(volumePaths(t, dir)); got != 1 {
		t.Errorf("%d volume files, want 1", got)
	}
	if files := filesUnder(t, filepath.Join(dir, "blocks")); len(files) != 0 {
		t.Errorf("packed blocks left files: %v", files)
	}
	if err := s.put(100, want[100], checksums(nil, want[100])); err == nil {
		t.Error("a second put of a stored block succeeded")
	}
	s.close()

	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
	// Appends after a restart go to a new volume; both are read.
	want[200] = blockBytes(9, 3000)
	mustPutBlock(t, s, 200, want[200])
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// A put whose checksums do not match is refused and stores nothing.
func TestVolume_PutBadChecksums(t *testing.T) {
	s := mustOpenPackedStore(t, t.TempDir())
	data := blockBytes(1, 2000)
	crcs := checksums(nil, data)
	crcs[2] ^= 1
	if err := s.put(1, data, crcs); !errors.Is(err, ErrChecksum) {
		t.Fatalf("put with a bad checksum: %v, want ErrChecksum", err)
	}
	if s.has(1) {
		t.Fatal("the block is stored all the same")
	}
}

// What a crash or a bad disk leaves in a volume, and what a restart keeps.
func TestVolume_DamageAtLoad(t *testing.T) {
	const n = 5
	rec := recordSize(1000)
	tests := []struct {
		name string
		harm func(t *testing.T, path string)
		lost []int // blocks (0..n-1) that must be gone after the restart
		// size of the volume after the restart, in records; -1: unchanged
		records int
	}{
		{"TornLastRecord", func(t *testing.T, p string) { truncate(t, p, (n-1)*rec+rec/2) }, []int{n - 1}, n - 1},
		{"TornLastHeader", func(t *testing.T, p string) { truncate(t, p, (n-1)*rec+10) }, []int{n - 1}, n - 1},
		{"GarbageAfterEnd", func(t *testing.T, p string) { appendBytes(t, p, bytes.Repeat([]byte{0xab}, 100)) }, nil, n},
		{"HalfARecordOfZeros", func(t *testing.T, p string) { appendBytes(t, p, make([]byte, rec/2)) }, nil, n},
		{"BadDataInLastRecord", func(t *testing.T, p string) { flipByte(t, p, (n-1)*rec+volumeHeaderSize+7) }, []int{n - 1}, n - 1},
		{"BadDataInTheMiddle", func(t *testing.T, p string) { flipByte(t, p, 2*rec+volumeHeaderSize+999) }, []int{2}, n},
		{"BadChecksumInTheMiddle", func(t *testing.T, p string) { flipByte(t, p, 2*rec+rec-1) }, []int{2}, n},
		{"BadHeaderInTheMiddle", func(t *testing.T, p string) { flipByte(t, p, 1*rec+9) }, []int{1}, n},
		{"BadMagicInTheMiddle", func(t *testing.T, p string) { flipByte(t, p, 3*rec) }, []int{3}, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpenPackedStore(t, dir)
			want := map[uint64][]byte{}
			for i := range n {
				want[uint64(i+1)] = blockBytes(byte(i), 1000)
				mustPutBlock(t, s, uint64(i+1), want[uint64(i+1)])
			}
			s.close()
			p := volumePaths(t, dir)[0]
			tt.harm(t, p)
			for _, i := range tt.lost {
				delete(want, uint64(i+1))
			}
			s = mustOpenPackedStore(t, dir)
			checkBlocks(t, s, want)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(tt.records) * rec; fi.Size() != want {
				t.Errorf("volume is %d bytes after the restart, want %d (%d records)", fi.Size(), want, tt.records)
			}
			// The store goes on: a new block, and another restart.
			want[99] = blockBytes(99, 700)
			mustPutBlock(t, s, 99, want[99])
			s.close()
			s = mustOpenPackedStore(t, dir)
			checkBlocks(t, s, want)
		})
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Deleted blocks stay deleted across a restart, and the space of a volume
// that is mostly garbage comes back while its live blocks stay readable.
func TestVolume_RemoveAndCompact(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	want := map[uint64][]byte{}
	const n = 100 // 100 x 64 KiB: 6.4 MiB in one volume
	for i := range n {
		id := uint64(i + 1)
		want[id] = blockBytes(byte(i), 64<<10)
		mustPutBlock(t, s, id, want[id])
	}
	first := volumePaths(t, dir)[0]
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	before := fi.Size()
	kept := maps.Clone(want) // the readers' own: want changes below

	// Readers all along: a block that moves stays readable.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErrs []error
	var mu sync.Mutex
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := uint64(n - (i+g)%10) // among the kept ones
				got, err := readBlock(s, id)
				if err == nil && !bytes.Equal(got, kept[id]) {
					err = fmt.Errorf("%s: wrong bytes", blockName(id))
				}
				if err != nil {
					mu.Lock()
					readErrs = append(readErrs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	for i := range n - 10 {
		id := uint64(i + 1)
		if err := s.remove(id); err != nil {
			t.Fatalf("remove %s: %v", blockName(id), err)
		}
		delete(want, id)
	}
	// The compactor may start while the removes go on, so which blocks
	// it moved, and how much garbage the volume they moved to holds,
	// depend on timing. What it promises does not: once it is done, no
	// volume is worth compacting.
	waitFor(t, 10*time.Second, "the first volume compacted away, and nothing left to compact", func() bool {
		_, err := os.Stat(first)
		return errors.Is(err, os.ErrNotExist) && compacted(s)
	})
	close(stop)
	wg.Wait()
	for _, err := range readErrs {
		t.Errorf("read during compaction: %v", err)
	}
	checkBlocks(t, s, want)
	var total int64
	for _, p := range volumePaths(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	// What is left: the live blocks, and less garbage than compacting
	// is worth.
	if live := 10 * recordSize(64<<10); total >= live+compactMinGarbage || total >= before {
		t.Errorf("volumes take %d bytes after compaction (%d before), want at most %d live and under %d garbage", total, before, live, compactMinGarbage)
	}
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// A removed block that is still in its volume stays removed after a
// restart: its record is marked deleted in place.
func TestVolume_RemoveSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	want := map[uint64][]byte{}
	for i := range 4 {
		want[uint64(i+1)] = blockBytes(byte(i), 5000)
		mustPutBlock(t, s, uint64(i+1), want[uint64(i+1)])
	}
	for _, id := range []uint64{2, 3} {
		if err := s.remove(id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	if err := s.remove(77); err != nil {
		t.Errorf("remove of an unknown block: %v", err)
	}
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// The scrubber's path for a packed block: verify finds the damage, and
// quarantine takes the block out and keeps its bytes in corrupt/.
func TestVolume_VerifyAndQuarantine(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	good, bad := blockBytes(1, 3000), blockBytes(2, 3000)
	mustPutBlock(t, s, 1, good)
	mustPutBlock(t, s, 2, bad)
	flipBlockByte(t, s, 2, 1234)
	if err := s.verify(1); err != nil {
		t.Errorf("verify of a good block: %v", err)
	}
	if err := s.verify(2); !errors.Is(err, ErrChecksum) {
		t.Fatalf("verify of a damaged block: %v, want ErrChecksum", err)
	}
	if err := s.quarantine(2); err != nil {
		t.Fatal(err)
	}
	if s.has(2) {
		t.Error("quarantined block still served")
	}
	kept, err := os.ReadFile(filepath.Join(dir, "corrupt", blockName(2)))
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != len(bad) || bytes.Equal(kept, bad) {
		t.Errorf("corrupt/ holds %d bytes, want the %d damaged ones", len(kept), len(bad))
	}
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, map[uint64][]byte{1: good})
}

// Many writers at once share fsyncs; every block is there, and stays.
func TestVolume_ConcurrentPuts(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	const writers, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := uint64(w*each + i + 1)
				data := blockBytes(byte(id), 100+int(id)*7)
				if err := s.put(id, data, checksums(nil, data)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := map[uint64][]byte{}
	for id := uint64(1); id <= writers*each; id++ {
		want[id] = blockBytes(byte(id), 100+int(id)*7)
	}
	checkBlocks(t, s, want)
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// Block and volume names parse back, and nothing else parses.
func TestVolume_Names(t *testing.T) {
	for _, seq := range []uint32{0, 1, 0xabcdef, 1<<32 - 1} {
		if got, ok := parseVolumeName(volumeName(seq)); !ok || got != seq {
			t.Errorf("parseVolumeName(%q) = %d, %v", volumeName(seq), got, ok)
		}
	}
	for _, name := range []string{"vol_", "vol_0000000g", "vol_000000001", "vol_ABCDEF00", "xvol_00000001", "vol_00000001.tmp"} {
		if _, ok := parseVolumeName(name); ok {
			t.Errorf("parseVolumeName(%q) accepted it", name)
		}
	}
}

// Puts acknowledged while the active volume is being compacted stay
// readable, now and after a restart.
func TestVolume_PutsDuringCompactionOfActive(t *testing.T) {
	for range 3 {
		dir := t.TempDir()
		s := mustOpenPackedStore(t, dir)
		const n = 80 // 80 x 64 KiB = 5 MiB in the active volume
		for i := range n {
			mustPutBlock(t, s, uint64(i+1), blockBytes(byte(i), 64<<10))
		}
		first := volumePaths(t, dir)[0]
		var wg sync.WaitGroup
		var mu sync.Mutex
		acked := map[uint64][]byte{}
		stop := make(chan struct{})
		for g := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := uint64(1_000_000 + g*100_000 + i)
					data := blockBytes(byte(id), 4096)
					if err := s.put(id, data, checksums(nil, data)); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					acked[id] = data
					mu.Unlock()
				}
			})
		}
		waitFor(t, 10*time.Second, "puts under way", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 8 })
		for i := range n {
			if err := s.remove(uint64(i + 1)); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, "the first volume compacted away", func() bool {
			_, err := os.Stat(first)
			return errors.Is(err, os.ErrNotExist)
		})
		close(stop)
		wg.Wait()
		checkBlocks(t, s, acked)
		s.close()
		s = mustOpenPackedStore(t, dir)
		checkBlocks(t, s, acked)
		if t.Failed() {
			return
		}
	}
}

// A record whose header is good is skipped by its length when its data is
// damaged or cut short: the scan never reads a block's bytes as records,
// even bytes that are a whole record (of block 2, with other contents).
func TestVolume_NoRecordsReadInsideData(t *testing.T) {
	rec := recordSize(1000)
	tests := []struct {
		name   string
		holder uint64 // the block whose bytes hold the fake record
		harm   func(t *testing.T, path string)
		want   []uint64
	}{
		// Records in the volume: blocks 2, 1, 3.
		{"DamagedData", 1, func(t *testing.T, p string) { flipByte(t, p, rec+volumeHeaderSize+900) }, []uint64{2, 3}},
		{"TornTail", 3, func(t *testing.T, p string) { truncate(t, p, 2*rec+volumeHeaderSize+600) }, []uint64{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpenPackedStore(t, dir)
			blocks := map[uint64][]byte{1: blockBytes(1, 1000), 2: blockBytes(2, 1000), 3: blockBytes(3, 1000)}
			fake := blockBytes(99, 300)
			copy(blocks[tt.holder][100:], appendRecord(nil, 2, fake, checksums(nil, fake)))
			for _, id := range []uint64{2, 1, 3} {
				mustPutBlock(t, s, id, blocks[id])
			}
			s.close()
			tt.harm(t, volumePaths(t, dir)[0])
			want := map[uint64][]byte{}
			for _, id := range tt.want {
				want[id] = blocks[id]
			}
			s = mustOpenPackedStore(t, dir)
			checkBlocks(t, s, want)
		})
	}
}

// A remove and a put of the same block at once: whatever the outcome in
// memory, a restart finds the same.
func TestVolume_RemoveRacingPut(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	data := blockBytes(7, 600)
	crcs := checksums(nil, data)
	want := map[uint64]bool{}
	for r := range 300 {
		id := uint64(r + 1)
		mustPutBlock(t, s, id, data)
		var wg sync.WaitGroup
		wg.Go(func() { s.remove(id) })
		wg.Go(func() { s.put(id, data, crcs) })
		wg.Wait()
		want[id] = s.has(id)
	}
	s.close()
	s = mustOpenPackedStore(t, dir)
	for id, w := range want {
		if s.has(id) != w {
			t.Errorf("%s: in the index before the restart: %v, after: %v", blockName(id), w, !w)
		}
	}
}

// A packed block that cannot be read at all (cut short here; EIO from a
// bad sector likewise) is still taken out of the store by quarantine.
func TestVolume_QuarantineUnreadable(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	mustPutBlock(t, s, 1, blockBytes(1, 3000))
	truncate(t, volumePaths(t, dir)[0], 1000)
	if err := s.verify(1); err == nil {
		t.Fatal("verify of a cut record passed")
	}
	if err := s.quarantine(1); err != nil {
		t.Errorf("quarantine: %v", err)
	}
	if s.has(1) {
		t.Error("block still served and reported after quarantine")
	}
}

// A restart goes on appending to the newest volume: restarts leave no
// trail of small volumes behind.
func TestVolume_RestartAppendsToNewest(t *testing.T) {
	dir := t.TempDir()
	want := map[uint64][]byte{}
	for i := range 5 {
		s := mustOpenPackedStore(t, dir)
		want[uint64(i+1)] = blockBytes(byte(i), 2000)
		mustPutBlock(t, s, uint64(i+1), want[uint64(i+1)])
		s.close()
	}
	if got := len(volumePaths(t, dir)); got != 1 {
		t.Errorf("%d volumes after 5 restarts, want 1", got)
	}
	s := mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// A block that fails its checksums when compaction moves it is dropped
// from the store and kept in corrupt/, as the scrubber's quarantine does.
func TestVolume_CompactionKeepsDamagedBlock(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	const n = 80 // 80 x 64 KiB: one volume
	want := map[uint64][]byte{}
	for i := range n {
		id := uint64(i + 1)
		want[id] = blockBytes(byte(i), 64<<10)
		mustPutBlock(t, s, id, want[id])
	}
	first := volumePaths(t, dir)[0]
	flipBlockByte(t, s, n, 777)
	damaged := want[n]
	delete(want, n)
	for id := uint64(1); id <= n-10; id++ {
		if err := s.remove(id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	waitFor(t, 10*time.Second, "the first volume compacted away", func() bool {
		_, err := os.Stat(first)
		return errors.Is(err, os.ErrNotExist)
	})
	checkBlocks(t, s, want)
	kept, err := os.ReadFile(filepath.Join(dir, "corrupt", blockName(n)))
	if err != nil {
		t.Fatalf("the damaged block is not in corrupt/: %v", err)
	}
	if len(kept) != len(damaged) || bytes.Equal(kept, damaged) {
		t.Errorf("corrupt/ holds %d bytes, want the %d damaged ones", len(kept), len(damaged))
	}
}

// allocatedBytes is the disk space that the file at path takes.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// skipWithoutHoles skips the test where the file system of dir cannot
// punch holes (the store then leaves the space to compaction).
func skipWithoutHoles(t *testing.T, dir string) {
	t.Helper()
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 8192)); err != nil {
		t.Fatal(err)
	}
	if err := punchHole(f, 0, 4096); errors.Is(err, syscall.EOPNOTSUPP) {
		t.Skipf("the file system of %s cannot punch holes", dir)
	} else if err != nil {
		t.Fatal(err)
	}
	os.Remove(f.Name())
}

// A removed packed block gives its disk space back at once, as a hole in
// its volume, long before compaction would; it stays removed across a
// restart, and the other blocks read back.
func TestVolume_RemoveFreesSpace(t *testing.T) {
	dir := t.TempDir()
	skipWithoutHoles(t, dir)
	s := mustOpenPackedStore(t, dir)
	want := map[uint64][]byte{}
	for i := range 20 {
		id := uint64(i + 1)
		want[id] = blockBytes(byte(i), 64<<10)
		mustPutBlock(t, s, id, want[id])
	}
	vol := volumePaths(t, dir)[0]
	before := allocatedBytes(t, vol)
	for id := uint64(1); id <= 10; id++ {
		if err := s.remove(id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	// Each record frees its data but the file-system blocks it shares
	// with its neighbours' headers.
	if freed, least := before-allocatedBytes(t, vol), int64(10*(64<<10-8<<10)); freed < least {
		t.Errorf("removing 10 blocks of 64 KiB freed %d bytes of disk, want at least %d", freed, least)
	}
	checkBlocks(t, s, want)
	s.close()
	s = mustOpenPackedStore(t, dir)
	checkBlocks(t, s, want)
}

// A reader that races the removal of a block gets its bytes or "not
// found": never the zeros of the hole the removal of a packed block
// leaves, nor the error of opening the files of one that went.
func TestVolume_ReadRacingRemove(t *testing.T) {
	for _, packed := range []bool{true, false} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			var s *blockStore
			if packed {
				s = mustOpenPackedStore(t, t.TempDir())
			} else {
				s = mustOpenStore(t)
			}
			readRacingRemove(t, s)
		})
	}
}

func readRacingRemove(t *testing.T, s *blockStore) {
	for i := range 300 {
		id := uint64(i + 1)
		data := blockBytes(byte(i), 64<<10)
		mustPutBlock(t, s, id, data)
		var wg sync.WaitGroup
		var readErr error
		wg.Go(func() {
			for {
				got, err := readBlock(s, id)
				switch {
				case errors.Is(err, ErrBlockNotFound):
					return
				case err != nil:
					readErr = err
					return
				case !bytes.Equal(got, data):
					readErr = fmt.Errorf("wrong bytes")
					return
				}
			}
		})
		if err := s.remove(id); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if readErr != nil {
			t.Fatalf("read of %s while it was removed: %v", blockName(id), readErr)
		}
	}
}

// Blocks removed while their volume is being compacted are not taken for
// damaged ones: the compactor does not read the hole a removal leaves, so
// nothing lands in corrupt/.
func TestVolume_RemoveDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	want := map[uint64][]byte{}
	id := uint64(0)
	for round := range 10 {
		var ids []uint64
		for range 100 {
			id++
			ids = append(ids, id)
			want[id] = blockBytes(byte(id), 64<<10)
			mustPutBlock(t, s, id, want[id])
		}
		for _, id := range ids[:90] { // wakes the compactor on the way
			if err := s.remove(id); err != nil {
				t.Fatalf("round %d: remove %s: %v", round, blockName(id), err)
			}
			delete(want, id)
		}
	}
	waitFor(t, 10*time.Second, "nothing left to compact", func() bool { return compacted(s) })
	checkBlocks(t, s, want)
	if kept, err := os.ReadDir(filepath.Join(dir, "corrupt")); len(kept) > 0 || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
		t.Errorf("corrupt/ holds %d files (%v) after removes raced compaction, want none", len(kept), err)
	}
}

// compacted reports whether no volume of s is worth compacting.
func compacted(s *blockStore) bool {
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, v := range vs.volumes {
		if vs.compactable(v) {
			return false
		}
	}
	return true
}

// A delete whose one-byte mark cannot be written punches no hole under the
// record: at a restart the block comes back whole (as an orphan, which the
// master deletes again), never as zeros under a live record.
func TestVolume_NoHoleUnderAFailedMark(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenPackedStore(t, dir)
	keep, gone := blockBytes(1, 5000), blockBytes(2, 5000)
	mustPutBlock(t, s, 1, keep)
	mustPutBlock(t, s, 2, gone)
	s.vols.pack.roll() // vol 0 becomes an older volume, read by its headers at start
	mustPutBlock(t, s, 3, blockBytes(3, 5000))
	s.vols.mu.Lock()
	v := s.vols.index[2].loc.vol
	s.vols.mu.Unlock()
	// Make the one-byte mark's pwrite fail (as EIO, ENOSPC on a CoW fs or
	// EDQUOT would); fdatasync and fallocate still work on this fd.
	bad, err := os.OpenFile(v.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	orig := v.marks
	v.marks = bad
	v.mu.Unlock()
	if err := s.remove(2); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.marks = orig
	v.mu.Unlock()
	bad.Close()
	if at, ok := volumeBlocks(t, dir)[2]; ok {
		data := make([]byte, at.size)
		f, _ := os.Open(at.path)
		f.ReadAt(data, at.off)
		f.Close()
		if !bytes.Equal(data, gone) {
			t.Errorf("the record of block 2 is still live on disk (its mark failed) but a hole was punched under it")
		}
	}
	s.close()
	s = mustOpenPackedStore(t, dir)
	if s.sizeOf(2) >= 0 {
		// Back as an orphan is the documented best effort; back as zeros is not.
		if _, err := readBlock(s, 2); err != nil {
			t.Errorf("after restart the removed block 2 is back in the index as zeros (reported to the master as a replica); read: %v", err)
		}
	}
}

// ---- volumeSet on its own ----

// fakeOwner is a volumeOwner with a fixed set of block files; it records
// the blocks kept for salvage.
type fakeOwner struct {
	files map[uint64]bool // read only once the set is open

	mu   sync.Mutex
	kept map[uint64][]byte
}

func (o *fakeOwner) hasFile(id uint64) bool { return o.files[id] }

func (o *fakeOwner) keepCorrupt(id uint64, data []byte, crcs []uint32) error {
	if err := verifyChecksums(data, crcs, 0); err != nil && !errors.Is(err, ErrChecksum) {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.kept == nil {
		o.kept = make(map[uint64][]byte)
	}
	o.kept[id] = bytes.Clone(data)
	return nil
}

// mustOpenVolumeSet opens the volume set in dir for owner and closes it at
// cleanup.
func mustOpenVolumeSet(t *testing.T, dir string, owner volumeOwner) *volumeSet {
	t.Helper()
	vs, err := openVolumeSet(dir, testLogger(t), owner)
	if err != nil {
		t.Fatalf("openVolumeSet(%s): %v", dir, err)
	}
	t.Cleanup(vs.close)
	return vs
}

// readPacked reads packed block id whole from vs and checks it.
func readPacked(vs *volumeSet, id uint64) ([]byte, error) {
	size, ok := vs.sizeOf(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrBlockNotFound, blockName(id))
	}
	data := make([]byte, size)
	crcs, ok, err := vs.read(id, 0, data)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, fmt.Errorf("%w: %s left under the read", ErrBlockNotFound, blockName(id))
	}
	return data, verifyChecksums(data, crcs, 0)
}

// checkPacked fails unless vs holds exactly want, byte for byte, and
// reports and counts just those.
func checkPacked(t *testing.T, vs *volumeSet, want map[uint64][]byte) {
	t.Helper()
	var total int64
	for id, data := range want {
		total += int64(len(data))
		got, err := readPacked(vs, id)
		if err != nil {
			t.Errorf("read %s: %v", blockName(id), err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("read %s: %d bytes differ from the %d put", blockName(id), len(got), len(data))
		}
	}
	if used, n := vs.usage(); used != total || n != len(want) {
		t.Errorf("usage() = %d bytes, %d blocks, want %d, %d", used, n, total, len(want))
	}
	got, wantSizes := map[uint64]int64{}, map[uint64]int64{}
	for _, r := range vs.report() {
		got[r.ID] = r.Size
	}
	for id, data := range want {
		wantSizes[id] = int64(len(data))
	}
	if !maps.Equal(got, wantSizes) {
		t.Errorf("report() = %v, want %v", got, wantSizes)
	}
}

func TestVolumeSet_Read(t *testing.T) {
	vs := mustOpenVolumeSet(t, t.TempDir(), &fakeOwner{})
	data := blockBytes(3, 5000)
	mustPutBlock(t, vs, 1, data)
	tests := []struct {
		name     string
		off, n   int64
		wantErr  error // nil: the bytes and their checksums
		notFound bool
	}{
		{"Whole", 0, 5000, nil, false},
		{"FirstChunk", 0, 512, nil, false},
		{"MiddleChunks", 1024, 1536, nil, false},
		{"ShortLastChunk", 4608, 392, nil, false},
		{"PastTheEnd", 4608, 512, ErrBadArg, false},
		{"Unknown", 0, 1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uint64(1)
			if tt.notFound {
				id = 2
			}
			buf := make([]byte, tt.n)
			crcs, ok, err := vs.read(id, tt.off, buf)
			switch {
			case ok == tt.notFound:
				t.Fatalf("read: ok %v, want %v", ok, !tt.notFound)
			case tt.notFound:
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("read: %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(buf, data[tt.off:tt.off+tt.n]) {
				t.Error("read returned other bytes than were put")
			}
			if err := verifyChecksums(buf, crcs, tt.off); err != nil {
				t.Errorf("the checksums read do not cover the bytes: %v", err)
			}
		})
	}
}

// put, remove and a restart, with the index, report and usage after each.
func TestVolumeSet_PutRemoveRestart(t *testing.T) {
	dir := t.TempDir()
	owner := &fakeOwner{}
	vs := mustOpenVolumeSet(t, dir, owner)
	want := map[uint64][]byte{}
	for id := range uint64(6) {
		want[id] = blockBytes(byte(id), 700*int(id+1))
		mustPutBlock(t, vs, id, want[id])
	}
	checkPacked(t, vs, want)
	if others := vs.remove([]uint64{1, 99, 4, 98}); !slices.Equal(others, []uint64{99, 98}) {
		t.Errorf("remove returned %v as not packed, want [99 98]", others)
	}
	delete(want, 1)
	delete(want, 4)
	checkPacked(t, vs, want)
	if err := vs.put(0, want[0], checksums(nil, want[0])); err != nil {
		t.Errorf("a resend of a packed block: %v, want nil", err)
	}
	checkPacked(t, vs, want)
	vs.close()
	vs = mustOpenVolumeSet(t, dir, owner)
	checkPacked(t, vs, want)
	if err := vs.put(42, []byte("x"), checksums(nil, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	vs.close()
	if err := vs.put(43, []byte("x"), checksums(nil, []byte("x"))); !errors.Is(err, errStoreClosed) {
		t.Errorf("put after close: %v, want errStoreClosed", err)
	}
}

// What load indexes, of volumes written by hand.
func TestVolumeSet_Load(t *testing.T) {
	a, b := blockBytes(1, 1000), blockBytes(2, 1500)
	rec := func(id uint64, data []byte) []byte { return appendRecord(nil, id, data, checksums(nil, data)) }
	deleted := func(r []byte) []byte { r[5] = stateDeleted; return r }
	tests := []struct {
		name    string
		volumes [][]byte // vol_00000000, vol_00000001, ...
		files   []uint64 // blocks the owner keeps as files
		want    map[uint64][]byte
	}{
		{"Empty", nil, nil, map[uint64][]byte{}},
		{"OneVolume", [][]byte{slices.Concat(rec(1, a), rec(2, b))}, nil, map[uint64][]byte{1: a, 2: b}},
		{"DeletedRecord", [][]byte{slices.Concat(deleted(rec(1, a)), rec(2, b))}, nil, map[uint64][]byte{2: b}},
		// A delete whose mark a crash lost, then a new copy: the later wins.
		{"StoredTwiceInOneVolume", [][]byte{slices.Concat(rec(1, a), rec(1, b))}, nil, map[uint64][]byte{1: b}},
		{"StoredTwiceInTwoVolumes", [][]byte{rec(1, b), rec(1, a)}, nil, map[uint64][]byte{1: a}},
		{"FileWins", [][]byte{slices.Concat(rec(1, a), rec(2, b))}, []uint64{1}, map[uint64][]byte{2: b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for seq, v := range tt.volumes {
				if err := os.WriteFile(filepath.Join(dir, volumeName(uint32(seq))), v, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			owner := &fakeOwner{files: map[uint64]bool{}}
			for _, id := range tt.files {
				owner.files[id] = true
			}
			vs := mustOpenVolumeSet(t, dir, owner)
			checkPacked(t, vs, tt.want)
		})
	}
}

// A block the owner keeps as a file stays a file: a packed copy of it is
// not indexed, and its record is deleted again.
func TestVolumeSet_Put_FileWins(t *testing.T) {
	storeDir := t.TempDir()
	owner := &fakeOwner{files: map[uint64]bool{7: true}}
	vs := mustOpenVolumeSet(t, filepath.Join(storeDir, "volumes"), owner)
	mustPutBlock(t, vs, 7, blockBytes(7, 2000))
	checkPacked(t, vs, map[uint64][]byte{})
	vs.close()
	if live := volumeBlocks(t, storeDir); len(live) != 0 {
		t.Errorf("live records on disk after a put of a block kept as a file: %v", live)
	}
}

func TestVolumeSet_Quarantine(t *testing.T) {
	tests := []struct {
		name       string
		harm       func(t *testing.T, dir string)
		wantPacked bool
		wantKept   bool
	}{
		{"Readable", func(*testing.T, string) {}, true, true},
		{"DamagedData", func(t *testing.T, dir string) {
			flipByte(t, filepath.Join(dir, volumeName(0)), volumeHeaderSize+10)
		}, true, true},
		{"CutShort", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, volumeName(0)), 100) }, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			owner := &fakeOwner{}
			vs := mustOpenVolumeSet(t, dir, owner)
			data := blockBytes(5, 3000)
			mustPutBlock(t, vs, 5, data)
			tt.harm(t, dir)
			if got := vs.quarantine(5); got != tt.wantPacked {
				t.Errorf("quarantine(5) = %v, want %v", got, tt.wantPacked)
			}
			if vs.quarantine(6) {
				t.Error("quarantine of a block never packed reports it packed")
			}
			checkPacked(t, vs, map[uint64][]byte{})
			owner.mu.Lock()
			kept, ok := owner.kept[5]
			owner.mu.Unlock()
			if ok != tt.wantKept {
				t.Fatalf("a copy kept: %v, want %v", ok, tt.wantKept)
			}
			if ok && len(kept) != len(data) {
				t.Errorf("kept %d bytes, want the %d of the block", len(kept), len(data))
			}
		})
	}
}
