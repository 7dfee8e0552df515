package main

// Tests of dfs mount that mount for real (root and /dev/fuse; .ci/run
// installs fuse3, rsync and fio and sets DFS_REQUIRE_FUSE=1, so that CI
// fails rather than skips) and drive the mount with real tools.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireMount skips the test, loudly, where no FUSE mount can be made,
// and fails it there when DFS_REQUIRE_FUSE=1.
func requireMount(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse")
	}
	for _, tool := range append([]string{"fusermount3"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("MOUNT TEST NOT RUN: needs %s (apt-get install fuse3 rsync fio, as root)", strings.Join(missing, ", "))
	if os.Getenv("DFS_REQUIRE_FUSE") == "1" {
		t.Fatal(msg + "; DFS_REQUIRE_FUSE=1")
	}
	t.Skip(msg)
}

// mountBlockSize makes the big files of these tests a few blocks, not
// thousands.
const mountBlockSize = 4 << 20

// startMountCluster is a cluster of n minions with replication 2 and
// blocks of mountBlockSize.
func startMountCluster(t *testing.T, n int) *DevCluster {
	t.Helper()
	cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: n, Logger: testLogger(t), Heartbeat: testHeartbeat}
	cl.Configure = func(m *Master) error {
		configureTestMaster(m)
		m.BlockSize, m.Replication = mountBlockSize, 2
		return nil
	}
	cl.ConfigureMinion = func(mn *Minion) { mn.ScrubInterval = 0 }
	if err := cl.Start(); err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// mountAt mounts cl at a new directory and returns it; the mount ends
// with the test, and must end cleanly.
func mountAt(t *testing.T, cl *DevCluster, opt MountOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, cl)
	c.Timeout = 3 * time.Second
	opt.Logger = testLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Mount(ctx, c, dir, opt) }()
	waitFor(t, 10*time.Second, "the mount", func() bool {
		select {
		case err := <-done:
			t.Fatalf("mount: %v", err)
		default:
		}
		return isMountpoint(dir)
	})
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("unmount: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("the mount did not end within 20 s of its context")
		}
		if isMountpoint(dir) {
			t.Errorf("%s is still mounted", dir)
		}
	})
	return dir
}

func isMountpoint(dir string) bool {
	var st, parent syscall.Stat_t
	return syscall.Stat(dir, &st) == nil && syscall.Stat(filepath.Dir(dir), &parent) == nil && st.Dev != parent.Dev
}

// sh runs script with sh -c in dir and returns its output; it fails the
// test unless the script succeeds.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	out, err := shTry(dir, script)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

func shTry(dir, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func fileSHA(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// cp of a 200 MiB file in and out, and each file written through the
// mount read with the client, and the other way round.
func TestMount_CpInOut(t *testing.T) {
	requireMount(t)
	cl := startMountCluster(t, 3)
	mnt := mountAt(t, cl, MountOptions{})
	c := newTestClient(t, cl)
	local := t.TempDir()
	data := randomBytes(t, 200<<20)
	if err := os.WriteFile(filepath.Join(local, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, local, "mkdir -p "+mnt+"/in/deep && cp big "+mnt+"/in/deep/big && cp "+mnt+"/in/deep/big out")
	if got := fileSHA(t, filepath.Join(local, "out")); got != sha256.Sum256(data) {
		t.Fatalf("cp out of the mount: sha256 %x, want %x", got, sha256.Sum256(data))
	}
	mustGet(t, c, "/in/deep/big", data)
	fi, err := c.Stat(t.Context(), "/in/deep/big")
	if err != nil || len(fi.Blocks) != 50 || fi.Mode != 0o644 {
		t.Errorf("stat: %d blocks, mode %o, %v; want 50 blocks, 0644", len(fi.Blocks), fi.Mode, err)
	}

	small := randomBytes(t, 3<<20+17)
	mustPut(t, c, "/from-client", small, PutOptions{})
	got, err := os.ReadFile(filepath.Join(mnt, "from-client"))
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("read through the mount of a file put by the client: %d bytes, %v", len(got), err)
	}
	// Any offset, not only from the start.
	f, err := os.Open(filepath.Join(mnt, "in/deep/big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 1, mountBlockSize - 3, 77 << 20, int64(len(data)) - 5} {
		buf := make([]byte, 4096)
		n, err := f.ReadAt(buf, off)
		want := data[off:min(off+4096, int64(len(data)))]
		if !bytes.Equal(buf[:n], want) || (err != nil && n != len(want)) {
			t.Errorf("ReadAt(%d): %d bytes, %v", off, n, err)
		}
	}
	// Files are open with direct I/O, and mmap still works, shared too
	// (as programs that map what they read do). The mapping is in a
	// process of its own: a process that faults in pages of a FUSE file
	// system it serves itself can deadlock (the fault holds its memory
	// map's lock, which the serving goroutines' threads may need).
	cmd := exec.Command(os.Args[0], "-test.run=^TestMount_MmapChild$", "-test.v")
	cmd.Env = append(os.Environ(), "DFS_TEST_MMAP="+filepath.Join(mnt, "in/deep/big"))
	out, err := cmd.CombinedOutput()
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	if err != nil || strings.Count(string(out), "sha256 "+want) != 2 {
		t.Errorf("mmap through the mount: %v, want sha256 %s twice:\n%s", err, want, out)
	}
}

// TestMount_MmapChild is TestMount_CpInOut's child: it maps the file
// DFS_TEST_MMAP names, shared and then private, and prints the sha256 of
// the mapped bytes.
func TestMount_MmapChild(t *testing.T) {
	p := os.Getenv("DFS_TEST_MMAP")
	if p == "" {
		t.Skip("run by TestMount_CpInOut, in a process of its own")
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for _, flags := range []int{syscall.MAP_SHARED, syscall.MAP_PRIVATE} {
		m, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, flags)
		if err != nil {
			t.Fatalf("mmap (flags %#x): %v", flags, err)
		}
		fmt.Printf("sha256 %x\n", sha256.Sum256(m))
		syscall.Munmap(m)
	}
}

// Real trees with real tools: tar in and out, rsync twice, mv, find, du,
// rm -rf, and what the namespace keeps of them (modes, times).
func TestMount_Tools(t *testing.T) {
	requireMount(t, "rsync", "tar", "diff")
	cl := startMountCluster(t, 3)
	mnt := mountAt(t, cl, MountOptions{})
	c := newTestClient(t, cl)
	work := t.TempDir()
	// A real tree: this package's sources and test data, with an
	// executable script, an empty directory and an empty file.
	wd, _ := os.Getwd()
	sh(t, work, "mkdir src && cp -r "+wd+"/*.go "+wd+"/scripts "+wd+"/testdata src/ && mkdir src/empty && : > src/zero && "+
		"chmod 0600 src/main.go && chmod 0700 src/empty && touch -d 2001-02-03T04:05:06Z src/zero && tar cf src.tar -C src .")
	sh(t, work, "mkdir "+mnt+"/t && tar xf src.tar -C "+mnt+"/t && diff -r src "+mnt+"/t")
	sh(t, work, "mkdir back && tar cf - -C "+mnt+"/t . | tar xf - -C back && diff -r src back")
	if fi, err := c.Stat(t.Context(), "/t/main.go"); err != nil || fi.Mode != 0o600 {
		t.Errorf("mode of main.go: %o, %v; want 0600", fi.Mode, err)
	}
	if fi, err := c.Stat(t.Context(), "/t/zero"); err != nil || fi.ModTime.UTC() != time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC) {
		t.Errorf("mtime of zero: %v, %v", fi.ModTime, err)
	}
	if out := sh(t, work, "stat -c %a "+mnt+"/t/scripts/demo.sh "+mnt+"/t/empty"); out != "755\n700\n" {
		t.Errorf("modes through the mount: %q", out)
	}

	sh(t, work, "rsync -a src/ "+mnt+"/r/ && diff -r src "+mnt+"/r")
	out := sh(t, work, "rsync -a --stats src/ "+mnt+"/r/")
	if !strings.Contains(out, "Number of regular files transferred: 0") {
		t.Errorf("a second rsync copied files again:\n%s", out)
	}

	want := sh(t, work, "cd src && find . | sort")
	sh(t, work, "mv "+mnt+"/r "+mnt+"/moved")
	if got := sh(t, work, "cd "+mnt+"/moved && find . | sort"); got != want {
		t.Errorf("find after mv: %d lines, want %d", strings.Count(got, "\n"), strings.Count(want, "\n"))
	}
	if _, err := os.Stat(filepath.Join(mnt, "r")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old name after mv: %v", err)
	}
	if du := sh(t, work, "du -sk "+mnt+"/moved | cut -f1"); du == "0\n" {
		t.Errorf("du of the tree: %q", du)
	}
	mustGet(t, c, "/moved/mount.go", must(os.ReadFile(filepath.Join(work, "src/mount.go"))))
	sh(t, work, "rm -rf "+mnt+"/moved "+mnt+"/t")
	if entries, err := c.List(t.Context(), "/", false); err != nil || len(entries) != 0 {
		t.Errorf("after rm -rf: %v, %v", entries, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// fio writes a file through the mount and reads it back sequentially and
// at random offsets, verifying every block.
func TestMount_Fio(t *testing.T) {
	requireMount(t, "fio")
	cl := startMountCluster(t, 3)
	mnt := mountAt(t, cl, MountOptions{})
	f := mnt + "/fio.dat"
	common := " --filename=" + f + " --bs=64k --size=32M --verify=crc32c --verify_fatal=1"
	sh(t, mnt, "fio --name=write --rw=write --do_verify=0 --fallocate=none"+common)
	for _, rw := range []string{"read", "randread"} {
		out := sh(t, mnt, "fio --name="+rw+" --rw="+rw+" --verify_only=1 --readonly"+common)
		if !strings.Contains(out, "err= 0") {
			t.Errorf("fio %s:\n%s", rw, out)
		}
	}
}

// What a write-once file system refuses, it refuses with a clear errno,
// and a refused write leaves nothing half-done.
func TestMount_Refusals(t *testing.T) {
	requireMount(t)
	cl := startMountCluster(t, 2)
	mnt := mountAt(t, cl, MountOptions{})
	ro := mountAt(t, cl, MountOptions{ReadOnly: true})
	c := newTestClient(t, cl)
	mustPut(t, c, "/f", []byte("twelve bytes"), PutOptions{})
	mustPut(t, c, "/d/x", []byte("x"), PutOptions{})
	for _, tt := range []struct {
		name, script, want string
	}{
		{"WriteAtOffset", "printf x | dd of=" + mnt + "/new bs=1 seek=5 conv=notrunc", "Operation not supported"},
		{"Append", "echo more >> " + mnt + "/f", "Operation not supported"},
		{"RewriteInPlace", "printf x | dd of=" + mnt + "/f bs=1 conv=notrunc", "Operation not supported"},
		{"TruncateToSize", "truncate -s 5 " + mnt + "/f", "Operation not supported"},
		{"Chown", "chown 1234 " + mnt + "/f", "Operation not permitted"},
		{"RmdirNotEmpty", "rmdir " + mnt + "/d", "Directory not empty"},
		{"MkdirExists", "mkdir " + mnt + "/d", "File exists"},
		{"ReadOnlyWrite", "echo x > " + ro + "/g", "Read-only file system"},
		{"ReadOnlyRm", "rm " + ro + "/f", "Read-only file system"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := shTry(mnt, tt.script)
			if err == nil || !strings.Contains(out, tt.want) {
				t.Errorf("%s: %v, %q; want a failure with %q", tt.script, err, out, tt.want)
			}
		})
	}
	mustGet(t, c, "/f", []byte("twelve bytes"))
	for _, p := range []string{"/new", "/g"} {
		if fi, err := c.Stat(t.Context(), p); err == nil && fi.Size != 0 {
			t.Errorf("%s after a refused write: %+v", p, fi)
		}
	}
	// What works: O_TRUNC replaces, a shell's > writes, touch makes an
	// empty file, truncate to 0 empties one.
	sh(t, mnt, "echo new > f && test \"$(cat f)\" = new && touch empty && truncate -s 0 d/x")
	mustGet(t, c, "/f", []byte("new\n"))
	mustGet(t, c, "/empty", nil)
	mustGet(t, c, "/d/x", nil)
}

// A minion killed during reads and writes through the mount costs nothing;
// a master that is down gives EIO within the client's timeout, not a hang.
func TestMount_Faults(t *testing.T) {
	requireMount(t)
	cl := startMountCluster(t, 3)
	mnt := mountAt(t, cl, MountOptions{})
	c := newTestClient(t, cl)
	data := randomBytes(t, 24<<20)
	mustPut(t, c, "/f", data, PutOptions{})
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := make([]byte, len(data)/2)
	if _, err := f.ReadAt(half, 0); err != nil {
		t.Fatal(err)
	}
	cl.MinionSet[0].Close() // replication 2 of 3: some blocks keep one replica
	rest := make([]byte, len(data)-len(half))
	if _, err := f.ReadAt(rest, int64(len(half))); err != nil {
		t.Fatalf("read after a minion died: %v", err)
	}
	if !bytes.Equal(append(half, rest...), data) {
		t.Fatal("the bytes read through the mount differ")
	}
	local := filepath.Join(t.TempDir(), "w")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, mnt, "cp "+local+" w")
	mustGet(t, c, "/w", data)

	cl.Master.Close()
	start := time.Now()
	_, err = os.Stat(filepath.Join(mnt, "not-cached"))
	if !errors.Is(err, syscall.EIO) || time.Since(start) > 10*time.Second {
		t.Errorf("stat with the master down: %v after %v; want EIO within 10 s", err, time.Since(start))
	}
}

// The command: one line and exit 1 for a directory that cannot take a
// mount; SIGTERM unmounts cleanly.
func TestMount_CLI(t *testing.T) {
	requireMount(t)
	c := e2eStartCluster(t, 1)
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tt := range []struct{ name, dir, master, want string }{
		{"Missing", filepath.Join(dir, "nope"), c.addr(), "no such file or directory"},
		{"NotEmpty", full, c.addr(), "not empty"},
		{"NotADir", file, c.addr(), "not a directory"},
		{"NoMaster", t.TempDir(), closedPort(t), "connection refused"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e2eMustFail(t, e2eRun(t, nil, nil, "mount", "--master", tt.master, tt.dir), tt.want)
		})
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	p := e2eStartProc(t, "mount", "mount", "--master", c.addr(), mnt)
	e2eWaitFor(t, 10*time.Second, "the mount", func() (bool, string) { return isMountpoint(mnt), "not mounted" })
	e2eMustFail(t, e2eRun(t, nil, nil, "mount", "--master", c.addr(), mnt), "mounted there already")
	if err := os.WriteFile(filepath.Join(mnt, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e2eMustDFS(t, c.addr(), nil, "cat", "/hello"); string(r.stdout) != "hi" {
		t.Errorf("cat of a file written through the mount: %q", r.stdout)
	}
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(t, 15*time.Second); code != 0 {
		t.Errorf("mount exited %d after SIGTERM:\n%s", code, p.logText())
	}
	if isMountpoint(mnt) {
		t.Errorf("%s still mounted after SIGTERM", mnt)
	}
}

// Listings and attributes are calls to the master: they never wait behind
// a write in progress, even one whose writer stalls mid-file.
func TestMount_LsDuringWrite(t *testing.T) {
	requireMount(t)
	cl := startMountCluster(t, 2)
	mnt := mountAt(t, cl, MountOptions{})
	f, err := os.Create(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // before the unmount
	chunk := randomBytes(t, 1<<20)
	done := make(chan error, 1)
	go func() {
		for range 48 {
			if _, err := f.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil // and the writer stalls with the file open
	}()
	for i := 0; ; i++ {
		start := time.Now()
		out := sh(t, mnt, "ls -l . && stat -c %s big")
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("ls during a write took %v", took)
		}
		if !strings.Contains(out, "big") {
			t.Fatalf("ls during a write: %q", out)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if size := sh(t, mnt, "stat -c %s big"); size != fmt.Sprint(48<<20)+"\n" {
				t.Errorf("size of the open file: %q, want %d", size, 48<<20)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
	}
}
