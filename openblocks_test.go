package main

import (
	"errors"
	"os"
	"testing"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("SKIP: cannot count open files: %v", err)
	}
	return len(ents)
}

// A block read packet by packet is opened once, a removed one is closed
// and no longer served, and the cache is bounded.
func TestBlockStore_Read_OpenFiles(t *testing.T) {
	s := mustOpenStore(t)
	want := blockBytes(3, 40*1024)
	mustStoreBlock(t, s, 1, want)
	before := openFDs(t)

	checkBlock(t, s, 1, want, 4096) // ten reads
	if got := len(s.open.m); got != 1 {
		t.Fatalf("after ten reads of one block, %d blocks are open, want 1", got)
	}
	if got := openFDs(t) - before; got != 2 {
		t.Fatalf("after ten reads of one block, %d more files are open, want 2 (data and .meta)", got)
	}

	if err := s.remove(1); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if got := openFDs(t) - before; got != 0 {
		t.Fatalf("after the block's removal, %d more files are open, want 0", got)
	}
	if _, _, err := s.read(1, 0, 4096); !errors.Is(err, ErrBlockNotFound) {
		t.Fatalf("read of a removed block = %v, want ErrBlockNotFound", err)
	}

	// More blocks read than the cache holds: it stays at its bound.
	for id := uint64(10); id < 10+maxOpenBlocks+8; id++ {
		mustStoreBlock(t, s, id, want[:4096])
		checkBlock(t, s, id, want[:4096], 4096)
	}
	if got := len(s.open.m); got != maxOpenBlocks {
		t.Fatalf("after reading %d blocks, %d are open, want the bound %d", maxOpenBlocks+8, got, maxOpenBlocks)
	}
	if got := openFDs(t) - before; got != 2*maxOpenBlocks {
		t.Fatalf("after reading %d blocks, %d more files are open, want %d", maxOpenBlocks+8, got, 2*maxOpenBlocks)
	}
	s.open.closeIdle(0)
	if got := openFDs(t) - before; got != 0 {
		t.Fatalf("after closing idle blocks, %d more files are open, want 0", got)
	}
}

// A block quarantined while a read holds its files is closed when that
// read ends.
func TestOpenBlocks_DropWhileRead(t *testing.T) {
	s := mustOpenStore(t)
	mustStoreBlock(t, s, 7, blockBytes(4, 8192))
	before := openFDs(t)
	b, _, err := s.open.get(7, s.dataPath(7))
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if err := s.quarantine(7); err != nil {
		t.Fatalf("quarantine: %v", err)
	}
	if got := openFDs(t) - before; got != 2 {
		t.Fatalf("while a read holds a quarantined block, %d more files are open, want 2", got)
	}
	var buf [512]byte
	if err := readFull(b.data, buf[:], 0); err != nil {
		t.Fatalf("read from the held file after quarantine: %v", err)
	}
	s.open.release(b)
	if got := openFDs(t) - before; got != 0 {
		t.Fatalf("after the read ended, %d more files are open, want 0", got)
	}
}
