// bench.go is `dfs bench`: throughput, small-file and metadata workloads
// against a cluster (its own local one when no --master is given), in the
// spirit of HDFS's TestDFSIO and NNThroughputBenchmark and SeaweedFS's
// `weed benchmark`, next to baselines of the machine itself (a durable local
// write as dd conv=fsync does, a warm read as cat does, and a raw loopback
// TCP stream into a file), so each dfs figure can be read as a ratio.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	Dir string // local scratch dir for the baselines
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
	// PeakRSS is the benchmark process's peak resident set, for the
	// phases it runs itself.
	Note string `json:"note,omitempty"`
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

// throughput writes then reads Files files of Size bytes with Concurrency
// clients, once per replication.
func (b *bench) throughput(ctx context.Context) ([]benchResult, error) {
	cfg := b.cfg
	var out []benchResult
	clients := b.clients(cfg.Concurrency)
	defer closeClients(clients)
	total := int64(cfg.Files) * cfg.Size
	for _, repl := range cfg.Replication {
		dir := fmt.Sprintf("%s/throughput-r%d", b.root, repl)
		b.progress("throughput: put %d x %s, replication %d, %d clients", cfg.Files, humanSize(cfg.Size), repl, cfg.Concurrency)
		_, wall, err := parallel(ctx, cfg.Files, cfg.Concurrency, func(ctx context.Context, w, i int) error {
			_, err := clients[w].Put(ctx, b.data.reader(i, cfg.Size), fmt.Sprintf("%s/%d", dir, i),
				PutOptions{Replication: repl, BlockSize: cfg.BlockSize})
			return err
		})
		if err != nil {
			return out, fmt.Errorf("throughput put: %w", err)
		}
		out = append(out, newResult("throughput", fmt.Sprintf("put r=%d", repl), cfg.Files, total, wall))

		b.progress("throughput: get %d x %s into local files", cfg.Files, humanSize(cfg.Size))
		local, err := os.MkdirTemp(cfg.Dir, "dfs-bench-get-")
		if err != nil {
			return out, err
		}
		_, wall, err = parallel(ctx, cfg.Files, cfg.Concurrency, func(ctx context.Context, w, i int) error {
			f, err := os.Create(filepath.Join(local, strconv.Itoa(i)))
			if err != nil {
				return err
			}
			_, err = clients[w].Get(ctx, fmt.Sprintf("%s/%d", dir, i), io.MultiWriter(f, &checker{want: b.data.reader(i, cfg.Size)}))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		})
		os.RemoveAll(local)
		if err != nil {
			return out, fmt.Errorf("throughput get: %w", err)
		}
		out = append(out, newResult("throughput", fmt.Sprintf("get r=%d", repl), cfg.Files, total, wall))
	}
	return out, nil
}

// small puts then gets many small files with many clients, replication 1.
func (b *bench) small(ctx context.Context) ([]benchResult, error) {
	cfg := b.cfg
	clients := b.clients(cfg.SmallConcurrency)
	defer closeClients(clients)
	dir := b.root + "/small"
	total := int64(cfg.SmallFiles) * cfg.SmallSize
	b.progress("small: put %d x %s, %d clients", cfg.SmallFiles, humanSize(cfg.SmallSize), cfg.SmallConcurrency)
	lat, wall, err := parallel(ctx, cfg.SmallFiles, cfg.SmallConcurrency, func(ctx context.Context, w, i int) error {
		_, err := clients[w].Put(ctx, b.data.reader(i, cfg.SmallSize), fmt.Sprintf("%s/%d", dir, i), PutOptions{Replication: 1})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("small put: %w", err)
	}
	put := newResult("small", "put", cfg.SmallFiles, total, wall)
	put.P50, put.P99 = percentile(lat, 0.5), percentile(lat, 0.99)

	b.progress("small: get %d x %s", cfg.SmallFiles, humanSize(cfg.SmallSize))
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
func (b *bench) meta(ctx context.Context) ([]benchResult, error) {
	cfg := b.cfg
	clients := b.clients(cfg.MetaConcurrency)
	defer closeClients(clients)
	dir := b.root + "/meta"
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
		b.progress("meta: %d x %s, %d callers", cfg.MetaOps, ph.name, cfg.MetaConcurrency)
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

// baselines measures the machine itself on Size bytes: a durable local
// write in 4 MiB writes with a final fsync (dd bs=4M conv=fsync), a read of
// that warm file (cat), and a raw TCP stream over loopback into a file.
func (b *bench) baselines(ctx context.Context) ([]benchResult, error) {
	size := b.cfg.Size
	dir, err := os.MkdirTemp(b.cfg.Dir, "dfs-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	b.progress("baseline: durable local write of %s", humanSize(size))
	start := time.Now()
	if err := writeDurably(src, b.data.reader(0, size)); err != nil {
		return nil, err
	}
	out := []benchResult{newResult("baseline", "local write+fsync (dd conv=fsync)", 1, size, time.Since(start))}

	b.progress("baseline: warm read of %s", humanSize(size))
	start = time.Now()
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	_, err = io.CopyBuffer(io.Discard, f, make([]byte, 128<<10))
	f.Close()
	if err != nil {
		return nil, err
	}
	out = append(out, newResult("baseline", "warm local read (cat)", 1, size, time.Since(start)))

	b.progress("baseline: raw loopback TCP stream of %s into a file", humanSize(size))
	wall, err := tcpStream(ctx, src, filepath.Join(dir, "dst"), size)
	if err != nil {
		return nil, err
	}
	out = append(out, newResult("baseline", "loopback TCP into a file", 1, size, wall))
	return out, nil
}

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

// ratios sets each throughput phase's ratio to its baseline.
func ratios(rs []benchResult) {
	base := map[string]time.Duration{}
	for _, r := range rs {
		if r.Workload == "baseline" {
			base[r.Phase] = r.Wall
		}
	}
	for i, r := range rs {
		if r.Workload != "throughput" || r.Ops == 0 {
			continue
		}
		// Per file: the baselines move one file of the same size.
		per := r.Wall / time.Duration(r.Ops)
		name := "local write+fsync (dd conv=fsync)"
		if r.Phase[:3] == "get" {
			name = "loopback TCP into a file"
		}
		if d, ok := base[name]; ok && d > 0 {
			rs[i].Baseline, rs[i].Ratio = name, float64(per)/float64(d)
		}
	}
}

// printBench prints results as a table.
func printBench(w io.Writer, rs []benchResult) {
	fmt.Fprintf(w, "%-10s %-36s %8s %10s %10s %10s %10s %9s %9s  %s\n",
		"WORKLOAD", "PHASE", "OPS", "BYTES", "WALL", "MB/s", "OPS/s", "P50", "P99", "RATIO")
	for _, r := range rs {
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx %s", r.Ratio, r.Baseline)
		}
		fmt.Fprintf(w, "%-10s %-36s %8d %10s %10s %10s %10s %9s %9s  %s\n", r.Workload, r.Phase, r.Ops, humanSize(r.Bytes),
			r.Wall.Round(time.Millisecond), fmtFloat(r.MBps), fmtFloat(r.OpsPerS), fmtDur(r.P50), fmtDur(r.P99), ratio)
	}
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
		Usage:     "measure throughput, small files and metadata operations (a local cluster unless --master is given)",
		ArgsUsage: "[baseline|throughput|small|meta]...",
		Description: "Runs the named workloads (default: all), progress on stderr, a table (or --json) on stdout.\n" +
			"Without --master (or DFS_MASTER) it starts a master and 3 minions in this process, in a temp dir.\n" +
			"Example: dfs bench --size 1GiB --replication 1,3 throughput baseline",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.StringFlag{Name: "size", Value: "256MiB", Usage: "throughput: `SIZE` of each file (and of the baselines)"},
			&cli.IntFlag{Name: "files", Value: 1, Usage: "throughput: files per phase"},
			&cli.IntFlag{Name: "concurrency", Value: 1, Usage: "throughput: concurrent clients"},
			&cli.StringFlag{Name: "replication", Value: "1,3", Usage: "throughput: replications to write with, comma-separated"},
			&cli.StringFlag{Name: "block-size", Value: "64MiB", Usage: "throughput: block `SIZE`"},
			&cli.IntFlag{Name: "small-files", Value: 10000, Usage: "small: number of files"},
			&cli.StringFlag{Name: "small-size", Value: "4KiB", Usage: "small: `SIZE` of each file"},
			&cli.IntFlag{Name: "small-concurrency", Value: 16, Usage: "small: concurrent clients"},
			&cli.IntFlag{Name: "meta-ops", Value: 20000, Usage: "meta: operations per phase"},
			&cli.IntFlag{Name: "meta-concurrency", Value: 16, Usage: "meta: concurrent callers"},
			&cli.StringFlag{Name: "dir", Usage: "scratch `DIR` for the local cluster and the baselines (default: the temp dir)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole run (cluster included when local) to `FILE`, for go tool pprof"},
		},
		Action: func(c *cli.Context) error {
			cfg, err := benchFlags(c)
			if err != nil {
				return err
			}
			if p := c.String("cpuprofile"); p != "" {
				stop, err := startCPUProfile(p)
				if err != nil {
					return err
				}
				defer stop()
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
			b.master = c.String("master")
			if !c.IsSet("master") {
				dir, err := os.MkdirTemp(cfg.Dir, "dfs-bench-cluster-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cl := &DevCluster{Dir: dir, Addr: "127.0.0.1:0", Minions: 3, Logger: e.logger, Security: e.security}
				if err := cl.Start(); err != nil {
					return fmt.Errorf("bench: local cluster: %w", err)
				}
				defer cl.Close()
				b.master = cl.Master.AddrString()
				b.progress("local cluster of 3 minions, master %s, in %s", b.master, dir)
			}
			var results []benchResult
			runErr := func() error {
				for _, w := range workloads {
					var rs []benchResult
					var err error
					switch w {
					case "baseline":
						rs, err = b.baselines(c.Context)
					case "throughput":
						rs, err = b.throughput(c.Context)
					case "small":
						rs, err = b.small(c.Context)
					case "meta":
						rs, err = b.meta(c.Context)
					}
					results = append(results, rs...)
					if err != nil {
						return err
					}
				}
				return nil
			}()
			// Remove this run's files, whatever happened.
			cl := b.client()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if _, err := cl.Remove(ctx, b.root, true); err != nil && !errors.Is(err, ErrNotFound) {
				b.logger.Warn("bench: clean up", "dir", b.root, "err", err)
			}
			cancel()
			cl.Close()
			ratios(results)
			if c.Bool("json") {
				if err := printJSON(e.stdout, results); err != nil {
					return err
				}
			} else {
				printBench(e.stdout, results)
			}
			if runErr != nil {
				return fmt.Errorf("bench: %w", runErr)
			}
			return nil
		},
	}
}

func benchFlags(c *cli.Context) (benchConfig, error) {
	cfg := benchConfig{
		Files: c.Int("files"), Concurrency: c.Int("concurrency"),
		SmallFiles: c.Int("small-files"), SmallConcurrency: c.Int("small-concurrency"),
		MetaOps: c.Int("meta-ops"), MetaConcurrency: c.Int("meta-concurrency"),
		Dir: c.String("dir"),
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
		{"small-concurrency", cfg.SmallConcurrency}, {"meta-ops", cfg.MetaOps}, {"meta-concurrency", cfg.MetaConcurrency}} {
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
