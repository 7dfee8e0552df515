// metrics.go is what a master or a minion tells Prometheus, and the HTTP
// listener (--http) that serves it at /metrics, beside the status pages
// (web.go, web_minion.go). The listener follows the RPC ports' rule:
// loopback needs nothing; another interface needs the cluster secret on
// every request (HTTP Basic with the secret as password, or
// "Authorization: Bearer SECRET") or an explicit --insecure.
package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// fsyncSeconds is the latency of this process's fsyncs, by file kind. It is
// the process's, not one master's or minion's: the in-process clusters of
// tests and `dfs dev` share it.
var fsyncSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "dfs_fsync_duration_seconds",
	Help:    "Latency of fsync and fdatasync calls, by file: editlog, block, volume.",
	Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16), // 50µs to 1.6s
}, []string{"file"})

var (
	fsyncEditLog = fsyncSeconds.WithLabelValues("editlog")
	fsyncBlock   = fsyncSeconds.WithLabelValues("block")
	fsyncVolume  = fsyncSeconds.WithLabelValues("volume")
)

// timedSync runs sync and records how long it took on h.
func timedSync(h prometheus.Observer, sync func() error) error {
	start := time.Now()
	err := sync()
	h.Observe(time.Since(start).Seconds())
	return err
}

// newRegistry is a registry with the Go runtime's and the process's
// metrics and the fsync latencies.
func newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), fsyncSeconds)
	return reg
}

// rpcMetrics times the RPCs a server answers, by method and outcome.
type rpcMetrics struct {
	seconds *prometheus.HistogramVec
	// byMethod caches each method's two observers (ok, error): a
	// lookup by two label values costs more than the observation.
	byMethod sync.Map // string -> *[2]prometheus.Observer
}

func newRPCMetrics(reg prometheus.Registerer) *rpcMetrics {
	m := &rpcMetrics{seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dfs_rpc_duration_seconds",
		Help:    "Time from a request's arrival to its answer's, by method and outcome (ok, error).",
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 18), // 25µs to 3.3s
	}, []string{"method", "outcome"})}
	reg.MustRegister(m.seconds)
	return m
}

func (m *rpcMetrics) observe(method string, failed bool, d time.Duration) {
	obs, ok := m.byMethod.Load(method)
	if !ok {
		obs, _ = m.byMethod.LoadOrStore(method, &[2]prometheus.Observer{
			m.seconds.WithLabelValues(method, "ok"), m.seconds.WithLabelValues(method, "error")})
	}
	i := 0
	if failed {
		i = 1
	}
	obs.(*[2]prometheus.Observer)[i].Observe(d.Seconds())
}

// callTimer remembers when each request of one connection arrived, for
// rpcMetrics; nil when there are no metrics.
type callTimer struct {
	m     *rpcMetrics
	mu    sync.Mutex // WriteResponse runs on the handlers' goroutines
	start map[uint64]time.Time
}

func newCallTimer(m *rpcMetrics) *callTimer {
	if m == nil {
		return nil
	}
	return &callTimer{m: m, start: make(map[uint64]time.Time)}
}

func (t *callTimer) begin(seq uint64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.start[seq] = time.Now()
	t.mu.Unlock()
}

func (t *callTimer) end(seq uint64, method string, failed bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	start, ok := t.start[seq]
	delete(t.start, seq)
	t.mu.Unlock()
	if ok {
		t.m.observe(method, failed, time.Since(start))
	}
}

// ---- the HTTP listener ----

// httpServer serves a process's web endpoints.
type httpServer struct {
	srv *http.Server
	ln  net.Listener
	// handler is closed with the server, if it is an io.Closer.
	handler io.Closer
}

// serveHTTP listens on addr and serves h there under the RPC ports' rule
// (see the file's comment). what names the process in errors and logs. If
// h is an io.Closer, Close closes it after the server.
func serveHTTP(addr, what string, h http.Handler, sec *Security, logger *slog.Logger) (*httpServer, error) {
	closer, _ := h.(io.Closer)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s --http %s: %w", what, addr, err)
	}
	loopback := isLoopback(ln.Addr())
	switch {
	case loopback:
	case sec != nil && sec.Secret != nil:
		h = requireSecret(h, sec.Secret)
	case sec != nil && sec.Insecure:
		logger.Warn(what+" web listener on a non-loopback address without a secret (--insecure): anyone who reaches it sees the cluster", "http", ln.Addr().String())
	default:
		ln.Close()
		return nil, fmt.Errorf("%s --http %s: not a loopback address, and there is no cluster secret to require (give --secret-file, or --insecure)", what, addr)
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	s := &httpServer{ln: ln, handler: closer, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}}
	go s.srv.Serve(ln)
	logger.Info(what+" serves its web pages and metrics", "url", "http://"+ln.Addr().String()+"/", "metrics", "http://"+ln.Addr().String()+"/metrics", "needs_secret", !loopback && sec != nil && sec.Secret != nil)
	return s, nil
}

func (s *httpServer) Addr() string { return s.ln.Addr().String() }

func (s *httpServer) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if s.handler != nil {
		err = errors.Join(err, s.handler.Close())
	}
	return err
}

// requireSecret lets through requests that carry the secret, as the
// password of HTTP Basic authentication (any user) or as a bearer token.
func requireSecret(h http.Handler, secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var given string
		if _, pass, ok := r.BasicAuth(); ok {
			given = pass
		} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			given = tok
		}
		if subtle.ConstantTimeCompare([]byte(given), secret) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="dfs", charset="UTF-8"`)
			http.Error(w, "the cluster secret is required (as the password, or a bearer token)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// metricsHandler serves reg at /metrics and 404s everything else.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// ---- the master's ----

// masterMetrics are the master's: its RPCs, the copies it had made, and,
// read at each scrape, the state of the cluster.
type masterMetrics struct {
	reg            *prometheus.Registry
	rpcs           *rpcMetrics
	rereplications prometheus.Counter
}

func newMasterMetrics(m *Master) *masterMetrics {
	reg := newMetricsRegistry()
	mm := &masterMetrics{reg: reg, rpcs: newRPCMetrics(reg),
		rereplications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_master_rereplications_total",
			Help: "Copies of blocks made at the master's request (re-replication, decommission) that minions reported done.",
		})}
	reg.MustRegister(mm.rereplications, &masterCollector{m: m})
	return mm
}

var (
	descFiles      = prometheus.NewDesc("dfs_master_files", "Files in the namespace.", nil, nil)
	descBlocks     = prometheus.NewDesc("dfs_master_blocks", "Blocks of the namespace's files, by health: healthy, under-replicated, corrupt, missing (as fsck of / counts them).", []string{"status"}, nil)
	descMinions    = prometheus.NewDesc("dfs_master_minions", "Minions known to the master, by state: live, dead, decommissioning, decommissioned.", []string{"state"}, nil)
	descSafeMode   = prometheus.NewDesc("dfs_master_safe_mode", "1 while the master waits for block reports after a start and neither copies nor deletes.", nil, nil)
	descEditLog    = prometheus.NewDesc("dfs_master_editlog_bytes", "Bytes of the edit log's current segment (the image is rewritten past --checkpoint bytes).", nil, nil)
	descCheckpoint = prometheus.NewDesc("dfs_master_checkpoint_age_seconds", "Time since the image (checkpoint) was last written.", nil, nil)
)

// masterCollector reads the cluster's state at each scrape. It holds the
// master's lock while it counts, not while the answer is written.
type masterCollector struct{ m *Master }

func (c *masterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFiles, descBlocks, descMinions, descSafeMode, descEditLog, descCheckpoint,
		descRaftLeader, descRaftTerm, descRaftIndex, descRaftEntries, descRaftEdits} {
		ch <- d
	}
}

func (c *masterCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := time.Now()
	m.mu.Lock()
	health := m.repl.health(now)
	rep := m.repl.report(m.clusterID)
	ha := m.ha
	m.mu.Unlock()
	states := map[string]int{stateLive: 0, stateDead: 0, stateDecommissioning: 0, stateDecommissioned: 0}
	for _, mn := range rep.Minions {
		states[mn.State]++
	}
	ch <- prometheus.MustNewConstMetric(descFiles, prometheus.GaugeValue, float64(rep.Files))
	for status, n := range health {
		ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(n), status)
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(descMinions, prometheus.GaugeValue, float64(n), state)
	}
	safe := 0.0
	if rep.SafeMode {
		safe = 1
	}
	ch <- prometheus.MustNewConstMetric(descSafeMode, prometheus.GaugeValue, safe)
	if ha != nil {
		c.collectRaft(ch)
		return
	}
	ch <- prometheus.MustNewConstMetric(descEditLog, prometheus.GaugeValue, float64(m.edits.size()))
	if st, err := os.Stat(imagePath(m.Dir)); err == nil {
		ch <- prometheus.MustNewConstMetric(descCheckpoint, prometheus.GaugeValue, now.Sub(st.ModTime()).Seconds())
	}
}

var (
	descRaftLeader  = prometheus.NewDesc("dfs_master_raft_leader", "1 while this replicated master is the leader and takes changes.", nil, nil)
	descRaftTerm    = prometheus.NewDesc("dfs_master_raft_term", "The Raft term this master is in.", nil, nil)
	descRaftIndex   = prometheus.NewDesc("dfs_master_raft_index", "Raft log indexes: the last committed and the last applied here.", []string{"kind"}, nil)
	descRaftEntries = prometheus.NewDesc("dfs_master_raft_entries_total", "Raft entries this master proposed as leader (each carries the edits gathered meanwhile).", nil, nil)
	descRaftEdits   = prometheus.NewDesc("dfs_master_raft_edits_total", "Namespace edits this master proposed as leader.", nil, nil)
)

// collectRaft reports a replicated master's Raft state.
func (c *masterCollector) collectRaft(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	mi := m.ha.info()
	leading := m.ha.leading
	m.mu.Unlock()
	lead := 0.0
	if leading {
		lead = 1
	}
	ch <- prometheus.MustNewConstMetric(descRaftLeader, prometheus.GaugeValue, lead)
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(mi.Term))
	ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(mi.Commit), "committed")
	ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(mi.Applied), "applied")
	ch <- prometheus.MustNewConstMetric(descRaftEntries, prometheus.CounterValue, float64(m.ha.entries.Load()))
	ch <- prometheus.MustNewConstMetric(descRaftEdits, prometheus.CounterValue, float64(m.ha.edits.Load()))
}

// ---- a minion's ----

// minionMetrics are a minion's: its RPCs, the bytes it wrote and served,
// the bytes its scrubber read, and the blocks it holds.
type minionMetrics struct {
	reg      *prometheus.Registry
	rpcs     *rpcMetrics
	written  *prometheus.CounterVec // by source: client (a put's pipeline), replication (a copy)
	read     *prometheus.CounterVec // by reader: client, replication (another minion's copy)
	scrubbed prometheus.Counter
}

func newMinionMetrics(m *Minion) *minionMetrics {
	reg := newMetricsRegistry()
	mm := &minionMetrics{reg: reg, rpcs: newRPCMetrics(reg),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dfs_minion_written_bytes_total",
			Help: "Bytes of blocks stored here, by source: client (a put's pipeline, first or forwarded), replication (a copy the master asked for).",
		}, []string{"source"}),
		read: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dfs_minion_read_bytes_total",
			Help: "Bytes of blocks served, by reader: client, replication (another minion copying).",
		}, []string{"reader"}),
		scrubbed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dfs_minion_scrubbed_bytes_total",
			Help: "Bytes the scrubber re-read and checked.",
		}),
	}
	for _, l := range []string{"client", "replication"} {
		mm.written.WithLabelValues(l)
		mm.read.WithLabelValues(l)
	}
	blocks := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dfs_minion_blocks", Help: "Blocks stored here."},
		func() float64 { _, n := m.store.usage(); return float64(n) })
	used := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dfs_minion_used_bytes", Help: "Bytes of the blocks stored here."},
		func() float64 { u, _ := m.store.usage(); return float64(u) })
	reg.MustRegister(mm.written, mm.read, mm.scrubbed, blocks, used)
	return mm
}
