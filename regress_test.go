package main

// Regression tests for data-loss and crash paths found in review.

import (
	"slices"
	"testing"
	"time"
)

// A minion that died before a restart is "alive" for DeadAfter after the
// restart (applyMinion sets lastSeen=now). Once safe mode ends (every block
// reported by the live minions), trim counts its phantom replica and can
// delete the only real copy of a block.
func TestMaster_Trim_AfterRestart_KeepsOnlyRealCopy(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)                   // MID-0 (A), MID-1 (C)
	m.reg.minions["MID-1"].load = 1 << 30 // C is busier: /f goes to A
	id := putSmallFile(t, m, "/f", 1)
	if got := m.reg.idsOf(m.ns.blocks[id]); !slices.Equal(got, []string{"MID-0"}) {
		t.Fatalf("replicas %v", got)
	}
	// A dies for good; the master re-replicates to C.
	m.reg.minions["MID-0"].lastSeen = time.Now().Add(-time.Hour)
	m.replicate(time.Now())
	if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-1", BlockID: id, Size: 10}); err != nil {
		t.Fatal(err)
	}
	// Clean shutdown: checkpoint (as Close does).
	if err := m.checkpoint(); err != nil {
		t.Fatal(err)
	}
	m.edits.close()

	m2 := newTestMaster(t, dir, func(m *Master) { m.DeadAfter = 30 * time.Second })
	// Only C comes back, with its block and more (it is the busier one).
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40,
		Used: 1 << 30, Blocks: []BlockReport{{ID: id, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	m2.reg.minions["MID-1"].load += 1 << 30 // its other data
	if m2.repl.safeMode {
		t.Fatal("still in safe mode")
	}
	m2.replicate(time.Now()) // the next housekeeping tick, well within DeadAfter
	if slices.Contains(m2.deletes.pendingOn("MID-1"), id) {
		t.Fatalf("DATA LOSS: the only real replica (on C) was trimmed; master now believes %v (A never came back)", m2.reg.idsOf(m2.ns.blocks[id]))
	}
}

// Variant: A is alive and registers right after the restart, but no longer
// has the block (trimmed before a kill -9 of the master; the log still lists
// A). Replicas loaded from disk get no grace in reconcile.
func TestMaster_Trim_AfterRestart_StaleReplicaList(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)
	m.reg.minions["MID-1"].load = 1 << 30
	id := putSmallFile(t, m, "/f", 1)
	// (Live history, not persisted: A partitioned, copy to C, A back, A's
	// replica trimmed. The log still says [MID-0].) kill -9: no checkpoint.
	m.edits.close()

	m2 := newTestMaster(t, dir)
	// A registers at once, without the block; C with it.
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40,
		Blocks: []BlockReport{{ID: id, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	m2.reg.minions["MID-1"].load += 1 << 30
	m2.replicate(time.Now())
	if slices.Contains(m2.deletes.pendingOn("MID-1"), id) {
		t.Fatalf("DATA LOSS: the only real replica (on C) was trimmed; master believes %v", m2.reg.idsOf(m2.ns.blocks[id]))
	}
}

// reportBad counts replicas on dead minions as "left", so the only live
// replica is deleted instead of kept as corrupt.
func TestMaster_ReportBad_KeepsLastLiveReplica(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	id := putSmallFile(t, m, "/f", 2)
	m.reg.minions["MID-1"].lastSeen = time.Now().Add(-time.Hour) // B dead
	m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "one bad chunk"})
	if slices.Contains(m.deletes.pendingOn("MID-0"), id) {
		t.Fatalf("the last live replica was queued for deletion; replicas %v corrupt %v", m.reg.idsOf(m.ns.blocks[id]), m.repl.corrupt[id])
	}
}

// Decommissioning is not persisted: after a master restart the drained
// minion counts again and trim may delete the new copy instead.
func TestMaster_Decommission_SurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)
	m.reg.minions["MID-1"].load = 1 << 30
	id := putSmallFile(t, m, "/f", 1)
	if _, _, err := m.decommission("127.0.0.1:9000"); err != nil {
		t.Fatal(err)
	}
	m.replicate(time.Now())
	if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-1", BlockID: id, Size: 10}); err != nil {
		t.Fatal(err)
	}
	if r := m.report(); r.Minions[0].State != stateDecommissioned {
		t.Fatalf("state %s", r.Minions[0].State)
	}
	if err := m.checkpoint(); err != nil {
		t.Fatal(err)
	}
	m.edits.close()
	m2 := newTestMaster(t, dir)
	for i, mid := range []string{"MID-0", "MID-1"} {
		if _, err := m2.register(&RegisterArgs{MinionID: mid, Addr: []string{"127.0.0.1:9000", "127.0.0.1:9001"}[i], Free: 1 << 40,
			Blocks: []BlockReport{{ID: id, Size: 10}}}); err != nil {
			t.Fatal(err)
		}
	}
	m2.reg.minions["MID-1"].load += 1 << 30
	m2.replicate(time.Now())
	if slices.Contains(m2.deletes.pendingOn("MID-1"), id) {
		t.Fatalf("the copy made by the drain was trimmed; the block is only on the minion the operator was told is safe to stop")
	}
}

// The live path clears the address of a minion whose address a new dir
// took over; replay of opMinion does not, so after kill -9 two ids share
// one address and one pipeline can name the same minion twice.
func TestMaster_ReplayMinion_AddressTakenOver(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 1)
	if _, err := m.register(&RegisterArgs{MinionID: "MID-new", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if err := putFile(t, m, "/f", 10); err != nil { // syncs the log
		t.Fatal(err)
	}
	if m.reg.minions["MID-0"].addr != "" {
		t.Fatal("live path did not clear the old address")
	}
	m.edits.close() // kill -9: no checkpoint
	m2 := newTestMaster(t, dir)
	cr, _ := m2.create(&CreateArgs{Path: "/g", Replication: 2})
	ab, err := m2.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if len(ab.Pipeline) == 2 && ab.Pipeline[0] == ab.Pipeline[1] {
		err := m2.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 10, Replicas: ab.Pipeline}}})
		t.Fatalf("pipeline %v names one minion twice; complete=%v records replicas %v for one physical copy",
			ab.Pipeline, err, m2.reg.idsOf(m2.ns.blocks[ab.BlockID]))
	}
}

// A minion that forwards to a peer that restarted (same address) uses the
// dead pooled connection once: the healthy peer is dropped from the pipeline.
func TestCluster_RestartedMinion_NotDroppedFromPipeline(t *testing.T) {
	cl := startCluster(t, 3)
	c := newTestClient(t, cl)
	data := randomBytes(t, 1000)
	mustPut(t, c, "/a", data, PutOptions{})
	fi, _ := c.Stat(t.Context(), "/a")
	t.Logf("first pipeline/replicas: %v", fi.Blocks[0].Replicas)
	// Restart every minion except the first of the pipeline, on the same address.
	first := 0
	for i, mn := range cl.MinionSet {
		if mn.ident.MinionID < cl.MinionSet[first].ident.MinionID {
			first = i
		}
	}
	for i, old := range cl.MinionSet {
		if i == first {
			continue
		}
		addr := old.advertised()
		dir := old.Dir
		old.Close()
		mn := NewMinion(dir, addr, cl.Master.AddrString())
		mn.Logger = old.Logger
		mn.Heartbeat = testHeartbeat
		mn.ScrubInterval = 0
		if err := mn.Start(); err != nil {
			t.Fatal(err)
		}
		cl.MinionSet[i] = mn
	}
	waitFor(t, 5*time.Second, "restarted minions registered", func() bool {
		for _, mn := range cl.MinionSet {
			mn.mu.Lock()
			ok := mn.registered
			mn.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	c2 := newTestClient(t, cl) // fresh client pool; minions' pools are long-lived
	for i := range 5 {
		p := "/b" + string(rune('0'+i))
		mustPut(t, c2, p, data, PutOptions{})
		fi, _ := c2.Stat(t.Context(), p)
		if n := len(fi.Blocks[0].Replicas); n != 3 {
			t.Errorf("%s: written to %d minions of 3 (%v) although all are healthy", p, n, fi.Blocks[0].Replicas)
		}
		mustGet(t, c2, p, data)
	}
}

// After a restart, a replica known only from the image does not count as a
// good copy when the only reported one is said to be corrupt: the reported
// one is kept.
func TestMaster_ReportBad_AfterRestart_ReplicaOnPaper(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 2)
	id := putSmallFile(t, m, "/f", 2)
	if err := m.checkpoint(); err != nil {
		t.Fatal(err)
	}
	m.edits.close()
	m2 := newTestMaster(t, dir, func(m *Master) { m.DeadAfter = 30 * time.Second })
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
		Blocks: []BlockReport{{ID: id, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	m2.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "bad chunk"})
	if slices.Contains(m2.deletes.pendingOn("MID-0"), id) {
		t.Fatal("the only reported replica was queued for deletion because of one that exists only on paper")
	}
}

// A minion gets a bounded batch of deletes per heartbeat; the rest waits.
func TestMaster_Heartbeat_DeleteBatch(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	for i := range maxDeletesPerHeartbeat + 10 {
		m.repl.queueDelete(uint64(i+1), []string{"MID-0"})
	}
	hb := &HeartbeatArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}
	if got := len(m.heartbeat(hb).Delete); got != maxDeletesPerHeartbeat {
		t.Fatalf("first heartbeat: %d deletes, want %d", got, maxDeletesPerHeartbeat)
	}
	if got := len(m.heartbeat(hb).Delete); got != 10 {
		t.Fatalf("second heartbeat: %d deletes, want 10", got)
	}
	if got := len(m.heartbeat(hb).Delete); got != 0 {
		t.Fatalf("third heartbeat: %d deletes, want 0", got)
	}
}

// A delete handed over in a heartbeat reply that the minion never got: its
// next block report lists the block, which is deleted again, not adopted.
func TestMaster_Reconcile_LostDeleteNotReadopted(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 3)
	id := putSmallFile(t, m, "/f", 2)
	v := m.reg.idsOf(m.ns.blocks[id])[0]
	addr := m.reg.minions[v].addr
	m.reportBad(&ReportBadArgs{BlockID: id, Addr: addr, Reason: "bad"})
	if hb := m.heartbeat(&HeartbeatArgs{MinionID: v, Addr: addr, Free: 1 << 40}); !slices.Contains(hb.Delete, id) {
		t.Fatalf("heartbeat deletes %v, want the bad replica", hb.Delete)
	}
	// That reply was lost: the minion still has the block and reports it.
	reply, err := m.register(&RegisterArgs{MinionID: v, Addr: addr, Free: 1 << 40, Blocks: []BlockReport{{ID: id, Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(m.reg.idsOf(m.ns.blocks[id]), v) {
		t.Error("a replica condemned as corrupt was adopted again")
	}
	if !slices.Contains(reply.Delete, id) {
		t.Errorf("delete = %v, want the bad replica again", reply.Delete)
	}
	// Once a report leaves it out, it is forgotten.
	if _, err := m.register(&RegisterArgs{MinionID: v, Addr: addr, Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if m.deletes.has(v, id) {
		t.Errorf("handed delete of %s kept after a report without it", blockName(id))
	}
}
