package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// faultSmallDisk mounts a tmpfs of size bytes and returns its path. It is
// unmounted when the test ends, after the processes using it (cleanups run
// last first). Mounting needs root (CI runs as root): without it the test
// is skipped, saying why.
func faultSmallDisk(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-disk")
	if err := syscall.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("a small disk needs a tmpfs mount, which this process may not do: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// faultFullDiskError matches the errors a put may get from a full minion:
// the minion's own, or the master's when it knows the minion is full.
var faultFullDiskError = regexp.MustCompile(`no space left on device|no live minion with free space`)

// TestFault_DiskFull fills the disk of the only minion (a 6 MiB tmpfs)
// with small files and then a big one. Each put that does not fit fails
// with one line naming the cause and leaves no file; every put that
// succeeded reads back, also after a kill -9 of the minion; and once files
// are removed, the space comes back and puts succeed again.
func TestFault_DiskFull(t *testing.T) {
	t.Parallel()
	disk := faultSmallDisk(t, 6<<20)
	c := &e2eCluster{root: t.TempDir()}
	c.master = e2eStartMaster(t, filepath.Join(c.root, "master"), "127.0.0.1:0", "--replication", "1")
	dir := filepath.Join(disk, "minion-1")
	c.minions = append(c.minions, e2eStartMinion(t, dir, c.master, e2eHeartbeat, faultMinionFlags...))

	start := time.Now()
	acked := map[string][]byte{}
	checkFailed := func(r e2eResult, p string) {
		t.Helper()
		line := e2eMustFail(t, r, "put "+p+": ")
		if !faultFullDiskError.MatchString(line) {
			t.Errorf("put %s on a full disk: %q does not say the disk is full", p, line)
		}
		if string(r.stderr) != line+"\n" {
			t.Errorf("want exactly one line on stderr: %v", r)
		}
		e2eMustFail(t, e2eDFS(t, c.addr(), nil, "stat", p), "not found")
	}
	// A big file, in blocks too big to pack: each is a file of its own.
	checkFailed(e2eDFS(t, c.addr(), e2eRandom(20*e2eMiB), "put", "--block-size", "4MiB", "-", "/big"), "/big")
	e2eWaitFor(t, e2eWaitTimeout, "the failed put's blocks to go", func() (bool, string) {
		left := e2eBlockFiles(t, dir)
		tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		var names []string
		for _, e := range tmp {
			names = append(names, e.Name())
		}
		return len(left) == 0 && len(tmp) == 0, fmt.Sprintf("block files %v, in tmp/ %v", slices.Sorted(maps.Keys(left)), names)
	})
	// Once the master hears the space is back, small files fit.
	first := e2eRandom(192 * e2eKiB)
	e2eWaitFor(t, e2eWaitTimeout, "a small put to fit after the failed put", func() (bool, string) {
		r := e2eDFS(t, c.addr(), first, "put", "-", "/small/000")
		return r.code == 0, strings.TrimSpace(string(r.stderr))
	})
	acked["/small/000"] = first
	for i := 1; ; i++ {
		if i == 100 {
			t.Fatalf("100 puts of 192 KiB fitted on a 6 MiB disk")
		}
		p, data := fmt.Sprintf("/small/%03d", i), e2eRandom(192*e2eKiB)
		if r := e2eDFS(t, c.addr(), data, "put", "-", p); r.code != 0 {
			checkFailed(r, p)
			break
		}
		acked[p] = data
	}
	checkFailed(e2eDFS(t, c.addr(), e2eRandom(20*e2eMiB), "put", "-", "/big2"), "/big2")
	t.Logf("%d puts of 192 KiB fitted (%v)", len(acked), time.Since(start))
	if len(acked) < 15 {
		t.Errorf("only %d puts of 192 KiB fitted on a 6 MiB disk", len(acked))
	}
	faultGetAll(t, c.addr(), acked)

	t.Logf("read back after %v", time.Since(start))
	c.minions[0].kill9(t)
	c.minions[0] = e2eStartMinion(t, dir, c.master, e2eHeartbeat, faultMinionFlags...)
	faultGetAll(t, c.addr(), acked)

	// Space comes back: the blocks of removed files are deleted, their
	// volume compacted.
	gone := slices.Sorted(maps.Keys(acked))[5:]
	e2eMustDFS(t, c.addr(), nil, "rm", gone...)
	for _, p := range gone {
		delete(acked, p)
	}
	again := e2eRandom(3 * e2eMiB)
	e2eWaitFor(t, e2eWaitTimeout, "a put of 3 MiB to fit again", func() (bool, string) {
		r := e2eDFS(t, c.addr(), again, "put", "-", "/again")
		return r.code == 0, strings.TrimSpace(string(r.stderr))
	})
	t.Logf("space back after %v", time.Since(start))
	acked["/again"] = again
	faultGetAll(t, c.addr(), acked)
}
