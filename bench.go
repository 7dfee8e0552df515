// bench.go is `dfs bench`: throughput, small-file and metadata workloads
// against a cluster (its own local one of separate processes when no
// --master is given), in the spirit of HDFS's TestDFSIO and
// NNThroughputBenchmark and SeaweedFS's `weed benchmark`, next to baselines
// of the machine itself (a durable local write as dd conv=fsync does, a warm
// read as cat does, and a raw loopback TCP stream into a file), so each dfs
// figure can be read as a ratio. It measures what users run: the
// throughput phases are `dfs put` and `dfs get` processes, the baselines
// run between them in every round, and the table gives medians of the
// rounds next to the project's goals.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// benchConfig sizes the workloads.
type benchConfig struct {
	Files       int   // throughput: files per phase
	Size        int64 // throughput: bytes per file
	Concurrency int   // throughput: concurrent clients
	Replication []int // throughput: one put phase per replication
	BlockSize   int64

	SmallFiles       int
	SmallSize        int64
	SmallConcurrency int

	MetaOps         int
	MetaConcurrency int

	Dir    string // local scratch dir for the baselines
	Rounds int
}

// benchResult is one measured phase.
type benchResult struct {
	Workload string        `json:"workload"`
	Phase    string        `json:"phase"`
	Ops      int           `json:"ops"`
	Bytes    int64         `json:"bytes"`
	Wall     time.Duration `json:"wall_ns"`
	MBps     float64       `json:"mb_per_s,omitempty"`
	OpsPerS  float64       `json:"ops_per_s,omitempty"`
	P50      time.Duration `json:"p50_ns,omitempty"`
	P99      time.Duration `json:"p99_ns,omitempty"`
	// Ratio is the time of this phase over the time of Baseline, the
	// machine's own figure for the same bytes.
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	// PeakRSS is the largest peak resident set of the phase's dfs
	// processes (put, get), in bytes.
	PeakRSS int64 `json:"peak_rss,omitempty"`
	Round   int   `json:"round"`
}

func newResult(workload, phase string, ops int, bytes int64, wall time.Duration) benchResult {
	r := benchResult{Workload: workload, Phase: phase, Ops: ops, Bytes: bytes, Wall: wall}
	if s := wall.Seconds(); s > 0 {
		if bytes > 0 {
			r.MBps = float64(bytes) / 1e6 / s
		}
		r.OpsPerS = float64(ops) / s
	}
	return r
}

// benchData is a deterministic stream of pseudo-random bytes, generated from
// a 4 MiB pattern so that producing it costs next to nothing; each file
// starts at its own offset of the pattern. It is safe for concurrent use.
type benchData struct{ pattern []byte }

func newBenchData() *benchData {
	p := make([]byte, 4<<20)
	r := rand.NewChaCha8([32]byte{'d', 'f', 's'})
	r.Read(p)
	return &benchData{pattern: p}
}

// reader returns the n bytes of file i.
func (d *benchData) reader(i int, n int64) io.Reader {
	return &patternReader{p: d.pattern, off: int64(i) * 4099, left: n}
}

type patternReader struct {
	p    []byte
	off  int64
	left int64
}

func (r *patternReader) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && r.left > 0 {
		start := r.off % int64(len(r.p))
		k := copy(b[n:min(int64(len(b)), int64(n)+r.left)], r.p[start:])
		n += k
		r.off += int64(k)
		r.left -= int64(k)
	}
	return n, nil
}

// checker is a writer that compares what it gets with file i's bytes.
type checker struct {
	want io.Reader
	buf  []byte
	n    int64
}

var errBenchMismatch = errors.New("read back bytes that differ from those written")

func (c *checker) Write(b []byte) (int, error) {
	if cap(c.buf) < len(b) {
		c.buf = make([]byte, len(b))
	}
	want := c.buf[:len(b)]
	if _, err := io.ReadFull(c.want, want); err != nil || !bytes.Equal(want, b) {
		return 0, fmt.Errorf("%w at offset %d", errBenchMismatch, c.n)
	}
	c.n += int64(len(b))
	return len(b), nil
}

// bench runs the named workloads and returns their results.
type bench struct {
	cfg    benchConfig
	master string
	logger *slog.Logger
	stderr io.Writer // progress
	data   *benchData
	root   string // remote dir of this run's files
	sec    *Security
	exe    string   // the dfs binary the put and get processes run
	env    []string // their environment: the master and the security
	src    string   // local file of cfg.Size bytes, what the puts send
	srcCRC uint32
	// profiles is where each put and get writes its CPU profile, if set.
	profiles string
	runs     atomic.Int64
}

func (b *bench) client() *Client {
	c := NewClient(b.master)
	c.Logger = b.logger
	c.SetSecurity(b.sec)
	return c
}

// clients returns n clients, each with its own connections, as n separate
// client processes would have.
func (b *bench) clients(n int) []*Client {
	cs := make([]*Client, n)
	for i := range cs {
		cs[i] = b.client()
	}
	return cs
}

func closeClients(cs []*Client) {
	for _, c := range cs {
		c.Close()
	}
}

// parallel runs n jobs on workers goroutines and returns each job's
// latency; the first error stops the rest.
func parallel(ctx context.Context, n, workers int, job func(ctx context.Context, w, i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := job(ctx, w, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				lat[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func (b *bench) progress(format string, a ...any) {
	fmt.Fprintf(b.stderr, "dfs bench: "+format+"\n", a...)
}

// runDFS runs the dfs binary with args, its stdout to stdout, and returns
// how long it took and its peak resident set.
func (b *bench) runDFS(ctx context.Context, stdout io.Writer, args ...string) (time.Duration, int64, error) {
	cmd := exec.CommandContext(ctx, b.exe, args...)
	cmd.Env, cmd.Stdout = b.env, stdout
	if b.profiles != "" {
		name := fmt.Sprintf("%s-%d.prof", args[0], b.runs.Add(1))
		cmd.Env = append(slices.Clone(b.env), "DFS_CPUPROFILE="+filepath.Join(b.profiles, name))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("dfs %s: %w", args[0], err)
	}
	// The peak is sampled from /proc, not taken from rusage: a child's
	// ru_maxrss starts from its parent's (this process's) at the exec.
	done := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var rss int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			rss = max(rss, vmHWM(cmd.Process.Pid))
			select {
			case <-done:
				peak <- rss
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	close(done)
	rss := <-peak
	if err != nil {
		return wall, 0, fmt.Errorf("dfs %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return wall, rss, nil
}

// vmHWM is process pid's peak resident set (VmHWM), in bytes; 0 if it is
// gone.
func vmHWM(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// makeSource writes the local file the puts send: Size bytes of the
// pattern, and its CRC32C, which the gets' files are checked against.
func (b *bench) makeSource(dir string) error {
	b.src = filepath.Join(dir, "source")
	crc := crc32.New(castagnoli)
	if err := writeDurably(b.src, io.TeeReader(b.data.reader(0, b.cfg.Size), crc)); err != nil {
		return fmt.Errorf("bench: source file: %w", err)
	}
	b.srcCRC = crc.Sum32()
	return nil
}

// puts runs cfg.Files `dfs put` processes of the source file, cfg.Concurrency
// at once, with replication repl.
func (b *bench) puts(ctx context.Context, round, repl int) (benchResult, error) {
	cfg := b.cfg
	b.progress("round %d: put %d x %s, replication %d, %d at once", round, cfg.Files, humanSize(cfg.Size), repl, cfg.Concurrency)
	var peak atomic.Int64
	_, wall, err := parallel(ctx, cfg.Files, cfg.Concurrency, func(ctx context.Context, _, i int) error {
		_, rss, err := b.runDFS(ctx, nil, "put", "--quiet", "-r", strconv.Itoa(repl), "-b", strconv.FormatInt(cfg.BlockSize, 10), "--force",
			b.src, b.throughputPath(repl, i))
		maxInt64(&peak, rss)
		return err
	})
	if err != nil {
		return benchResult{}, fmt.Errorf("throughput put: %w", err)
	}
	r := newResult("throughput", fmt.Sprintf("put r=%d", repl), cfg.Files, int64(cfg.Files)*cfg.Size, wall)
	r.PeakRSS = peak.Load()
	return r, nil
}

func (b *bench) throughputPath(repl, i int) string {
	return fmt.Sprintf("%s/throughput-r%d/%d", b.root, repl, i)
}

// gets runs cfg.Files `dfs get` processes into local files, then checks
// each file against the source.
func (b *bench) gets(ctx context.Context, round, repl int) (benchResult, error) {
	cfg := b.cfg
	b.progress("round %d: get %d x %s into local files, %d at once", round, cfg.Files, humanSize(cfg.Size), cfg.Concurrency)
	local, err := os.MkdirTemp(cfg.Dir, "dfs-bench-get-")
	if err != nil {
		return benchResult{}, err
	}
	defer os.RemoveAll(local)
	var peak atomic.Int64
	_, wall, err := parallel(ctx, cfg.Files, cfg.Concurrency, func(ctx context.Context, _, i int) error {
		f, err := os.Create(filepath.Join(local, strconv.Itoa(i)))
		if err != nil {
			return err
		}
		_, rss, err := b.runDFS(ctx, f, "get", "--quiet", b.throughputPath(repl, i))
		maxInt64(&peak, rss)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return benchResult{}, fmt.Errorf("throughput get: %w", err)
	}
	for i := range cfg.Files {
		if err := checkCRC(filepath.Join(local, strconv.Itoa(i)), b.srcCRC); err != nil {
			return benchResult{}, fmt.Errorf("throughput get: %w", err)
		}
	}
	r := newResult("throughput", fmt.Sprintf("get r=%d", repl), cfg.Files, int64(cfg.Files)*cfg.Size, wall)
	r.PeakRSS = peak.Load()
	return r, nil
}

// checkCRC checks that the file at path has the CRC32C want.
func checkCRC(path string, want uint32) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	crc := crc32.New(castagnoli)
	if _, err := io.Copy(crc, f); err != nil {
		return err
	}
	if crc.Sum32() != want {
		return fmt.Errorf("%s: %w", path, errBenchMismatch)
	}
	return nil
}

func maxInt64(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// small puts then gets many small files with many clients, replication 1.
func (b *bench) small(ctx context.Context, round int) ([]benchResult, error) {
	cfg := b.cfg
	clients := b.clients(cfg.SmallConcurrency)
	defer closeClients(clients)
	dir := fmt.Sprintf("%s/small-%d", b.root, round)
	total := int64(cfg.SmallFiles) * cfg.SmallSize
	b.progress("round %d: small: put %d x %s, %d clients", round, cfg.SmallFiles, humanSize(cfg.SmallSize), cfg.SmallConcurrency)
	lat, wall, err := parallel(ctx, cfg.SmallFiles, cfg.SmallConcurrency, func(ctx context.Context, w, i int) error {
		_, err := clients[w].Put(ctx, b.data.reader(i, cfg.SmallSize), fmt.Sprintf("%s/%d", dir, i), PutOptions{Replication: 1})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("small put: %w", err)
	}
	put := newResult("small", "put", cfg.SmallFiles, total, wall)
	put.P50, put.P99 = percentile(lat, 0.5), percentile(lat, 0.99)

	b.progress("round %d: small: get %d x %s", round, cfg.SmallFiles, humanSize(cfg.SmallSize))
	lat, wall, err = parallel(ctx, cfg.SmallFiles, cfg.SmallConcurrency, func(ctx context.Context, w, i int) error {
		_, err := clients[w].Get(ctx, fmt.Sprintf("%s/%d", dir, i), &checker{want: b.data.reader(i, cfg.SmallSize)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("small get: %w", err)
	}
	get := newResult("small", "get", cfg.SmallFiles, total, wall)
	get.P50, get.P99 = percentile(lat, 0.5), percentile(lat, 0.99)
	return []benchResult{put, get}, nil
}

// meta drives the master alone over RPC, as NNThroughputBenchmark does:
// create+complete of empty files, stat (open: the block locations), delete.
func (b *bench) meta(ctx context.Context, round int) ([]benchResult, error) {
	cfg := b.cfg
	clients := b.clients(cfg.MetaConcurrency)
	defer closeClients(clients)
	dir := fmt.Sprintf("%s/meta-%d", b.root, round)
	name := func(i int) string { return fmt.Sprintf("%s/d%d/%d", dir, i%100, i) }
	phases := []struct {
		name string
		op   func(ctx context.Context, c *Client, i int) error
	}{
		{"create+complete", func(ctx context.Context, c *Client, i int) error {
			var cr CreateReply
			if err := c.meta(ctx, "Create", &CreateArgs{Path: name(i), Replication: 1}, &cr); err != nil {
				return err
			}
			return c.meta(ctx, "Complete", &CompleteArgs{Handle: cr.Handle}, &Empty{})
		}},
		{"open", func(ctx context.Context, c *Client, i int) error {
			_, err := c.Stat(ctx, name(i))
			return err
		}},
		{"delete", func(ctx context.Context, c *Client, i int) error {
			_, err := c.Remove(ctx, name(i), false)
			return err
		}},
	}
	var out []benchResult
	for _, ph := range phases {
		b.progress("round %d: meta: %d x %s, %d callers", round, cfg.MetaOps, ph.name, cfg.MetaConcurrency)
		lat, wall, err := parallel(ctx, cfg.MetaOps, cfg.MetaConcurrency, func(ctx context.Context, w, i int) error {
			return ph.op(ctx, clients[w], i)
		})
		if err != nil {
			return out, fmt.Errorf("meta %s: %w", ph.name, err)
		}
		r := newResult("meta", ph.name, cfg.MetaOps, 0, wall)
		r.P50, r.P99 = percentile(lat, 0.5), percentile(lat, 0.99)
		out = append(out, r)
	}
	return out, nil
}

// durableWrite is the baseline of a put: a durable local write in 4 MiB
// writes with a final fsync, as dd bs=4M conv=fsync does.
func (b *bench) durableWrite(round int, dir string) (benchResult, error) {
	size := b.cfg.Size
	b.progress("round %d: baseline: durable local write of %s", round, humanSize(size))
	p := filepath.Join(dir, "dd")
	defer os.Remove(p)
	start := time.Now()
	if err := writeDurably(p, b.data.reader(0, size)); err != nil {
		return benchResult{}, err
	}
	return newResult("baseline", baseDurable, 1, size, time.Since(start)), nil
}

// streams are the baselines of a get: a raw TCP stream over loopback of
// the source into a file, and a warm read of the source (cat).
func (b *bench) streams(ctx context.Context, round int, dir string) ([]benchResult, error) {
	size := b.cfg.Size
	b.progress("round %d: baseline: raw loopback TCP stream of %s into a file", round, humanSize(size))
	dst := filepath.Join(dir, "stream")
	defer os.Remove(dst)
	wall, err := tcpStream(ctx, b.src, dst, size)
	if err != nil {
		return nil, err
	}
	out := []benchResult{newResult("baseline", baseStream, 1, size, wall)}

	b.progress("round %d: baseline: warm read of %s", round, humanSize(size))
	start := time.Now()
	f, err := os.Open(b.src)
	if err != nil {
		return nil, err
	}
	_, err = io.CopyBuffer(io.Discard, f, make([]byte, 128<<10))
	f.Close()
	if err != nil {
		return nil, err
	}
	return append(out, newResult("baseline", "warm local read (cat)", 1, size, time.Since(start))), nil
}

// The baselines that throughput phases are ratios of.
const (
	baseDurable = "local write+fsync (dd conv=fsync)"
	baseStream  = "loopback TCP into a file"
)

func writeDurably(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, r, make([]byte, 4<<20)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tcpStream sends the file src over a loopback TCP connection into the file
// dst and returns how long it took.
func tcpStream(ctx context.Context, src, dst string, size int64) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		f, err := os.Open(src)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = io.Copy(c, f)
		done <- err
	}()
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.CopyBuffer(out, c, make([]byte, 1<<20))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("loopback stream: %d bytes, want %d", n, size)
	}
	if serr := <-done; err == nil {
		err = serr
	}
	return time.Since(start), err
}

// ratios sets each throughput phase's ratio to the baseline of its round.
func ratios(rs []benchResult) {
	base := map[[2]any]time.Duration{}
	for _, r := range rs {
		if r.Workload == "baseline" {
			base[[2]any{r.Round, r.Phase}] = r.Wall
		}
	}
	for i, r := range rs {
		if r.Workload != "throughput" || r.Ops == 0 {
			continue
		}
		// Per file: the baselines move one file of the same size.
		per := r.Wall / time.Duration(r.Ops)
		name := baseDurable
		if strings.HasPrefix(r.Phase, "get") {
			name = baseStream
		}
		if d, ok := base[[2]any{r.Round, name}]; ok && d > 0 {
			rs[i].Baseline, rs[i].Ratio = name, float64(per)/float64(d)
		}
	}
}

// benchSummary is a phase over the rounds: medians, and the goal it has.
type benchSummary struct {
	Workload string        `json:"workload"`
	Phase    string        `json:"phase"`
	Rounds   int           `json:"rounds"`
	Ops      int           `json:"ops"`
	Bytes    int64         `json:"bytes"`
	Wall     time.Duration `json:"median_wall_ns"`
	MinWall  time.Duration `json:"min_wall_ns"`
	MaxWall  time.Duration `json:"max_wall_ns"`
	MBps     float64       `json:"median_mb_per_s,omitempty"`
	OpsPerS  float64       `json:"median_ops_per_s,omitempty"`
	P50      time.Duration `json:"median_p50_ns,omitempty"`
	P99      time.Duration `json:"median_p99_ns,omitempty"`
	Baseline string        `json:"baseline,omitempty"`
	Ratio    float64       `json:"median_ratio,omitempty"`
	PeakRSS  int64         `json:"peak_rss,omitempty"` // the largest of the rounds
	Goal     string        `json:"goal,omitempty"`
	Met      *bool         `json:"met,omitempty"`
}

// benchGoal is a figure the project aims for (see the README).
type benchGoal struct {
	text string
	met  func(s benchSummary) bool
}

var benchGoals = map[string]benchGoal{
	"throughput/put r=1":   {"<= 1.3x", func(s benchSummary) bool { return s.Ratio <= 1.3 }},
	"throughput/put r=3":   {"<= 3x", func(s benchSummary) bool { return s.Ratio <= 3 }},
	"throughput/get r=1":   {"<= 1.5x", func(s benchSummary) bool { return s.Ratio <= 1.5 }},
	"throughput/get r=3":   {"<= 1.5x", func(s benchSummary) bool { return s.Ratio <= 1.5 }},
	"small/put":            {">= 6,500/s", func(s benchSummary) bool { return s.OpsPerS >= 6500 }},
	"small/get":            {">= 20,000/s", func(s benchSummary) bool { return s.OpsPerS >= 20000 }},
	"meta/create+complete": {">= 10,000/s", func(s benchSummary) bool { return s.OpsPerS >= 10000 }},
	"meta/open":            {">= 50,000/s", func(s benchSummary) bool { return s.OpsPerS >= 50000 }},
}

// memoryGoal bounds the peak RSS of every dfs process.
const memoryGoal = 64 << 20

// summarize takes the median of each phase over the rounds, in the order
// the phases first ran.
func summarize(rs []benchResult) []benchSummary {
	var order []string
	byPhase := map[string][]benchResult{}
	for _, r := range rs {
		k := r.Workload + "/" + r.Phase
		if byPhase[k] == nil {
			order = append(order, k)
		}
		byPhase[k] = append(byPhase[k], r)
	}
	var out []benchSummary
	for _, k := range order {
		g := byPhase[k]
		walls := make([]time.Duration, len(g))
		var ratios []float64
		var p50s, p99s []time.Duration
		s := benchSummary{Workload: g[0].Workload, Phase: g[0].Phase, Rounds: len(g), Ops: g[0].Ops, Bytes: g[0].Bytes, Baseline: g[0].Baseline}
		for i, r := range g {
			walls[i] = r.Wall
			if r.Ratio > 0 {
				ratios = append(ratios, r.Ratio)
			}
			p50s, p99s = append(p50s, r.P50), append(p99s, r.P99)
			s.PeakRSS = max(s.PeakRSS, r.PeakRSS)
		}
		s.Wall, s.MinWall, s.MaxWall = median(walls), slices.Min(walls), slices.Max(walls)
		s.P50, s.P99 = median(p50s), median(p99s)
		if len(ratios) > 0 {
			s.Ratio = median(ratios)
		}
		if sec := s.Wall.Seconds(); sec > 0 {
			if s.Bytes > 0 {
				s.MBps = float64(s.Bytes) / 1e6 / sec
			}
			s.OpsPerS = float64(s.Ops) / sec
		}
		if goal, ok := benchGoals[k]; ok && (s.Ratio > 0 || s.Workload != "throughput") {
			met := goal.met(s)
			s.Goal, s.Met = goal.text, &met
		}
		out = append(out, s)
	}
	return out
}

// memoryRows are the peak resident sets of the cluster's processes and of
// the largest put and get, against memoryGoal.
func memoryRows(cluster map[string]int64, rs []benchSummary) []benchSummary {
	var out []benchSummary
	add := func(name string, rss int64) {
		met := rss <= memoryGoal
		out = append(out, benchSummary{Workload: "memory", Phase: "peak RSS, " + name, PeakRSS: rss, Goal: "<= 64 MiB", Met: &met})
	}
	names := slices.Sorted(maps.Keys(cluster))
	for _, n := range names {
		add(n, cluster[n])
	}
	var put, get int64
	for _, s := range rs {
		if s.Workload == "throughput" && strings.HasPrefix(s.Phase, "put") {
			put = max(put, s.PeakRSS)
		}
		if s.Workload == "throughput" && strings.HasPrefix(s.Phase, "get") {
			get = max(get, s.PeakRSS)
		}
	}
	if put > 0 {
		add("dfs put", put)
	}
	if get > 0 {
		add("dfs get", get)
	}
	return out
}

// median is the middle value (the mean of the two middle ones).
func median[T time.Duration | float64](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printBench prints the summaries as a table.
func printBench(w io.Writer, ss []benchSummary) {
	fmt.Fprintf(w, "%-10s %-36s %6s %8s %10s %10s %17s %8s %9s %9s %9s  %-30s %s\n",
		"WORKLOAD", "PHASE", "ROUNDS", "OPS", "BYTES", "WALL", "(MIN-MAX)", "MB/s", "OPS/s", "P50", "P99", "RATIO", "GOAL")
	for _, s := range ss {
		if s.Workload == "memory" {
			fmt.Fprintf(w, "%-10s %-36s %6s %8s %10s %10s %17s %8s %9s %9s %9s  %-30s %s\n",
				s.Workload, s.Phase, "-", "-", humanSize(s.PeakRSS), "-", "", "-", "-", "-", "-", "", goalText(s))
			continue
		}
		ratio := ""
		if s.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx %s", s.Ratio, strings.Fields(s.Baseline)[0]+" "+strings.Fields(s.Baseline)[1])
		}
		rng := fmt.Sprintf("(%s-%s)", s.MinWall.Round(time.Millisecond), s.MaxWall.Round(time.Millisecond))
		fmt.Fprintf(w, "%-10s %-36s %6d %8d %10s %10s %17s %8s %9s %9s %9s  %-30s %s\n", s.Workload, s.Phase, s.Rounds, s.Ops, humanSize(s.Bytes),
			s.Wall.Round(time.Millisecond), rng, fmtFloat(s.MBps), fmtFloat(s.OpsPerS), fmtDur(s.P50), fmtDur(s.P99), ratio, goalText(s))
	}
}

func goalText(s benchSummary) string {
	switch {
	case s.Met == nil:
		return ""
	case *s.Met:
		return s.Goal + " (met)"
	}
	return s.Goal + " (NOT met)"
}

func fmtFloat(f float64) string {
	if f == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", f)
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Microsecond).String()
}

var benchWorkloads = []string{"baseline", "throughput", "small", "meta"}

func benchCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure throughput, small files and metadata operations (a local cluster of separate processes unless --master is given)",
		ArgsUsage: "[baseline|throughput|small|meta]...",
		Description: "Runs the named workloads (default: all) for --rounds rounds, progress on stderr, a table of medians\n" +
			"(or --json) on stdout, with the project's goals. Without --master (or DFS_MASTER) it starts a master and\n" +
			"3 minions, each a process of its own, in a temp dir. The throughput phases run `dfs put` and `dfs get`\n" +
			"processes; the baselines run in every round, between them.\n" +
			"Example: dfs bench --size 1GiB --replication 1,3 throughput baseline",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.IntFlag{Name: "rounds", Value: 3, Usage: "rounds of every workload; the table gives medians"},
			&cli.StringFlag{Name: "size", Value: "256MiB", Usage: "throughput: `SIZE` of each file (and of the baselines)"},
			&cli.IntFlag{Name: "files", Value: 1, Usage: "throughput: files per phase"},
			&cli.IntFlag{Name: "concurrency", Value: 1, Usage: "throughput: put or get processes at once"},
			&cli.StringFlag{Name: "replication", Value: "1,3", Usage: "throughput: replications to write with, comma-separated"},
			&cli.StringFlag{Name: "block-size", Value: "64MiB", Usage: "throughput: block `SIZE`"},
			&cli.IntFlag{Name: "small-files", Value: 10000, Usage: "small: number of files"},
			&cli.StringFlag{Name: "small-size", Value: "4KiB", Usage: "small: `SIZE` of each file"},
			&cli.IntFlag{Name: "small-concurrency", Value: 16, Usage: "small: concurrent clients"},
			&cli.IntFlag{Name: "meta-ops", Value: 20000, Usage: "meta: operations per phase"},
			&cli.IntFlag{Name: "meta-concurrency", Value: 16, Usage: "meta: concurrent callers"},
			&cli.StringFlag{Name: "dir", Usage: "scratch `DIR` for the local cluster and the baselines (default: the temp dir)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON: every round's results and the summary"},
			&cli.StringFlag{Name: "profile-dir", Usage: "write CPU profiles of every dfs process of the run (cluster, puts, gets, and this one) into `DIR`, for go tool pprof"},
			&cli.StringFlag{Name: "exe", Usage: "the dfs `BINARY` that the cluster, puts and gets run (default: this one)"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := benchFlags(c)
			if err != nil {
				return err
			}
			workloads := c.Args().Slice()
			if len(workloads) == 0 {
				workloads = benchWorkloads
			}
			for _, w := range workloads {
				if !slices.Contains(benchWorkloads, w) {
					return usagef(c, "unknown workload %q (want %v)", w, benchWorkloads)
				}
			}
			b := &bench{cfg: cfg, logger: e.logger, stderr: e.stderr, data: newBenchData(), root: "/dfs-bench-" + randomHex(4), sec: e.security}
			if b.exe = c.String("exe"); b.exe == "" {
				if b.exe, err = os.Executable(); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
			}
			profiles := c.String("profile-dir")
			if profiles != "" {
				if err := os.MkdirAll(profiles, 0o755); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				stop, err := startCPUProfile(filepath.Join(profiles, "bench.prof"))
				if err != nil {
					return err
				}
				defer stop()
			}
			scratch, err := os.MkdirTemp(cfg.Dir, "dfs-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(scratch)
			// The children's environment: the security flags as the
			// variables they read, and no profile of their own unless
			// asked for.
			childEnv := func(extra ...string) []string {
				var env []string
				for _, kv := range os.Environ() {
					if !strings.HasPrefix(kv, "DFS_") {
						env = append(env, kv)
					}
				}
				for _, f := range []string{"secret-file", "tls-cert", "tls-key", "tls-ca"} {
					if v := c.String(f); v != "" {
						abs, _ := filepath.Abs(v)
						env = append(env, "DFS_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_"))+"="+abs)
					}
				}
				return append(env, extra...)
			}
			b.master = c.String("master")
			var cluster *benchCluster
			if !c.IsSet("master") {
				env := childEnv()
				if c.String("secret-file") == "" && c.String("tls-cert") == "" {
					// A secret of its own, as dfs dev makes.
					secret := filepath.Join(scratch, "secret")
					if err := writeSecretFile(secret); err != nil {
						return fmt.Errorf("bench: %w", err)
					}
					env = append(env, "DFS_SECRET_FILE="+secret)
					s, err := loadSecret(secret)
					if err != nil {
						return err
					}
					b.sec = &Security{Secret: s, TLSClient: e.security.TLSClient}
				}
				cluster, err = startBenchCluster(c.Context, b, filepath.Join(scratch, "cluster"), 3, env, profiles)
				if err != nil {
					return fmt.Errorf("bench: local cluster: %w", err)
				}
				defer cluster.stop()
				b.master = cluster.master
				b.env = env
				b.progress("local cluster: master %s and 3 minions, separate processes, in %s", b.master, scratch)
			} else {
				b.env = childEnv()
			}
			b.env = append(b.env, "DFS_MASTER="+b.master)
			b.profiles = profiles
			var results []benchResult
			runErr := b.run(c.Context, workloads, scratch, &results)
			// Remove this run's files, whatever happened.
			cl := b.client()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if _, err := cl.Remove(ctx, b.root, true); err != nil && !errors.Is(err, ErrNotFound) {
				b.logger.Warn("bench: clean up", "dir", b.root, "err", err)
			}
			cancel()
			cl.Close()
			ratios(results)
			summary := summarize(results)
			if cluster != nil {
				summary = append(summary, memoryRows(cluster.peakRSS(), summary)...)
			} else {
				summary = append(summary, memoryRows(nil, summary)...)
			}
			if c.Bool("json") {
				if err := printJSON(e.stdout, struct {
					Rounds  []benchResult  `json:"rounds"`
					Summary []benchSummary `json:"summary"`
				}{results, summary}); err != nil {
					return err
				}
			} else {
				printBench(e.stdout, summary)
			}
			if runErr != nil {
				return fmt.Errorf("bench: %w", runErr)
			}
			return nil
		},
	}
}

// run runs the workloads for the rounds, baselines interleaved with the
// throughput phases: in each round, the durable write, the puts, the
// stream and the warm read, the gets, then the small files and the master.
func (b *bench) run(ctx context.Context, workloads []string, scratch string, results *[]benchResult) error {
	has := func(w string) bool { return slices.Contains(workloads, w) }
	if has("baseline") || has("throughput") {
		if err := b.makeSource(scratch); err != nil {
			return err
		}
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		add := func(rs ...benchResult) {
			for _, r := range rs {
				r.Round = round
				*results = append(*results, r)
			}
		}
		eachReplication := func(phase func(context.Context, int, int) (benchResult, error)) error {
			for _, repl := range b.cfg.Replication {
				r, err := phase(ctx, round, repl)
				if err != nil {
					return err
				}
				add(r)
			}
			return nil
		}
		if has("baseline") {
			r, err := b.durableWrite(round, scratch)
			if err != nil {
				return err
			}
			add(r)
		}
		if has("throughput") {
			if err := eachReplication(b.puts); err != nil {
				return err
			}
		}
		if has("baseline") {
			rs, err := b.streams(ctx, round, scratch)
			if err != nil {
				return err
			}
			add(rs...)
		}
		if has("throughput") {
			if err := eachReplication(b.gets); err != nil {
				return err
			}
		}
		if has("small") {
			rs, err := b.small(ctx, round)
			add(rs...)
			if err != nil {
				return err
			}
		}
		if has("meta") {
			rs, err := b.meta(ctx, round)
			add(rs...)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// benchCluster is the local cluster of dfs bench: a master and minions,
// each a process of the dfs binary.
type benchCluster struct {
	master string
	procs  []*benchProc
}

type benchProc struct {
	name string
	cmd  *exec.Cmd
	log  string // its stderr
	done chan struct{}
}

// startBenchCluster starts a master and n minions in dir, with env, and
// waits until the master has every minion.
func startBenchCluster(ctx context.Context, b *bench, dir string, n int, env []string, profiles string) (*benchCluster, error) {
	cl := &benchCluster{}
	start := func(name string, args ...string) (*benchProc, error) {
		log := filepath.Join(dir, name+".log")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(log)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd := exec.Command(b.exe, args...)
		cmd.Env, cmd.Stderr = env, f
		if profiles != "" {
			cmd.Env = append(slices.Clone(env), "DFS_CPUPROFILE="+filepath.Join(profiles, name+".prof"))
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		p := &benchProc{name: name, cmd: cmd, log: log, done: make(chan struct{})}
		go func() { cmd.Wait(); close(p.done) }()
		cl.procs = append(cl.procs, p)
		return p, nil
	}
	fail := func(err error) (*benchCluster, error) {
		cl.stop()
		return nil, err
	}
	m, err := start("master", "master", "--addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "master"), "--http", "")
	if err != nil {
		return fail(err)
	}
	started := regexp.MustCompile(`msg="master started" addr=(\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for cl.master == "" {
		raw, _ := os.ReadFile(m.log)
		if g := started.FindSubmatch(raw); g != nil {
			cl.master = string(g[1])
			break
		}
		select {
		case <-m.done:
			return fail(fmt.Errorf("master exited: %s", tail(raw)))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("master did not start in 30s: %s", tail(raw)))
		}
	}
	for i := range n {
		name := fmt.Sprintf("minion-%d", i+1)
		if _, err := start(name, "minion", "--port", "0", "--master", cl.master, "--dir", filepath.Join(dir, name), "--http", ""); err != nil {
			return fail(err)
		}
	}
	c := NewClient(cl.master)
	c.Logger = b.logger
	c.SetSecurity(b.sec)
	defer c.Close()
	for {
		live := 0
		if rep, err := c.Report(ctx); err == nil && !rep.SafeMode {
			for _, mi := range rep.Minions {
				if mi.State == stateLive {
					live++
				}
			}
		}
		if live == n {
			return cl, nil
		}
		for _, p := range cl.procs {
			select {
			case <-p.done:
				raw, _ := os.ReadFile(p.log)
				return fail(fmt.Errorf("%s exited: %s", p.name, tail(raw)))
			default:
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(fmt.Errorf("%d of %d minions registered in 30s", live, n))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tail is the last lines of a log, for an error.
func tail(log []byte) string {
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], "; ")
}

// peakRSS reads each process's peak resident set (VmHWM), in bytes.
func (cl *benchCluster) peakRSS() map[string]int64 {
	out := map[string]int64{}
	for _, p := range cl.procs {
		if rss := vmHWM(p.cmd.Process.Pid); rss > 0 {
			out[p.name] = rss
		}
	}
	return out
}

// stop ends the processes with SIGTERM, and SIGKILL after 10 s.
func (cl *benchCluster) stop() {
	for _, p := range slices.Backward(cl.procs) {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	cl.procs = nil
}

func benchFlags(c *cli.Context) (benchConfig, error) {
	cfg := benchConfig{
		Files: c.Int("files"), Concurrency: c.Int("concurrency"),
		SmallFiles: c.Int("small-files"), SmallConcurrency: c.Int("small-concurrency"),
		MetaOps: c.Int("meta-ops"), MetaConcurrency: c.Int("meta-concurrency"),
		Dir: c.String("dir"), Rounds: c.Int("rounds"),
	}
	var err error
	if cfg.Size, err = parseSize(c.String("size")); err != nil {
		return cfg, usagef(c, "--size: %v", err)
	}
	if cfg.SmallSize, err = parseSize(c.String("small-size")); err != nil {
		return cfg, usagef(c, "--small-size: %v", err)
	}
	if cfg.BlockSize, err = parseSize(c.String("block-size")); err == nil {
		err = validBlockSize(cfg.BlockSize)
	}
	if err != nil {
		return cfg, usagef(c, "--block-size: %v", err)
	}
	for _, s := range strings.Split(c.String("replication"), ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r < 1 || r > maxReplication {
			return cfg, usagef(c, "--replication %q: want numbers from 1 to %d", c.String("replication"), maxReplication)
		}
		cfg.Replication = append(cfg.Replication, r)
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"files", cfg.Files}, {"concurrency", cfg.Concurrency}, {"small-files", cfg.SmallFiles},
		{"small-concurrency", cfg.SmallConcurrency}, {"meta-ops", cfg.MetaOps}, {"meta-concurrency", cfg.MetaConcurrency},
		{"rounds", cfg.Rounds}} {
		if v.n < 1 {
			return cfg, usagef(c, "--%s %d: want at least 1", v.name, v.n)
		}
	}
	if cfg.Size < 1 || cfg.SmallSize < 1 {
		return cfg, usagef(c, "sizes must be at least 1 byte")
	}
	return cfg, nil
}

// startCPUProfile writes a CPU profile to path until the returned stop is
// called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
