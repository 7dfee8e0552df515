package main

import (
	"slices"
	"testing"
)

// TestE2E_Directories uses directories as a user of HDFS does: mkdir (with
// -p), ls of an empty directory, rm of an empty one and of a full one,
// mv of a directory, and empty directories surviving a kill -9 of the
// master once mkdir has answered.
func TestE2E_Directories(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 1, "--replication", "1")
	dfs := func(args ...string) e2eResult { return e2eMustDFS(t, c.addr(), nil, args[0], args[1:]...) }
	dirs := func(p string) []string {
		var out []string
		for _, f := range e2eLs(t, c.addr(), p, true) {
			if f.Type == "dir" {
				out = append(out, f.Path)
			}
		}
		return out
	}

	dfs("mkdir", "/logs")
	if got := e2eLs(t, c.addr(), "/logs", false); len(got) != 0 {
		t.Errorf("ls of an empty directory = %v, want nothing", got)
	}
	if fi := e2eStat(t, c.addr(), "/logs"); fi.Type != "dir" {
		t.Errorf("stat /logs = %+v, want a directory", fi)
	}
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mkdir", "/logs"), "file exists")
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mkdir", "/a/b/c"), "not found")
	dfs("mkdir", "-p", "/a/b/c", "/logs")
	if got, want := dirs("/"), []string{"/a", "/a/b", "/a/b/c", "/logs"}; !slices.Equal(got, want) {
		t.Errorf("directories after mkdir -p: %v, want %v", got, want)
	}

	data := e2eRandom(3000)
	e2eMustDFS(t, c.addr(), data, "put", "-", "/a/b/c/f")
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mkdir", "-p", "/a/b/c/f"), "is a file")
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "mkdir", "-p", "/a/b/c/f/g"), "not a directory")
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "rm", "/a"), "is a directory")

	// Removing the last file leaves its directory, as in HDFS.
	dfs("rm", "/a/b/c/f")
	if got := dirs("/a"); !slices.Equal(got, []string{"/a/b", "/a/b/c"}) {
		t.Errorf("directories after rm of the last file: %v", got)
	}
	dfs("rm", "/a/b/c") // empty: no -r needed
	e2eMustFail(t, e2eDFS(t, c.addr(), nil, "ls", "/a/b/c"), "not found")

	// mv moves a directory with everything below it.
	e2eMustDFS(t, c.addr(), data, "put", "-", "/a/b/g")
	dfs("mv", "/a", "/logs")
	if got := dirs("/"); !slices.Equal(got, []string{"/logs", "/logs/a", "/logs/a/b"}) {
		t.Errorf("directories after mv /a /logs: %v", got)
	}
	e2eSameBytes(t, "get after mv", dfs("get", "/logs/a/b/g").stdout, data)

	// Acknowledged directories survive a kill -9 of the master.
	dfs("mkdir", "-p", "/empty/one", "/empty/two")
	c.master.kill9(t)
	c.master = e2eRestartMasterAt(t, c.master.dir, c.master.addr, "--replication", "1")
	if got, want := dirs("/"), []string{"/empty", "/empty/one", "/empty/two", "/logs", "/logs/a", "/logs/a/b"}; !slices.Equal(got, want) {
		t.Errorf("directories after kill -9 and restart: %v, want %v", got, want)
	}
	dfs("rm", "-r", "/logs")
	if got := dirs("/"); !slices.Equal(got, []string{"/empty", "/empty/one", "/empty/two"}) {
		t.Errorf("directories after rm -r /logs: %v", got)
	}
}
