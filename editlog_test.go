package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func putEdit(p string) *edit {
	return &edit{Op: opPut, Path: p, File: imageFile{Path: p, Replication: 1, BlockSize: 512,
		Blocks: []imageBlock{{ID: 7, Size: 3, CRC: 9, Replicas: []string{"MID-1"}}}}}
}

// writeEdits appends and syncs n put records to a fresh log in dir and
// leaves it open, as a crash would.
func writeEdits(t testing.TB, dir string, n int) {
	t.Helper()
	l, err := openEditLog(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		seq, err := l.append(putEdit(fmt.Sprintf("/f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.sync(seq); err != nil {
			t.Fatal(err)
		}
	}
}

// replayPaths replays dir from the start and returns the paths put.
func replayPaths(dir string) ([]string, uint64, error) {
	var paths []string
	last, _, err := replayEdits(dir, 0, func(e *edit) error {
		paths = append(paths, e.Path)
		return nil
	})
	return paths, last, err
}

func TestEditLog_Replay(t *testing.T) {
	dir := t.TempDir()
	writeEdits(t, dir, 5)
	paths, last, err := replayPaths(dir)
	if err != nil || last != 5 || len(paths) != 5 || paths[4] != "/f4" {
		t.Fatalf("replay = %v, %d, %v", paths, last, err)
	}
	// Records at or below the image's seq are skipped.
	var n int
	last, _, err = replayEdits(dir, 3, func(*edit) error { n++; return nil })
	if err != nil || last != 5 || n != 2 {
		t.Fatalf("replay after 3 = %d records, last %d, %v", n, last, err)
	}
}

func segmentPath(t *testing.T, dir string) string {
	t.Helper()
	firsts, err := segments(dir)
	if err != nil || len(firsts) == 0 {
		t.Fatalf("segments = %v, %v", firsts, err)
	}
	return filepath.Join(dir, segmentName(firsts[len(firsts)-1]))
}

// A crash in the middle of an append leaves a torn last record: it is cut
// off, and the records before it survive.
func TestEditLog_TornTail(t *testing.T) {
	tests := []struct {
		name string
		cut  func(size int64) int64 // new size of the segment
	}{
		{"HalfHeader", func(size int64) int64 { return size - 1 - recordLen(t) + 8 }},
		{"HalfBody", func(size int64) int64 { return size - 5 }},
		{"OneByte", func(size int64) int64 { return size - recordLen(t) + 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeEdits(t, dir, 4)
			p := segmentPath(t, dir)
			st, _ := os.Stat(p)
			if err := os.Truncate(p, tt.cut(st.Size())); err != nil {
				t.Fatal(err)
			}
			paths, last, err := replayPaths(dir)
			if err != nil || last != 3 || len(paths) != 3 {
				t.Fatalf("replay = %v, %d, %v; want the first 3 records", paths, last, err)
			}
			// The torn bytes are gone, so the log can grow again.
			if st, _ := os.Stat(p); st.Size() != 3*recordLen(t) {
				t.Errorf("segment is %d bytes after replay, want %d", st.Size(), 3*recordLen(t))
			}
		})
	}
	t.Run("LastRecordGarbled", func(t *testing.T) {
		dir := t.TempDir()
		writeEdits(t, dir, 4)
		p := segmentPath(t, dir)
		st, _ := os.Stat(p)
		flipByte(t, p, st.Size()-3)
		if _, last, err := replayPaths(dir); err != nil || last != 3 {
			t.Fatalf("replay = %d, %v; want 3 records", last, err)
		}
	})
}

// recordLen is the framed size of putEdit's record (paths of equal length).
func recordLen(t *testing.T) int64 {
	dir := t.TempDir()
	writeEdits(t, dir, 1)
	st, err := os.Stat(segmentPath(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Damage anywhere but at the very end is an error that names the file and
// the offset: never a silently shorter namespace.
func TestEditLog_Damage(t *testing.T) {
	n := recordLen(t)
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		offset int64
	}{
		{"FlippedMiddleRecord", func(t *testing.T, dir string) { flipByte(t, segmentPath(t, dir), n+20) }, n},
		{"BadLengthInMiddle", func(t *testing.T, dir string) { flipByte(t, segmentPath(t, dir), n) }, n},
		// A length that grows past the end of the file looks like a torn
		// append, but good records follow it.
		{"LengthPastEndInMiddle", func(t *testing.T, dir string) { flipBit(t, segmentPath(t, dir), n+2, 0x10) }, n},
		{"SeqInMiddle", func(t *testing.T, dir string) { flipByte(t, segmentPath(t, dir), n+11) }, n},
		{"TornOlderSegment", func(t *testing.T, dir string) {
			p := segmentPath(t, dir)
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-5)
			// A later segment makes this one not the last.
			os.WriteFile(filepath.Join(dir, segmentName(5)), nil, 0o644)
		}, 3 * n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeEdits(t, dir, 4)
			tt.damage(t, dir)
			_, _, err := replayPaths(dir)
			if !errors.Is(err, ErrBadEditLog) {
				t.Fatalf("replay = %v, want ErrBadEditLog", err)
			}
			if !strings.Contains(err.Error(), segmentName(1)) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", tt.offset)) {
				t.Errorf("error %q does not name the file and offset %d", err, tt.offset)
			}
		})
	}
	t.Run("MissingRecords", func(t *testing.T) {
		dir := t.TempDir()
		writeEdits(t, dir, 2)
		os.Rename(segmentPath(t, dir), filepath.Join(dir, segmentName(10)))
		if _, _, err := replayPaths(dir); !errors.Is(err, ErrBadEditLog) {
			t.Fatalf("replay with records 1-9 missing = %v, want ErrBadEditLog", err)
		}
	})
}

// Concurrent writers share fsyncs.
func TestEditLog_GroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, err := openEditLog(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	// A sync in progress, as a slow fdatasync of earlier records would
	// be: the writers' records gather meanwhile, and the next sync takes
	// them all. (Left to the scheduler, writers may not overlap at all on
	// one CPU with a fast disk.)
	l.mu.Lock()
	l.syncing = true
	l.mu.Unlock()
	const writers = 16
	var wg sync.WaitGroup
	var mu sync.Mutex // the master's lock: appends happen under it
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			mu.Lock()
			seq, err := l.append(putEdit(fmt.Sprintf("/w%d", w)))
			mu.Unlock()
			if err == nil {
				err = l.sync(seq)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	waitFor(t, 10*time.Second, "every writer's record appended", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.lastSeq == writers
	})
	l.mu.Lock()
	l.syncing = false
	l.cond.Broadcast()
	l.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	paths, last, err := replayPaths(dir)
	if err != nil || len(paths) != writers || last != writers {
		t.Fatalf("replay = %d records, last %d, %v", len(paths), last, err)
	}
	if l.syncs != 1 {
		t.Errorf("%d fsyncs for %d records gathered during one sync, want 1", l.syncs, writers)
	}
}

// After roll and a checkpoint at seq S, older segments go and replay from
// S finds the rest.
func TestEditLog_RollAndTrim(t *testing.T) {
	dir := t.TempDir()
	l, err := openEditLog(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	add := func(p string) {
		seq, err := l.append(putEdit(p))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.sync(seq); err != nil {
			t.Fatal(err)
		}
	}
	add("/a")
	add("/b")
	if _, err := l.roll(); err != nil {
		t.Fatal(err)
	}
	add("/c")
	if firsts, _ := segments(dir); len(firsts) != 2 || firsts[1] != 3 {
		t.Fatalf("segments after roll = %v, want [1 3]", firsts)
	}
	if err := removeSegmentsBefore(dir, 2); err != nil {
		t.Fatal(err)
	}
	if firsts, _ := segments(dir); len(firsts) != 1 || firsts[0] != 3 {
		t.Fatalf("segments after trim = %v, want [3]", firsts)
	}
	var got []string
	last, _, err := replayEdits(dir, 2, func(e *edit) error { got = append(got, e.Path); return nil })
	if err != nil || last != 3 || len(got) != 1 || got[0] != "/c" {
		t.Fatalf("replay after 2 = %v, %d, %v", got, last, err)
	}
}

// The master keeps every acknowledged change across a crash (no Close), and
// checkpoints keep the log short.
func TestMaster_EditLog_CrashAndCheckpoint(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	m.CheckpointBytes = 2048
	addMinions(t, m, 1)
	for i := range 30 {
		if err := putFile(t, m, fmt.Sprintf("/f/%02d", i), 10); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 && m.edits.size() > m.CheckpointBytes {
			if err := m.checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := m.remove(CallID{}, "/f/07", false); err != nil {
		t.Fatal(err)
	}
	if firsts, _ := segments(dir); len(firsts) > 2 {
		t.Errorf("%d segments after checkpoints, want at most 2", len(firsts))
	}
	m2 := newTestMaster(t, dir)
	entries, err := m2.list("/f", false)
	if err != nil || len(entries) != 29 {
		t.Fatalf("after crash: %d files, %v; want 29", len(entries), err)
	}
	if _, err := m2.stat("/f/07"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted file back after crash: %v", err)
	}
	fi, _ := m2.stat("/f/29")
	if len(fi.Blocks) != 1 || len(fi.Blocks[0].Replicas) != 1 {
		t.Errorf("replica addresses lost: %+v", fi)
	}
}

// A damaged log stops the master with an error, not a partial namespace.
func TestMaster_Start_DamagedEditLog(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 1)
	for i := range 3 {
		if err := putFile(t, m, fmt.Sprintf("/f%d", i), 10); err != nil {
			t.Fatal(err)
		}
	}
	flipByte(t, segmentPath(t, dir), 30)
	m2 := NewMaster(dir, "127.0.0.1:0")
	m2.Logger = testLogger(t)
	if err := m2.load(); !errors.Is(err, ErrBadEditLog) {
		t.Fatalf("load with a damaged log = %v, want ErrBadEditLog", err)
	}
}
