package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startWebCluster is an in-process cluster whose master and minions serve
// their web pages on loopback ports of their own.
func startWebCluster(t *testing.T, n int) *DevCluster {
	t.Helper()
	cl := &DevCluster{Dir: t.TempDir(), Addr: "127.0.0.1:0", Minions: n, Logger: testLogger(t), Heartbeat: testHeartbeat}
	cl.Configure = func(m *Master) error {
		m.HTTPAddr, m.HTTPRequired = "127.0.0.1:0", true
		return configureTestMaster(m)
	}
	cl.ConfigureMinion = func(mn *Minion) {
		mn.HTTPAddr = "127.0.0.1:0"
		mn.ScrubInterval = 0
		mn.ReportInterval = 20 * testHeartbeat
	}
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return cl
}

// webGet fetches url with the given header (name, value pairs) and
// returns the response with its body read.
func webGet(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, body
}

// webGetOK is webGet of a 200 answer.
func webGetOK(t *testing.T, url string) []byte {
	t.Helper()
	resp, body := webGet(t, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// webJSON fetches url (200) and decodes its JSON into v.
func webJSON(t *testing.T, url string, v any) []byte {
	t.Helper()
	body := webGetOK(t, url)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
	return body
}

// cliJSON is what the CLI's --json prints of v.
func cliJSON(t *testing.T, v any) string {
	var buf bytes.Buffer
	if err := printJSON(&buf, v); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// webFiles puts the files of the web tests: one in a directory whose name
// has a space, one of several blocks with a name beyond ASCII.
func webTestFiles(t *testing.T, c *Client) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"/a.txt":                 []byte("hello, web\n"),
		"/sub dir/ünï €#?%.bin":  randomBytes(t, 3*testBlockSize+1000),
		"/sub dir/deeper/x":      randomBytes(t, 5000),
		"/<img src=x onerror=1>": []byte("<script>"),
	}
	for p, data := range files {
		mustPut(t, c, p, data, PutOptions{Replication: 2})
	}
	return files
}

// The JSON behind the pages is the CLI's: report --json, ls --json, stat
// --json, fsck --json; a minion's JSON tells its blocks and volumes.
func TestWeb_API(t *testing.T) {
	cl := startWebCluster(t, 3)
	c := newTestClient(t, cl)
	files := webTestFiles(t, c)
	base := "http://" + cl.Master.http.Addr()
	nblocks := 0
	for _, data := range files {
		nblocks += max(1, (len(data)+testBlockSize-1)/testBlockSize)
	}
	waitFor(t, 5*time.Second, "every block healthy", func() bool { return fsckHealthy(t, cl, "/") })

	// Used space arrives with the minions' heartbeats, after the blocks.
	var o overview
	waitFor(t, 5*time.Second, "used space in the overview", func() bool {
		o = overview{}
		webJSON(t, base+"/api/overview", &o)
		return o.Space.Used > 0
	})
	if o.ClusterID != cl.Master.clusterID || o.Files != len(files) || o.Blocks != nblocks || o.SafeMode || o.Version != Version {
		t.Errorf("overview: cluster %s files %d blocks %d safe mode %v version %q; want %s, %d, %d, false, %q",
			o.ClusterID, o.Files, o.Blocks, o.SafeMode, o.Version, cl.Master.clusterID, len(files), nblocks, Version)
	}
	if o.MinionStates[stateLive] != 3 || o.Space.Minions != 3 || o.Space.Size <= 0 || o.Space.Used <= 0 || len(o.Minions) != 3 {
		t.Errorf("overview: minions %v, space %+v, %d listed", o.MinionStates, o.Space, len(o.Minions))
	}
	if o.BlockHealth[statusHealthy] != nblocks || o.BlockHealth[statusUnderReplicated] != 0 {
		t.Errorf("overview: block health %v, want %d healthy", o.BlockHealth, nblocks)
	}

	// /api/minions is report --json with each minion's web address.
	var mr struct {
		jsonReport
		Minions []webMinion `json:"minions"`
	}
	webJSON(t, base+"/api/minions", &mr)
	want := toJSONReport(cl.Master.report())
	if mr.ClusterID != want.ClusterID || mr.Files != want.Files || mr.Blocks != want.Blocks || len(mr.Minions) != len(want.Minions) {
		t.Fatalf("minions: %+v, want %+v", mr, want)
	}
	for i, mn := range mr.Minions {
		w := want.Minions[i]
		if mn.ID != w.ID || mn.Addr != w.Addr || mn.State != stateLive || mn.Capacity != w.Capacity {
			t.Errorf("minion %d: %+v, want %+v", i, mn.jsonMinion, w)
		}
		if mn.HTTP != minionAt(t, cl, mn.Addr).http.Addr() {
			t.Errorf("minion %s: web address %q, want %q", mn.Addr, mn.HTTP, minionAt(t, cl, mn.Addr).http.Addr())
		}
	}

	// /api/browse/ of a directory is ls --json, of a file stat --json,
	// byte for byte.
	for _, dir := range []string{"/", "/sub dir"} {
		entries, err := c.List(t.Context(), dir, false)
		if err != nil {
			t.Fatal(err)
		}
		var out []jsonFile
		for _, fi := range entries {
			out = append(out, toJSON(fi, false))
		}
		if got := string(webGetOK(t, base+"/api/browse"+escapePath(dir))); got != cliJSON(t, out) {
			t.Errorf("/api/browse%s:\n%s\nwant (ls --json):\n%s", dir, got, cliJSON(t, out))
		}
	}
	for p := range files {
		fi, err := c.Stat(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(webGetOK(t, base+"/api/browse"+escapePath(p))); got != cliJSON(t, toJSON(fi, true)) {
			t.Errorf("/api/browse%s:\n%s\nwant (stat --json):\n%s", p, got, cliJSON(t, toJSON(fi, true)))
		}
	}

	// /api/blocks is fsck --json, of one status.
	var fsck jsonFsck
	webJSON(t, base+"/api/blocks?status=healthy", &fsck)
	if !fsck.Healthy || fsck.Files != len(files) || len(fsck.Blocks) != nblocks {
		t.Errorf("healthy blocks: %+v", fsck)
	}
	webJSON(t, base+"/api/blocks?status=under-replicated", &fsck)
	if len(fsck.Blocks) != 0 {
		t.Errorf("under-replicated blocks of a healthy cluster: %+v", fsck.Blocks)
	}
	resp, body := webGet(t, base+"/api/blocks?status=sick")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `status \"sick\"`) {
		t.Errorf("/api/blocks?status=sick: %s %s", resp.Status, body)
	}

	// A minion's JSON: its blocks, volumes and scrubber.
	mn := cl.MinionSet[0]
	var st minionStatus
	webJSON(t, "http://"+mn.http.Addr()+"/api/minion", &st)
	used, n := mn.store.usage()
	if st.ID != mn.ident.MinionID || st.Addr != mn.advertised() || st.Blocks.Count != n || st.Blocks.Bytes != used || len(st.Blocks.List) != n {
		t.Errorf("minion: %+v; want id %s, %d blocks of %d bytes", st, mn.ident.MinionID, n, used)
	}
	if st.Blocks.Packed == 0 || len(st.Volumes) == 0 || st.Scrubber.Enabled || st.Disk.Capacity <= 0 {
		t.Errorf("minion: %d packed in %v, scrubber %+v, disk %+v", st.Blocks.Packed, st.Volumes, st.Scrubber, st.Disk)
	}
	webJSON(t, "http://"+mn.http.Addr()+"/api/minion?offset=1&limit=1", &st)
	if len(st.Blocks.List) != 1 || st.Blocks.Offset != 1 {
		t.Errorf("minion ?offset=1&limit=1: %+v", st.Blocks)
	}
}

// Each page renders what it says, escaped, with links that work for names
// with spaces, '#', '?', '%' and beyond ASCII.
func TestWeb_Pages(t *testing.T) {
	cl := startWebCluster(t, 3)
	c := newTestClient(t, cl)
	files := webTestFiles(t, c)
	base := "http://" + cl.Master.http.Addr()

	page := string(webGetOK(t, base+"/"))
	for _, want := range []string{cl.Master.clusterID, `id="live-minions">3<`, fmt.Sprintf(`id="files">%d<`, len(files)), `href="/blocks?status=under-replicated"`} {
		if !strings.Contains(page, want) {
			t.Errorf("overview: no %q in\n%s", want, page)
		}
	}
	page = string(webGetOK(t, base+"/minions"))
	for _, mn := range cl.MinionSet {
		if !strings.Contains(page, `data-addr="`+mn.advertised()+`"`) || !strings.Contains(page, `href="http://`+mn.http.Addr()+`/"`) {
			t.Errorf("minions page: no row of %s linking to %s", mn.advertised(), mn.http.Addr())
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("a page has a script")
	}

	// Follow the links from / to every file; each file's page lists its
	// blocks, and its download link works.
	href := regexp.MustCompile(`href="(/browse/[^"]*)"`)
	seen := map[string]bool{}
	queue := []string{"/browse/"}
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		page := string(webGetOK(t, base+u))
		if strings.Contains(page, "<img") || strings.Contains(page, "<script>") {
			t.Errorf("%s: a name is not escaped:\n%s", u, page)
		}
		for _, m := range href.FindAllStringSubmatch(page, -1) {
			if l := strings.ReplaceAll(m[1], "&amp;", "&"); !seen[l] {
				seen[l] = true
				queue = append(queue, l)
			}
		}
	}
	for p, data := range files {
		u := "/browse" + escapePath(p)
		if !seen[u] {
			t.Errorf("no link to %s (%s) from /browse/; links: %v", p, u, seen)
			continue
		}
		page := string(webGetOK(t, base+u))
		fi, err := c.Stat(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range fi.Blocks {
			if !strings.Contains(page, blockName(b.ID)) || !strings.Contains(page, fmt.Sprintf("%08x", b.CRC)) {
				t.Errorf("%s: block %s (crc %08x) not shown", p, blockName(b.ID), b.CRC)
			}
		}
		m := regexp.MustCompile(`id="download" class="button" href="([^"]*)"`).FindStringSubmatch(page)
		if m == nil {
			t.Errorf("%s: no download link", p)
			continue
		}
		if got := webGetOK(t, base+m[1]); !bytes.Equal(got, data) {
			t.Errorf("%s: download of %d bytes, want %d", p, len(got), len(data))
		}
	}
	for _, u := range []string{"/blocks", "/blocks?status=healthy", "/static/style.css", "/metrics"} {
		webGetOK(t, base+u)
	}
	page = string(webGetOK(t, "http://"+cl.MinionSet[0].http.Addr()+"/"))
	if !strings.Contains(page, cl.MinionSet[0].ident.MinionID) || !strings.Contains(page, "vol_") {
		t.Errorf("minion page:\n%s", page)
	}
	webGetOK(t, "http://"+cl.MinionSet[0].http.Addr()+"/metrics")
}

// /download streams a file with Range requests, every byte checked as get
// checks it: a corrupt replica is passed over.
func TestWeb_Download(t *testing.T) {
	cl := startWebCluster(t, 3)
	c := newTestClient(t, cl)
	data := randomBytes(t, 4*testBlockSize+777)
	p := "/dl/bïg file.bin"
	mustPut(t, c, p, data, PutOptions{Replication: 2})
	u := "http://" + cl.Master.http.Addr() + "/download" + escapePath(p)
	size := len(data)

	resp, body := webGet(t, u)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("whole download: %s, %d bytes, want %d", resp.Status, len(body), size)
	}
	if resp.Header.Get("Accept-Ranges") != "bytes" || resp.ContentLength != int64(size) {
		t.Errorf("whole download: Accept-Ranges %q, length %d", resp.Header.Get("Accept-Ranges"), resp.ContentLength)
	}
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err != nil || params["filename"] != "bïg file.bin" {
		t.Errorf("Content-Disposition %q: %v %v", resp.Header.Get("Content-Disposition"), params, err)
	}
	etag := resp.Header.Get("ETag")

	for _, r := range []struct {
		header   string
		from, to int // the bytes wanted, [from, to)
	}{
		{"bytes=100-199", 100, 200},
		{"bytes=0-0", 0, 1},
		{fmt.Sprintf("bytes=%d-%d", testBlockSize-10, 2*testBlockSize+10), testBlockSize - 10, 2*testBlockSize + 11}, // over two block boundaries
		{fmt.Sprintf("bytes=%d-", size-5), size - 5, size},
		{"bytes=-500", size - 500, size},
		{fmt.Sprintf("bytes=%d-%d", 3*testBlockSize, 10*testBlockSize), 3 * testBlockSize, size}, // past the end: cut there
	} {
		resp, body := webGet(t, u, "Range", r.header)
		want := fmt.Sprintf("bytes %d-%d/%d", r.from, r.to-1, size)
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != want || !bytes.Equal(body, data[r.from:r.to]) {
			t.Errorf("Range %s: %s, Content-Range %q (want %q), %d bytes (want %d), same bytes %v", r.header, resp.Status,
				resp.Header.Get("Content-Range"), want, len(body), r.to-r.from, bytes.Equal(body, data[r.from:r.to]))
		}
	}
	for _, bad := range []string{fmt.Sprintf("bytes=%d-", size), "bytes=abc", "bytes=5-2", "bytes=0-99999999999999999999999"} {
		if resp, _ := webGet(t, u, "Range", bad); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("Range %.40s: %s, want 416", bad, resp.Status)
		}
	}
	// If-Range: the same ETag gets the range, another the whole file.
	if resp, body := webGet(t, u, "Range", "bytes=10-19", "If-Range", etag); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[10:20]) {
		t.Errorf("If-Range with the file's ETag: %s", resp.Status)
	}
	if resp, body := webGet(t, u, "Range", "bytes=10-19", "If-Range", `"other"`); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("If-Range with another ETag: %s, %d bytes", resp.Status, len(body))
	}
	// Two ranges: a multipart answer, each part the exact bytes.
	resp, body = webGet(t, u, "Range", fmt.Sprintf("bytes=5-9,%d-%d", 2*testBlockSize, 2*testBlockSize+99))
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusPartialContent || mt != "multipart/byteranges" {
		t.Fatalf("two ranges: %s %s", resp.Status, mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for _, want := range [][]byte{data[5:10], data[2*testBlockSize : 2*testBlockSize+100]} {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := io.ReadAll(part); !bytes.Equal(got, want) {
			t.Errorf("a part of %d bytes, want %d", len(got), len(want))
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "HEAD", u, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength != int64(size) {
		t.Errorf("HEAD: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Damage the replica that each block is read from first: the
	// download moves to the other one and is still the file.
	fi, err := c.Stat(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range fi.Blocks {
		flipBlockByte(t, minionAt(t, cl, b.Replicas[0]).store, b.ID, b.Size/2)
	}
	if got := webGetOK(t, u); !bytes.Equal(got, data) {
		t.Fatalf("download with a corrupt replica of each block: %d bytes, differ", len(got))
	}
	from := testBlockSize + 1
	if resp, body := webGet(t, u, "Range", fmt.Sprintf("bytes=%d-", from)); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[from:]) {
		t.Errorf("a range with corrupt replicas: %s, same bytes %v", resp.Status, bytes.Equal(body, data[from:]))
	}
}

// A missing path is a 404 that says which path; a directory does not
// download.
func TestWeb_NotFound(t *testing.T) {
	cl := startWebCluster(t, 1)
	c := newTestClient(t, cl)
	mustPut(t, c, "/dir/f", []byte("x"), PutOptions{Replication: 1})
	base := "http://" + cl.Master.http.Addr()
	for _, tt := range []struct {
		path   string
		status int
		want   string
	}{
		{"/browse/no%20such", http.StatusNotFound, "/no such: no such file or directory"},
		{"/browse/dir/f/under", http.StatusNotFound, "/dir/f/under: no such file or directory"},
		{"/api/browse/n%C3%B6pe", http.StatusNotFound, `{` + "\n" + `  "error": "/nöpe: no such file or directory"` + "\n}\n"},
		{"/download/nope", http.StatusNotFound, "/nope: no such file or directory"},
		{"/download/dir", http.StatusBadRequest, "is a directory: /dir (only files download)"},
		{"/download/", http.StatusBadRequest, "is a directory"},
		{"/elsewhere", http.StatusNotFound, "/elsewhere: no such file or directory"},
		{"/api/elsewhere", http.StatusNotFound, `"error": "/api/elsewhere: no such file or directory"`},
		{"/blocks?status=nope", http.StatusBadRequest, `status &#34;nope&#34;`},
	} {
		resp, body := webGet(t, base+tt.path)
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
			t.Errorf("GET %s: %s %q; want %d with %q", tt.path, resp.Status, body, tt.status, tt.want)
		}
	}
	resp, body := webGet(t, "http://"+cl.MinionSet[0].http.Addr()+"/api/minion?limit=x")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "?limit=x") {
		t.Errorf("minion ?limit=x: %s %s", resp.Status, body)
	}
}

// checkListenerRule checks the listener rule of serveHTTP for the
// handlers that handler makes (a server closes its handler) at paths:
// loopback free, elsewhere the secret (Basic or Bearer) or --insecure.
func checkListenerRule(t *testing.T, handler func() http.Handler, paths ...string) {
	t.Helper()
	if _, err := serveHTTP("0.0.0.0:0", "master", handler(), nil, testLogger(t)); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("all interfaces without a secret: %v", err)
	}
	s, err := serveHTTP("0.0.0.0:0", "master", handler(), &Security{Insecure: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = serveHTTP("0.0.0.0:0", "master", handler(), &Security{Secret: testSecret}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := "http://127.0.0.1:" + s.Addr()[strings.LastIndex(s.Addr(), ":")+1:]
	for _, p := range append(paths, "/nope") {
		for _, tt := range []struct {
			name   string
			header []string
			want   int
		}{
			{"None", nil, http.StatusUnauthorized},
			{"Wrong", []string{"Authorization", "Bearer " + string(otherSecret)}, http.StatusUnauthorized},
			{"Bearer", []string{"Authorization", "Bearer " + string(testSecret)}, http.StatusOK},
		} {
			want := tt.want
			if p == "/nope" && want == http.StatusOK {
				want = http.StatusNotFound
			}
			if resp, _ := webGet(t, base+p, tt.header...); resp.StatusCode != want {
				t.Errorf("%s %s: %s, want %d", p, tt.name, resp.Status, want)
			}
		}
		req, _ := http.NewRequestWithContext(t.Context(), "GET", base+p, nil)
		req.SetBasicAuth("prometheus", string(testSecret))
		if resp, err := http.DefaultClient.Do(req); err != nil || (resp.StatusCode != http.StatusOK && p != "/nope") {
			t.Errorf("%s with basic auth with the secret: %v %v", p, resp, err)
		} else {
			resp.Body.Close()
		}
	}
}

// The pages and their JSON follow the listener rule of /metrics.
func TestWeb_ListenerRule(t *testing.T) {
	cl := startWebCluster(t, 1)
	mustPut(t, newTestClient(t, cl), "/f", []byte("x"), PutOptions{Replication: 1})
	checkListenerRule(t, func() http.Handler { return newMasterWeb(cl.Master) }, "/", "/minions", "/browse/", "/browse/f", "/download/f", "/blocks", "/api/overview", "/api/browse/f", "/static/style.css", "/metrics")
	checkListenerRule(t, func() http.Handler { return newMinionWeb(cl.MinionSet[0]) }, "/", "/api/minion", "/static/style.css", "/metrics")
}

// A minion's page follows its scrubber through its passes.
func TestWeb_MinionScrubber(t *testing.T) {
	cl := startWebCluster(t, 1)
	configure := cl.ConfigureMinion
	cl.ConfigureMinion = func(mn *Minion) {
		configure(mn)
		mn.ScrubInterval = 50 * time.Millisecond
	}
	if err := cl.StartMinion(filepath.Join(cl.Dir, "scrubbing")); err != nil {
		t.Fatal(err)
	}
	mn := cl.MinionSet[1]
	c := newTestClient(t, cl)
	mustPut(t, c, "/s", randomBytes(t, 2*testBlockSize+1), PutOptions{Replication: 2})
	u := "http://" + mn.http.Addr()
	var st minionStatus
	waitFor(t, 10*time.Second, "a scrubber pass over the 3 blocks", func() bool {
		st = minionStatus{}
		webJSON(t, u+"/api/minion", &st)
		return st.Scrubber.Last != nil && st.Scrubber.Last.Blocks == 3
	})
	last := st.Scrubber.Last
	if !st.Scrubber.Enabled || st.Scrubber.Passes < 1 || last.BlocksDone != 3 || last.BytesDone != 2*testBlockSize+1 || last.Bytes != last.BytesDone || last.Corrupt != 0 || last.Finished == nil {
		t.Errorf("scrubber: %+v, last pass %+v", st.Scrubber, last)
	}
	if page := string(webGetOK(t, u+"/")); !strings.Contains(page, `id="scrub-last"`) || !strings.Contains(page, "3 blocks") {
		t.Errorf("minion page: no last scrubber pass in\n%s", page)
	}
	var off minionStatus
	webJSON(t, "http://"+cl.MinionSet[0].http.Addr()+"/api/minion", &off)
	if off.Scrubber.Enabled || off.Scrubber.Passes != 0 || off.Scrubber.Last != nil {
		t.Errorf("a minion without a scrubber: %+v", off.Scrubber)
	}
}
