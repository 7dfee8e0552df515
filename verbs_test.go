package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// runDFS runs the command line in this process and returns its exit code,
// stdout and stderr.
func runDFS(t *testing.T, args ...string) (int, []byte, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append([]string{"dfs"}, args...), strings.NewReader(""), &stdout, &stderr)
	return code, stdout.Bytes(), stderr.String()
}

func TestRun_GetRangeAndCat(t *testing.T) {
	cl := startCluster(t, 3)
	addr := cl.Master.AddrString()
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize+777)
	other := randomBytes(t, 1234)
	mustPut(t, c, "/f", data, PutOptions{Replication: 2})
	mustPut(t, c, "/g", other, PutOptions{Replication: 2})
	n := int64(len(data))
	bs := int64(testBlockSize)
	tests := []struct {
		name           string
		offset, length string
		from, to       int64 // the bytes of data wanted
	}{
		{"Whole", "", "", 0, n},
		{"FromOffset", "1000", "", 1000, n},
		{"Middle", "1000", "70000", 1000, 71000},
		{"AcrossBlocks", itoa(bs - 3), "10", bs - 3, bs + 7},
		{"WholeSecondBlock", itoa(bs), itoa(bs), bs, 2 * bs},
		{"UnalignedEnd", "511", "2", 511, 513},
		{"LengthPastEnd", itoa(n - 5), "100", n - 5, n},
		{"AtEnd", itoa(n), "", n, n},
		{"ZeroLength", "7", "0", 7, 7},
		{"Sizes", "1KiB", "1KiB", 1024, 2048},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"get", "--master", addr, "/f"}
			if tt.offset != "" {
				args = append(args, "--offset", tt.offset)
			}
			if tt.length != "" {
				args = append(args, "--length", tt.length)
			}
			code, out, errText := runDFS(t, args...)
			if code != 0 || !bytes.Equal(out, data[tt.from:tt.to]) {
				t.Fatalf("exit %d, %d bytes (want %d), stderr %q", code, len(out), tt.to-tt.from, errText)
			}
		})
	}
	for _, bad := range [][]string{{"--offset", itoa(n + 1)}, {"--offset", "-1"}, {"--length", "x"}} {
		code, out, errText := runDFS(t, append([]string{"get", "--master", addr, "/f"}, bad...)...)
		if code != 1 || len(out) != 0 || strings.Count(errText, "\n") != 1 || !strings.HasPrefix(errText, "dfs: ") {
			t.Errorf("get %v: exit %d, %d bytes, stderr %q; want one line and exit 1", bad, code, len(out), errText)
		}
	}

	code, out, errText := runDFS(t, "cat", "--master", addr, "/f", "/g", "/f")
	if want := append(append(append([]byte{}, data...), other...), data...); code != 0 || !bytes.Equal(out, want) {
		t.Fatalf("cat: exit %d, %d bytes (want %d), %q", code, len(out), len(want), errText)
	}
	if code, _, errText := runDFS(t, "cat", "--master", addr, "/g", "/nope"); code != 1 || !strings.Contains(errText, "cat /nope: ") {
		t.Errorf("cat of a missing file: exit %d, %q", code, errText)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestRun_DuDfLs(t *testing.T) {
	cl := startCluster(t, 3)
	addr := cl.Master.AddrString()
	c := newTestClient(t, cl)
	mustPut(t, c, "/x/a", randomBytes(t, 3000), PutOptions{Replication: 3})
	mustPut(t, c, "/x/y/b", randomBytes(t, 2000), PutOptions{Replication: 2})
	mustPut(t, c, "/x/y/z/c", randomBytes(t, 1000), PutOptions{Replication: 1})
	mustPut(t, c, "/top", randomBytes(t, 500), PutOptions{Replication: 1})
	if err := c.Mkdir(t.Context(), "/x/empty", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"du", "/x"}, "3000  9000  /x/a\n0     0     /x/empty\n3000  5000  /x/y\n"},
		{[]string{"du", "-s", "/x"}, "6000  14000  /x\n"},
		{[]string{"du", "/"}, "500   500    /top\n6000  14000  /x\n"},
		{[]string{"du", "/x/a"}, "3000  9000  /x/a\n"},
		{[]string{"du", "-s", "-h", "/x"}, "5.9 KiB  13.7 KiB  /x\n"},
	}
	for _, tt := range tests {
		code, out, errText := runDFS(t, append(tt.args, "--master", addr)...)
		if code != 0 || string(out) != tt.want {
			t.Errorf("%v: exit %d, %q (stderr %q), want %q", tt.args, code, out, errText, tt.want)
		}
	}
	code, out, _ := runDFS(t, "du", "--json", "-s", "--master", addr, "/")
	var du []duEntry
	if err := json.Unmarshal(out, &du); code != 0 || err != nil || len(du) != 1 || du[0] != (duEntry{Path: "/", Size: 6500, WithReplicas: 14500, Files: 4}) {
		t.Errorf("du --json: %s, %v", out, err)
	}
	if code, _, errText := runDFS(t, "du", "--master", addr, "/nope"); code != 1 || !strings.HasPrefix(errText, "dfs: du /nope: ") {
		t.Errorf("du of a missing path: %d %q", code, errText)
	}

	code, out, _ = runDFS(t, "df", "--json", "--master", addr)
	var df dfReport
	if err := json.Unmarshal(out, &df); code != 0 || err != nil || df.Minions != 3 || df.Size <= 0 || df.Available <= 0 || df.Available > df.Size {
		t.Errorf("df --json: %s, %v", out, err)
	}
	// The three minions' dirs are on one file system: its capacity is
	// counted once.
	var st syscall.Statfs_t
	if err := syscall.Statfs(cl.MinionSet[0].Dir, &st); err != nil {
		t.Fatal(err)
	}
	if disk := int64(st.Blocks) * int64(st.Bsize); df.Size != disk {
		t.Errorf("df --json: size %d, want the one disk's %d that the 3 minions share", df.Size, disk)
	}
	code, out, _ = runDFS(t, "df", "-h", "--master", addr)
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "dfs://"+addr) || !strings.Contains(lines[1], "iB") {
		t.Errorf("df -h: %q", out)
	}
	code, out, _ = runDFS(t, "ls", "-h", "--master", addr, "/x")
	if code != 0 || !strings.Contains(string(out), " 2.9 KiB ") || !strings.Contains(string(out), "/x/empty/") {
		t.Errorf("ls -h: %q", out)
	}
	for _, human := range []bool{false, true} {
		args := []string{"report", "--master", addr}
		if human {
			args = append(args, "-h")
		}
		code, out, _ := runDFS(t, args...)
		last := strings.Split(strings.TrimSpace(string(out)), "\n")
		if code != 0 || len(last) != 6 || strings.Contains(last[5], "iB") != human || !strings.HasPrefix(last[5], "minions 3: 3 live") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	if code, out, _ := runDFS(t, "ls", "--help"); code != 0 || !strings.Contains(string(out), "--human-readable, -h") {
		t.Errorf("ls --help: %q", out)
	}
}

// Completion: the words dfs offers, and the bash script in a real bash.
func TestCompletion(t *testing.T) {
	app := newApp(&env{})
	tests := []struct {
		words []string
		want  string
	}{
		{[]string{"d"}, "dev du df decommission"},
		{[]string{"du", "--s"}, "--summary --secret-file"},
		{[]string{"du", "-s", "-"}, "--master -m --summary --human-readable -h --json --secret-file --tls-cert --tls-key --tls-ca --help"},
		{[]string{"put", "x"}, ""},
		{[]string{"--verb"}, "--verbose"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		complete(app, tt.words, &out)
		if got := strings.Join(strings.Fields(out.String()), " "); got != tt.want {
			t.Errorf("complete %q: %q, want %q", tt.words, got, tt.want)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if code, out, errText := runDFS(t, "completion", shell); code != 0 || len(out) == 0 {
			t.Errorf("completion %s: %d %q", shell, code, errText)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("SKIP LOUDLY: no bash here; the completion script is not run")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "c.bash")
	_, out, _ := runDFS(t, "completion", "bash")
	os.WriteFile(script, out, 0o644)
	prog := `source ` + script + `; COMP_WORDS=(` + e2eBinary(t) + ` se); COMP_CWORD=1; _dfs_complete; echo "${COMPREPLY[*]}"`
	got, err := exec.CommandContext(t.Context(), bash, "-c", prog).CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "setrep secret" {
		t.Errorf("bash completion of 'dfs se': %q, %v", got, err)
	}
}

// Minions on one disk share its capacity and free space; the bytes each
// holds add up. A minion that does not name its disk counts alone.
func TestSpace_SharedDisks(t *testing.T) {
	mn := func(disk string, capacity, free, used int64) MinionInfo {
		return MinionInfo{Disk: disk, Capacity: capacity, Free: free, Used: used}
	}
	tests := []struct {
		name                 string
		minions              []MinionInfo
		capacity, free, used int64
	}{
		{"one disk", []MinionInfo{mn("m/1", 100, 40, 5), mn("m/1", 100, 40, 7), mn("m/1", 100, 40, 9)}, 100, 40, 21},
		{"two disks", []MinionInfo{mn("m/1", 100, 40, 5), mn("m/2", 50, 10, 7), mn("m/1", 100, 40, 1)}, 150, 50, 13},
		{"unnamed", []MinionInfo{mn("", 100, 40, 5), mn("", 100, 40, 7)}, 200, 80, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s space
			for _, m := range tt.minions {
				s.add(m)
			}
			if s.capacity != tt.capacity || s.free != tt.free || s.used != tt.used {
				t.Errorf("capacity %d, free %d, used %d; want %d, %d, %d", s.capacity, s.free, s.used, tt.capacity, tt.free, tt.used)
			}
		})
	}
}
