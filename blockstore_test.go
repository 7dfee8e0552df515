package main

import (
	"bytes"
	"cmp"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// mustOpenStore opens a block store in a new temp dir and closes it at cleanup.
func mustOpenStore(t *testing.T) *blockStore {
	t.Helper()
	return mustReopenStore(t, t.TempDir())
}

// mustReopenStore opens the store in dir, as a minion does when it starts.
func mustReopenStore(t *testing.T, dir string) *blockStore {
	t.Helper()
	s, err := openBlockStore(dir, 0, testLogger(t))
	if err != nil {
		t.Fatalf("openBlockStore(%s): %v", dir, err)
	}
	t.Cleanup(s.close)
	return s
}

// blockBytes returns n pseudo-random bytes, the same for the same seed.
func blockBytes(seed byte, n int) []byte {
	var s [32]byte
	s[0] = seed
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// packet is one WriteBlock's worth of a block.
type packet struct {
	off  int64
	data []byte
}

// splitPackets cuts data into packets of n bytes (a multiple of
// bytesPerChecksum); the last one may be shorter.
func splitPackets(data []byte, n int) []packet {
	var ps []packet
	for off := 0; off < len(data); off += n {
		ps = append(ps, packet{off: int64(off), data: data[off:min(len(data), off+n)]})
	}
	return ps
}

// writePacket writes p to block id with correct checksums.
func writePacket(s *blockStore, id uint64, p packet) error {
	return s.write(id, p.off, p.data, checksums(nil, p.data))
}

// mustStoreBlock writes data as block id in packets of 4 KiB and finalizes it.
func mustStoreBlock(t *testing.T, s *blockStore, id uint64, data []byte) {
	t.Helper()
	for _, p := range splitPackets(data, 4096) {
		if err := writePacket(s, id, p); err != nil {
			t.Fatalf("write %s at %d: %v", blockName(id), p.off, err)
		}
	}
	if err := s.finalize(id, int64(len(data))); err != nil {
		t.Fatalf("finalize %s: %v", blockName(id), err)
	}
}

// checkBlock reads block id back in reads of chunk bytes and checks every
// byte and every CRC against want.
func checkBlock(t *testing.T, s *blockStore, id uint64, want []byte, chunk int64) {
	t.Helper()
	if !s.has(id) {
		t.Fatalf("has(%s) = false, want true", blockName(id))
	}
	var got []byte
	for off := int64(0); off < int64(len(want)); off += chunk {
		data, crcs, err := s.read(id, off, chunk)
		if err != nil {
			t.Fatalf("read(%s, %d, %d): %v", blockName(id), off, chunk, err)
		}
		if wantLen := min(chunk, int64(len(want))-off); int64(len(data)) != wantLen {
			t.Fatalf("read(%s, %d, %d) returned %d bytes, want %d", blockName(id), off, chunk, len(data), wantLen)
		}
		if wantCRCs := checksums(nil, want[off:off+int64(len(data))]); !slices.Equal(crcs, wantCRCs) {
			t.Fatalf("read(%s, %d, %d): CRCs %x, want %x", blockName(id), off, chunk, crcs, wantCRCs)
		}
		if err := verifyChecksums(data, crcs, off); err != nil {
			t.Fatalf("read(%s, %d, %d): %v", blockName(id), off, chunk, err)
		}
		got = append(got, data...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("block %s: read back %d bytes that differ from the %d written", blockName(id), len(got), len(want))
	}
	checkBlockFiles(t, s, id, int64(len(want)))
}

// checkBlockFiles checks the sizes of block id's files in blocks/.
func checkBlockFiles(t *testing.T, s *blockStore, id uint64, size int64) {
	t.Helper()
	p := s.dataPath(id)
	if fi, err := os.Stat(p); err != nil || fi.Size() != size {
		t.Errorf("data file %s: %v, want %d bytes", p, statSize(fi, err), size)
	}
	metaSize := int64(metaHeaderSize + 4*((size+bytesPerChecksum-1)/bytesPerChecksum))
	if fi, err := os.Stat(p + ".meta"); err != nil || fi.Size() != metaSize {
		t.Errorf("meta file %s.meta: %v, want %d bytes", p, statSize(fi, err), metaSize)
	}
}

func statSize(fi fs.FileInfo, err error) any {
	if err != nil {
		return err
	}
	return fi.Size()
}

// filesUnder lists the regular files below dir, relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, rel)
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return files
}

func sortedReport(s *blockStore) []BlockReport {
	r := s.report()
	slices.SortFunc(r, compareReports)
	return r
}

func compareReports(a, b BlockReport) int {
	return cmp.Compare(a.ID, b.ID)
}

func TestBlockName_RoundTrip(t *testing.T) {
	for _, id := range []uint64{0, 1, 0xff, 0x100, 0xdeadbeef, 1 << 63, math.MaxUint64} {
		name := blockName(id)
		if len(name) != len("blk_")+16 {
			t.Errorf("blockName(%#x) = %q, want 16 hex digits", id, name)
		}
		got, ok := parseBlockName(name)
		if !ok || got != id {
			t.Errorf("parseBlockName(%q) = %#x, %v; want %#x, true", name, got, ok, id)
		}
	}
}

func TestParseBlockName_Rejects(t *testing.T) {
	for _, name := range []string{
		"",
		"blk_",
		"blk_xyz",
		"../etc",
		"blk_../../etc/passwd",
		"blk_000000000000001",   // 15 digits
		"blk_00000000000000001", // 17 digits
		"blk_000000000000000g",
		"blk_-000000000000001",
		"blk_+000000000000001",
		"blk_0000000000000001.meta",
		"BLK_0000000000000001",
		"0000000000000001",
		"xblk_0000000000000001",
	} {
		if id, ok := parseBlockName(name); ok {
			t.Errorf("parseBlockName(%q) = %#x, true; want false", name, id)
		}
	}
}

func TestBlockStore_Write_Orders(t *testing.T) {
	const size = 5*4096 + 700 // six packets, the last one short
	tests := []struct {
		name  string
		order []int // indexes into the packets
	}{
		{"InOrder", []int{0, 1, 2, 3, 4, 5}},
		{"OutOfOrder", []int{3, 0, 5, 1, 4, 2}},
		{"Reversed", []int{5, 4, 3, 2, 1, 0}},
		{"LastFirst", []int{5, 0, 1, 2, 3, 4}},
		{"Duplicates", []int{0, 1, 1, 2, 3, 4, 5, 0}}, // a retried packet
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t)
			id := uint64(0x1234500 + i)
			data := blockBytes(byte(i), size)
			ps := splitPackets(data, 4096)
			for _, j := range tt.order {
				if err := writePacket(s, id, ps[j]); err != nil {
					t.Fatalf("write packet %d: %v", j, err)
				}
			}
			if s.has(id) {
				t.Fatal("has() = true before finalize")
			}
			if err := s.finalize(id, size); err != nil {
				t.Fatalf("finalize: %v", err)
			}
			for _, chunk := range []int64{512, 1536, 4096, packetSize} {
				checkBlock(t, s, id, data, chunk)
			}
			if used, n := s.usage(); used != size || n != 1 {
				t.Errorf("usage() = %d, %d; want %d, 1", used, n, size)
			}
			if got, want := s.report(), []BlockReport{{ID: id, Size: size}}; !slices.Equal(got, want) {
				t.Errorf("report() = %v, want %v", got, want)
			}
			if files := filesUnder(t, s.tmpDir()); len(files) != 0 {
				t.Errorf("tmp/ holds %v after finalize, want nothing", files)
			}
		})
	}
}

func TestBlockStore_Write_FullPackets(t *testing.T) {
	s := mustOpenStore(t)
	const id = 7
	data := blockBytes(7, 2*packetSize+1000)
	ps := splitPackets(data, packetSize)
	for _, j := range []int{2, 1, 0} {
		if err := writePacket(s, id, ps[j]); err != nil {
			t.Fatalf("write packet %d (%d bytes): %v", j, len(ps[j].data), err)
		}
	}
	if err := s.finalize(id, int64(len(data))); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	checkBlock(t, s, id, data, packetSize)
}

// Packets of several blocks arrive concurrently, as from several pipelines
// and a client's window of packets in flight.
func TestBlockStore_Write_Concurrent(t *testing.T) {
	s := mustOpenStore(t)
	const (
		blocks  = 3
		workers = 4
		size    = 40*4096 + 100
	)
	want := make(map[uint64][]byte)
	var wg sync.WaitGroup
	errCh := make(chan error, blocks*workers+blocks)
	for b := range blocks {
		id := uint64(0x500 + b)
		data := blockBytes(byte(b), size)
		want[id] = data
		ps := splitPackets(data, 4096)
		rand.New(rand.NewPCG(uint64(b), 1)).Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		for w := range workers {
			wg.Go(func() {
				for j := w; j < len(ps); j += workers {
					if err := writePacket(s, id, ps[j]); err != nil {
						errCh <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	for id := range want {
		wg.Go(func() { errCh <- s.finalize(id, size) })
	}
	wg.Wait()
	close(errCh)
	for err := range errCh {
		if err != nil {
			t.Fatal(err)
		}
	}
	for id, data := range want {
		checkBlock(t, s, id, data, 8192)
	}
	if used, n := s.usage(); used != blocks*size || n != blocks {
		t.Errorf("usage() = %d, %d; want %d, %d", used, n, blocks*size, blocks)
	}
}

func TestBlockStore_Finalize_Incomplete(t *testing.T) {
	data := blockBytes(1, 3*4096+700)
	ps := splitPackets(data, 4096) // four packets
	tests := []struct {
		name    string
		packets []int
		size    int64
	}{
		{"Gap", []int{0, 1, 3}, int64(len(data))},
		{"GapAtStart", []int{1, 2, 3}, int64(len(data))},
		{"Short", []int{0, 1}, int64(len(data))},
		{"ShortByOneByte", []int{0, 1, 2, 3}, int64(len(data)) + 1},
		{"TooLong", []int{0, 1, 2, 3}, 3 * 4096},
		{"TooLongByOneByte", []int{0, 1, 2, 3}, int64(len(data)) - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t)
			const id = 0x42
			for _, j := range tt.packets {
				if err := writePacket(s, id, ps[j]); err != nil {
					t.Fatalf("write packet %d: %v", j, err)
				}
			}
			if err := s.finalize(id, tt.size); err == nil {
				t.Fatalf("finalize(%d) of packets %v succeeded, want an error", tt.size, tt.packets)
			}
			if s.has(id) {
				t.Error("has() = true after a failed finalize")
			}
			if used, n := s.usage(); used != 0 || n != 0 {
				t.Errorf("usage() = %d, %d; want 0, 0", used, n)
			}
			if files := filesUnder(t, filepath.Join(s.dir, "blocks")); len(files) != 0 {
				t.Errorf("blocks/ holds %v after a failed finalize, want nothing", files)
			}
		})
	}
}

func TestBlockStore_Finalize_NeverWritten(t *testing.T) {
	s := mustOpenStore(t)
	if err := s.finalize(99, 4096); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("finalize of a block never written: %v, want ErrBlockNotFound", err)
	}
	if files := filesUnder(t, s.dir); len(files) != 0 {
		t.Errorf("store holds %v, want nothing", files)
	}
}

func TestBlockStore_Finalize_Empty(t *testing.T) {
	dir := t.TempDir()
	s := mustReopenStore(t, dir)
	const id = 0x3300
	if err := s.finalize(id, 0); err != nil {
		t.Fatalf("finalize(0): %v", err)
	}
	if !s.has(id) {
		t.Fatal("has() = false after finalize(0)")
	}
	checkBlockFiles(t, s, id, 0)
	if got, want := s.report(), []BlockReport{{ID: id, Size: 0}}; !slices.Equal(got, want) {
		t.Errorf("report() = %v, want %v", got, want)
	}
	// A retried finalize (its first reply lost) succeeds; one that
	// disagrees on the size does not.
	if err := s.finalize(id, 0); err != nil {
		t.Errorf("second finalize(0) of a stored block: %v, want success", err)
	}
	if err := s.finalize(id, 512); err == nil {
		t.Error("finalize(512) of a stored empty block succeeded, want an error")
	}
	if err := writePacket(s, id, packet{0, []byte("late")}); err == nil {
		t.Error("write to a finalized block succeeded, want an error")
	}

	s2 := mustReopenStore(t, dir)
	if got, want := s2.report(), []BlockReport{{ID: id, Size: 0}}; !slices.Equal(got, want) {
		t.Errorf("after reopen: report() = %v, want %v", got, want)
	}
}

func TestBlockStore_Finalize_BadSize(t *testing.T) {
	s := mustOpenStore(t)
	for _, size := range []int64{-1, maxBlockSize + 1} {
		if err := s.finalize(1, size); !errors.Is(err, ErrBadArg) {
			t.Errorf("finalize(1, %d) = %v, want ErrBadArg", size, err)
		}
	}
}

func TestBlockStore_Write_BadChecksum(t *testing.T) {
	data := blockBytes(2, 2048)
	good := checksums(nil, data)
	flipped := slices.Clone(data)
	flipped[1500] ^= 0x40
	badCRC := slices.Clone(good)
	badCRC[0]++
	tests := []struct {
		name string
		data []byte
		crcs []uint32
	}{
		{"WrongCRC", data, badCRC},
		{"FlippedData", flipped, good},
		{"TooFewCRCs", data, good[:3]},
		{"TooManyCRCs", data, append(slices.Clone(good), 0)},
		{"NoCRCs", data, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t)
			err := s.write(1, 0, tt.data, tt.crcs)
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("write = %v, want ErrChecksum", err)
			}
			// A packet is checked before anything is written.
			if files := filesUnder(t, s.tmpDir()); len(files) != 0 {
				t.Errorf("tmp/ holds %v after a rejected packet, want nothing", files)
			}
		})
	}
}

func TestBlockStore_Write_BadArg(t *testing.T) {
	tests := []struct {
		name string
		off  int64
		n    int
	}{
		{"MisalignedOffset", 100, 512},
		{"OffsetOneShort", bytesPerChecksum - 1, 512},
		{"NegativeOffset", -bytesPerChecksum, 512},
		{"Oversize", 0, packetSize + bytesPerChecksum},
		{"OversizeByOne", 0, packetSize + 1},
		{"Empty", 0, 0},
		{"PastMaxBlockSize", maxBlockSize - bytesPerChecksum, 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t)
			data := make([]byte, tt.n)
			if err := s.write(1, tt.off, data, checksums(nil, data)); !errors.Is(err, ErrBadArg) {
				t.Fatalf("write of %d bytes at %d = %v, want ErrBadArg", tt.n, tt.off, err)
			}
			if files := filesUnder(t, s.tmpDir()); len(files) != 0 {
				t.Errorf("tmp/ holds %v after a rejected packet, want nothing", files)
			}
		})
	}
}

func TestBlockStore_Read_BadArg(t *testing.T) {
	s := mustOpenStore(t)
	const id = 0x10
	mustStoreBlock(t, s, id, blockBytes(3, 5000))
	const aligned = 0x11
	mustStoreBlock(t, s, aligned, blockBytes(4, 4096))
	tests := []struct {
		name        string
		id          uint64
		off, length int64
	}{
		{"PastEnd", id, 5120, 512},
		{"FarPastEnd", id, 1 << 20, 512},
		{"AtEndOfAlignedBlock", aligned, 4096, 512},
		{"MisalignedOffset", id, 100, 512},
		{"NegativeOffset", id, -512, 512},
		{"ZeroLength", id, 0, 0},
		{"NegativeLength", id, 0, -1},
		{"Oversize", id, 0, packetSize + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, crcs, err := s.read(tt.id, tt.off, tt.length)
			if !errors.Is(err, ErrBadArg) {
				t.Fatalf("read(%s, %d, %d) = %d bytes, %d CRCs, %v; want ErrBadArg",
					blockName(tt.id), tt.off, tt.length, len(data), len(crcs), err)
			}
		})
	}
}

func TestBlockStore_Read_Unknown(t *testing.T) {
	s := mustOpenStore(t)
	if _, _, err := s.read(12345, 0, 512); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("read of an unknown block = %v, want ErrBlockNotFound", err)
	}
	// A block being received is not readable yet.
	if err := writePacket(s, 6, packet{0, blockBytes(6, 512)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.read(6, 0, 512); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("read of an unfinished block = %v, want ErrBlockNotFound", err)
	}
}

func TestBlockStore_Read_CorruptMetaHeader(t *testing.T) {
	tests := []struct {
		name string
		at   int // byte of the header to change
	}{
		{"Magic", 0},
		{"Version", 7},
		{"BytesPerChecksum", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t)
			const id = 0x77
			mustStoreBlock(t, s, id, blockBytes(5, 3000))
			flipByte(t, s.dataPath(id)+".meta", int64(tt.at))
			if _, _, err := s.read(id, 0, 512); !errors.Is(err, ErrChecksum) {
				t.Fatalf("read with a damaged .meta header = %v, want ErrChecksum", err)
			}
		})
	}
}

// The store serves what is on disk with the CRCs stored at write time: a
// flipped bit is caught by the reader (the client), which then tries the next
// replica.
func TestBlockStore_Read_FlippedDataByte(t *testing.T) {
	s := mustOpenStore(t)
	const id = 0x88
	want := blockBytes(8, 3000)
	mustStoreBlock(t, s, id, want)
	flipByte(t, s.dataPath(id), 1300)

	data, crcs, err := s.read(id, 1024, 2048)
	if err != nil {
		t.Fatalf("read of a block with a flipped byte: %v (the store does not verify)", err)
	}
	if bytes.Equal(data, want[1024:3000]) {
		t.Fatal("read returned the original bytes; the flip did not reach the disk")
	}
	if !slices.Equal(crcs, checksums(nil, want[1024:3000])) {
		t.Fatalf("read returned CRCs %x, want the ones stored at write time", crcs)
	}
	err = verifyChecksums(data, crcs, 1024)
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("verifyChecksums = %v, want ErrChecksum", err)
	}
	if !strings.Contains(err.Error(), "offset 1024") {
		t.Errorf("verifyChecksums = %q, want it to name the bad chunk at offset 1024", err)
	}
	// The chunks before the flip are intact.
	if d, c, err := s.read(id, 0, 1024); err != nil || verifyChecksums(d, c, 0) != nil {
		t.Errorf("read of the intact first 1024 bytes: %v, verify %v", err, verifyChecksums(d, c, 0))
	}
}

func TestBlockStore_Reopen(t *testing.T) {
	dir := t.TempDir()
	s1 := mustReopenStore(t, dir)
	blocks := map[uint64][]byte{
		0x101: blockBytes(1, 5000),
		0x201: blockBytes(2, 4096), // same subdir as 0x101
		0x7:   {},                  // empty
		0xabc: blockBytes(3, 10000),
	}
	var used int64
	for id, data := range blocks {
		mustStoreBlock(t, s1, id, data)
		used += int64(len(data))
	}
	// A block still being received when the process dies.
	if err := writePacket(s1, 0x42, packet{0, blockBytes(4, 4096)}); err != nil {
		t.Fatal(err)
	}
	// Other leftovers of a crash: junk in tmp/ and a .meta renamed into
	// blocks/ whose data file never followed (the commit point).
	mustWriteFile(t, filepath.Join(dir, "tmp", "junk"), "x")
	mustWriteFile(t, filepath.Join(dir, "tmp", "sub", "deeper"), "x")
	orphan := filepath.Join(dir, "blocks", "99", blockName(0x1299)+".meta")
	mustWriteFile(t, orphan, "DFSB")
	// Files that are not the store's.
	foreign := []string{
		filepath.Join(dir, "blocks", "README"),
		filepath.Join(dir, "blocks", "01", "notes.txt"),
		filepath.Join(dir, "blocks", "01", "blk_xyz"),
	}
	for _, p := range foreign {
		mustWriteFile(t, p, "not a block")
	}

	// Reopen without closing s1, as after kill -9.
	s2 := mustReopenStore(t, dir)

	var want []BlockReport
	for id, data := range blocks {
		want = append(want, BlockReport{ID: id, Size: int64(len(data))})
	}
	slices.SortFunc(want, compareReports)
	if got := sortedReport(s2); !slices.Equal(got, want) {
		t.Errorf("report() after reopen = %v, want %v", got, want)
	}
	if gotUsed, n := s2.usage(); gotUsed != used || n != len(blocks) {
		t.Errorf("usage() after reopen = %d, %d; want %d, %d", gotUsed, n, used, len(blocks))
	}
	if fi, err := os.Stat(s2.tmpDir()); err != nil || !fi.IsDir() {
		t.Fatalf("tmp/ after reopen: %v", err)
	}
	if files := filesUnder(t, s2.tmpDir()); len(files) != 0 {
		t.Errorf("tmp/ after reopen holds %v, want nothing", files)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan %s survived the reopen (stat: %v)", orphan, err)
	}
	for _, p := range foreign {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("foreign file %s: %v, want it left alone", p, err)
		}
	}
	for id, data := range blocks {
		if len(data) > 0 {
			checkBlock(t, s2, id, data, 4096)
		}
	}
	if s2.has(0x42) {
		t.Error("has(unfinished block) = true after reopen")
	}
	if err := s2.finalize(0x42, 4096); !errors.Is(err, ErrBlockNotFound) {
		t.Errorf("finalize of a block received before the restart = %v, want ErrBlockNotFound", err)
	}
}

// The cleanup of orphan .meta files at start must only touch the store's own
// files, as it does for every other name in blocks/.
func TestBlockStore_Reopen_ForeignMetaFile(t *testing.T) {
	dir := t.TempDir()
	mustReopenStore(t, dir)
	foreign := filepath.Join(dir, "blocks", "01", "notes.meta")
	mustWriteFile(t, foreign, "mine")
	mustReopenStore(t, dir)
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("foreign file %s: %v, want it left alone", foreign, err)
	}
}

func mustWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBlockStore_Remove(t *testing.T) {
	t.Run("Present", func(t *testing.T) {
		s := mustOpenStore(t)
		mustStoreBlock(t, s, 1, blockBytes(1, 5000))
		mustStoreBlock(t, s, 2, blockBytes(2, 3000))
		if err := s.remove(1); err != nil {
			t.Fatalf("remove: %v", err)
		}
		if s.has(1) {
			t.Error("has() = true after remove")
		}
		for _, p := range []string{s.dataPath(1), s.dataPath(1) + ".meta"} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s after remove: %v, want it gone", p, err)
			}
		}
		if _, _, err := s.read(1, 0, 512); !errors.Is(err, ErrBlockNotFound) {
			t.Errorf("read after remove = %v, want ErrBlockNotFound", err)
		}
		if used, n := s.usage(); used != 3000 || n != 1 {
			t.Errorf("usage() = %d, %d; want 3000, 1", used, n)
		}
		if err := s.remove(1); err != nil {
			t.Errorf("second remove: %v", err)
		}
		if used, n := s.usage(); used != 3000 || n != 1 {
			t.Errorf("usage() after a second remove = %d, %d; want 3000, 1", used, n)
		}
	})
	t.Run("Absent", func(t *testing.T) {
		s := mustOpenStore(t)
		if err := s.remove(12345); err != nil {
			t.Fatalf("remove of an absent block: %v", err)
		}
		if used, n := s.usage(); used != 0 || n != 0 {
			t.Errorf("usage() = %d, %d; want 0, 0", used, n)
		}
	})
	t.Run("BeingWritten", func(t *testing.T) {
		s := mustOpenStore(t)
		if err := writePacket(s, 3, packet{0, blockBytes(3, 4096)}); err != nil {
			t.Fatal(err)
		}
		if err := s.remove(3); err != nil {
			t.Fatalf("remove of a block being written: %v", err)
		}
		if files := filesUnder(t, s.tmpDir()); len(files) != 0 {
			t.Errorf("tmp/ holds %v, want nothing", files)
		}
		if err := s.finalize(3, 4096); !errors.Is(err, ErrBlockNotFound) {
			t.Errorf("finalize after remove = %v, want ErrBlockNotFound", err)
		}
	})
}

func TestBlockStore_Expire(t *testing.T) {
	s := mustOpenStore(t)
	const idle, busy = 0x1d1e, 0xb05
	for _, id := range []uint64{idle, busy} {
		if err := writePacket(s, id, packet{0, blockBytes(byte(id), 4096)}); err != nil {
			t.Fatal(err)
		}
	}
	// Age the idle writer instead of waiting for it to become idle.
	s.mu.Lock()
	w := s.writers[idle]
	s.mu.Unlock()
	w.mu.Lock()
	w.lastUsed = time.Now().Add(-time.Hour)
	w.mu.Unlock()

	if got := s.expire(time.Minute); !slices.Equal(got, []uint64{idle}) {
		t.Fatalf("expire() = %x, want [%x]", got, idle)
	}
	if got, want := filesUnder(t, s.tmpDir()), []string{blockName(busy), blockName(busy) + ".meta"}; !slices.Equal(got, want) {
		t.Errorf("tmp/ after expire holds %v, want %v", got, want)
	}
	if err := s.finalize(idle, 4096); !errors.Is(err, ErrBlockNotFound) {
		t.Errorf("finalize of an expired block = %v, want ErrBlockNotFound", err)
	}
	if got := s.expire(time.Minute); len(got) != 0 {
		t.Errorf("second expire() = %x, want nothing", got)
	}
	if err := s.finalize(busy, 4096); err != nil {
		t.Fatalf("finalize of the busy block: %v", err)
	}
}

// expire runs on every minion tick, and takes the store's lock and then each
// writer's; finalize holds a writer's lock through the fsyncs and then takes
// the store's. When both meet, neither returns and the minion's store hangs.
func TestBlockStore_Finalize_ConcurrentExpire(t *testing.T) {
	// No close at cleanup: after a deadlock it would block on s.mu too.
	s, err := openBlockStore(t.TempDir(), 0, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				s.expire(time.Hour)
			}
		}
	})
	done := make(chan error, 1)
	go func() {
		data := blockBytes(9, 4096)
		for id := range uint64(200) {
			if err := writePacket(s, id, packet{0, data}); err != nil {
				done <- err
				return
			}
			if err := s.finalize(id, 4096); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("finalize with a concurrent expire did not return in 10s: deadlock")
	}
}

// A block whose write fails (a full disk, an I/O error) is given up at
// once: its files go, giving their space back, and packets of it still in
// flight are refused rather than starting it again.
func TestBlockStore_WriteFailureGivesUpBlock(t *testing.T) {
	s := mustOpenStore(t)
	const id = 7
	data := blockBytes(1, 3*packetSize)
	pkt := func(i int) error {
		p := data[i*packetSize : (i+1)*packetSize]
		return s.write(id, int64(i*packetSize), p, checksums(nil, p))
	}
	if err := pkt(0); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.writers[id].data.Close() // the next write of it fails
	s.mu.Unlock()
	if err := pkt(1); err == nil {
		t.Fatal("a write to a closed file succeeded")
	}
	for i, want := range []string{"after the failure", "after a late packet"} {
		if i > 0 {
			if err := pkt(2); err == nil || !strings.Contains(err.Error(), "failed here") || !strings.Contains(err.Error(), "file already closed") {
				t.Errorf("late packet: %v, want it refused, saying why", err)
			}
		}
		if tmp, err := os.ReadDir(s.tmpDir()); err != nil || len(tmp) != 0 {
			t.Errorf("%s: tmp/ holds %v (%v), want nothing", want, tmp, err)
		}
	}
	if err := s.finalize(id, int64(len(data))); err == nil {
		t.Error("finalize of a given-up block succeeded")
	}
}
