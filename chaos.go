// chaos.go is `dfs chaos`: a fault injector that proves the cluster's fault
// tolerance on this machine. It starts a local cluster of real processes
// (replicated masters and minions, this binary re-executed), runs a mixed
// workload against it (puts of random sizes, gets compared byte for byte,
// ls, mv, rm), and meanwhile kill -9s, pauses (SIGSTOP, then SIGCONT) and
// restarts random minions and masters, the leader included, on a schedule
// drawn from --seed. At the end it heals the cluster and checks that every
// acknowledged put reads back identical, that nothing removed came back,
// and that fsck is healthy; it exits non-zero on any loss.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// chaosProc is one process of the cluster.
type chaosProc struct {
	name string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *chaosProc) start(exe string) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return nil
}

func (p *chaosProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *chaosProc) signal(sig syscall.Signal) {
	if p.running() {
		p.cmd.Process.Signal(sig)
	}
}

func (p *chaosProc) kill() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// chaosFile is what the workload knows of a path: the seed of the content
// an acknowledged put stored (ok), or the seeds of puts whose outcome is
// unknown (a failure may have landed), or that it was removed.
type chaosFile struct {
	seed    uint64 // content of the acknowledged put
	size    int
	ok      bool
	unsure  bool // a failed put, mv or rm: the path may hold anything it was given
	removed bool
}

// chaosContent is the content of seed, size bytes.
func chaosContent(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

type chaosStats struct {
	mu                      sync.Mutex
	ops, errs               map[string]int
	faults                  map[string]int
	failovers               []time.Duration
	errSamples              []string
	lost, corrupt, revenant []string
}

func (s *chaosStats) op(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops[kind]++
	if err != nil {
		s.errs[kind]++
		if len(s.errSamples) < 8 {
			s.errSamples = append(s.errSamples, kind+": "+err.Error())
		}
	}
}

// chaos is one run.
type chaos struct {
	exe      string
	dir      string
	seed     uint64
	duration time.Duration
	workers  int
	maxSize  int
	maxData  int64 // live bytes past which workers remove rather than put
	out      io.Writer

	masters []*chaosProc
	addrs   []string // the masters' client addresses
	minions []*chaosProc
	client  *Client
	stats   chaosStats

	mu    sync.Mutex
	files map[string]*chaosFile
	live  int64 // bytes of the files that are, or may be, there
}

func chaosCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "chaos",
		Usage: "start a local cluster of real processes, inject faults while a workload runs, and check that nothing was lost",
		Description: "Kills (-9), pauses (SIGSTOP) and restarts random masters (the leader too) and minions on a schedule\n" +
			"drawn from --seed, while workers put, get (comparing bytes), ls, mv and rm. Exits 1 on any lost,\n" +
			"corrupted or resurrected file. Example: dfs chaos --duration 10m --seed 42",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Value: time.Minute, Usage: "how long to inject faults"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the fault schedule and the workload (default: from the clock; printed)"},
			&cli.IntFlag{Name: "masters", Value: 3, Usage: "replicated masters (3 or 5)"},
			&cli.IntFlag{Name: "minions", Value: 4, Usage: "minions"},
			&cli.IntFlag{Name: "workers", Value: 4, Usage: "concurrent clients of the workload"},
			&cli.StringFlag{Name: "max-size", Value: "3MiB", Usage: "largest file `SIZE` put (blocks are 1 MiB)"},
			&cli.StringFlag{Name: "max-data", Value: "256MiB", Usage: "`SIZE` of the files kept (each stored 3 times): past it, workers remove files instead of putting more"},
			&cli.StringFlag{Name: "dir", Usage: "`DIR` for the cluster (default: a temporary one, removed after a clean run)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "chaos takes no arguments")
			}
			if n := c.Int("masters"); n != 3 && n != 5 {
				return usagef(c, "--masters %d: want 3 or 5", n)
			}
			if n := c.Int("minions"); n < 3 || n > 16 {
				return usagef(c, "--minions %d: want 3 to 16 (replication is 3)", n)
			}
			if n := c.Int("workers"); n < 1 || n > 64 {
				return usagef(c, "--workers %d: want 1 to 64", n)
			}
			max, err := parseSize(c.String("max-size"))
			if err != nil || max < 1 || max > 256<<20 {
				return usagef(c, "--max-size %q: want 1 byte to 256MiB", c.String("max-size"))
			}
			maxData, err := parseSize(c.String("max-data"))
			if err != nil || maxData < max {
				return usagef(c, "--max-data %q: want a size of at least --max-size", c.String("max-data"))
			}
			if c.Duration("duration") <= 0 {
				return usagef(c, "--duration must be positive")
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			seed := c.Uint64("seed")
			if !c.IsSet("seed") {
				seed = uint64(time.Now().UnixNano())
			}
			dir, temp := c.String("dir"), false
			if dir == "" {
				if dir, err = os.MkdirTemp("", "dfs-chaos-"); err != nil {
					return err
				}
				temp = true
			}
			ch := &chaos{exe: exe, dir: dir, seed: seed, duration: c.Duration("duration"), workers: c.Int("workers"),
				maxSize: int(max), maxData: maxData, out: e.stdout, files: make(map[string]*chaosFile)}
			ch.stats.ops, ch.stats.errs, ch.stats.faults = map[string]int{}, map[string]int{}, map[string]int{}
			fmt.Fprintf(e.stdout, "chaos: seed %d, %v, %d masters, %d minions, %d workers, cluster in %s\n",
				seed, ch.duration, c.Int("masters"), c.Int("minions"), ch.workers, dir)
			err = ch.run(c.Context, c.Int("masters"), c.Int("minions"))
			if err == nil && temp {
				os.RemoveAll(dir)
			}
			return err
		},
	}
}

func (ch *chaos) run(ctx context.Context, nMasters, nMinions int) error {
	if err := ch.startCluster(nMasters, nMinions); err != nil {
		ch.stopAll()
		return err
	}
	defer ch.stopAll()
	ch.client = NewClient(strings.Join(ch.addrs, ","))
	ch.client.Logger = slog.New(slog.DiscardHandler)
	defer ch.client.Close()
	if err := ch.waitReady(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("chaos: the cluster did not come up: %w (logs in %s)", err, ch.dir)
	}

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range ch.workers {
		wg.Go(func() { ch.work(wctx, w) })
	}
	ch.inject(ctx)
	stop()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(ch.out, "chaos: faults stopped; healing\n")
	ch.heal()
	return ch.verify(ctx)
}

// freeLoopback is a loopback address with a port the OS chose, free now.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (ch *chaos) startCluster(nMasters, nMinions int) error {
	if err := os.MkdirAll(filepath.Join(ch.dir, "logs"), 0o755); err != nil {
		return err
	}
	var peers []string
	var raftAddrs []string
	for i := range nMasters {
		ra, err := freeLoopback()
		if err != nil {
			return err
		}
		ca, err := freeLoopback()
		if err != nil {
			return err
		}
		raftAddrs = append(raftAddrs, ra)
		ch.addrs = append(ch.addrs, ca)
		peers = append(peers, fmt.Sprintf("m%d=%s", i+1, ra))
	}
	for i := range nMasters {
		id := fmt.Sprintf("m%d", i+1)
		ch.masters = append(ch.masters, &chaosProc{name: "master " + id, log: filepath.Join(ch.dir, "logs", id+".log"),
			args: []string{"master", "--id", id, "--peers", strings.Join(peers, ","), "--addr", ch.addrs[i],
				"--dir", filepath.Join(ch.dir, id), "--http", "127.0.0.1:0", "--block-size", "1MiB",
				"--heartbeat", "200ms", "--dead-after", "3s"}})
	}
	spec := strings.Join(ch.addrs, ",")
	for i := range nMinions {
		addr, err := freeLoopback()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(addr)
		name := fmt.Sprintf("minion-%d", i+1)
		ch.minions = append(ch.minions, &chaosProc{name: name, log: filepath.Join(ch.dir, "logs", name+".log"),
			args: []string{"minion", "--master", spec, "--port", port, "--host", "127.0.0.1", "--bind", "127.0.0.1",
				"--dir", filepath.Join(ch.dir, name), "--heartbeat", "200ms", "--http", "127.0.0.1:0"}})
	}
	for _, p := range append(slices.Clone(ch.masters), ch.minions...) {
		if err := p.start(ch.exe); err != nil {
			return err
		}
	}
	return nil
}

func (ch *chaos) stopAll() {
	for _, p := range append(slices.Clone(ch.minions), ch.masters...) {
		p.kill()
	}
}

// waitReady waits for a leader with every minion live.
func (ch *chaos) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := ch.client.Report(c)
		cancel()
		if err == nil {
			live := 0
			for _, mn := range r.Minions {
				if mn.State == stateLive {
					live++
				}
			}
			if live == len(ch.minions) {
				return nil
			}
			err = fmt.Errorf("%d of %d minions live", live, len(ch.minions))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return last
}

// leader is the index of the leading master, -1 if none answers.
func (ch *chaos) leader() int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := ch.client.Report(ctx)
	if err != nil || len(r.Masters) == 0 || r.Masters[0].Role != "leader" {
		return -1
	}
	return slices.Index(ch.addrs, r.Masters[0].Addr)
}

// inject runs the fault schedule for the duration: every 1 to 3 seconds,
// one fault on one process; at most one master and one minion are down or
// paused at a time, so a majority of masters and two replicas stay up.
func (ch *chaos) inject(ctx context.Context) {
	rng := rand.New(rand.NewPCG(ch.seed, 1))
	end := time.Now().Add(ch.duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(1000+rng.IntN(2000)) * time.Millisecond):
		}
		masters := rng.IntN(3) == 0
		procs, kind := ch.minions, "minion"
		if masters {
			procs, kind = ch.masters, "master"
		}
		i := rng.IntN(len(procs))
		leaderKill := false
		if masters && rng.IntN(2) == 0 {
			if l := ch.leader(); l >= 0 {
				i, leaderKill = l, true
			}
		}
		p := procs[i]
		down := time.Duration(500+rng.IntN(3000)) * time.Millisecond
		switch rng.IntN(3) {
		case 0: // kill -9, restart after a while
			p.kill()
			ch.fault(kind + " kill -9")
			start := time.Now()
			if leaderKill {
				ch.timeFailover(start)
			}
			ch.sleep(ctx, down-time.Since(start))
			if err := p.start(ch.exe); err != nil {
				fmt.Fprintf(ch.out, "chaos: restart %s: %v\n", p.name, err)
			}
		case 1: // pause
			p.signal(syscall.SIGSTOP)
			ch.fault(kind + " SIGSTOP")
			start := time.Now()
			if leaderKill {
				ch.timeFailover(start)
			}
			ch.sleep(ctx, down-time.Since(start))
			p.signal(syscall.SIGCONT)
		default: // a clean restart
			p.signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.kill()
			}
			ch.fault(kind + " restart")
			if err := p.start(ch.exe); err != nil {
				fmt.Fprintf(ch.out, "chaos: restart %s: %v\n", p.name, err)
			}
		}
	}
}

func (ch *chaos) fault(kind string) {
	ch.stats.mu.Lock()
	ch.stats.faults[kind]++
	ch.stats.mu.Unlock()
}

// timeFailover waits for another master to lead and records how long it
// took from start.
func (ch *chaos) timeFailover(start time.Time) {
	for time.Since(start) < 30*time.Second {
		if ch.leader() >= 0 {
			ch.stats.mu.Lock()
			ch.stats.failovers = append(ch.stats.failovers, time.Since(start))
			ch.stats.mu.Unlock()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (ch *chaos) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// work is one client of the workload, until ctx ends.
func (ch *chaos) work(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(ch.seed, uint64(w)+2))
	for n := 0; ctx.Err() == nil; n++ {
		opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		k := rng.IntN(10)
		ch.mu.Lock()
		full := ch.live > ch.maxData
		ch.mu.Unlock()
		if full && k < 4 {
			k = 9 // remove instead: the disk is not the subject
		}
		switch {
		case k < 4:
			ch.put(opCtx, fmt.Sprintf("/chaos/w%d/f%d", w, n), rng)
		case k < 7:
			ch.get(opCtx, ch.pick(rng, w))
		case k < 8:
			_, err := ch.client.List(opCtx, "/chaos", true)
			if errors.Is(err, ErrNotFound) {
				err = nil // before the first put
			}
			ch.stats.op("ls", err)
		case k < 9:
			ch.mv(opCtx, ch.pick(rng, w), fmt.Sprintf("/chaos/w%d/m%d", w, n))
		default:
			ch.rm(opCtx, ch.pick(rng, w))
		}
		cancel()
	}
}

// pick is a known path of worker w (whose files only it changes), or "".
func (ch *chaos) pick(rng *rand.Rand, w int) string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	prefix := fmt.Sprintf("/chaos/w%d/", w)
	var ps []string
	for p, f := range ch.files {
		if strings.HasPrefix(p, prefix) && f.ok && !f.unsure && !f.removed {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	slices.Sort(ps)
	return ps[rng.IntN(len(ps))]
}

func (ch *chaos) put(ctx context.Context, p string, rng *rand.Rand) {
	seed, size := rng.Uint64(), rng.IntN(ch.maxSize+1)
	_, err := ch.client.Put(ctx, bytes.NewReader(chaosContent(seed, size)), p, PutOptions{})
	ch.stats.op("put", err)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if err != nil {
		ch.files[p] = &chaosFile{seed: seed, size: size, unsure: true}
		return
	}
	ch.live += int64(size) // live counts the files workers may pick
	ch.files[p] = &chaosFile{seed: seed, size: size, ok: true}
}

func (ch *chaos) get(ctx context.Context, p string) {
	if p == "" {
		return
	}
	ch.mu.Lock()
	f := *ch.files[p]
	ch.mu.Unlock()
	h := sha256.New()
	n, err := ch.client.Get(ctx, p, h)
	ch.stats.op("get", err)
	if err == nil && (n != int64(f.size) || !bytes.Equal(h.Sum(nil), sha(chaosContent(f.seed, f.size)))) {
		ch.stats.mu.Lock()
		ch.stats.corrupt = append(ch.stats.corrupt, p+" (during the run)")
		ch.stats.mu.Unlock()
	}
}

func (ch *chaos) mv(ctx context.Context, src, dst string) {
	if src == "" {
		return
	}
	_, err := ch.client.Rename(ctx, src, dst, false)
	ch.stats.op("mv", err)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	f := *ch.files[src]
	if err != nil {
		ch.live -= int64(f.size)
		ch.files[src].unsure = true
		f.unsure = true
		ch.files[dst] = &f
		return
	}
	ch.files[dst] = &f
	ch.files[src] = &chaosFile{removed: true}
}

func (ch *chaos) rm(ctx context.Context, p string) {
	if p == "" {
		return
	}
	_, err := ch.client.Remove(ctx, p, false)
	ch.stats.op("rm", err)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.live -= int64(ch.files[p].size)
	if err != nil {
		ch.files[p].unsure = true
		return
	}
	ch.files[p] = &chaosFile{removed: true}
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// heal resumes every paused process and starts every stopped one.
func (ch *chaos) heal() {
	for _, p := range append(slices.Clone(ch.masters), ch.minions...) {
		p.signal(syscall.SIGCONT)
		if !p.running() {
			if err := p.start(ch.exe); err != nil {
				fmt.Fprintf(ch.out, "chaos: restart %s: %v\n", p.name, err)
			}
		}
	}
}

// verify checks every file the workload knows, then fsck, and prints the
// summary.
func (ch *chaos) verify(ctx context.Context) error {
	if err := ch.waitReady(ctx, 90*time.Second); err != nil {
		return fmt.Errorf("chaos: the cluster did not recover: %w (logs in %s)", err, ch.dir)
	}
	healthy := false
	deadline := time.Now().Add(90 * time.Second)
	for !healthy && time.Now().Before(deadline) && ctx.Err() == nil {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := ch.client.Fsck(c, "/")
		cancel()
		healthy = err == nil && !r.SafeMode && !slices.ContainsFunc(r.Blocks, func(b FsckBlock) bool { return b.Status != statusHealthy })
		if !healthy {
			time.Sleep(500 * time.Millisecond)
		}
	}
	ch.mu.Lock()
	paths := make([]string, 0, len(ch.files))
	for p := range ch.files {
		paths = append(paths, p)
	}
	ch.mu.Unlock()
	slices.Sort(paths)
	checked := 0
	for _, p := range paths {
		f := ch.files[p]
		c, cancel := context.WithTimeout(ctx, 60*time.Second)
		h := sha256.New()
		n, err := ch.client.Get(c, p, h)
		cancel()
		switch {
		case f.unsure: // there or not, but if there, what it was given
			if err == nil && (n != int64(f.size) || !bytes.Equal(h.Sum(nil), sha(chaosContent(f.seed, f.size)))) {
				ch.stats.corrupt = append(ch.stats.corrupt, p+" (after a failed change)")
			}
		case f.removed:
			if err == nil {
				ch.stats.revenant = append(ch.stats.revenant, p)
			} else if !errors.Is(err, ErrNotFound) {
				ch.stats.lost = append(ch.stats.lost, fmt.Sprintf("%s (removed; get: %v)", p, err))
			}
		case err != nil:
			ch.stats.lost = append(ch.stats.lost, fmt.Sprintf("%s: %v", p, err))
		case n != int64(f.size) || !bytes.Equal(h.Sum(nil), sha(chaosContent(f.seed, f.size))):
			ch.stats.corrupt = append(ch.stats.corrupt, p)
		}
		checked++
	}
	ch.summary(checked, healthy)
	s := &ch.stats
	if len(s.lost)+len(s.corrupt)+len(s.revenant) > 0 || !healthy {
		return fmt.Errorf("chaos: seed %d: %d lost, %d corrupted, %d removed files back, fsck healthy %v (logs in %s)",
			ch.seed, len(s.lost), len(s.corrupt), len(s.revenant), healthy, ch.dir)
	}
	return nil
}

func (ch *chaos) summary(checked int, healthy bool) {
	s := &ch.stats
	w := ch.out
	var kinds []string
	for k := range s.ops {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	fmt.Fprintf(w, "operations:")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s %d (%d failed)", k, s.ops[k], s.errs[k])
	}
	fmt.Fprintln(w)
	var faults []string
	for k, n := range s.faults {
		faults = append(faults, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(faults)
	fmt.Fprintf(w, "faults: %s\n", strings.Join(faults, ", "))
	if len(s.failovers) > 0 {
		d := slices.Clone(s.failovers)
		slices.Sort(d)
		fmt.Fprintf(w, "leader faults: %d; a leader again after: median %v, max %v\n", len(d),
			d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	for _, e := range s.errSamples {
		fmt.Fprintf(w, "client error seen: %s\n", e)
	}
	fmt.Fprintf(w, "checked %d paths: %d lost, %d corrupted, %d removed files back; fsck healthy: %v\n",
		checked, len(s.lost), len(s.corrupt), len(s.revenant), healthy)
	for _, l := range [][]string{s.lost, s.corrupt, s.revenant} {
		for _, p := range l {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}
