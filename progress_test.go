package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// put and get with and without a progress bar, as separate processes: the
// bar goes to stderr only when asked for (or on a terminal), stdout keeps
// the file's bytes only, and --quiet wins.
func TestE2E_Progress(t *testing.T) {
	t.Parallel()
	c := e2eStartCluster(t, 2, "--replication", "2", "--block-size", "1MiB")
	data := e2eRandom(3*e2eMiB + 5)
	local := filepath.Join(t.TempDir(), "in.bin")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		flags []string
		bar   bool
	}{
		{"NotATerminal", nil, false},
		{"Forced", []string{"--progress"}, true},
		{"Quiet", []string{"--progress", "--quiet"}, false},
	}
	for i, tt := range tests {
		remote := "/p" + string(rune('a'+i))
		put := e2eMustDFS(t, c.addr(), nil, "put", append([]string{local, remote}, tt.flags...)...)
		get := e2eMustDFS(t, c.addr(), nil, "get", append([]string{remote}, tt.flags...)...)
		e2eSameBytes(t, tt.name+": get", get.stdout, data)
		for _, r := range []e2eResult{put, get} {
			got := bytes.Contains(r.stderr, []byte("100%")) && bytes.HasSuffix(r.stderr, []byte("\n"))
			if got != tt.bar || (!tt.bar && len(r.stderr) > 0) {
				t.Errorf("%s: %v; want a finished bar on stderr: %v", tt.name, r, tt.bar)
			}
		}
	}
}

// On a terminal (a pseudo-terminal from script(1)) the bar is on by itself.
func TestE2E_ProgressOnTerminal(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("SKIP LOUDLY: script(1) (util-linux) is not installed; the bar on a terminal is not tested")
	}
	c := e2eStartCluster(t, 1, "--replication", "1")
	dir := t.TempDir()
	local := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(local, e2eRandom(2*e2eMiB), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), e2eCmdTimeout)
	defer cancel()
	cmdline := strings.Join([]string{e2eBinary(t), "put", "--master", c.addr(), local, "/tty"}, " ")
	out, err := exec.CommandContext(ctx, script, "-qec", cmdline, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("put on a terminal: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("put /tty")) || !bytes.Contains(out, []byte("100%")) {
		t.Errorf("put on a terminal shows no bar:\n%q", out)
	}
}
