// healing_test.go holds regression tests of the master's healing (issue 9,
// item 6): after any loss, a small cluster must get back to full
// replication within 30 s of the loss being detected, and a minion cut off
// without a connection reset (SIGSTOP) must neither stall a put for long
// nor leave a block under-replicated for long. They run the built binary
// with the harness of e2e_test.go and faults_test.go (children on loopback
// port 0, commands with a deadline, logs printed only when a test failed).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// healBound is how long healing may take once a loss is detected.
	healBound = 30 * time.Second
	// healDeadAfter is e2eDeadAfter as a duration.
	healDeadAfter = 2 * time.Second
	// healPutBound bounds a put of a few MiB whose pipeline holds a minion
	// that stops answering (today: about 20 s per hop of the pipeline).
	healPutBound = 15 * time.Second
	// healPutCap is when a put fed by the test is killed: well beyond
	// healPutBound, so that a late put still finishes and the healing
	// after it is checked too.
	healPutCap = 90 * time.Second
)

// healMinionFlags: full block reports as seldom as by default (a report
// clears what the tests here are about), no scrubber.
var healMinionFlags = []string{"--report-interval", "10m", "--scrub-interval", "0"}

// healStartPut is faultStartPut with a longer cap than faultSlowPutTimeout.
func healStartPut(t *testing.T, limit time.Duration, master string, args ...string) *faultPut {
	t.Helper()
	args = append([]string{"put", "--master", master}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	cmd := exec.CommandContext(ctx, e2eBinary(t), args...)
	cmd.Env = e2eEnv()
	cmd.Dir = t.TempDir()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) } // goroutines to stderr
	cmd.WaitDelay = 3 * time.Second
	p := &faultPut{args: args, cmd: cmd, ctx: ctx, done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-p.done
		cancel()
	})
	return p
}

// healListedOn lists the blocks (path#index) of files that stat shows on
// the minion at addr.
func healListedOn(t *testing.T, master, addr string, paths []string) []string {
	t.Helper()
	var on []string
	for _, p := range paths {
		for i, b := range e2eStat(t, master, p).Blocks {
			if slices.Contains(b.Replicas, addr) {
				on = append(on, fmt.Sprintf("%s#%d", p, i))
			}
		}
	}
	return on
}

// TestHealing_CorruptThenDeadMinion: 3 minions, replication 2. Every
// replica on minion A is corrupted (block files and records in volumes), A's
// scrubber finds them and the master replaces them on the other two. Then
// minion B is killed -9: every block B held must get a second replica again,
// and A is the only minion left to take it. fsck must be healthy within
// healBound of B being declared dead.
//
// Before deletes were acknowledged it was not, for about 10 minutes: the
// deletes of A's corrupt replicas stayed handed until A's next full block
// report (--report-interval, 10m by default), and a minion with a delete
// of a block queued or handed is no copy target for it. Now A acknowledges
// the deletes with its next heartbeat (deletes.go).
func TestHealing_CorruptThenDeadMinion(t *testing.T) {
	t.Parallel()
	// A scrubber every second finds the corruption; reports stay at 10m.
	flags := []string{"--report-interval", "10m", "--scrub-interval", "1s"}
	c := faultStartCluster(t, 3, flags, "--replication", "2")
	type file struct {
		data []byte
		bs   string // block size
	}
	// 1 MiB blocks that arrive in one packet are packed into volumes; the
	// 2 MiB blocks (two packets each) get files of their own.
	files := map[string]file{
		"/h/s1": {e2eRandom(4 * e2eKiB), "1MiB"},
		"/h/s2": {e2eRandom(100 * e2eKiB), "1MiB"},
		"/h/s3": {e2eRandom(700 * e2eKiB), "1MiB"},
		"/h/s4": {e2eRandom(30*e2eKiB + 7), "1MiB"},
		"/h/m1": {e2eRandom(2*e2eMiB + 300*e2eKiB), "1MiB"},
		"/h/b1": {e2eRandom(2*2*e2eMiB + 300*e2eKiB), "2MiB"},
		"/h/b2": {e2eRandom(3 * 2 * e2eMiB), "2MiB"},
	}
	paths := slices.Sorted(maps.Keys(files))
	byPath := map[string][]byte{}
	for _, p := range paths {
		e2eMustDFS(t, c.addr(), files[p].data, "put", "--replication", "2", "--block-size", files[p].bs, "-", p)
		byPath[p] = files[p].data
	}
	faultWaitHealthy(t, c.addr(), e2eWaitTimeout, "fsck to be healthy after the puts")

	a, b := c.minions[0], c.minions[1]
	// Every replica A holds, as the master lists them, must be on its disk,
	// some packed and some in block files.
	onA := healListedOn(t, c.addr(), a.addr, paths)
	packed := volumeBlocks(t, a.dir)
	var inFiles, inVolumes []string
	for name := range e2eBlockFiles(t, a.dir) {
		if strings.HasSuffix(name, ".meta") {
			continue
		}
		if _, ok := packed[faultBlockID(t, name)]; ok {
			inVolumes = append(inVolumes, name)
		} else {
			inFiles = append(inFiles, name)
		}
	}
	if len(inFiles) == 0 || len(inVolumes) == 0 || len(inFiles)+len(inVolumes) != len(onA) {
		t.Fatalf("test setup: minion A (%s) should hold packed blocks and block files: %d in block files, %d in volumes, "+
			"master lists %d replicas on it (%v)", a.addr, len(inFiles), len(inVolumes), len(onA), onA)
	}
	t.Logf("minion A %s holds %d replicas: %d in block files, %d packed in volumes", a.addr, len(onA), len(inFiles), len(inVolumes))

	// Corrupt them all while A is stopped, so that its scrubber does not
	// move one out (or compaction move a record) in the middle.
	corrupted := map[string]bool{}
	a.signal(syscall.SIGSTOP)
	for _, name := range append(slices.Clone(inFiles), inVolumes...) {
		id := faultBlockID(t, name)
		path, off := blockDataAt(t, a.dir, id)
		size := e2eBlockFiles(t, a.dir)[name]
		flipByte(t, path, off+size/2)
		corrupted[name] = true
	}
	a.signal(syscall.SIGCONT)

	// A's scrubber reports them; the master drops them, queues their
	// deletes, and copies each block to a minion without a bad copy. (Once
	// the delete is done that may be A again.)
	e2eWaitFor(t, healBound, "every corrupt replica on A to be reported and replaced", func() (bool, string) {
		log := c.master.logText()
		var unreported []string
		for name := range corrupted {
			if !strings.Contains(log, `msg="corrupt replica" block=`+name+` minion=`+a.addr+" ") {
				unreported = append(unreported, name)
			}
		}
		var probs []string
		for _, p := range paths {
			probs = append(probs, faultReplicaProblems(t, c, p, byPath[p], 2)...)
		}
		r, f := faultFsck(t, c.addr())
		return len(unreported) == 0 && len(probs) == 0 && r.code == 0,
			fmt.Sprintf("not reported by the master yet: %v; %v; fsck %s", unreported, probs, f.summary())
	})
	t.Logf("all %d corrupt replicas on A reported and replaced; replicas listed on A now: %v", len(corrupted),
		healListedOn(t, c.addr(), a.addr, paths))

	b.kill9(t)
	killed := time.Now()
	faultWaitState(t, c.addr(), b.addr, stateDead, e2eWaitTimeout)
	dead := time.Since(killed)
	ok, last := faultPoll(healDeadAfter+healBound-time.Since(killed), func() (bool, string) {
		r, f := faultFsck(t, c.addr())
		return r.code == 0, f.summary()
	})
	if !ok {
		_, f := faultFsck(t, c.addr())
		var stuck, stuckCorrupted []string
		for _, blk := range f.Blocks {
			if blk.Status != statusHealthy {
				stuck = append(stuck, fmt.Sprintf("%s#%d", blk.Path, blk.Index))
				if corrupted[blk.ID] {
					stuckCorrupted = append(stuckCorrupted, fmt.Sprintf("%s#%d", blk.Path, blk.Index))
				}
			}
		}
		t.Fatalf("a minion with a delete of the block handed and not acknowledged is no copy target "+
			"(deletes.go): %v after the kill -9 of B %s (declared dead after %v), "+
			"fsck is still not healthy: %d blocks stuck, %d of them ones whose replica on A %s was corrupt and deleted "+
			"(A is the only possible target): %v; last fsck: %s",
			time.Since(killed).Round(time.Millisecond), b.addr, dead.Round(time.Millisecond), len(stuck), len(stuckCorrupted),
			a.addr, stuck, last)
	}
	t.Logf("fsck healthy %v after the kill -9 of B (declared dead after %v)", time.Since(killed).Round(time.Millisecond),
		dead.Round(time.Millisecond))
	for _, p := range paths {
		if probs := faultReplicaProblems(t, c, p, byPath[p], 2); len(probs) > 0 {
			t.Errorf("after healing:\n%s", strings.Join(probs, "\n"))
		}
	}
	faultGetAll(t, c.addr(), byPath)
}

// TestHealing_NoTargetShownByFsck: when no live minion can take a copy of
// an under-replicated block (2 minions, replication 2, one dead), fsck
// says so and why, not only "under-replicated": the block's "note" in
// fsck --json, and on its line of plain fsck.
func TestHealing_NoTargetShownByFsck(t *testing.T) {
	t.Parallel()
	c := faultStartCluster(t, 2, healMinionFlags, "--replication", "2")
	data := e2eRandom(50 * e2eKiB)
	e2eMustDFS(t, c.addr(), data, "put", "--replication", "2", "-", "/f")
	faultWaitHealthy(t, c.addr(), e2eWaitTimeout, "fsck to be healthy after the put")
	gone := c.minions[1]
	gone.kill9(t)
	faultWaitState(t, c.addr(), gone.addr, stateDead, e2eWaitTimeout)

	const want = "no minion can take a copy"
	var note string
	e2eWaitFor(t, e2eWaitTimeout, "fsck to say why the block waits", func() (bool, string) {
		r, f := faultFsck(t, c.addr())
		if r.code == 0 || len(f.Blocks) != 1 || f.Blocks[0].Status != statusUnderReplicated {
			t.Fatalf("fsck with one of two replicas dead: want one under-replicated block and a non-zero exit: %v\n%s", r, r.stdout)
		}
		var raw struct {
			Blocks []map[string]any `json:"blocks"`
		}
		if err := json.Unmarshal(r.stdout, &raw); err != nil {
			t.Fatal(err)
		}
		note, _ = raw.Blocks[0]["note"].(string)
		return strings.Contains(note, want), string(r.stdout)
	})
	if !strings.Contains(note, "1 live") {
		t.Errorf("note %q does not count the live minions", note)
	}
	text := e2eDFS(t, c.addr(), nil, "fsck")
	line, _, _ := strings.Cut(string(text.stdout), "\n")
	if !strings.Contains(line, want) {
		t.Errorf("plain fsck does not say why the block waits: %v\nstdout:\n%s", text, text.stdout)
	}
}

// TestHealing_PausedMinionDuringPut: 4 minions, replication 3. A minion of
// the pipeline of a put is stopped (SIGSTOP: no reset, its sockets stay
// open) in the middle of a block. The put must go on without it and finish
// within healPutBound, the file must read back the same, and fsck must be
// healthy within healBound of the pause while the minion is still stopped
// (its replicas rebuilt on the other three). After SIGCONT its extra
// replicas are trimmed and everything still reads back.
//
// Before packet acknowledgement deadlines of a few seconds, the put waited
// for the stopped minion 20 s per hop left in the pipeline (and a write
// into its full socket could block for 60 s) before pipeline recovery
// dropped it: 20, 40 or 60 s as the stopped minion was last, second or
// first. Now it costs hops(packetHopTimeout, n) (rpc.go). The put is let run to healPutCap so that
// the healing after a late one is checked too: healBound of the pause, or
// healBound/2 of the end of the put if that is later. (The block that issue 9
// item 6 reports under-replicated for over 70 s after such a put did not
// show in 8 runs with dead-after 2 s, 10 s and 30 s, 4 minions with
// replication 3 and 3 with 2: each time fsck was healthy within 0.6 s of the
// end of the put.)
func TestHealing_PausedMinionDuringPut(t *testing.T) {
	t.Parallel()
	c := faultStartCluster(t, 4, healMinionFlags)
	const bs = 2 * e2eMiB // two packets a block
	data := e2eRandom(3*bs + 100*e2eKiB)
	put := healStartPut(t, healPutCap, c.addr(), "--replication", "3", "--block-size", "2MiB", "-", "/f")
	// Blocks 0 and the first packet of block 1 and half of its second:
	// block 1 is in the tmp/ of the 3 minions of its pipeline.
	cut := bs + 3*e2eMiB/2
	if err := put.write(t, data[:cut]); err != nil {
		t.Fatalf("write to the put: %v", err)
	}
	var pipeline []int
	e2eWaitFor(t, e2eWaitTimeout, "block 1 to be in the tmp/ of its 3 minions", func() (bool, string) {
		holders := map[string][]int{}
		for i := range c.minions {
			for _, id := range faultTmpBlocks(t, c.minionDir(i)) {
				holders[id] = append(holders[id], i)
			}
		}
		pipeline = nil
		for _, ms := range holders {
			pipeline = ms
		}
		return len(holders) == 1 && len(pipeline) == 3, fmt.Sprintf("blocks in tmp/ by minion index: %v", holders)
	})
	victim := c.minions[pipeline[1]]
	victim.signal(syscall.SIGSTOP)
	paused := time.Now()
	t.Cleanup(func() { victim.signal(syscall.SIGCONT) })
	t.Logf("stopped %s, one of the pipeline %v of block 1, %v after the put started", victim.addr, pipeline,
		paused.Sub(put.start).Round(time.Millisecond))

	// The rest of the input, from a goroutine: the put may not read it for
	// a while.
	wrote := make(chan error, 1)
	go func() {
		_, err := put.stdin.Write(data[cut:])
		if cerr := put.stdin.Close(); err == nil {
			err = cerr
		}
		wrote <- err
	}()
	select {
	case <-put.done:
	case <-time.After(healPutBound - time.Since(put.start)):
		t.Errorf("a minion that neither answers nor resets the connection holds up the put (packetHopTimeout, "+
			"hops in rpc.go): the put is not done %v after it started "+
			"(%v after %s was stopped); want under %v", time.Since(put.start).Round(time.Millisecond),
			time.Since(paused).Round(time.Millisecond), victim.addr, healPutBound)
	}
	// The input is written whole before the put's stdin is closed (by
	// the goroutine: finish would close it under a write in progress).
	werr := <-wrote // bounded by healPutCap: a killed put breaks the pipe
	r := put.finish(t)
	putDone := time.Now()
	if werr != nil {
		t.Fatalf("write to the put: %v (%v)", werr, r)
	}
	if r.code != 0 {
		t.Fatalf("put with a stopped minion in its pipeline: %v", r)
	}
	t.Logf("put done %v after it started, %v after the pause; stderr:\n%s", r.elapsed.Round(time.Millisecond),
		putDone.Sub(paused).Round(time.Millisecond), r.stderr)
	if !bytes.Contains(r.stderr, []byte("pipeline recovery")) {
		t.Errorf("want a warning about the pipeline recovery: %v", r)
	}

	// Reads are checked once the master counts the stopped minion dead:
	// until then it may hand it out as a replica.
	faultWaitState(t, c.addr(), victim.addr, stateDead, e2eWaitTimeout)
	files := map[string][]byte{"/f": data}
	faultGetAll(t, c.addr(), files)

	// Healing, with the minion still stopped. A late put is reported
	// above; the healing after it is measured all the same.
	deadline := paused.Add(healBound)
	if late := putDone.Add(healBound / 2); late.After(deadline) {
		deadline = late
	}
	ok, last := faultPoll(time.Until(deadline), func() (bool, string) {
		r, f := faultFsck(t, c.addr())
		return r.code == 0, f.summary()
	})
	if !ok {
		fi := e2eStat(t, c.addr(), "/f")
		var reps []string
		for i, b := range fi.Blocks {
			reps = append(reps, fmt.Sprintf("#%d %v", i, b.Replicas))
		}
		t.Fatalf("a repair copy that involves the stopped minion is stuck (copyTimeout in replication.go; "+
			"packetHopTimeout for each packet a copy reads, transfer.go): "+
			"fsck not healthy %v after %s was stopped (%v after the put ended), the minion still stopped; last fsck: %s; "+
			"replicas: %v", time.Since(paused).Round(time.Millisecond), victim.addr, time.Since(putDone).Round(time.Millisecond),
			last, reps)
	}
	t.Logf("fsck healthy %v after the pause, with the minion still stopped", time.Since(paused).Round(time.Millisecond))
	if probs := faultReplicaProblems(t, c, "/f", data, 3); len(probs) > 0 {
		t.Errorf("after healing, the minion still stopped:\n%s", strings.Join(probs, "\n"))
	}
	for i, b := range e2eStat(t, c.addr(), "/f").Blocks {
		if slices.Contains(b.Replicas, victim.addr) {
			t.Errorf("block %d lists the stopped minion: %v", i, b.Replicas)
		}
	}
	faultGetAll(t, c.addr(), files)

	// Back: its replicas are extra now and trimmed, the file is the same.
	victim.signal(syscall.SIGCONT)
	resumed := time.Now()
	faultWaitState(t, c.addr(), victim.addr, stateLive, e2eWaitTimeout)
	nblocks := len(e2eStat(t, c.addr(), "/f").Blocks)
	e2eWaitFor(t, healBound, "exactly 3 good copies of every block after SIGCONT", func() (bool, string) {
		rr, f := faultFsck(t, c.addr())
		d, _ := faultCopies(t, c)
		probs := faultReplicaProblems(t, c, "/f", data, 3)
		three := len(d) == nblocks
		for _, k := range d {
			three = three && k == 3
		}
		return rr.code == 0 && len(probs) == 0 && three,
			fmt.Sprintf("fsck %s; copies on disk by block %v; %v", f.summary(), d, probs)
	})
	t.Logf("after SIGCONT: exactly 3 copies of each block %v later", time.Since(resumed).Round(time.Millisecond))
	faultGetAll(t, c.addr(), files)
}
