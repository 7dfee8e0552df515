// web.go is the master's web status pages and their JSON, on its --http
// listener beside /metrics (the listener's rule is serveHTTP's, metrics.go):
//
//	/                    overview: cluster, safe mode, space, files, blocks by health
//	/minions             every minion: state, space, blocks, last heartbeat
//	/blocks?status=S     the blocks of one health (under-replicated, ...) and their files
//	/browse/PATH         a directory's entries, or a file with its blocks and replicas
//	/download/PATH       a file's bytes, checked as `dfs get` checks them; Range requests work
//	/api/overview        `dfs report --json`, with the overview's extras
//	/api/minions         `dfs report --json`, with each minion's web address
//	/api/blocks?status=S `dfs fsck --json` of /, only the blocks of status S
//	/api/browse/PATH     `dfs ls --json` of a directory, `dfs stat --json` of a file
//
// The pages are html/template (which escapes everything) with CSS from
// web/, embedded: no JavaScript, nothing fetched from elsewhere. Each page
// reads the master's state under its lock, as the RPCs of the same answers
// do, and renders after the lock is released. A minion's page is in
// web_minion.go.
package main

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

//go:embed web
var webFiles embed.FS

// webPages are the templates, one set a page: the layout and the page's
// own file, which defines "content".
var webPages = parsePages("overview", "minions", "blocks", "dir", "file", "minion", "error")

func parsePages(names ...string) map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(webFuncs).ParseFS(webFiles, "web/layout.html"))
	pages := make(map[string]*template.Template, len(names))
	for _, name := range names {
		pages[name] = template.Must(template.Must(layout.Clone()).ParseFS(webFiles, "web/"+name+".html"))
	}
	return pages
}

var webFuncs = template.FuncMap{
	"size":      humanSize,
	"blockname": blockName,
	"crc":       func(c uint32) string { return fmt.Sprintf("%08x", c) },
	"browse":    func(p string) string { return "/browse" + escapePath(p) },
	"browseDir": func(p string) string { return strings.TrimSuffix("/browse"+escapePath(p), "/") + "/" },
	"download":  func(p string) string { return "/download" + escapePath(p) },
	"pct":       percent,
	"when":      func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"base": func(p string) string {
		if p == "/" {
			return "/"
		}
		return path.Base(p)
	},
	"crumbs":  crumbs,
	"add":     func(a, b int) int { return a + b },
	"minus":   func(a, b int) int { return a - b },
	"minus64": func(a, b, c int64) int64 { return max(0, a-b-c) },
	"secs": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
	},
	"statuses": func() []string { return blockStatuses },
}

// escapePath escapes each name of the absolute path p for a URL's path:
// spaces, '?', '#', '%' and any byte beyond ASCII.
func escapePath(p string) string {
	names := strings.Split(p, "/")
	for i, n := range names {
		names[i] = url.PathEscape(n)
	}
	return strings.Join(names, "/")
}

// percent is part of whole in percent, 0 to 100, for a bar's width.
func percent(part, whole int64) string {
	if whole <= 0 || part <= 0 {
		return "0"
	}
	return fmt.Sprintf("%.1f", min(100, float64(part)*100/float64(whole)))
}

// crumb is one directory on the way to a path, for the links above a page.
type crumb struct{ Name, Path string }

// crumbs are the directories from / to the parent of p.
func crumbs(p string) []crumb {
	out := []crumb{{"/", "/"}}
	if p == "/" {
		return out[:0]
	}
	dir := path.Dir(p)
	if dir == "/" {
		return out
	}
	at := ""
	for name := range strings.SplitSeq(dir[1:], "/") {
		at += "/" + name
		out = append(out, crumb{name, at})
	}
	return out
}

// page is what every page's layout needs, with the page's own data.
type page struct {
	Title   string
	Nav     string // the menu entry to mark: overview, minions, browse
	Cluster string
	Version string
	Data    any
}

// render writes the page name with data, or a plain 500 if it fails
// (before anything was sent: the page is rendered to memory first).
func render(w http.ResponseWriter, status int, name string, p page) {
	var buf strings.Builder
	if err := webPages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		http.Error(w, "rendering the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, buf.String())
}

// writeJSON writes v as indented JSON, as the CLI's --json does.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	printJSON(w, v)
}

// webStatus is the HTTP status of err: 404 for a missing path, 400 for a
// bad request.
func webStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrBadPath), errors.Is(err, ErrBadArg), errors.Is(err, ErrIsDir), errors.Is(err, ErrNotDir):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// errorText is what a page or the JSON says of err.
func errorText(err error) string {
	if errors.Is(err, ErrNotFound) {
		var nf *notFound
		if errors.As(err, &nf) {
			return nf.path + ": no such file or directory"
		}
	}
	return err.Error()
}

// notFound is ErrNotFound for a path the web asked for.
type notFound struct{ path string }

func (e *notFound) Error() string { return ErrNotFound.Error() + ": " + e.path }
func (e *notFound) Unwrap() error { return ErrNotFound }

// jsonError is the body of an /api/ answer that failed.
type jsonError struct {
	Error string `json:"error"`
}

// staticHandler serves web/static (the CSS).
func staticHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web/static")
	if err != nil {
		panic(err)
	}
	return http.StripPrefix("/static/", http.FileServerFS(sub))
}

// ---- the master's ----

// masterWeb serves the master's pages; its client reads files for
// /download and is closed with the listener (see httpServer.Close).
type masterWeb struct {
	m       *Master
	started time.Time
	mux     *http.ServeMux

	clientOnce sync.Once
	client     *Client
}

// newMasterWeb is the handler of the master's --http listener: the pages,
// their JSON and /metrics.
func newMasterWeb(m *Master) *masterWeb {
	w := &masterWeb{m: m, started: time.Now(), mux: http.NewServeMux()}
	w.mux.Handle("GET /metrics", metricsHandler(m.metrics.reg))
	w.mux.Handle("GET /static/", staticHandler())
	w.mux.HandleFunc("GET /{$}", w.overviewPage)
	w.mux.HandleFunc("GET /minions", w.minionsPage)
	w.mux.HandleFunc("GET /blocks", w.blocksPage)
	w.mux.HandleFunc("GET /browse/{path...}", w.browsePage)
	w.mux.HandleFunc("GET /download/{path...}", w.download)
	w.mux.HandleFunc("GET /api/overview", w.apiOverview)
	w.mux.HandleFunc("GET /api/minions", w.apiMinions)
	w.mux.HandleFunc("GET /api/blocks", w.apiBlocks)
	w.mux.HandleFunc("GET /api/browse/{path...}", w.apiBrowse)
	w.mux.HandleFunc("GET /", func(rw http.ResponseWriter, r *http.Request) {
		w.fail(rw, r, &notFound{path: r.URL.Path})
	})
	return w
}

func (w *masterWeb) ServeHTTP(rw http.ResponseWriter, r *http.Request) { w.mux.ServeHTTP(rw, r) }

// Close closes the connections of downloads.
func (w *masterWeb) Close() error {
	w.clientOnce.Do(func() {}) // none is made after this
	if w.client != nil {
		w.client.Close()
	}
	return nil
}

// page fills in what every page shows.
func (w *masterWeb) page(title, nav string, data any) page {
	w.m.mu.Lock()
	id := w.m.clusterID
	w.m.mu.Unlock()
	return page{Title: title, Nav: nav, Cluster: id, Version: Version, Data: data}
}

// fail answers a page or an /api/ request that failed with err.
func (w *masterWeb) fail(rw http.ResponseWriter, r *http.Request, err error) {
	status := webStatus(err)
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(rw, status, jsonError{errorText(err)})
		return
	}
	render(rw, status, "error", w.page(http.StatusText(status), "", errorText(err)))
}

// overview is /api/overview: `dfs report --json`, and the overview's
// extras.
type overview struct {
	jsonReport
	Version        string         `json:"version"`
	UptimeSeconds  float64        `json:"uptime_seconds"`
	SafeModeReason string         `json:"safe_mode_reason,omitempty"`
	Space          dfReport       `json:"space"`
	MinionStates   map[string]int `json:"minion_states"`
	BlockHealth    map[string]int `json:"block_health"`
}

// minionsReport is /api/minions: `dfs report --json` with each minion's
// web address, when it has one.
type minionsReport struct {
	jsonReport
	Minions []webMinion `json:"minions"`
}

type webMinion struct {
	jsonMinion
	HTTP string `json:"http,omitempty"` // host:port of its --http listener
}

// state reads the report, each minion's web address by id, the block
// health and why the master is in safe mode, under the master's lock.
func (w *masterWeb) state() (rep *ReportReply, web map[string]string, health map[string]int, safeWhy string) {
	m := w.m
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	rep = m.repl.report(m.clusterID)
	health = m.repl.health(now)
	web = make(map[string]string, len(m.reg.minions))
	for id, mn := range m.reg.minions {
		if _, _, err := net.SplitHostPort(mn.http); err == nil {
			web[id] = mn.http
		}
	}
	if r := m.repl; r.safeMode {
		safeWhy = fmt.Sprintf("waiting for block reports after a start: %d of %d blocks reported; it leaves safe mode at %.1f%% or at %s, whichever is first",
			len(r.reported), len(m.ns.blocks), safeModeThreshold*100, r.safeUntil.Local().Format("15:04:05"))
	}
	return rep, web, health, safeWhy
}

func (w *masterWeb) overview() overview {
	rep, _, health, why := w.state()
	o := overview{jsonReport: toJSONReport(rep), Version: Version, UptimeSeconds: time.Since(w.started).Seconds(),
		SafeModeReason: why, Space: spaceOf(rep), BlockHealth: health,
		MinionStates: map[string]int{stateLive: 0, stateDead: 0, stateDecommissioning: 0, stateDecommissioned: 0}}
	for _, mn := range rep.Minions {
		o.MinionStates[mn.State]++
	}
	return o
}

func (w *masterWeb) minions() minionsReport {
	rep, web, _, _ := w.state()
	j := minionsReport{jsonReport: toJSONReport(rep), Minions: []webMinion{}}
	for i, mn := range j.jsonReport.Minions {
		j.Minions = append(j.Minions, webMinion{jsonMinion: mn, HTTP: web[rep.Minions[i].ID]})
	}
	j.jsonReport.Minions = nil // shadowed by Minions
	return j
}

func (w *masterWeb) apiOverview(rw http.ResponseWriter, r *http.Request) {
	writeJSON(rw, http.StatusOK, w.overview())
}

func (w *masterWeb) apiMinions(rw http.ResponseWriter, r *http.Request) {
	writeJSON(rw, http.StatusOK, w.minions())
}

// overviewData is the overview page's.
type overviewData struct {
	overview
	Uptime   time.Duration
	Other    int64 // bytes of the minions' disks used by other than blocks
	Statuses []string
}

func (w *masterWeb) overviewPage(rw http.ResponseWriter, r *http.Request) {
	o := w.overview()
	d := overviewData{overview: o, Uptime: time.Since(w.started).Round(time.Second),
		Other:    max(0, o.Space.Size-o.Space.Available-o.Space.Used),
		Statuses: []string{statusUnderReplicated, statusCorrupt, statusMissing, statusHealthy}}
	render(rw, http.StatusOK, "overview", w.page("Overview", "overview", d))
}

func (w *masterWeb) minionsPage(rw http.ResponseWriter, r *http.Request) {
	render(rw, http.StatusOK, "minions", w.page("Minions", "minions", w.minions()))
}

// ---- blocks by health ----

// blockStatuses are the values of ?status=.
var blockStatuses = []string{statusHealthy, statusUnderReplicated, statusCorrupt, statusMissing}

// blocks is fsck of / (as `dfs fsck --json` shows it) with only the blocks
// of status, or all with "".
func (w *masterWeb) blocks(status string) (jsonFsck, error) {
	if status != "" && !slices.Contains(blockStatuses, status) {
		return jsonFsck{}, fmt.Errorf("%w: status %q (want one of %s)", ErrBadArg, status, strings.Join(blockStatuses, ", "))
	}
	rep, err := w.m.fsck("/")
	if err != nil {
		return jsonFsck{}, err
	}
	j := toJSONFsck(rep)
	if status != "" {
		kept := j.Blocks[:0]
		for _, b := range j.Blocks {
			if b.Status == status {
				kept = append(kept, b)
			}
		}
		j.Blocks = kept
	}
	return j, nil
}

func (w *masterWeb) apiBlocks(rw http.ResponseWriter, r *http.Request) {
	j, err := w.blocks(r.FormValue("status"))
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	writeJSON(rw, http.StatusOK, j)
}

// maxRows bounds the rows of a table on a page (the JSON has them all).
const maxRows = 1000

type blocksData struct {
	Status string
	Blocks []jsonFsckBlock
	Total  int
}

func (w *masterWeb) blocksPage(rw http.ResponseWriter, r *http.Request) {
	status := r.FormValue("status")
	j, err := w.blocks(status)
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	d := blocksData{Status: status, Blocks: j.Blocks[:min(len(j.Blocks), maxRows)], Total: len(j.Blocks)}
	title := "Blocks"
	if status != "" {
		title = "Blocks: " + status
	}
	render(rw, http.StatusOK, "blocks", w.page(title, "overview", d))
}

// ---- the namespace ----

// pathOf is the absolute path of a /browse/, /download/ or /api/browse/
// request: "" and "a/b/" are "/" and "/a/b".
func pathOf(r *http.Request) string {
	return "/" + strings.TrimSuffix(r.PathValue("path"), "/")
}

// lookup describes p as stat does (a file with its blocks), and lists it
// too when it is a directory.
func (w *masterWeb) lookup(p string) (FileInfo, []FileInfo, error) {
	fi, err := w.m.stat(p)
	if errors.Is(err, ErrNotFound) {
		return fi, nil, &notFound{path: p}
	}
	if err != nil || !fi.Dir {
		return fi, nil, err
	}
	entries, err := w.m.list(p, false)
	return fi, entries, err
}

func (w *masterWeb) apiBrowse(rw http.ResponseWriter, r *http.Request) {
	fi, entries, err := w.lookup(pathOf(r))
	switch {
	case err != nil:
		w.fail(rw, r, err)
	case fi.Dir:
		out := make([]jsonFile, 0, len(entries))
		for _, e := range entries {
			out = append(out, toJSON(e, false))
		}
		writeJSON(rw, http.StatusOK, out)
	default:
		writeJSON(rw, http.StatusOK, toJSON(fi, true))
	}
}

type dirData struct {
	Path    string
	Entries []FileInfo
	Total   int
}

type fileData struct {
	FileInfo
	Web map[string]string // a minion's web address by its address
}

func (w *masterWeb) browsePage(rw http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	fi, entries, err := w.lookup(p)
	switch {
	case err != nil:
		w.fail(rw, r, err)
	case fi.Dir:
		d := dirData{Path: p, Entries: entries[:min(len(entries), maxRows)], Total: len(entries)}
		render(rw, http.StatusOK, "dir", w.page(p, "browse", d))
	default:
		rep, web, _, _ := w.state()
		byAddr := make(map[string]string)
		for _, mn := range rep.Minions {
			if h := web[mn.ID]; h != "" && mn.Addr != "" {
				byAddr[mn.Addr] = h
			}
		}
		render(rw, http.StatusOK, "file", w.page(p, "browse", fileData{FileInfo: fi, Web: byAddr}))
	}
}

// ---- downloads ----

// reader is the client that downloads read with, made on first use:
// the master's own client read path (checksums, falling back to the next
// replica, reporting bad replicas to this master), with this process's
// security.
func (w *masterWeb) reader() (*Client, error) {
	w.clientOnce.Do(func() {
		c := NewClient(selfAddr(w.m.AddrString()))
		c.Logger = w.m.Logger.With("web", "download")
		c.SetSecurity(w.m.Security)
		w.client = c
	})
	if w.client == nil {
		return nil, errors.New("the master is shutting down")
	}
	return w.client, nil
}

// selfAddr is an address this process can dial to reach its own listener
// at addr: loopback for a listener on every interface.
func selfAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (w *masterWeb) download(rw http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	fi, err := w.m.stat(p)
	if errors.Is(err, ErrNotFound) {
		err = &notFound{path: p}
	} else if err == nil && fi.Dir {
		err = fmt.Errorf("%w: %s (only files download)", ErrIsDir, p)
	}
	if err == nil {
		for i, b := range fi.Blocks {
			if len(b.Replicas) == 0 {
				err = fmt.Errorf("%s: block %d of %d (%s) has no live replica: every minion that holds it is down", p, i+1, len(fi.Blocks), blockName(b.ID))
				break
			}
		}
	}
	c, cerr := w.reader()
	if err == nil {
		err = cerr
	}
	if err != nil {
		status := webStatus(err)
		if status == http.StatusInternalServerError {
			status = http.StatusServiceUnavailable
		}
		http.Error(rw, errorText(err), status)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(p))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h := rw.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	h.Set("ETag", fileETag(fi))
	f := &fileReader{ctx: r.Context(), c: c, fi: fi}
	defer f.Close()
	http.ServeContent(&extendingWriter{ResponseWriter: rw, rc: http.NewResponseController(rw)}, r, "", fi.ModTime, f)
	if f.err != nil && r.Context().Err() == nil {
		// The status and the length are sent: cut the connection, so
		// that the client sees a short body rather than a whole one.
		w.m.Logger.Warn("download failed", "path", p, "err", f.err)
		panic(http.ErrAbortHandler)
	}
}

// fileETag names the content of fi: its blocks, their sizes and CRCs.
func fileETag(fi FileInfo) string {
	h := fnv.New64a()
	for _, b := range fi.Blocks {
		fmt.Fprintf(h, "%x/%x/%x;", b.ID, b.Size, b.CRC)
	}
	return fmt.Sprintf(`"%x-%x"`, fi.Size, h.Sum64())
}

// extendingWriter moves the connection's write deadline (a minute,
// serveHTTP's) forward while a download goes on, so that a large file
// is not cut after the first minute.
type extendingWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	extended time.Time
}

func (e *extendingWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(e.extended) > 10*time.Second {
		e.rc.SetWriteDeadline(now.Add(time.Minute))
		e.extended = now
	}
	return e.ResponseWriter.Write(p)
}

// fileReader is the file fi as an io.ReadSeeker, for http.ServeContent. A
// Seek only moves the offset; a Read from an offset where no stream is
// runs the client's checked read (readRange) from there in the background
// into a pipe, so that a download holds a few packets in memory, never
// the file. A Seek elsewhere (the next range of a multi-range request)
// stops the stream and a Read starts another.
type fileReader struct {
	ctx context.Context
	c   *Client
	fi  FileInfo
	off int64
	s   *fileStream // nil: none running
	err error       // the first error of a read
}

type fileStream struct {
	at     int64 // the offset of the next byte pr yields
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *fileReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.fi.Size
	default:
		return f.off, fmt.Errorf("seek: whence %d", whence)
	}
	if offset < 0 {
		return f.off, fmt.Errorf("seek: offset %d is before the start", offset)
	}
	f.off = offset
	return offset, nil
}

func (f *fileReader) Read(p []byte) (int, error) {
	if f.off >= f.fi.Size {
		return 0, io.EOF
	}
	if f.s != nil && f.s.at != f.off {
		f.stop()
	}
	if f.s == nil {
		f.start()
	}
	n, err := f.s.pr.Read(p)
	f.off += int64(n)
	f.s.at += int64(n)
	if errors.Is(err, io.EOF) && f.off < f.fi.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		f.err = cmp.Or(f.err, err)
	}
	return n, err
}

func (f *fileReader) start() {
	ctx, cancel := context.WithCancel(f.ctx)
	pr, pw := io.Pipe()
	s := &fileStream{at: f.off, pr: pr, cancel: cancel, done: make(chan struct{})}
	go func(from int64) {
		defer close(s.done)
		_, err := f.c.readRange(ctx, f.fi, from, f.fi.Size, pw)
		pw.CloseWithError(err) // nil: EOF
	}(f.off)
	f.s = s
}

func (f *fileReader) stop() {
	if f.s == nil {
		return
	}
	f.s.cancel()
	f.s.pr.Close()
	<-f.s.done
	f.s = nil
}

// Close stops the stream, if one runs.
func (f *fileReader) Close() error {
	f.stop()
	return nil
}
