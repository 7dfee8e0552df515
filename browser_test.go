// browser_test.go drives the status pages with headless Chromium
// (chromedp): what a person sees, through a cluster losing a minion and
// healing. Without a browser it is skipped, loudly; with
// DFS_REQUIRE_BROWSER=1 (as .ci/run sets) it fails instead.
//
// DFS_SCREENSHOT=FILE also saves a PNG of the overview there (the README's
// docs/overview.png).
package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserPath finds Chromium or Chrome, or skips (fails, when it must run).
func browserPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no chromium, chromium-browser or google-chrome in PATH (apt-get install chromium)"
	if os.Getenv("DFS_REQUIRE_BROWSER") == "1" {
		t.Fatal("DFS_REQUIRE_BROWSER=1 but " + why)
	}
	t.Skip("!!!!!!!! SKIPPED: the browser test of the web pages did not run: " + why + " !!!!!!!!")
	return ""
}

// newBrowser starts a headless browser for the test and returns its tab.
func newBrowser(t *testing.T, timeout time.Duration) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", browserPath(t), err)
	}
	return ctx
}

// browse is one step in the browser, bounded by its own deadline.
func browse(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// read runs one action that returns a value, bounded by its own deadline.
func read[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// text is the visible text of the element with id on the page shown.
func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return strings.TrimSpace(read(t, ctx, "the text of #"+id, chromedp.Text(chromedp.ID(id))))
}

// reloadUntil loads url again until cond holds of the page, or fails at
// the deadline saying what it last saw.
func reloadUntil(t *testing.T, ctx context.Context, timeout time.Duration, url, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		browse(t, ctx, "load "+url, chromedp.Navigate(url))
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s at %s; last saw %s", timeout, what, url, saw)
		}
		time.Sleep(100 * time.Millisecond) // between polls
	}
}

// The pages, as a browser shows them, through the life of a cluster: 3
// minions and replication 3, files in / and in a directory, one of several
// blocks. The overview and the minions page show the cluster; browsing
// reaches each file, whose page lists its blocks, and its download link
// gives its bytes. A minion killed shows as dead and the blocks as
// under-replicated (no fourth minion to copy to); a new minion takes the
// copies and the overview is healthy again.
func TestBrowser_StatusPages(t *testing.T) {
	ctx := newBrowser(t, 50*time.Second)
	cl := startWebCluster(t, 3)
	c := newTestClient(t, cl)
	files := map[string][]byte{
		"/hello.txt":             []byte("hello from dfs\n"),
		"/docs/ünï cödé #1.bin":  randomBytes(t, 2*testBlockSize+4321),
		"/docs/notes & more.txt": []byte("<b>not bold</b>\n"),
	}
	nblocks := 0
	for p, data := range files {
		mustPut(t, c, p, data, PutOptions{Replication: 3})
		nblocks += (len(data) + testBlockSize - 1) / testBlockSize
	}
	base := "http://" + cl.Master.http.Addr()

	// The overview: three live minions, the files and healthy blocks.
	reloadUntil(t, ctx, 10*time.Second, base+"/", "every block healthy", func() (bool, string) {
		h := text(t, ctx, "healthy")
		return h == strconv.Itoa(nblocks), "healthy " + h
	})
	if got := text(t, ctx, "live-minions"); got != "3" {
		t.Errorf("overview: live minions %q, want 3", got)
	}
	if got := text(t, ctx, "files"); got != strconv.Itoa(len(files)) {
		t.Errorf("overview: files %q, want %d", got, len(files))
	}
	if got := text(t, ctx, "under-replicated"); got != "0" {
		t.Errorf("overview: under-replicated %q, want 0", got)
	}
	if got := text(t, ctx, "cluster-id"); got != cl.Master.clusterID {
		t.Errorf("overview: cluster %q, want %s", got, cl.Master.clusterID)
	}
	if shot := os.Getenv("DFS_SCREENSHOT"); shot != "" {
		png := read(t, ctx, "screenshot", chromedp.FullScreenshot(100))
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("saved the overview in %s", shot)
	}

	// The minions page lists each minion, live, with a link to its page.
	browse(t, ctx, "click minions", chromedp.Click(chromedp.CSS(`nav a[href="/minions"]`)), chromedp.WaitVisible(chromedp.ID("minions")))
	for _, mn := range cl.MinionSet {
		row := fmt.Sprintf(`tr[data-addr="%s"]`, mn.advertised())
		if got := strings.TrimSpace(read(t, ctx, "state of "+mn.advertised(), chromedp.Text(chromedp.CSS(row+" td.state")))); got != stateLive {
			t.Errorf("minions page: %s is %q, want live", mn.advertised(), got)
		}
		link := read(t, ctx, "page of "+mn.advertised(), chromedp.AttributeValue(chromedp.CSS(row+" a.minion-page"), "href"))
		if link.Value != "http://"+mn.http.Addr()+"/" {
			t.Errorf("minions page: %s links to %q, want its --http %s", mn.advertised(), link.Value, mn.http.Addr())
		}
	}

	// Browse from / to the file of several blocks, by clicking.
	browse(t, ctx, "click browse", chromedp.Click(chromedp.CSS(`nav a[href="/browse/"]`)), chromedp.WaitVisible(chromedp.ID("entries")))
	browse(t, ctx, "click docs/", chromedp.Click(chromedp.Search(`//table[@id="entries"]//a[text()="docs/"]`)),
		chromedp.WaitVisible(chromedp.Search(`//a[text()="ünï cödé #1.bin"]`)))
	if got := text(t, ctx, "count"); got != "2 entries" {
		t.Errorf("/docs: %q, want 2 entries", got)
	}
	browse(t, ctx, "click the file", chromedp.Click(chromedp.Search(`//a[text()="ünï cödé #1.bin"]`)), chromedp.WaitVisible(chromedp.ID("blocks")))
	p := "/docs/ünï cödé #1.bin"
	fi, err := c.Stat(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, ctx, "nblocks"); got != strconv.Itoa(len(fi.Blocks)) || len(fi.Blocks) != 3 {
		t.Errorf("file page: %q blocks, want %d (3)", got, len(fi.Blocks))
	}
	rows := read(t, ctx, "block rows", chromedp.Nodes(chromedp.CSSAll("#blocks tbody tr")))
	if len(rows) != len(fi.Blocks) {
		t.Errorf("file page: %d block rows, want %d", len(rows), len(fi.Blocks))
	}
	table := read(t, ctx, "the blocks", chromedp.Text(chromedp.ID("blocks")))
	for _, b := range fi.Blocks {
		if !strings.Contains(table, blockName(b.ID)) || !strings.Contains(table, fmt.Sprintf("%08x", b.CRC)) {
			t.Errorf("file page: block %s (%08x) not listed in %q", blockName(b.ID), b.CRC, table)
		}
		for _, r := range b.Replicas {
			if !strings.Contains(table, r) {
				t.Errorf("file page: replica %s of %s not listed", r, blockName(b.ID))
			}
		}
	}
	// The download link, as the page has it, gives the file's bytes.
	href := read(t, ctx, "download link", chromedp.JavascriptAttribute[string](chromedp.ID("download"), "href"))
	if !strings.HasPrefix(href, base+"/download/docs/") {
		t.Fatalf("download link %q", href)
	}
	resp, err := http.Get(href)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, err = got.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got.Bytes(), files[p]) {
		t.Fatalf("download %s: %s, %d bytes (%v), want the file's %d", href, resp.Status, got.Len(), err, len(files[p]))
	}

	// Kill a minion: dead on the minions page, blocks under-replicated
	// on the overview.
	victim := cl.MinionSet[0]
	if err := victim.Close(); err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`tr[data-addr="%s"] td.state`, victim.advertised())
	reloadUntil(t, ctx, 10*time.Second, base+"/minions", victim.advertised()+" dead", func() (bool, string) {
		state := strings.TrimSpace(read(t, ctx, "state", chromedp.Text(chromedp.CSS(row))))
		return state == stateDead, state
	})
	browse(t, ctx, "click overview", chromedp.Click(chromedp.CSS(`nav a[href="/"]`)), chromedp.WaitVisible(chromedp.ID("under-replicated")))
	if n, _ := strconv.Atoi(text(t, ctx, "under-replicated")); n != nblocks {
		t.Errorf("overview after a minion died: under-replicated %d, want %d (every block had a replica there)", n, nblocks)
	}
	if got := text(t, ctx, "dead-minions"); got != "1" {
		t.Errorf("overview after a minion died: dead %q, want 1", got)
	}
	// The under-replicated count links to those blocks and their files.
	browse(t, ctx, "click under-replicated", chromedp.Click(chromedp.ID("under-replicated")), chromedp.WaitVisible(chromedp.ID("block-list")))
	if got := text(t, ctx, "count"); got != fmt.Sprintf("%d blocks", nblocks) {
		t.Errorf("under-replicated blocks page: %q, want %d blocks", got, nblocks)
	}
	list := read(t, ctx, "the block list", chromedp.Text(chromedp.ID("block-list")))
	for p := range files {
		if !strings.Contains(list, p) {
			t.Errorf("under-replicated blocks page: no %s in %q", p, list)
		}
	}

	// A new minion takes the copies: healthy again.
	if err := cl.StartMinion(filepath.Join(cl.Dir, "minion-4")); err != nil {
		t.Fatal(err)
	}
	reloadUntil(t, ctx, 20*time.Second, base+"/", "the overview healthy again", func() (bool, string) {
		u, h := text(t, ctx, "under-replicated"), text(t, ctx, "healthy")
		return u == "0" && h == strconv.Itoa(nblocks), "under-replicated " + u + ", healthy " + h
	})
	if got := text(t, ctx, "live-minions"); got != "3" {
		t.Errorf("overview after repair: live minions %q, want 3", got)
	}
	if got := text(t, ctx, "health"); got != "every block has its replication" {
		t.Errorf("overview after repair: %q", got)
	}
}
