package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"64MiB", 64 << 20},
		{"512KiB", 512 << 10},
		{"1048576", 1048576},
		{"1g", 1 << 30},
		{"10 MB", 10 << 20},
		{"2GB", 2 << 30},
		{"1M", 1 << 20},
		{"128m", 128 << 20},
		{"7k", 7 << 10},
		{"3kb", 3 << 10},
		{"1GiB", 1 << 30},
		{"100b", 100},
		{"100 B", 100},
		{"  4 KiB  ", 4 << 10},
		{"0", 0},
		{"4294967296GiB", 1 << 62}, // the largest size accepted
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseSize_Bad(t *testing.T) {
	for _, in := range []string{
		"",
		" ",
		"abc",
		"-1",
		"-1MiB",
		"1TB",
		"1TiB",
		"1.5MiB",
		"MiB",
		"0x10",
		"1 2",
		"64MiBs",
		"99999999999999999999",      // does not fit an int64
		"9223372036854775807",       // fits, but over the limit
		"8589934592GiB",             // 2^63 bytes: would overflow
		"4294967297GiB",             // just over the limit
		"9007199254740993KiB",       // overflows when multiplied
		"18446744073709551616bytes", // not a unit
	} {
		t.Run(in, func(t *testing.T) {
			got, err := parseSize(in)
			if err == nil {
				t.Fatalf("parseSize(%q) = %d, want an error", in, got)
			}
			if got != 0 {
				t.Errorf("parseSize(%q) = %d with an error, want 0", in, got)
			}
			if !strings.Contains(err.Error(), "bad size") {
				t.Errorf("parseSize(%q) error %q, want it to say bad size", in, err)
			}
		})
	}
}

func TestHumanSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{512 << 10, "512.0 KiB"},
		{1 << 20, "1.0 MiB"},
		{64 << 20, "64.0 MiB"},
		{1 << 30, "1.0 GiB"},
		{5<<30 + 512<<20, "5.5 GiB"},
		{1 << 40, "1.0 TiB"},
		{1 << 50, "1.0 PiB"},
		{1 << 60, "1.0 EiB"},
		{math.MaxInt64, "8.0 EiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestReorderArgs(t *testing.T) {
	app := newApp(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	tests := []struct {
		name string
		args string
		want string
	}{
		{"FlagAfterPositional", "dfs stat /f --json", "dfs stat --json -- /f"},
		{"FlagWithValue", "dfs put a b --force -r 2", "dfs put --force -r 2 -- a b"},
		{"FlagsBetweenPositionals", "dfs put a -r 2 b -f", "dfs put -r 2 -f -- a b"},
		{"LongFlagWithValue", "dfs put a --replication 2 --block-size 1MiB", "dfs put --replication 2 --block-size 1MiB -- a"},
		{"FlagEqualsValue", "dfs put a --replication=2 b", "dfs put --replication=2 -- a b"},
		{"ValueLooksLikeFlag", "dfs put a -r -1", "dfs put -r -1 -- a"},
		{"Stdin", "dfs put - /x", "dfs put -- - /x"},
		{"StdinWithFlag", "dfs put - /x -f", "dfs put -f -- - /x"},
		{"UserDoubleDash", "dfs put a -f -- -weird", "dfs put -f -- a -weird"},
		{"UserDoubleDashFirst", "dfs get -- -weird out", "dfs get -- -weird out"},
		{"DoubleDashKeepsFlags", "dfs rm -- -r /x", "dfs rm -- -r /x"},
		{"UnknownCommand", "dfs frob /x --json -r 2", "dfs frob /x --json -r 2"},
		{"GlobalVerbose", "dfs --verbose stat /f --json", "dfs --verbose stat --json -- /f"},
		{"OnlyFlags", "dfs ls --json -R", "dfs ls --json -R"},
		{"FlagsFirstAlready", "dfs get -m host:1 /f out", "dfs get -m host:1 -- /f out"},
		{"MasterValueAfter", "dfs get /f out --master host:1", "dfs get --master host:1 -- /f out"},
		{"ValueMissing", "dfs put a -r", "dfs put -r -- a"},
		{"NoCommand", "dfs", "dfs"},
		{"OnlyGlobal", "dfs --verbose", "dfs --verbose"},
		{"Help", "dfs put --help", "dfs put --help"},
		{"Daemon", "dfs minion --dir d --port 0", "dfs minion --dir d --port 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := strings.Fields(tt.args)
			orig := slices.Clone(args)
			got := reorderArgs(app, args)
			if want := strings.Fields(tt.want); !slices.Equal(got, want) {
				t.Errorf("reorderArgs(%q)\n got %q\nwant %q", orig, got, want)
			}
			if !slices.Equal(args, orig) {
				t.Errorf("reorderArgs changed its argument: %q, was %q", args, orig)
			}
		})
	}
}

// Mistakes on the command line fail before any network or disk I/O, with one
// line on stderr and nothing on stdout.
func TestRun_UsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string // a part of the message
	}{
		{"UnknownCommand", []string{"frob"}, `unknown command "frob"`},
		{"UnknownCommandWithFlags", []string{"frob", "--json", "x"}, "frob"},
		{"PutNoArgs", []string{"put"}, "put takes LOCAL [REMOTE]"},
		{"PutThreeArgs", []string{"put", "a", "b", "c"}, "put takes LOCAL [REMOTE]"},
		{"PutBlockSizeNotMultiple", []string{"put", "--block-size", "12345", "a"}, "--block-size"},
		{"PutBlockSizeAfterArgs", []string{"put", "a", "-b", "12345"}, "--block-size"},
		{"PutBlockSizeGarbage", []string{"put", "a", "-b", "zz"}, "bad size"},
		{"PutReplication", []string{"put", "--replication", "99", "a"}, "--replication 99"},
		{"PutNegativeReplication", []string{"put", "a", "-r", "-1"}, "--replication -1"},
		{"PutStdinNoRemote", []string{"put", "-"}, "needs a REMOTE"},
		{"PutBadFlagValue", []string{"put", "a", "-r", "two"}, "two"},
		{"PutUnknownFlag", []string{"put", "a", "--frob"}, "frob"},
		{"GetThreeArgs", []string{"get", "a", "b", "c"}, "get takes REMOTE [LOCAL]"},
		{"GetNoArgs", []string{"get"}, "get takes REMOTE [LOCAL]"},
		{"StatNoArgs", []string{"stat"}, "stat takes one PATH"},
		{"LsTwoArgs", []string{"ls", "/a", "/b"}, "ls takes at most one PATH"},
		{"RmNoArgs", []string{"rm"}, "rm takes PATH"},
		{"MinionPortZeroNoDir", []string{"minion", "--port", "0"}, "--port 0 needs --dir"},
		{"MinionBadPort", []string{"minion", "--port", "70000", "--dir", dir}, "--port 70000"},
		{"MinionExtraArg", []string{"minion", "--dir", dir, "extra"}, `unexpected argument "extra"`},
		{"MinionPackMaxTooLarge", []string{"minion", "--port", "0", "--dir", dir, "--pack-max", "2MiB"}, "--pack-max"},
		{"MinionPackMaxGarbage", []string{"minion", "--port", "0", "--dir", dir, "--pack-max", "lots"}, "--pack-max"},
		{"MasterBlockSizeGarbage", []string{"master", "--dir", dir, "--addr", "127.0.0.1:0", "--block-size", "zz"}, "--block-size"},
		{"MasterBlockSizeNotMultiple", []string{"master", "--dir", dir, "--addr", "127.0.0.1:0", "--block-size", "1000"}, "--block-size"},
		{"MasterReplication", []string{"master", "--dir", dir, "--addr", "127.0.0.1:0", "--replication", "99"}, "replication 99"},
		{"DevNoMinions", []string{"dev", "--dir", dir, "--addr", "127.0.0.1:0", "--minions", "0"}, "--minions 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A long stop, should a mistake ever start a daemon.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"dfs"}, tt.args...)
			code := run(ctx, args, strings.NewReader(""), &stdout, &stderr)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
			msg := stderr.String()
			lines := strings.SplitAfter(msg, "\n")
			if len(lines) != 2 || lines[1] != "" || !strings.HasPrefix(msg, "dfs: ") {
				t.Fatalf("stderr = %q, want one line starting with \"dfs: \"", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", msg, tt.want)
			}
		})
	}
}

func TestRun_Version(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"dfs", "--version"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), Version) || stderr.Len() != 0 {
		t.Errorf("stdout %q, stderr %q; want the version on stdout only", stdout.String(), stderr.String())
	}
}

// dfs bench runs every workload end to end, for two rounds, on its own
// local cluster of separate processes, and sums them up against the goals.
func TestRun_Bench(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"dfs", "bench", "--exe", e2eBinary(t), "--rounds", "2", "--size", "1MiB", "--block-size", "256KiB", "--files", "2", "--concurrency", "2",
		"--small-files", "30", "--meta-ops", "40", "--meta-concurrency", "4", "--dir", t.TempDir(), "--json"}
	if code := run(t.Context(), args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var out struct {
		Rounds  []benchResult
		Summary []benchSummary
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, stdout.String())
	}
	phases := []string{"baseline/local write+fsync (dd conv=fsync)", "throughput/put r=1", "throughput/put r=3",
		"baseline/loopback TCP into a file", "baseline/warm local read (cat)", "throughput/get r=1", "throughput/get r=3",
		"small/put", "small/get", "meta/create+complete", "meta/open", "meta/delete"}
	var got []string
	for _, r := range out.Rounds {
		got = append(got, fmt.Sprintf("%d %s/%s", r.Round, r.Workload, r.Phase))
		if r.Wall <= 0 || r.Ops == 0 || (r.Workload == "throughput" && (r.Ratio <= 0 || r.PeakRSS <= 0)) {
			t.Errorf("round %d %s/%s: %+v", r.Round, r.Workload, r.Phase, r)
		}
	}
	var want []string
	for round := 1; round <= 2; round++ {
		for _, p := range phases {
			want = append(want, fmt.Sprintf("%d %s", round, p))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("rounds ran %v, want %v", got, want)
	}
	var summed []string
	memory := 0
	for _, s := range out.Summary {
		if s.Workload == "memory" {
			memory++
			if s.PeakRSS <= 0 || s.Met == nil {
				t.Errorf("%s: %+v", s.Phase, s)
			}
			continue
		}
		summed = append(summed, s.Workload+"/"+s.Phase)
		if s.Rounds != 2 || s.Wall < s.MinWall || s.Wall > s.MaxWall {
			t.Errorf("%s/%s: %+v", s.Workload, s.Phase, s)
		}
		if _, ok := benchGoals[s.Workload+"/"+s.Phase]; ok && s.Met == nil {
			t.Errorf("%s/%s has a goal but no verdict", s.Workload, s.Phase)
		}
	}
	if !slices.Equal(summed, phases) || memory != 6 { // master, 3 minions, put, get
		t.Errorf("summary of %v and %d memory rows", summed, memory)
	}
}

func TestBench_Median(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
