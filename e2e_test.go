// e2e_test.go tests what a user does with the dfs binary: put, get, ls,
// stat, rm, mv, setrep, restarts and the error cases, each checked for its
// stdout, its one line on stderr and its exit code (harness:
// e2e_harness_test.go).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestE2E_PutGet_MultiBlock stores a file of several blocks with
// replication 3 on 3 minions and reads it back, to stdout and to a file.
func TestE2E_PutGet_MultiBlock(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 3)
	data := e2eRandom(5*e2eMiB + 512*e2eKiB)
	local := e2eWriteLocal(t, "big.bin", data)

	r := e2eMustDFS(t, c.addr(), nil, "put", "--replication", "3", local, "/data/big.bin")
	if len(r.stdout) != 0 || len(r.stderr) != 0 {
		t.Errorf("put printed something: %v\nstdout: %q", r, r.stdout)
	}

	r = e2eMustDFS(t, c.addr(), nil, "get", "/data/big.bin")
	e2eSameBytes(t, "get to stdout", r.stdout, data)

	outDir := t.TempDir()
	out := filepath.Join(outDir, "copy.bin")
	r = e2eMustDFS(t, c.addr(), nil, "get", "/data/big.bin", out)
	if len(r.stdout) != 0 {
		t.Errorf("get to a local file wrote %d bytes to stdout", len(r.stdout))
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	e2eSameBytes(t, "get to a local file", got, data)
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Errorf("get to a local file left %d entries in its dir, want only the file", len(ents))
	}

	fi := e2eStat(t, c.addr(), "/data/big.bin")
	if fi.Path != "/data/big.bin" || fi.Type != "file" || fi.Size != int64(len(data)) ||
		fi.Replication != 3 || fi.BlockSize != e2eMiB || fi.Modified == nil {
		t.Errorf("stat --json: got %+v, want /data/big.bin, a file of %d bytes, replication 3, block size %d, modified set",
			fi, len(data), e2eMiB)
	}
	if len(fi.Blocks) != 6 {
		t.Fatalf("stat --json: %d blocks, want 6: %+v", len(fi.Blocks), fi.Blocks)
	}
	var minionAddrs []string
	for _, m := range c.minions {
		minionAddrs = append(minionAddrs, m.addr)
	}
	for i, b := range fi.Blocks {
		lo, hi := int64(i)*e2eMiB, min(int64(i+1)*e2eMiB, int64(len(data)))
		if b.Size != hi-lo {
			t.Errorf("block %d: %d bytes, want %d", i, b.Size, hi-lo)
		}
		if want := fmt.Sprintf("%08x", crc32.Checksum(data[lo:hi], e2eCastagnoli)); b.CRC32C != want {
			t.Errorf("block %d: crc32c %s, want %s", i, b.CRC32C, want)
		}
		reps := slices.Sorted(slices.Values(b.Replicas))
		if !slices.Equal(slices.Compact(reps), slices.Sorted(slices.Values(minionAddrs))) {
			t.Errorf("block %d: replicas %v, want the 3 minions %v", i, b.Replicas, minionAddrs)
		}
	}
	e2eCheckBlocksOnDisk(t, c, fi)

	// ls: the directory at the root, the file in the directory.
	r = e2eMustDFS(t, c.addr(), nil, "ls")
	if f := strings.Fields(string(r.stdout)); len(f) != 6 || f[0] != "d" || f[2] != fmt.Sprint(len(data)) || f[5] != "/data/" {
		t.Errorf("ls: got %q, want one line: d - %d DATE TIME /data/", r.stdout, len(data))
	}
	r = e2eMustDFS(t, c.addr(), nil, "ls", "/data")
	if f := strings.Fields(string(r.stdout)); len(f) != 6 || f[0] != "-" || f[1] != "3" || f[2] != fmt.Sprint(len(data)) || f[5] != "/data/big.bin" {
		t.Errorf("ls /data: got %q, want one line: - 3 %d DATE TIME /data/big.bin", r.stdout, len(data))
	}
	entries := e2eLs(t, c.addr(), "/data", false)
	if len(entries) != 1 || entries[0].Path != "/data/big.bin" || entries[0].Type != "file" ||
		entries[0].Size != int64(len(data)) || entries[0].Replication != 3 || entries[0].Blocks != nil {
		t.Errorf("ls --json /data: got %+v, want the one file without blocks", entries)
	}
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, []string{"/data/big.bin"}) {
		t.Errorf("ls -R --json /: got %v, want [/data/big.bin]", got)
	}
}

// TestE2E_Put_StdinAndRelativePaths puts from stdin, and names remote paths
// without their leading slash; flags may follow the path.
func TestE2E_Put_StdinAndRelativePaths(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 1, "--replication", "1")
	data := e2eRandom(300*e2eKiB + 7)

	e2eMustDFS(t, c.addr(), data, "put", "-", "/dir/name")
	for _, p := range []string{"dir/name", "/dir/name", "/dir/../dir/name"} {
		r := e2eMustDFS(t, c.addr(), nil, "get", p)
		e2eSameBytes(t, "get "+p, r.stdout, data)
	}
	// The flag after the path, and a path without its slash.
	r := e2eMustDFS(t, c.addr(), nil, "stat", "dir/name", "--json")
	var fi e2eFileJSON
	if err := json.Unmarshal(r.stdout, &fi); err != nil {
		t.Fatalf("stat dir/name --json: %v\n%s", err, r.stdout)
	}
	if fi.Path != "/dir/name" || fi.Size != int64(len(data)) || fi.Replication != 1 || len(fi.Blocks) != 1 {
		t.Errorf("stat dir/name --json: got %+v, want /dir/name, %d bytes, replication 1, 1 block", fi, len(data))
	}
	if got := e2eLs(t, c.addr(), "dir", false); len(got) != 1 || got[0].Path != "/dir/name" {
		t.Errorf("ls --json dir: got %+v, want /dir/name", got)
	}

	// A relative remote path on put, and an empty stdin.
	e2eMustDFS(t, c.addr(), []byte{}, "put", "-", "rel/empty")
	fi = e2eStat(t, c.addr(), "/rel/empty")
	if fi.Size != 0 || len(fi.Blocks) != 0 {
		t.Errorf("stat /rel/empty: got %+v, want an empty file with no blocks", fi)
	}
	r = e2eMustDFS(t, c.addr(), nil, "get", "rel/empty")
	if len(r.stdout) != 0 {
		t.Errorf("get of an empty file wrote %d bytes", len(r.stdout))
	}
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, []string{"/dir/name", "/rel/empty"}) {
		t.Errorf("ls -R /: got %v", got)
	}
}

// TestE2E_Get_StdoutIsOnlyFileBytes checks that `dfs get` writes the file
// and nothing else to stdout, even when it logs warnings on the way.
func TestE2E_Get_StdoutIsOnlyFileBytes(t *testing.T) {
	t.Parallel()
	// A long dead-after: the killed minion stays listed, so the client
	// must fall back to the next replica and say so.
	c := e2eStartCluster(t, 3, "--dead-after", "30s")
	data := e2eRandom(2*e2eMiB + 100*e2eKiB)
	e2eMustDFS(t, c.addr(), data, "put", "-", "/f")

	for _, args := range [][]string{
		{"--verbose", "get", "--master", c.addr(), "/f"},
		{"get", "--master", c.addr(), "/f", "-"},
	} {
		r := e2eRun(t, nil, nil, args...)
		if r.code != 0 {
			t.Fatalf("want success: %v", r)
		}
		e2eSameBytes(t, "dfs "+strings.Join(args, " "), r.stdout, data)
	}

	first := c.minionAt(t, e2eStat(t, c.addr(), "/f").Blocks[0].Replicas[0])
	first.kill9(t)
	r := e2eRun(t, nil, nil, "--verbose", "get", "--master", c.addr(), "/f")
	if r.code != 0 {
		t.Fatalf("want success with a dead first replica: %v", r)
	}
	e2eSameBytes(t, "get with a dead first replica", r.stdout, data)
	if !bytes.Contains(r.stderr, []byte("replica failed")) {
		t.Errorf("want a warning about the dead replica on stderr: %v", r)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(r.stderr)), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("stderr line is not a log line: %q", line)
		}
	}
}

// TestE2E_Rm removes and replaces files and removes directories, and checks
// that the minions free the blocks that are no longer used.
func TestE2E_Rm(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 2, "--replication", "2")
	big := e2eRandom(e2eMiB + 3)
	small := e2eRandom(1000)
	newR := e2eRandom(900)
	e2eMustDFS(t, c.addr(), big, "put", "-", "/a")
	e2eMustDFS(t, c.addr(), small, "put", "-", "/d/x")
	e2eMustDFS(t, c.addr(), small, "put", "-", "/d/sub/y")
	e2eMustDFS(t, c.addr(), e2eRandom(700), "put", "-", "/r")
	e2eMustDFS(t, c.addr(), newR, "put", "--force", "-", "/r") // replaced
	for _, p := range []string{"/a", "/d/x", "/d/sub/y", "/r"} {
		e2eCheckBlocksOnDisk(t, c, e2eStat(t, c.addr(), p))
	}
	idR := e2eStat(t, c.addr(), "/r").Blocks[0].ID

	r := e2eMustDFS(t, c.addr(), nil, "rm", "/a")
	if len(r.stdout) != 0 || len(r.stderr) != 0 {
		t.Errorf("rm printed something: %v", r)
	}
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, []string{"/d/sub/y", "/d/x", "/r"}) {
		t.Errorf("ls -R / after rm /a: got %v", got)
	}
	r = e2eDFS(t, c.addr(), nil, "get", "/a")
	e2eMustFail(t, r, "not found")
	if len(r.stdout) != 0 {
		t.Errorf("get of a removed file wrote %d bytes", len(r.stdout))
	}

	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "rm", "/d"), "is a directory")
	e2eSameBytes(t, "/d/x after a refused rm /d", e2eMustDFS(t, c.addr(), nil, "get", "/d/x").stdout, small)
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "rm", "/nope"), "not found")

	e2eMustDFS(t, c.addr(), nil, "rm", "/d", "-r")
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, []string{"/r"}) {
		t.Errorf("ls -R / after rm -r /d: got %v, want [/r]", got)
	}
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "get", "/d/x"), "not found")
	e2eSameBytes(t, "get /r", e2eMustDFS(t, c.addr(), nil, "get", "/r").stdout, newR)

	// Only the new block of /r is left, on both minions.
	var want []string
	for _, m := range c.minions {
		want = append(want, filepath.Base(m.dir)+"/"+idR, filepath.Base(m.dir)+"/"+idR+".meta")
	}
	slices.Sort(want)
	e2eWaitFor(t, e2eWaitTimeout, "the minions to delete the unused blocks", func() (bool, string) {
		var got []string
		for _, m := range c.minions {
			for name := range e2eBlockFiles(t, m.dir) {
				got = append(got, filepath.Base(m.dir)+"/"+name)
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want), fmt.Sprintf("block files %v, want %v", got, want)
	})
}

// TestE2E_Mv moves files and directories with dfs mv: the bytes follow,
// refusals change nothing, and a kill -9 of the master right after an
// acknowledged move loses none of it.
func TestE2E_Mv(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 2, "--replication", "2")
	big, x, y, z := e2eRandom(e2eMiB+3), e2eRandom(1000), e2eRandom(2000), e2eRandom(3000)
	e2eMustDFS(t, c.addr(), big, "put", "-", "/a")
	e2eMustDFS(t, c.addr(), x, "put", "-", "/d/x")
	e2eMustDFS(t, c.addr(), y, "put", "-", "/d/sub/y")
	e2eMustDFS(t, c.addr(), z, "put", "-", "/z")
	blocksOfA := e2eStat(t, c.addr(), "/a").Blocks

	r := e2eMustDFS(t, c.addr(), nil, "mv", "/a", "/b")
	if len(r.stdout) != 0 || len(r.stderr) != 0 {
		t.Errorf("mv printed something: %v", r)
	}
	e2eMustDFS(t, c.addr(), nil, "mv", "/d", "/e")         // a directory
	e2eMustDFS(t, c.addr(), nil, "mv", "/b", "/e")         // into a directory
	e2eMustDFS(t, c.addr(), nil, "mv", "-f", "/z", "/e/x") // replacing a file
	for _, tt := range []struct{ src, dst, want string }{
		{"/nope", "/q", "not found: /nope"},
		{"/e/b", "/e/sub/y", "file exists"},
		{"/e", "/e/sub", "into itself"},
		{"/e/b", "/e/x/q", "not a directory"},
	} {
		line := e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mv", tt.src, tt.dst), tt.want)
		if !strings.HasPrefix(line, "dfs: mv "+tt.src+" "+tt.dst+": ") {
			t.Errorf("error line %q does not name the move", line)
		}
	}
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mv", "/e/b"), "mv takes SRC DST")

	c.master.kill9(t)
	c.master = e2eRestartMasterAt(t, c.master.dir, c.master.addr)
	want := map[string][]byte{"/e/b": big, "/e/x": z, "/e/sub/y": y}
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Errorf("ls -R / after the moves and a kill -9 of the master: %v", got)
	}
	for p, data := range want {
		e2eSameBytes(t, "get "+p, e2eMustDFS(t, c.addr(), nil, "get", p).stdout, data)
	}
	if got := e2eStat(t, c.addr(), "/e/b").Blocks; len(got) != len(blocksOfA) || got[0].ID != blocksOfA[0].ID {
		t.Errorf("/e/b has blocks %v, want those of /a %v: a move copies no data", got, blocksOfA)
	}
}

// TestE2E_Setrep raises a file's replication and waits for the copies,
// then lowers the replication of every file below / and waits for the
// extra replicas to go from the minions' disks.
func TestE2E_Setrep(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 3, "--replication", "1")
	data := e2eRandom(2*e2eMiB + 1000) // 3 blocks
	e2eMustDFS(t, c.addr(), data, "put", "-", "/f")
	check := func(n int) e2eFileJSON {
		t.Helper()
		fi := e2eStat(t, c.addr(), "/f")
		if fi.Replication != n {
			t.Errorf("stat /f: replication %d, want %d", fi.Replication, n)
		}
		for i, b := range fi.Blocks {
			if len(b.Replicas) != n {
				t.Errorf("block %d: replicas %v, want %d", i, b.Replicas, n)
			}
		}
		e2eCheckBlocksOnDisk(t, c, fi)
		return fi
	}

	r := e2eMustDFS(t, c.addr(), nil, "setrep", "3", "/f", "--wait")
	if want := "/f: 3 replicas of each of 3 blocks\n"; string(r.stdout) != want {
		t.Errorf("setrep --wait printed %q, want %q", r.stdout, want)
	}
	check(3)

	e2eMustDFS(t, c.addr(), nil, "setrep", "-w", "1", "/")
	fi := check(1)
	e2eWaitFor(t, e2eWaitTimeout, "the extra replicas to go", func() (bool, string) {
		n := 0
		for _, m := range c.minions {
			files := e2eBlockFiles(t, m.dir)
			for _, b := range fi.Blocks {
				if _, ok := files[b.ID]; ok {
					n++
				}
			}
		}
		return n == len(fi.Blocks), fmt.Sprintf("%d replicas on disk, want %d", n, len(fi.Blocks))
	})
	e2eSameBytes(t, "get /f", e2eMustDFS(t, c.addr(), nil, "get", "/f").stdout, data)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"0", "/f"}, "replication 0"},
		{[]string{"x", "/f"}, "N must be a number"},
		{[]string{"2", "/nope"}, "not found: /nope"},
		{[]string{"2"}, "setrep takes N PATH"},
	} {
		e2eMustFail(t, e2eDFS(t, c.addr(), nil, "setrep", tt.args...), tt.want)
	}
}

// TestE2E_Master_RestartAfterSIGINT stops the master with SIGINT and starts a
// new one on the same dir and address: every file is still there.
func TestE2E_Master_RestartAfterSIGINT(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 3)
	files := map[string][]byte{
		"/empty":   {},
		"/exact":   e2eRandom(2 * e2eMiB),
		"/dir/odd": e2eRandom(e2eMiB + 512*e2eKiB + 3),
	}
	for p, data := range files {
		e2eMustDFS(t, c.addr(), data, "put", "-", p, "--replication", "2")
	}

	from := c.master.numLines()
	c.master.signal(os.Interrupt)
	if code := c.master.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("master exited with %d after SIGINT, want 0", code)
	}
	if _, err := c.master.waitLine(from, time.Second, regexp.MustCompile(`msg="master stopped"`)); err != nil {
		t.Error(err)
	}

	// The minions keep running and find the new master at the old address.
	c.master = e2eRestartMasterAt(t, c.master.dir, c.master.addr)
	if _, err := c.master.waitLine(0, e2eWaitTimeout, regexp.MustCompile(`msg="master started" .*\bfiles=3\b`)); err != nil {
		t.Errorf("restarted master: %v", err)
	}
	if got := e2eLsPaths(t, c.addr(), "/"); !slices.Equal(got, []string{"/dir/odd", "/empty", "/exact"}) {
		t.Errorf("ls -R / after the restart: got %v", got)
	}
	for p, data := range files {
		r := e2eMustDFS(t, c.addr(), nil, "get", p)
		e2eSameBytes(t, "get "+p+" after the restart", r.stdout, data)
		fi := e2eStat(t, c.addr(), p)
		for i, b := range fi.Blocks {
			if len(b.Replicas) != 2 {
				t.Errorf("%s block %d: replicas %v after the restart, want 2", p, i, b.Replicas)
			}
		}
		e2eCheckBlocksOnDisk(t, c, fi)
	}
}

// TestE2E_Master_KillAfterPutAck kills -9 the whole cluster right after a
// put returned success: after a restart the file is there and readable.
func TestE2E_Master_KillAfterPutAck(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 3)
	data := e2eRandom(2*e2eMiB + 512*e2eKiB)
	e2eMustDFS(t, c.addr(), data, "put", "-", "/acked")
	c.master.kill9(t)
	for _, m := range c.minions {
		m.kill9(t)
	}

	// A new master on any port; the minions restart on their dirs and
	// register with it.
	c.master = e2eStartMaster(t, c.master.dir, "127.0.0.1:0")
	for i := range c.minions {
		c.minions[i] = e2eStartMinion(t, c.minionDir(i), c.master, e2eHeartbeat)
	}
	var addrs []string
	for _, m := range c.minions {
		addrs = append(addrs, m.addr)
	}
	slices.Sort(addrs)
	fi := e2eStat(t, c.addr(), "/acked")
	if fi.Size != int64(len(data)) || len(fi.Blocks) != 3 {
		t.Fatalf("stat /acked after kill -9: got %+v, want %d bytes in 3 blocks", fi, len(data))
	}
	for i, b := range fi.Blocks {
		if got := slices.Sorted(slices.Values(b.Replicas)); !slices.Equal(got, addrs) {
			t.Errorf("block %d: replicas %v, want the restarted minions %v", i, got, addrs)
		}
	}
	e2eCheckBlocksOnDisk(t, c, fi)
	e2eSameBytes(t, "get /acked after kill -9", e2eMustDFS(t, c.addr(), nil, "get", "/acked").stdout, data)

	// The restarted cluster takes new files.
	more := e2eRandom(e2eMiB + 1)
	e2eMustDFS(t, c.addr(), more, "put", "-", "/more")
	e2eSameBytes(t, "get /more", e2eMustDFS(t, c.addr(), nil, "get", "/more").stdout, more)
}

// TestE2E_Get_SurvivesKilledMinion kills -9 one of three minions: gets go on,
// the master notices, and puts go on with fewer replicas.
func TestE2E_Get_SurvivesKilledMinion(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 3)
	data := e2eRandom(e2eMiB + 512*e2eKiB)
	e2eMustDFS(t, c.addr(), data, "put", "-", "/f", "--replication", "3")

	victim := c.minionAt(t, e2eStat(t, c.addr(), "/f").Blocks[0].Replicas[0])
	victim.kill9(t)

	e2eSameBytes(t, "get right after the kill", e2eMustDFS(t, c.addr(), nil, "get", "/f").stdout, data)
	out := filepath.Join(t.TempDir(), "f")
	e2eMustDFS(t, c.addr(), nil, "get", "/f", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	e2eSameBytes(t, "get to a file right after the kill", got, data)

	e2eWaitFor(t, e2eWaitTimeout, "the master to count the minion dead", func() (bool, string) {
		fi := e2eStat(t, c.addr(), "/f")
		for _, b := range fi.Blocks {
			if len(b.Replicas) != 2 || slices.Contains(b.Replicas, victim.addr) {
				return false, fmt.Sprintf("replicas %v, dead %s", b.Replicas, victim.addr)
			}
		}
		return true, ""
	})
	if r := e2eMustDFS(t, c.addr(), nil, "stat", "/f"); !bytes.Contains(r.stdout, []byte("(2 of 3 live)")) {
		t.Errorf("stat /f does not show the missing replica:\n%s", r.stdout)
	}
	e2eSameBytes(t, "get with a dead minion", e2eMustDFS(t, c.addr(), nil, "get", "/f").stdout, data)

	// A put with replication 3 on 2 live minions succeeds with a warning.
	more := e2eRandom(600 * e2eKiB)
	r := e2eMustDFS(t, c.addr(), more, "put", "-", "/more", "--replication", "3")
	if !bytes.Contains(r.stderr, []byte("fewer replicas than asked")) {
		t.Errorf("want a warning about fewer replicas: %v", r)
	}
	for i, b := range e2eStat(t, c.addr(), "/more").Blocks {
		if len(b.Replicas) != 2 || slices.Contains(b.Replicas, victim.addr) {
			t.Errorf("/more block %d: replicas %v, want the 2 live minions", i, b.Replicas)
		}
	}
	e2eSameBytes(t, "get /more", e2eMustDFS(t, c.addr(), nil, "get", "/more").stdout, more)
}

// e2eGarbageMaster listens on loopback and answers every connection with bytes
// that are not net/rpc, then hangs up. It returns its address.
func e2eGarbageMaster(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(e2eQuick))
				garbage := bytes.Repeat([]byte("HTTP/1.0 418 I'm a teapot\r\n\x00\xff\xfe\x80"), 20)
				conn.Write(garbage)
				conn.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, conn) // until the client hangs up
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestE2E_Errors runs commands that must fail: each exits non-zero, quickly,
// with one "dfs: " line on stderr and nothing on stdout.
func TestE2E_Errors(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 1, "--replication", "1")
	lonely := e2eStartMaster(t, filepath.Join(t.TempDir(), "lonely"), "127.0.0.1:0")
	closed := closedPort(t)
	garbage := e2eGarbageMaster(t)

	oldData, newData := e2eRandom(1000), e2eRandom(2000)
	e2eMustDFS(t, c.addr(), oldData, "put", "-", "/exists")
	newLocal := e2eWriteLocal(t, "new", newData)
	missing := filepath.Join(t.TempDir(), "missing")
	localDir := t.TempDir()

	tests := []struct {
		name  string
		args  []string
		want  string             // in the error line
		after func(t *testing.T) // more checks, optional
	}{
		{name: "GetUnknownFile", args: []string{"get", "--master", c.addr(), "/no/such/file"}, want: "not found: /no/such/file"},
		{name: "GetDirectory", args: []string{"get", "--master", c.addr(), "/"}, want: "is a directory"},
		{
			name: "PutExistingWithoutForce", args: []string{"put", "--master", c.addr(), newLocal, "/exists"}, want: "file exists",
			after: func(t *testing.T) {
				e2eSameBytes(t, "/exists after a refused put", e2eMustDFS(t, c.addr(), nil, "get", "/exists").stdout, oldData)
				e2eMustDFS(t, c.addr(), nil, "put", "--force", newLocal, "/exists")
				e2eSameBytes(t, "/exists after put --force", e2eMustDFS(t, c.addr(), nil, "get", "/exists").stdout, newData)
			},
		},
		{name: "PutMissingLocalFile", args: []string{"put", "--master", c.addr(), missing, "/missing"}, want: "no such file or directory"},
		{name: "PutLocalDirectory", args: []string{"put", "--master", c.addr(), localDir, "/dir"}, want: "is a directory"},
		{name: "PutStdinWithoutRemote", args: []string{"put", "--master", c.addr(), "-"}, want: "needs a REMOTE"},
		{name: "MasterClosedPort", args: []string{"ls", "--master", closed}, want: "connection refused"},
		{name: "MasterSpeaksGarbage", args: []string{"ls", "--master", garbage}, want: "master " + garbage},
		{name: "MasterIsAMinion", args: []string{"ls", "--master", c.minions[0].addr}, want: "is not a dfs master"},
		{name: "MasterAddressWithoutPort", args: []string{"ls", "--master", "127.0.0.1"}, want: "missing port"},
		{
			name: "PutWithNoMinion", args: []string{"put", "--master", lonely.addr, newLocal, "/x"}, want: "no live minion",
			after: func(t *testing.T) {
				e2eMustFail(t, e2eDFS(t, lonely.addr, nil, "stat", "/x"), "not found")
				// The failed put was abandoned: a retry gets the same
				// error, not "being written by another client".
				e2eMustFail(t, e2eDFS(t, lonely.addr, nil, "put", newLocal, "/x"), "no live minion")
			},
		},
		{name: "ReplicationOutOfRange", args: []string{"put", "--master", c.addr(), "--replication", "99", newLocal, "/r"}, want: "--replication 99"},
		{name: "BlockSizeNotMultipleOf512", args: []string{"put", "--master", c.addr(), "--block-size", "1000", newLocal, "/b"}, want: "--block-size"},
		{name: "BlockSizeGarbage", args: []string{"put", "--master", c.addr(), "--block-size", "lots", newLocal, "/b"}, want: "bad size"},
		{name: "UnknownFlag", args: []string{"get", "--master", c.addr(), "--frobnicate", "/exists"}, want: "frobnicate"},
		{name: "UnknownCommand", args: []string{"frobnicate"}, want: "unknown command"},
		{name: "RmWithoutPath", args: []string{"rm", "--master", c.addr()}, want: "rm takes PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e2eRun(t, nil, nil, tt.args...)
			line := e2eMustFail(t, r, tt.want)
			t.Logf("%s -> %s", strings.Join(tt.args, " "), line)
			if string(r.stderr) != line+"\n" {
				t.Errorf("want exactly one line on stderr: %v", r)
			}
			if len(r.stdout) != 0 {
				t.Errorf("want nothing on stdout, got %q", r.stdout)
			}
			if r.elapsed > e2eQuick {
				t.Errorf("took %v, want under %v", r.elapsed, e2eQuick)
			}
			if tt.after != nil {
				tt.after(t)
			}
		})
	}
}

// TestE2E_Get_AllReplicasGone kills the only minion holding a block: get
// fails, and what it wrote before is a prefix of the file.
func TestE2E_Get_AllReplicasGone(t *testing.T) {
	t.Parallel()
	// A dead-after long enough for the first checks to find the dead
	// minion still listed.
	c := e2eStartCluster(t, 2, "--dead-after", "5s")
	const bs = 512 * e2eKiB
	data := e2eRandom(4 * bs)
	e2eMustDFS(t, c.addr(), data, "put", "-", "/f", "--replication", "1", "--block-size", "512KiB")
	fi := e2eStat(t, c.addr(), "/f")
	if len(fi.Blocks) != 4 {
		t.Fatalf("stat /f: %d blocks, want 4", len(fi.Blocks))
	}
	// Kill the holder of the first block that is not on block 0's minion:
	// the blocks before it can still be read. If every block is on one
	// minion, kill that one and nothing can be read.
	holder := func(i int) string { return fi.Blocks[i].Replicas[0] }
	lost := 0
	for i := range fi.Blocks {
		if holder(i) != holder(0) {
			lost = i
			break
		}
	}
	c.minionAt(t, holder(lost)).kill9(t)
	wantPrefix := data[:lost*bs]

	check := func(t *testing.T, want string) {
		t.Helper()
		r := e2eDFS(t, c.addr(), nil, "get", "/f")
		e2eMustFail(t, r, want)
		if !bytes.Equal(r.stdout, wantPrefix) {
			t.Errorf("stdout: %d bytes (prefix of the file: %v), want the %d bytes of the blocks before block %d",
				len(r.stdout), bytes.HasPrefix(data, r.stdout), len(wantPrefix), lost)
		}
		dir := t.TempDir()
		r = e2eDFS(t, c.addr(), nil, "get", "/f", filepath.Join(dir, "out"))
		e2eMustFail(t, r, want)
		if ents, _ := os.ReadDir(dir); len(ents) != 0 || len(r.stdout) != 0 {
			t.Errorf("a failed get to a local file left %d entries in its dir and wrote %d bytes to stdout", len(ents), len(r.stdout))
		}
	}
	// At once, the master still lists the dead minion: the dial fails.
	t.Run("DeadMinionListed", func(t *testing.T) { check(t, "all 1 replicas failed") })

	e2eWaitFor(t, e2eWaitTimeout, "the master to count the minion dead", func() (bool, string) {
		reps := e2eStat(t, c.addr(), "/f").Blocks[lost].Replicas
		return len(reps) == 0, fmt.Sprintf("block %d replicas %v", lost, reps)
	})
	t.Run("NoLiveReplica", func(t *testing.T) { check(t, "no live replica") })
	if r := e2eMustDFS(t, c.addr(), nil, "stat", "/f"); !bytes.Contains(r.stdout, []byte("(0 of 1 live)")) {
		t.Errorf("stat /f does not show the lost block:\n%s", r.stdout)
	}
}

// TestE2E_Rm_FreesBlocksAcrossMasterRestart removes a file and restarts the
// master before the minion's next heartbeat: the minion must still free the
// blocks of the removed file.
func TestE2E_Rm_FreesBlocksAcrossMasterRestart(t *testing.T) {
	t.Parallel()
	const hb = 2 * time.Second // the minion's: the restart fits between two heartbeats
	c := &e2eCluster{root: t.TempDir()}
	c.master = e2eStartMaster(t, filepath.Join(c.root, "master"), "127.0.0.1:0", "--replication", "1", "--dead-after", "30s")
	c.minions = []*e2eMinion{e2eStartMinion(t, c.minionDir(0), c.master, hb.String())}
	e2eMustDFS(t, c.addr(), e2eRandom(1000), "put", "-", "/a")
	e2eMustDFS(t, c.addr(), e2eRandom(1000), "put", "-", "/b")
	idA := e2eStat(t, c.addr(), "/a").Blocks[0].ID
	idB := e2eStat(t, c.addr(), "/b").Blocks[0].ID

	// The block of /a goes at a heartbeat; the next one is hb away.
	e2eMustDFS(t, c.addr(), nil, "rm", "/a")
	e2eWaitFor(t, hb+e2eWaitTimeout, "the block of /a to be deleted", func() (bool, string) {
		_, ok := e2eBlockFiles(t, c.minions[0].dir)[idA]
		return !ok, idA + " still there"
	})
	beat := time.Now()
	e2eMustDFS(t, c.addr(), nil, "rm", "/b")
	c.master.signal(os.Interrupt)
	if code := c.master.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("master exited with %d after SIGINT", code)
	}
	c.master = e2eRestartMasterAt(t, c.master.dir, c.master.addr, "--replication", "1", "--dead-after", "30s")
	t.Logf("rm /b and master restart done %v after a heartbeat (interval %v)", time.Since(beat).Round(time.Millisecond), hb)
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "stat", "/b"), "not found")

	gone := func() bool {
		_, ok := e2eBlockFiles(t, c.minions[0].dir)[idB]
		return !ok
	}
	deadline := time.Now().Add(4 * hb)
	for time.Now().Before(deadline) {
		if gone() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("BUG (master.go): the block %s of the removed file /b is still on the minion %v (4 heartbeats) after a "+
		"master restart, although Client.Remove promises that minions free the space at their next heartbeats: the "+
		"master keeps the blocks to delete in memory only (Master.deletes), and the restarted master takes the "+
		"heartbeats of a minion it loaded from its image (same id and address) without asking for a block report, so "+
		"the orphan stays until the minion's next periodic full block report (Minion.ReportInterval, 10m by default) "+
		"or its next restart", idB, 4*hb)

	// A restart of the minion sends a block report, which gets it deleted:
	// the block was orphaned, not just slow to go.
	c.minions[0].signal(os.Interrupt)
	c.minions[0].waitExit(t, 10*time.Second)
	c.minions[0] = e2eStartMinion(t, c.minionDir(0), c.master, hb.String())
	e2eWaitFor(t, e2eWaitTimeout, "the restarted minion to delete the orphan", func() (bool, string) {
		return gone(), idB + " still there"
	})
	t.Logf("after a restart of the minion (full block report) %s is gone", idB)
}

// TestE2E_Master_RestartThenPut restarts the master and puts a file at once,
// before the minion's next heartbeat: the restarted master knows the minion
// from its image and counts it live, so it must place blocks on it.
func TestE2E_Master_RestartThenPut(t *testing.T) {
	t.Parallel()
	const hb = 2 * time.Second // the minion's: the restart and the put fit between two heartbeats
	c := &e2eCluster{root: t.TempDir()}
	c.master = e2eStartMaster(t, filepath.Join(c.root, "master"), "127.0.0.1:0", "--replication", "1", "--dead-after", "30s")
	c.minions = []*e2eMinion{e2eStartMinion(t, c.minionDir(0), c.master, hb.String())}
	e2eMustDFS(t, c.addr(), e2eRandom(1000), "put", "-", "/a")
	id := e2eStat(t, c.addr(), "/a").Blocks[0].ID

	// The block of /a goes at a heartbeat; the next one is hb away.
	e2eMustDFS(t, c.addr(), nil, "rm", "/a")
	e2eWaitFor(t, hb+e2eWaitTimeout, "the block of /a to be deleted", func() (bool, string) {
		_, ok := e2eBlockFiles(t, c.minions[0].dir)[id]
		return !ok, id + " still there"
	})
	beat := time.Now()
	c.master.signal(os.Interrupt)
	if code := c.master.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("master exited with %d after SIGINT", code)
	}
	c.master = e2eRestartMasterAt(t, c.master.dir, c.master.addr, "--replication", "1", "--dead-after", "30s")
	data := e2eRandom(1000)
	r := e2eDFS(t, c.addr(), data, "put", "-", "/b")
	t.Logf("master restart and put done %v after a heartbeat (interval %v)", time.Since(beat).Round(time.Millisecond), hb)
	if r.code != 0 {
		t.Errorf("BUG (master.go): a put right after a master restart fails although its only minion is live with "+
			"free space: Master.applyMinion (called by Master.load) restores each minion of the image with "+
			"lastSeen=now but free=0, and Master.place wants free >= the block size, so every put fails with "+
			"ErrNoMinions until the minions' next heartbeats (3s by default) report their space: %v", r)
		e2eWaitFor(t, e2eWaitTimeout, "a put to work after the next heartbeat", func() (bool, string) {
			r := e2eDFS(t, c.addr(), data, "put", "-", "/b")
			return r.code == 0, string(r.stderr)
		})
	}
	e2eSameBytes(t, "get /b", e2eMustDFS(t, c.addr(), nil, "get", "/b").stdout, data)
}

// TestE2E_Minion_FinalizeDuringHeartbeat puts many blocks while the minion's
// heartbeat loop ticks every millisecond: the ticks must not get in the way
// of the blocks being finalized. Before a979b30 this deadlocked the minion
// (e2eDeadlockBug) within a few puts.
func TestE2E_Minion_FinalizeDuringHeartbeat(t *testing.T) {
	t.Parallel()
	c := &e2eCluster{root: t.TempDir()}
	c.master = e2eStartMaster(t, filepath.Join(c.root, "master"), "127.0.0.1:0", "--replication", "1", "--dead-after", "30s")
	c.minions = []*e2eMinion{e2eStartMinion(t, c.minionDir(0), c.master, "1ms")}
	data := e2eRandom(8 * 64 * e2eKiB)
	for i := range 20 {
		e2eMustDFS(t, c.addr(), data, "put", "--block-size", "64KiB", "-", fmt.Sprintf("/f%d", i))
	}
	e2eSameBytes(t, "get /f19", e2eMustDFS(t, c.addr(), nil, "get", "/f19").stdout, data)
}

// TestE2E_Dev runs `dfs dev`, finds it through DFS_MASTER and the secret it
// made through DFS_SECRET_FILE, and checks that it keeps its files (and its
// secret) across a SIGINT and a restart, and that a client without the
// secret is refused in one line.
func TestE2E_Dev(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	devAddrRE := regexp.MustCompile(`^\[stdout\] DFS_MASTER=(\S+)$`)
	start := func() (*e2eProc, string) {
		p := e2eStartProc(t, "dev", "dev", "--minions", "2", "--dir", dir, "--addr", "127.0.0.1:0",
			"--block-size", "1MiB", "--replication", "2", "--heartbeat", e2eHeartbeat, "--dead-after", e2eDeadAfter)
		m, err := p.waitLine(0, e2eStartTimeout, devAddrRE)
		if err != nil {
			t.Fatalf("dfs dev: %v\n%s", err, p.logText())
		}
		return p, m[1]
	}
	dev, addr := start()
	secret := filepath.Join(dir, "secret")
	if st, err := os.Stat(secret); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("dfs dev's secret: %v, %v; want a file of mode 0600", st, err)
	}
	want := "dfs: master " + addr + " refused: " + reasonNoSecret + "\n"
	if r := e2eRun(t, []string{"DFS_MASTER=" + addr}, []byte("x"), "put", "-", "/nosecret"); r.code != 1 || string(r.stderr) != want {
		t.Fatalf("put without the secret: %v; want exit 1 and %q", r, want)
	}
	data := e2eRandom(e2eMiB + 77)
	env := []string{"DFS_MASTER=" + addr, "DFS_SECRET_FILE=" + secret}
	if r := e2eRun(t, env, data, "put", "-", "/f"); r.code != 0 {
		t.Fatalf("put with DFS_MASTER and DFS_SECRET_FILE: %v", r)
	}

	dev.signal(os.Interrupt)
	if code := dev.waitExit(t, 10*time.Second); code != 0 {
		t.Fatalf("dfs dev exited with %d after SIGINT, want 0", code)
	}
	_, addr = start()
	r := e2eRun(t, []string{"DFS_MASTER=" + addr, "DFS_SECRET_FILE=" + secret}, nil, "get", "/f")
	if r.code != 0 {
		t.Fatalf("get after restarting dfs dev: %v", r)
	}
	e2eSameBytes(t, "get after restarting dfs dev", r.stdout, data)
}
