package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// netnsLab is a bridge with one network namespace per node, each with its
// own address on 10.231.0.0/24: hosts in all but name. Each namespace has
// its own ports, so the fixed ports below cannot collide with anything.
type netnsLab struct {
	t      *testing.T
	prefix string
	bridge string
	nodes  map[string]int // name -> last byte of its address
	secret string
}

func (l *netnsLab) ns(name string) string { return l.prefix + name }
func (l *netnsLab) ip(name string) string { return fmt.Sprintf("10.231.0.%d", l.nodes[name]) }

func netnsRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func startNetnsLab(t *testing.T, names ...string) *netnsLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: network namespace tests need root (CI runs them as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIPPED: network namespace tests need ip (iproute2)")
	}
	id := os.Getpid() % 10000
	l := &netnsLab{t: t, prefix: fmt.Sprintf("dfs%d-", id), bridge: fmt.Sprintf("dfsbr%d", id), nodes: map[string]int{}}
	t.Cleanup(func() {
		for name := range l.nodes {
			exec.Command("ip", "netns", "del", l.ns(name)).Run()
		}
		exec.Command("ip", "link", "del", l.bridge).Run()
	})
	netnsRun(t, "ip", "link", "add", l.bridge, "type", "bridge")
	netnsRun(t, "ip", "link", "set", l.bridge, "up")
	// Bridged frames must not meet the host's firewall (Docker's drops
	// forwarded packets).
	os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("0"), 0)
	for i, name := range names {
		l.nodes[name] = i + 1
		ns, host := l.ns(name), fmt.Sprintf("dfsv%d-%d", id, i)
		netnsRun(t, "ip", "netns", "add", ns)
		netnsRun(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
		netnsRun(t, "ip", "link", "set", host, "master", l.bridge, "up")
		netnsRun(t, "ip", "-n", ns, "addr", "add", l.ip(name)+"/24", "dev", "eth0")
		netnsRun(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		netnsRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	l.secret = filepath.Join(t.TempDir(), "secret")
	netnsRun(t, e2eBinary(t), "secret", "new", l.secret)
	return l
}

// start runs dfs args in node's namespace as a daemon.
func (l *netnsLab) start(node string, args ...string) *e2eProc {
	return e2eStartCmd(l.t, node, append([]string{"ip", "netns", "exec", l.ns(node), e2eBinary(l.t)}, args...))
}

// dfs runs a client command in node's namespace.
func (l *netnsLab) dfs(node string, stdin []byte, args ...string) e2eResult {
	l.t.Helper()
	r, hung := e2eExecIn(l.t, []string{"ip", "netns", "exec", l.ns(node)}, 2*time.Minute, []string{"DFS_SECRET_FILE=" + l.secret}, stdin, args...)
	if hung {
		l.t.Fatalf("hung: %v", r)
	}
	return r
}

// link sets node's link up or down: a host cut off from every other.
func (l *netnsLab) link(node string, up bool) {
	state := "down"
	if up {
		state = "up"
	}
	netnsRun(l.t, "ip", "-n", l.ns(node), "link", "set", "eth0", state)
}

// Three masters, three minions and a client, each on its own address:
// the leader cut off (a new leader, puts go on, the old one refuses
// writes, heals as a follower), a minion cut off, and the client cut off
// from one minion by a blackhole route; every file byte-identical at the
// end.
func TestNetns_Partitions(t *testing.T) {
	l := startNetnsLab(t, "m1", "m2", "m3", "n1", "n2", "n3", "c")
	var peers, addrs []string
	for _, m := range []string{"m1", "m2", "m3"} {
		peers = append(peers, m+"="+l.ip(m)+":2132")
		addrs = append(addrs, l.ip(m)+":2131")
	}
	spec := strings.Join(addrs, ",")
	masters := map[string]*e2eProc{}
	for _, m := range []string{"m1", "m2", "m3"} {
		masters[m] = l.start(m, "master", "--id", m, "--peers", strings.Join(peers, ","), "--addr", l.ip(m)+":2131",
			"--dir", filepath.Join(t.TempDir(), m), "--http", "127.0.0.1:0", "--block-size", "1MiB",
			"--heartbeat", "200ms", "--dead-after", "2s", "--secret-file", l.secret)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		p := l.start(n, "minion", "--master", spec, "--host", l.ip(n), "--bind", l.ip(n), "--port", "8888",
			"--dir", filepath.Join(t.TempDir(), n), "--heartbeat", "200ms", "--http", "127.0.0.1:0", "--secret-file", l.secret)
		if _, err := p.waitLine(0, e2eStartTimeout, e2eMinionStartedRE); err != nil {
			t.Fatalf("minion %s: %v\n%s", n, err, p.logText())
		}
	}
	report := func() jsonReport {
		t.Helper()
		r := l.dfs("c", nil, "report", "--json", "--master", spec)
		var j jsonReport
		if r.code != 0 || json.Unmarshal(r.stdout, &j) != nil {
			return jsonReport{}
		}
		return j
	}
	live := func(j jsonReport) int {
		n := 0
		for _, mn := range j.Minions {
			if mn.State == stateLive {
				n++
			}
		}
		return n
	}
	waitFor(t, 30*time.Second, "a leader and three live minions", func() bool {
		j := report()
		return len(j.Masters) == 3 && j.Masters[0].Role == "leader" && live(j) == 3
	})
	files := map[string][]byte{}
	put := func(p string, data []byte) {
		t.Helper()
		if r := l.dfs("c", data, "put", "--master", spec, "-", p); r.code != 0 {
			t.Fatalf("put %s: %v", p, r)
		}
		files[p] = data
	}
	checkAll := func(when string) {
		t.Helper()
		for p, data := range files {
			r := l.dfs("c", nil, "get", "--master", spec, p)
			if r.code != 0 || !bytes.Equal(r.stdout, data) {
				t.Fatalf("%s: get %s: %d bytes, want %d: %v", when, p, len(r.stdout), len(data), r)
			}
		}
	}
	for i := range 3 {
		put(fmt.Sprintf("/before%d", i), randomBytes(t, i<<20+999))
	}

	// The leader cut off from everyone.
	old := report().Masters[0].ID
	cut := time.Now()
	l.link(old, false)
	var took time.Duration
	for {
		r := l.dfs("c", []byte("during"), "put", "--master", spec, "-", "/during")
		if r.code == 0 {
			took = time.Since(cut)
			files["/during"] = []byte("during")
			break
		}
		if time.Since(cut) > time.Minute {
			t.Fatalf("no put within a minute of cutting off the leader: %v", r)
		}
	}
	j := report()
	t.Logf("leader %s cut off: %s leads; a put went through %v later", old, j.Masters[0].ID, took.Round(time.Millisecond))
	if j.Masters[0].ID == old {
		t.Fatalf("the cut-off master %s still leads: %+v", old, j.Masters)
	}
	// The old leader, from its own side of the partition, takes no change.
	r := l.dfs(old, nil, "mkdir", "--master", l.ip(old)+":2131", "/from-the-old-leader")
	e2eMustFail(t, r, "not the leader")
	checkAll("leader cut off")
	l.link(old, true)
	waitFor(t, 30*time.Second, "the old leader back as a follower", func() bool {
		j := report()
		if len(j.Masters) != 3 {
			return false
		}
		for _, mi := range j.Masters[1:] {
			if mi.Error != "" || mi.Role != "follower" {
				return false
			}
		}
		return true
	})
	if r := l.dfs("c", nil, "stat", "--master", spec, "/from-the-old-leader"); r.code == 0 {
		t.Fatalf("a change refused by the cut-off leader exists: %v", r)
	}

	// A minion cut off: puts go on with the other two, reads too.
	l.link("n1", false)
	put("/minion-cut", randomBytes(t, 2<<20+5))
	checkAll("minion cut off")
	l.link("n1", true)
	waitFor(t, 30*time.Second, "three live minions again", func() bool { return live(report()) == 3 })

	// The client cut off from one minion only.
	netnsRun(t, "ip", "-n", l.ns("c"), "route", "add", "blackhole", l.ip("n2")+"/32")
	put("/blackholed", randomBytes(t, 3<<20+1))
	checkAll("client cut off from n2")
	netnsRun(t, "ip", "-n", l.ns("c"), "route", "del", "blackhole", l.ip("n2")+"/32")

	waitFor(t, 60*time.Second, "fsck healthy", func() bool {
		return l.dfs("c", nil, "fsck", "--master", spec).code == 0
	})
	checkAll("healed")
}
