package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// e2eHA is three `dfs master --peers` processes and their minions.
type e2eHA struct {
	root    string
	ids     []string
	raft    []string // Raft addresses
	addrs   []string // client addresses
	masters []*e2eMaster
	minions []*e2eProc
}

func (h *e2eHA) spec() string { return strings.Join(h.addrs, ",") }

func (h *e2eHA) peers() string {
	var ps []string
	for i, id := range h.ids {
		ps = append(ps, id+"="+h.raft[i])
	}
	return strings.Join(ps, ",")
}

// start starts master i at its client address (default Raft timings).
func (h *e2eHA) start(t *testing.T, i int) {
	t.Helper()
	h.masters[i] = e2eRestartMasterAt(t, filepath.Join(h.root, h.ids[i]), h.addrs[i],
		"--peers", h.peers(), "--id", h.ids[i], "--http", "127.0.0.1:0")
}

var e2eLeadingRE = regexp.MustCompile(`msg=leading .*term=(\d+)`)

// leader waits until one of the running masters leads in a term after
// afterTerm, and returns it and its term.
func (h *e2eHA) leader(t *testing.T, afterTerm int) (int, int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range h.masters {
			if m == nil {
				continue
			}
			for _, line := range strings.Split(m.logText(), "\n") {
				if sm := e2eLeadingRE.FindStringSubmatch(line); sm != nil {
					var term int
					fmt.Sscan(sm[1], &term)
					if term > afterTerm {
						return i, term
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no master leads after term %d", afterTerm)
	return 0, 0
}

func startE2EHA(t *testing.T, nMinions int) *e2eHA {
	t.Helper()
	h := &e2eHA{root: t.TempDir(), ids: []string{"m1", "m2", "m3"}, masters: make([]*e2eMaster, 3)}
	for range h.ids {
		h.raft = append(h.raft, freeAddr(t))
		h.addrs = append(h.addrs, freeAddr(t))
	}
	for i := range h.ids {
		h.start(t, i)
	}
	l, _ := h.leader(t, 0)
	for i := range nMinions {
		dir := filepath.Join(h.root, fmt.Sprintf("minion-%d", i))
		p := e2eStartProc(t, "minion "+filepath.Base(dir), "minion", "--port", "0", "--host", "127.0.0.1", "--bind", "127.0.0.1",
			"--dir", dir, "--master", h.spec(), "--heartbeat", e2eHeartbeat, "--http", "127.0.0.1:0")
		if _, err := p.waitLine(0, e2eStartTimeout, e2eMinionStartedRE); err != nil {
			t.Fatalf("start minion: %v\n%s", err, p.logText())
		}
		h.minions = append(h.minions, p)
	}
	registered := regexp.MustCompile(`msg="minion registered"`)
	waitFor(t, e2eStartTimeout, "the minions registered with the leader", func() bool {
		return len(registered.FindAllString(h.masters[l].logText(), -1)) >= nMinions
	})
	return h
}

// kill -9 of the leading master process: another leads and takes puts
// within seconds with Raft's default timings; every file put before reads
// back byte for byte; the killed master restarts and rejoins.
func TestE2E_HA_KillLeader(t *testing.T) {
	h := startE2EHA(t, 3)
	files := map[string][]byte{}
	for i := range 4 {
		p := fmt.Sprintf("/f%d", i)
		files[p] = randomBytes(t, i<<20+12345)
		e2eMustDFS(t, h.spec(), files[p], "put", "-", p)
	}
	l, term := h.leader(t, 0)
	killed := time.Now()
	h.masters[l].kill9(t)
	h.masters[l] = nil
	var took time.Duration
	for i := 0; ; i++ {
		r := e2eDFS(t, h.spec(), []byte("after"), "put", "-", "/after")
		if r.code == 0 {
			took = time.Since(killed)
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no put within 30s of killing the leader: %v", r)
		}
	}
	next, _ := h.leader(t, term)
	t.Logf("leader %s killed: %s leads, and a put went through %v later", h.ids[l], h.ids[next], took.Round(time.Millisecond))
	files["/after"] = []byte("after")
	for p, data := range files {
		r := e2eMustDFS(t, h.spec(), nil, "get", p)
		if !bytes.Equal(r.stdout, data) {
			t.Fatalf("get %s after the failover: %d bytes, want %d; contents differ", p, len(r.stdout), len(data))
		}
	}

	// The killed master comes back as a follower and sends clients on.
	h.start(t, l)
	waitFor(t, 20*time.Second, "the restarted master to name the leader", func() bool {
		r := e2eDFS(t, h.addrs[l], nil, "cat", "/after")
		return r.code == 0 && string(r.stdout) == "after"
	})
}

// A short round of dfs chaos: real master and minion processes killed,
// paused and restarted under a workload; it exits 0 only if every
// acknowledged file reads back and fsck is healthy.
func TestE2E_Chaos(t *testing.T) {
	dir := t.TempDir()
	r, hung := e2eExec(t, 5*time.Minute, nil, nil, "chaos", "--duration", "15s", "--seed", "7", "--workers", "3", "--dir", dir)
	if hung || r.code != 0 {
		t.Fatalf("chaos: %v\nstdout:\n%s", r, r.stdout)
	}
	out := string(r.stdout)
	for _, want := range []string{"chaos: seed 7", "faults: ", "0 lost, 0 corrupted, 0 removed files back; fsck healthy: true"} {
		if !strings.Contains(out, want) {
			t.Errorf("chaos output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("%s", out)
}

// chaos refuses bad settings with one line.
func TestE2E_ChaosUsage(t *testing.T) {
	for _, args := range [][]string{{"--masters", "2"}, {"--minions", "1"}, {"--duration", "0s"}, {"--max-size", "x"}, {"extra"}} {
		r := e2eRun(t, nil, nil, append([]string{"chaos"}, args...)...)
		e2eMustFail(t, r, "")
	}
}
