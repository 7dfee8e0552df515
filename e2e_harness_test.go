// e2e_harness_test.go runs the dfs binary as a user does, for the tests of
// e2e_test.go, faults_test.go and others. The binary is built once into a
// temp dir; each test starts a master and minions as child
// processes on loopback port 0 (each child binds :0 itself and the test reads
// the address from its log), drives them with the client verbs and checks
// stdout, stderr and exit codes. Children are killed at cleanup, and their
// logs are printed only when the test failed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	e2eKiB = 1 << 10
	e2eMiB = 1 << 20

	// e2eCmdTimeout bounds one client command. A healthy one takes well
	// under a second here; the bound stays below the client's own
	// finalize timeout so that a hung minion shows as a hung command.
	e2eCmdTimeout = 10 * time.Second
	// e2eStartTimeout bounds the start of a daemon.
	e2eStartTimeout = 15 * time.Second
	// e2eWaitTimeout bounds a wait for a condition of the cluster.
	e2eWaitTimeout = 15 * time.Second
	// e2eQuick is how long a command that fails early may take.
	e2eQuick = 5 * time.Second
)

// Every minion heartbeats every e2eHeartbeat, and a master counts a
// minion dead after e2eDeadAfter of silence, so that deletes, deaths and
// re-registrations show within seconds.
const (
	e2eHeartbeat = "200ms"
	e2eDeadAfter = "2s"
)

// ---- the binary ----

var (
	e2eBuildOnce sync.Once
	e2eBuildDir  string // removed by TestMain
	e2eBuildPath string
	e2eBuildErr  error
)

// TestMain removes the binary built by e2eBinary once every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if e2eBuildDir != "" {
		os.RemoveAll(e2eBuildDir)
	}
	os.Exit(code)
}

// e2eBinary builds dfs on first use (so unit-test runs don't pay for it) and
// returns its path. A failed build fails every end-to-end test.
func e2eBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	e2eBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dfs-e2e-bin-")
		if err != nil {
			e2eBuildErr = err
			return
		}
		e2eBuildDir = dir
		e2eBuildPath = filepath.Join(dir, "dfs")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", e2eBuildPath, ".").CombinedOutput()
		if err != nil {
			e2eBuildErr = fmt.Errorf("go build -o %s .: %v\n%s", e2eBuildPath, err, out)
		}
	})
	if e2eBuildErr != nil {
		t.Fatalf("BUILD FAILED, no end-to-end test can run: %v", e2eBuildErr)
	}
	return e2eBuildPath
}

// e2eEnv is the environment of every child: ours without DFS_MASTER, so
// only the --master flags the tests pass count.
func e2eEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DFS_MASTER=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// ---- daemons ----

// e2eProc is a running dfs daemon. Its stderr (and stdout, prefixed with
// "[stdout] ") is kept line by line.
type e2eProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read

	// mu guards the fields below.
	mu      sync.Mutex
	lines   []string
	wake    chan struct{} // closed and replaced at every new line and at exit
	exited  bool
	waitErr error
}

// e2eStartProc starts `dfs args...`. It is killed at cleanup, and its output is
// logged if the test failed.
func e2eStartProc(t *testing.T, name string, args ...string) *e2eProc {
	t.Helper()
	return e2eStartCmd(t, name, append([]string{e2eBinary(t)}, args...))
}

// e2eStartCmd is e2eStartProc of any command line (dfs in a network
// namespace: ip netns exec NS dfs ...).
func e2eStartCmd(t *testing.T, name string, argv []string) *e2eProc {
	t.Helper()
	args := argv[1:]
	cmd := exec.Command(argv[0], args...)
	cmd.Env = e2eEnv()
	cmd.Dir = t.TempDir()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &e2eProc{name: name, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	e2eRegister(t, p)
	var readers sync.WaitGroup
	readers.Add(2)
	go p.read(&readers, stdout, "[stdout] ")
	go p.read(&readers, stderr, "")
	go func() {
		readers.Wait() // Wait only after every read from the pipes
		err := cmd.Wait()
		p.mu.Lock()
		p.exited, p.waitErr = true, err
		close(p.wake)
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		e2eUnregister(t, p)
		p.signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) still running 10s after SIGKILL", name, cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("---- log of %s: dfs %s ----\n%s", name, strings.Join(args, " "), p.logText())
		}
	})
	return p
}

func (p *e2eProc) read(wg *sync.WaitGroup, r io.Reader, prefix string) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*e2eKiB), e2eMiB)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, prefix+sc.Text())
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
	io.Copy(io.Discard, r) // a line too long: keep draining so the child never blocks
}

func (p *e2eProc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// numLines is how many lines of output there are so far.
func (p *e2eProc) numLines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// waitLine waits for a line at index from or later that matches re and
// returns its submatches.
func (p *e2eProc) waitLine(from int, timeout time.Duration, re *regexp.Regexp) ([]string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i := from; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if m := re.FindStringSubmatch(p.lines[i]); m != nil {
				p.mu.Unlock()
				return m, nil
			}
		}
		exited, waitErr, wake := p.exited, p.waitErr, p.wake
		p.mu.Unlock()
		if exited {
			return nil, fmt.Errorf("%s exited (%v) with no line matching %q", p.name, waitErr, re)
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil, fmt.Errorf("%s: no line matching %q within %v", p.name, re, timeout)
		}
	}
}

// signal sends sig unless the process has exited.
func (p *e2eProc) signal(sig os.Signal) {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// waitExit waits for the process to exit and returns its exit code (-1 for
// a death by signal).
func (p *e2eProc) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return 0
	}
}

// kill9 kills the process with SIGKILL and waits for it to go.
func (p *e2eProc) kill9(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	p.waitExit(t, 10*time.Second)
}

// e2eDaemons lists the running daemons of each test, by top-level test
// name, so that a hung client command can get their goroutine dumps.
var (
	e2eDaemonsMu sync.Mutex
	e2eDaemons   = make(map[string][]*e2eProc)
)

func e2eTopTest(t *testing.T) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

// e2eRegister adds p to the daemons of its test.
func e2eRegister(t *testing.T, p *e2eProc) {
	e2eDaemonsMu.Lock()
	defer e2eDaemonsMu.Unlock()
	e2eDaemons[e2eTopTest(t)] = append(e2eDaemons[e2eTopTest(t)], p)
}

// e2eUnregister forgets p at the cleanup of its test.
func e2eUnregister(t *testing.T, p *e2eProc) {
	e2eDaemonsMu.Lock()
	defer e2eDaemonsMu.Unlock()
	name := e2eTopTest(t)
	e2eDaemons[name] = slices.DeleteFunc(e2eDaemons[name], func(q *e2eProc) bool { return q == p })
	if len(e2eDaemons[name]) == 0 {
		delete(e2eDaemons, name)
	}
}

// e2eDumpDaemons sends SIGQUIT to every running daemon of the test: the Go
// runtime prints every goroutine to stderr, which lands in the daemon's log,
// and exits. It returns the names of the minions caught in the lock-order
// deadlock of blockStore.finalize and blockStore.expire.
func e2eDumpDaemons(t *testing.T) (deadlocked []string) {
	e2eDaemonsMu.Lock()
	ps := slices.Clone(e2eDaemons[e2eTopTest(t)])
	e2eDaemonsMu.Unlock()
	for _, p := range ps {
		p.signal(syscall.SIGQUIT)
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		if e2eStoreDeadlocked(p.logText()) {
			deadlocked = append(deadlocked, p.name)
		}
	}
	return deadlocked
}

// e2eStoreDeadlocked reports whether a goroutine dump shows blockStore.finalize
// and blockStore.expire both waiting for a mutex: finalize holds the
// blockWriter's mutex and wants the store's, expire holds the store's and
// wants the blockWriter's.
func e2eStoreDeadlocked(dump string) bool {
	var finalize, expire bool
	for _, g := range strings.Split(dump, "\n\n") {
		if !strings.Contains(g, "[sync.Mutex.Lock") {
			continue
		}
		finalize = finalize || strings.Contains(g, "main.(*blockStore).finalize(")
		expire = expire || strings.Contains(g, "main.(*blockStore).expire(")
	}
	return finalize && expire
}

// e2eDeadlockBug describes the deadlock that e2eStoreDeadlocked detects. It
// was in blockstore.go until a979b30.
const e2eDeadlockBug = "minion deadlock: blockStore.finalize holds blockWriter.mu and takes blockStore.mu " +
	"(to delete the writer), while blockStore.expire, run by every heartbeat tick, holds blockStore.mu and takes each " +
	"blockWriter.mu; a tick during the fsync of a finalize wedges the minion for good (no more heartbeats, reads or writes)"

type e2eMaster struct {
	*e2eProc
	addr, dir string
}

var e2eMasterStartedRE = regexp.MustCompile(`msg="master started" addr=(\S+)`)

// e2eStartMaster starts a master on listen (e.g. "127.0.0.1:0") with fast
// heartbeats and 1 MiB blocks; extra flags come last and win.
func e2eStartMaster(t *testing.T, dir, listen string, extra ...string) *e2eMaster {
	t.Helper()
	m, err := e2eTryStartMaster(t, dir, listen, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// e2eMasterArgs are the arguments of a test master.
func e2eMasterArgs(dir, listen string, extra ...string) []string {
	return append([]string{"master", "--addr", listen, "--dir", dir,
		"--heartbeat", e2eHeartbeat, "--dead-after", e2eDeadAfter, "--block-size", "1MiB"}, extra...)
}

func e2eTryStartMaster(t *testing.T, dir, listen string, extra ...string) (*e2eMaster, error) {
	t.Helper()
	p := e2eStartProc(t, "master", e2eMasterArgs(dir, listen, extra...)...)
	m, err := p.waitLine(0, e2eStartTimeout, e2eMasterStartedRE)
	if err != nil {
		return nil, fmt.Errorf("start master: %v\n%s", err, p.logText())
	}
	return &e2eMaster{e2eProc: p, addr: m[1], dir: dir}, nil
}

// restartMasterAt starts a master on dir at exactly addr, retrying while
// the port is not free yet.
func e2eRestartMasterAt(t *testing.T, dir, addr string, extra ...string) *e2eMaster {
	t.Helper()
	deadline := time.Now().Add(e2eStartTimeout)
	for {
		m, err := e2eTryStartMaster(t, dir, addr, extra...)
		if err == nil {
			return m
		}
		if !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type e2eMinion struct {
	*e2eProc
	addr, dir string
}

var e2eMinionStartedRE = regexp.MustCompile(`msg="minion started" addr=(\S+) `)

// e2eStartMinion starts a minion with its blocks in dir and waits until
// master has registered it.
func e2eStartMinion(t *testing.T, dir string, master *e2eMaster, heartbeat string, extra ...string) *e2eMinion {
	t.Helper()
	from := master.numLines()
	args := append([]string{"minion", "--port", "0", "--host", "127.0.0.1", "--bind", "127.0.0.1",
		"--dir", dir, "--master", master.addr, "--heartbeat", heartbeat}, extra...)
	p := e2eStartProc(t, "minion "+filepath.Base(dir), args...)
	m, err := p.waitLine(0, e2eStartTimeout, e2eMinionStartedRE)
	if err != nil {
		t.Fatalf("start minion: %v\n%s", err, p.logText())
	}
	registered := regexp.MustCompile(`msg="minion registered" .*\baddr=` + regexp.QuoteMeta(m[1]) + `\b`)
	if _, err := master.waitLine(from, e2eStartTimeout, registered); err != nil {
		t.Fatalf("minion at %s did not register: %v\n%s", m[1], err, p.logText())
	}
	return &e2eMinion{e2eProc: p, addr: m[1], dir: dir}
}

// e2eCluster is a master and its minions, all in one temp dir.
type e2eCluster struct {
	root    string
	master  *e2eMaster
	minions []*e2eMinion
}

// e2eStartCluster starts a master with masterFlags and n minions.
func e2eStartCluster(t *testing.T, n int, masterFlags ...string) *e2eCluster {
	t.Helper()
	c := &e2eCluster{root: t.TempDir()}
	c.master = e2eStartMaster(t, filepath.Join(c.root, "master"), "127.0.0.1:0", masterFlags...)
	for i := range n {
		c.minions = append(c.minions, e2eStartMinion(t, c.minionDir(i), c.master, e2eHeartbeat))
	}
	return c
}

func (c *e2eCluster) minionDir(i int) string {
	return filepath.Join(c.root, fmt.Sprintf("minion-%d", i+1))
}

func (c *e2eCluster) addr() string { return c.master.addr }

func (c *e2eCluster) minionAt(t *testing.T, addr string) *e2eMinion {
	t.Helper()
	for _, m := range c.minions {
		if m.addr == addr {
			return m
		}
	}
	t.Fatalf("no minion of this test at %s", addr)
	return nil
}

// ---- client commands ----

type e2eResult struct {
	args           []string
	stdout, stderr []byte
	code           int
	elapsed        time.Duration
}

func (r e2eResult) String() string {
	return fmt.Sprintf("`dfs %s`: exit %d after %v, %d bytes on stdout, stderr:\n%s",
		strings.Join(r.args, " "), r.code, r.elapsed.Round(time.Millisecond), len(r.stdout), r.stderr)
}

// e2eExec runs `dfs args...` with stdin (none if nil) and extra environment.
// After timeout the command gets SIGQUIT (it prints its goroutines), then
// SIGKILL; hung reports whether that happened.
func e2eExec(t *testing.T, timeout time.Duration, env []string, stdin []byte, args ...string) (r e2eResult, hung bool) {
	t.Helper()
	return e2eExecIn(t, nil, timeout, env, stdin, args...)
}

// e2eExecIn is e2eExec of `wrap... dfs args...` (ip netns exec NS, which
// execs dfs in its place, so signals reach dfs).
func e2eExecIn(t *testing.T, wrap []string, timeout time.Duration, env []string, stdin []byte, args ...string) (r e2eResult, hung bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(slices.Clone(wrap), e2eBinary(t))
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = e2eEnv(env...)
	cmd.Dir = t.TempDir()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 3 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r = e2eResult{args: args, stdout: stdout.Bytes(), stderr: stderr.Bytes(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, true
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run dfs %s: %v", strings.Join(args, " "), err)
	}
	return r, false
}

// e2eRun is e2eExec with e2eCmdTimeout. A command that hangs fails the
// test, and the goroutines of the client and of every daemon of the test
// are printed.
func e2eRun(t *testing.T, env []string, stdin []byte, args ...string) e2eResult {
	t.Helper()
	r, hung := e2eExec(t, e2eCmdTimeout, env, stdin, args...)
	if hung {
		msg := "the goroutines of the daemons are in their logs"
		if dl := e2eDumpDaemons(t); len(dl) > 0 {
			msg = fmt.Sprintf("%v caught in the %s", dl, e2eDeadlockBug)
		}
		t.Fatalf("%v\nhung: no exit within %v; %s", r, e2eCmdTimeout, msg)
	}
	return r
}

// e2eDFS runs the client verb with --master master.
func e2eDFS(t *testing.T, master string, stdin []byte, verb string, args ...string) e2eResult {
	t.Helper()
	return e2eRun(t, nil, stdin, append([]string{verb, "--master", master}, args...)...)
}

// e2eMustDFS is e2eDFS that fails the test unless the command succeeds.
func e2eMustDFS(t *testing.T, master string, stdin []byte, verb string, args ...string) e2eResult {
	t.Helper()
	r := e2eDFS(t, master, stdin, verb, args...)
	if r.code != 0 {
		t.Fatalf("want success: %v", r)
	}
	return r
}

// e2eMustFail fails the test unless the command failed with one "dfs: " line
// on stderr that contains want. It returns that line.
func e2eMustFail(t *testing.T, r e2eResult, want string) string {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("want a failure: %v", r)
	}
	lines := strings.Split(strings.TrimSuffix(string(r.stderr), "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "dfs: ") || !strings.HasSuffix(string(r.stderr), "\n") {
		t.Fatalf("want stderr to end with one line \"dfs: ...\": %v", r)
	}
	if !strings.Contains(last, want) {
		t.Fatalf("want the error to contain %q: %v", want, r)
	}
	return last
}

type e2eFileJSON struct {
	Path        string         `json:"path"`
	Type        string         `json:"type"`
	Size        int64          `json:"size"`
	Replication int            `json:"replication"`
	BlockSize   int64          `json:"block_size"`
	Modified    *time.Time     `json:"modified"`
	Blocks      []e2eBlockJSON `json:"blocks"`
}

type e2eBlockJSON struct {
	ID       string   `json:"id"`
	Size     int64    `json:"size"`
	CRC32C   string   `json:"crc32c"`
	Replicas []string `json:"replicas"`
}

// e2eStat returns `dfs stat --json PATH`.
func e2eStat(t *testing.T, master, path string) e2eFileJSON {
	t.Helper()
	r := e2eMustDFS(t, master, nil, "stat", "--json", path)
	var fi e2eFileJSON
	if err := json.Unmarshal(r.stdout, &fi); err != nil {
		t.Fatalf("stat --json %s: %v\n%s", path, err, r.stdout)
	}
	return fi
}

// e2eLs returns `dfs ls --json PATH` (with -R if recursive).
func e2eLs(t *testing.T, master, path string, recursive bool) []e2eFileJSON {
	t.Helper()
	args := []string{"--json", path}
	if recursive {
		args = append(args, "-R")
	}
	r := e2eMustDFS(t, master, nil, "ls", args...)
	var out []e2eFileJSON
	if err := json.Unmarshal(r.stdout, &out); err != nil {
		t.Fatalf("ls --json %s: %v\n%s", path, err, r.stdout)
	}
	return out
}

func e2eLsPaths(t *testing.T, master, path string) []string {
	t.Helper()
	var ps []string
	for _, f := range e2eLs(t, master, path, true) {
		if f.Type == "file" {
			ps = append(ps, f.Path)
		}
	}
	return ps
}

// ---- data and disk ----

func e2eRandom(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// e2eWriteLocal writes data to a new local file and returns its path.
func e2eWriteLocal(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func e2eSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// e2eSameBytes compares by length and sha256, never printing the bytes.
func e2eSameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha256 %s), want %d bytes (sha256 %s)", what, len(got), e2eSHA(got), len(want), e2eSHA(want))
	}
}

var e2eCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// e2eBlockFiles maps the name of every file below dir/blocks to its size,
// and of every block packed in a volume too: blk_<id> to the block's size,
// and blk_<id>.meta for the checksums in its record.
func e2eBlockFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := make(map[string]int64)
	for id, b := range volumeBlocks(t, dir) {
		out[blockName(id)] = b.size
		out[blockName(id)+".meta"] = 4 * ((b.size + bytesPerChecksum - 1) / bytesPerChecksum)
	}
	err := filepath.WalkDir(filepath.Join(dir, "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[d.Name()] = info.Size()
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// e2eCheckBlocksOnDisk checks that every replica of every block of fi is a
// file of the right size, with its checksums, in the dir of its minion.
func e2eCheckBlocksOnDisk(t *testing.T, c *e2eCluster, fi e2eFileJSON) {
	t.Helper()
	for i, b := range fi.Blocks {
		for _, addr := range b.Replicas {
			m := c.minionAt(t, addr)
			files := e2eBlockFiles(t, m.dir)
			if size, ok := files[b.ID]; !ok || size != b.Size {
				t.Errorf("%s block %d (%s): on %s (%s) the block file has %d bytes (present: %v), want %d",
					fi.Path, i, b.ID, addr, m.dir, size, ok, b.Size)
			}
			if _, ok := files[b.ID+".meta"]; !ok {
				t.Errorf("%s block %d (%s): no checksum file on %s", fi.Path, i, b.ID, addr)
			}
		}
	}
}

// e2eWaitFor polls cond until it holds, failing the test after timeout with
// the last detail cond gave.
func e2eWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
