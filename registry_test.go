package main

// Tests of the minion registry: registration with a block report,
// reconciling it, heartbeats and the deletes they hand over, placement.

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestMaster_Place(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 3)
	m.reg.minions["MID-2"].free = 10 // full disk
	m.reg.minions["MID-1"].lastSeen = time.Now().Add(-2 * m.DeadAfter)

	got := m.reg.place(3, testBlockSize, nil)
	if len(got) != 1 || got[0].id != "MID-0" {
		t.Fatalf("place = %v, want only MID-0 (MID-1 dead, MID-2 full)", got)
	}
	m.reg.minions["MID-1"].lastSeen = time.Now()
	// MID-0 now carries one allocation, so MID-1 comes first.
	got = m.reg.place(2, testBlockSize, nil)
	if len(got) != 2 || got[0].id != "MID-1" || got[1].id != "MID-0" {
		t.Fatalf("place = %v, want MID-1 then MID-0", got)
	}
}

func TestMaster_Register_ReconcilesBlockReport(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	if err := putFile(t, m, "/f", testBlockSize, 100); err != nil {
		t.Fatal(err)
	}
	f := m.ns.file("/f")
	b0, b1 := f.blocks.list()[0], f.blocks.list()[1]
	clear(m.repl.grown) // the replicas grew before any report in flight
	cr, _ := m.create(&CreateArgs{Path: "/inflight"})
	pending, _ := m.addBlock(&AddBlockArgs{Handle: cr.Handle})

	// MID-1 comes back having lost b1, keeping b0, with an orphan, a
	// replica of the wrong length, and the block of a put in progress.
	reply, err := m.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40, Blocks: []BlockReport{
		{ID: b0, Size: testBlockSize},
		{ID: 777, Size: 5},
		{ID: pending.BlockID, Size: 3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reply.Delete, []uint64{777}) {
		t.Errorf("delete = %v, want the orphan only", reply.Delete)
	}
	if r := m.reg.idsOf(m.ns.blocks[b1]); slices.Contains(r, "MID-1") {
		t.Errorf("b1 replicas %v still name MID-1, which lost it", r)
	}
	if r := m.reg.idsOf(m.ns.blocks[b0]); !slices.Contains(r, "MID-1") {
		t.Errorf("b0 replicas %v lost MID-1", r)
	}

	reply, _ = m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40, Blocks: []BlockReport{
		{ID: b0, Size: 1}, // wrong length
		{ID: b1, Size: 100},
	}})
	if !slices.Equal(reply.Delete, []uint64{b0}) {
		t.Errorf("delete = %v, want the wrong-length replica", reply.Delete)
	}

	if _, err := m.register(&RegisterArgs{MinionID: "MID-9", ClusterID: "CID-other", Addr: "127.0.0.1:1"}); !errors.Is(err, ErrWrongCluster) {
		t.Errorf("register from another cluster = %v, want ErrWrongCluster", err)
	}
}

// A new minion dir at an old minion's address replaces it.
func TestMaster_Register_SameAddressNewDir(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if _, err := m.register(&RegisterArgs{MinionID: "MID-new", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if m.reg.alive(m.reg.minions["MID-0"], time.Now()) {
		t.Error("the old minion at the address is still alive")
	}
	if hb := m.heartbeat(&HeartbeatArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000"}); !hb.Reregister {
		t.Error("heartbeat of the replaced minion was accepted")
	}
}

// A block report taken before a block was finalized does not drop the
// fresh replica.
func TestMaster_Reconcile_FreshReplicaKept(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if err := putFile(t, m, "/f", 10); err != nil {
		t.Fatal(err)
	}
	id := m.ns.file("/f").blocks.list()[0]
	if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-0") {
		t.Fatal("a replica recorded a moment ago was dropped by an older report")
	}
}

// A replica the master dropped (corrupt, or trimmed) and queued for
// deletion is deleted, not adopted again, when its minion reports it.
func TestMaster_Reconcile_QueuedDeleteNotReadopted(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	id := putSmallFile(t, m, "/f", 2)
	m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9001", Reason: "test"})
	if slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-1") {
		t.Fatal("bad replica still listed")
	}
	reply, err := m.register(&RegisterArgs{MinionID: "MID-1", Addr: "127.0.0.1:9001", Free: 1 << 40,
		Blocks: []BlockReport{{ID: id, Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(m.reg.idsOf(m.ns.blocks[id]), "MID-1") {
		t.Error("a corrupt replica was adopted again from a block report")
	}
	if !slices.Equal(reply.Delete, []uint64{id}) {
		t.Errorf("delete = %v, want the corrupt replica", reply.Delete)
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
