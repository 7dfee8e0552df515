// web_minion.go is a minion's own status page, on its --http listener
// beside /metrics: its disk, its blocks (in files of their own or packed
// in volumes), its volumes and the scrubber's progress.
//
//	/             the page
//	/api/minion   the same as JSON
//
// Both list at most ?limit= blocks (the page 200, the JSON 1000 by
// default) from ?offset=, in the order of their ids.
package main

import (
	"cmp"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// minionWeb serves a minion's page.
type minionWeb struct {
	m       *Minion
	started time.Time
	mux     *http.ServeMux
}

// newMinionWeb is the handler of a minion's --http listener: its page,
// its JSON and /metrics.
func newMinionWeb(m *Minion) http.Handler {
	w := &minionWeb{m: m, started: time.Now(), mux: http.NewServeMux()}
	w.mux.Handle("GET /metrics", metricsHandler(m.metrics.reg))
	w.mux.Handle("GET /static/", staticHandler())
	w.mux.HandleFunc("GET /{$}", func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, false) })
	w.mux.HandleFunc("GET /api/minion", func(rw http.ResponseWriter, r *http.Request) { w.serve(rw, r, true) })
	return w.mux
}

// httpAdvertised is the host:port of the minion's status page for the
// master to link to, "" without --http: the listener's, with the host of
// addr (the RPC address it advertises) when it listens on every interface.
func (m *Minion) httpAdvertised(addr string) string {
	if m.http == nil {
		return ""
	}
	host, port, err := net.SplitHostPort(m.http.Addr())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// minionStatus is /api/minion.
type minionStatus struct {
	ID            string         `json:"id"`
	ClusterID     string         `json:"cluster_id"`
	Addr          string         `json:"addr"`
	Master        string         `json:"master"`
	Registered    bool           `json:"registered"`
	Version       string         `json:"version"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Disk          minionDisk     `json:"disk"`
	Blocks        minionBlocks   `json:"blocks"`
	Volumes       []minionVolume `json:"volumes"`
	Scrubber      scrubStatus    `json:"scrubber"`
}

// minionDisk is the file system of the minion's dir.
type minionDisk struct {
	Capacity int64 `json:"capacity"`
	Free     int64 `json:"free"`      // available to the minion
	Used     int64 `json:"used"`      // by its blocks
	Other    int64 `json:"other"`     // by everything else
	Writing  int   `json:"receiving"` // blocks being received
}

// minionBlocks counts the finalized blocks and lists some of them.
type minionBlocks struct {
	Count  int           `json:"count"`
	Bytes  int64         `json:"bytes"`
	Packed int           `json:"packed"` // of Count, in volumes
	Offset int           `json:"offset"`
	List   []minionBlock `json:"list"`
}

type minionBlock struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	Volume string `json:"volume,omitempty"` // the volume it is packed in; "": a file of its own
	id     uint64
}

type minionVolume struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"` // bytes of records
	Live   int64  `json:"live"` // bytes of the records of blocks it holds
	Active bool   `json:"active"`
}

// GarbagePct is the part of the volume that compaction would give back.
func (v minionVolume) GarbagePct() string { return percent(v.Size-v.Live, v.Size) }

func (w *minionWeb) serve(rw http.ResponseWriter, r *http.Request, api bool) {
	limit := 200
	if api {
		limit = 1000
	}
	offset, err1 := formInt(r, "offset", 0)
	limit, err2 := formInt(r, "limit", limit)
	if err := cmp.Or(err1, err2); err != nil {
		if api {
			writeJSON(rw, http.StatusBadRequest, jsonError{err.Error()})
		} else {
			http.Error(rw, err.Error(), http.StatusBadRequest)
		}
		return
	}
	st := w.status(offset, limit)
	if api {
		writeJSON(rw, http.StatusOK, st)
		return
	}
	render(rw, http.StatusOK, "minion", page{Title: "Minion " + st.Addr, Nav: "minion", Cluster: st.ClusterID, Version: Version,
		Data: minionData{minionStatus: st, Limit: limit}})
}

// minionData is the page's.
type minionData struct {
	minionStatus
	Limit int
}

// Next is the offset of the next page of blocks, 0 if there is none.
func (d minionData) Next() int {
	if n := d.Blocks.Offset + len(d.Blocks.List); n < d.Blocks.Count {
		return n
	}
	return 0
}

// formInt reads the non-negative integer ?name=, def if it is not given.
func formInt(r *http.Request, name string, def int) (int, error) {
	s := r.FormValue(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, &strconvError{name, s}
	}
	return n, nil
}

type strconvError struct{ name, value string }

func (e *strconvError) Error() string {
	return "?" + e.name + "=" + e.value + ": want a non-negative number"
}

func (w *minionWeb) status(offset, limit int) minionStatus {
	m := w.m
	m.mu.Lock()
	st := minionStatus{ID: m.ident.MinionID, ClusterID: m.ident.ClusterID, Addr: m.addr, Master: m.MasterAddr,
		Registered: m.registered, Version: Version, UptimeSeconds: time.Since(w.started).Seconds()}
	m.mu.Unlock()
	capacity, free, used, _ := m.stats()
	st.Disk = minionDisk{Capacity: capacity, Free: free, Used: used, Other: max(0, capacity-free-used)}
	blocks, volumes, writing := m.store.listing()
	st.Disk.Writing = writing
	st.Volumes = volumes
	st.Blocks = minionBlocks{Count: len(blocks), Offset: offset, List: []minionBlock{}}
	for _, b := range blocks {
		st.Blocks.Bytes += b.Size
		if b.Volume != "" {
			st.Blocks.Packed++
		}
	}
	if offset < len(blocks) {
		st.Blocks.List = blocks[offset:min(len(blocks), offset+limit)]
	}
	st.Scrubber = m.scrubbing.status(m.ScrubInterval, m.ScrubRate)
	return st
}

// listing lists the finalized blocks by id, the volumes by name, and
// counts the blocks being received. It takes the volume set's lock, then
// the store's, one after the other.
func (s *blockStore) listing() (blocks []minionBlock, volumes []minionVolume, writing int) {
	vs := s.vols
	vs.mu.Lock()
	for id, rec := range vs.index {
		blocks = append(blocks, minionBlock{id: id, Size: rec.size, Volume: volumeName(rec.loc.vol.seq)})
	}
	for _, v := range vs.volumes {
		volumes = append(volumes, minionVolume{Name: volumeName(v.seq), Size: v.size, Live: v.live, Active: v == vs.active})
	}
	vs.mu.Unlock()
	s.mu.Lock()
	for id, size := range s.files {
		blocks = append(blocks, minionBlock{id: id, Size: size})
	}
	writing = len(s.writers)
	s.mu.Unlock()
	slices.SortFunc(blocks, func(a, b minionBlock) int {
		// A block both in a file and in a volume is served from its
		// file (the record is garbage): the file's entry comes first.
		return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.Volume, b.Volume))
	})
	blocks = slices.CompactFunc(blocks, func(a, b minionBlock) bool { return a.id == b.id })
	for i := range blocks {
		blocks[i].ID = blockName(blocks[i].id)
	}
	slices.SortFunc(volumes, func(a, b minionVolume) int { return cmp.Compare(a.Name, b.Name) })
	if volumes == nil {
		volumes = []minionVolume{}
	}
	return blocks, volumes, writing
}

// ---- the scrubber's progress ----

// scrubProgress is where the scrubber is (repair.go's scrub keeps it). It
// is safe for concurrent use; the zero value is a scrubber that has not
// started.
type scrubProgress struct {
	mu      sync.Mutex
	running bool
	pass    scrubPass  // the one running, if running
	last    *scrubPass // the last one finished
	passes  int        // finished
}

// scrubPass is one pass of the scrubber over every block.
type scrubPass struct {
	Started    time.Time  `json:"started"`
	Finished   *time.Time `json:"finished,omitempty"`
	Blocks     int        `json:"blocks"`
	Bytes      int64      `json:"bytes"`
	BlocksDone int        `json:"blocks_done"`
	BytesDone  int64      `json:"bytes_done"`
	Corrupt    int        `json:"corrupt"`
}

// Pct is how far the pass is, by bytes.
func (p scrubPass) Pct() string {
	if p.Bytes == 0 && p.Blocks > 0 {
		return percent(int64(p.BlocksDone), int64(p.Blocks))
	}
	return percent(p.BytesDone, p.Bytes)
}

// Took is how long the finished pass took.
func (p scrubPass) Took() time.Duration {
	if p.Finished == nil {
		return 0
	}
	return p.Finished.Sub(p.Started).Round(time.Millisecond)
}

// scrubStatus is the scrubber in /api/minion.
type scrubStatus struct {
	Enabled         bool       `json:"enabled"`
	IntervalSeconds float64    `json:"interval_seconds"`
	Rate            int64      `json:"rate"` // bytes a second at most
	Passes          int        `json:"passes"`
	Running         *scrubPass `json:"running,omitempty"`
	Last            *scrubPass `json:"last,omitempty"`
}

// begin starts a pass over blocks.
func (p *scrubProgress) begin(blocks []BlockReport) {
	pass := scrubPass{Started: time.Now(), Blocks: len(blocks)}
	for _, b := range blocks {
		pass.Bytes += b.Size
	}
	p.mu.Lock()
	p.running, p.pass = true, pass
	p.mu.Unlock()
}

// step records a block checked.
func (p *scrubProgress) step(size int64, corrupt bool) {
	p.mu.Lock()
	p.pass.BlocksDone++
	p.pass.BytesDone += size
	if corrupt {
		p.pass.Corrupt++
	}
	p.mu.Unlock()
}

// end ends the pass; it counts as the last one only if it went through.
func (p *scrubProgress) end(whole bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = false
	if whole {
		now := time.Now()
		done := p.pass
		done.Finished = &now
		p.last = &done
		p.passes++
	}
}

func (p *scrubProgress) status(interval time.Duration, rate int64) scrubStatus {
	if rate <= 0 {
		rate = DefaultScrubRate
	}
	st := scrubStatus{Enabled: interval > 0, IntervalSeconds: interval.Seconds(), Rate: rate}
	p.mu.Lock()
	defer p.mu.Unlock()
	st.Passes = p.passes
	if p.running {
		running := p.pass
		st.Running = &running
	}
	if p.last != nil {
		last := *p.last
		st.Last = &last
	}
	return st
}
