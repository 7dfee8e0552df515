package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// A tick with nothing changed looks at no block; a change to one block's
// replicas is acted on at the next tick, with no minion changing state and
// no full scan.
func TestMaster_Replicate_ActsOnReplicaChanges(t *testing.T) {
	for _, tt := range []struct {
		name    string
		change  func(t *testing.T, m *Master, id uint64)
		copies  int      // copies asked for at the next tick
		deleted []string // minions asked to delete their replica
	}{
		{"ReportWithoutIt", func(t *testing.T, m *Master, id uint64) {
			delete(m.repl.grown, id) // not fresh: the report is later than the put
			if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
				t.Fatal(err)
			}
		}, 1, nil},
		{"ReportOfWrongLength", func(t *testing.T, m *Master, id uint64) {
			delete(m.repl.grown, id)
			reply, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
				Blocks: []BlockReport{{ID: id, Size: 5}}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(reply.Delete, []uint64{id}) {
				t.Errorf("register told MID-0 to delete %v, want its replica of the wrong length", reply.Delete)
			}
		}, 1, nil},
		{"ReportOfWrongLengthFresh", func(t *testing.T, m *Master, id uint64) {
			// Within reportGrace of the put: a replica of the wrong
			// length goes all the same.
			if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
				Blocks: []BlockReport{{ID: id, Size: 5}}}); err != nil {
				t.Fatal(err)
			}
		}, 1, nil},
		{"ReportWithIt", func(t *testing.T, m *Master, id uint64) {
			delete(m.repl.grown, id)
			if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
				Blocks: []BlockReport{{ID: id, Size: 10}}}); err != nil {
				t.Fatal(err)
			}
		}, 0, nil},
		{"CorruptReplica", func(t *testing.T, m *Master, id uint64) {
			m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "test"})
		}, 1, []string{"MID-0"}},
		{"CopyFailed", func(t *testing.T, m *Master, id uint64) {
			m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "test"})
			m.replicate(time.Now())
			if got := copiesAsked(m, "MID-2"); !slices.Equal(got, []uint64{id}) {
				t.Fatalf("copies asked of MID-2: %v", got)
			}
			if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-2", BlockID: id, Failed: true}); err != nil {
				t.Fatal(err)
			}
		}, 1, []string{"MID-0"}},
		{"CopyLate", func(t *testing.T, m *Master, id uint64) {
			m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "test"})
			m.replicate(time.Now())
			copiesAsked(m, "MID-2")
			m.repl.copying[id][0].deadline = time.Now().Add(-time.Second)
		}, 1, []string{"MID-0"}},
		{"ExtraReplica", func(t *testing.T, m *Master, id uint64) {
			m.reg.minions["MID-0"].load += 1 << 30 // the busiest: its replica goes
			if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-2", BlockID: id, Size: 10}); err != nil {
				t.Fatal(err)
			}
		}, 0, []string{"MID-0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMaster(t, t.TempDir())
			addMinions(t, m, 3)
			m.reg.minions["MID-2"].load = 1 << 20 // /f goes to MID-0 and MID-1
			id := putSmallFile(t, m, "/f", 2)
			m.replicate(time.Now())
			m.replicate(time.Now())
			if len(m.repl.recheck) != 0 || m.repl.rescan || len(m.repl.copyCmds) != 0 {
				t.Fatalf("settled cluster: recheck %v, rescan %v, copies %v; want none", m.repl.recheck, m.repl.rescan, m.repl.copyCmds)
			}
			tt.change(t, m, id)
			m.replicate(time.Now())
			copies := 0
			for _, mid := range []string{"MID-0", "MID-1", "MID-2"} {
				if got := copiesAsked(m, mid); len(got) > 0 {
					copies += len(got)
					if !slices.Equal(got, []uint64{id}) || m.ns.blocks[id].replicas.has(m.reg.minions[mid].slot) {
						t.Errorf("copies asked of %s: %v (replicas %v)", mid, got, m.reg.idsOf(m.ns.blocks[id]))
					}
				}
				if got, want := slices.Contains(m.deletes.pendingOn(mid), id), slices.Contains(tt.deleted, mid); got != want {
					t.Errorf("replica on %s deleted: %v, want %v", mid, got, want)
				}
			}
			if copies != tt.copies {
				t.Errorf("%d copies asked for, want %d", copies, tt.copies)
			}
			checkReplicaCounts(t, m)
		})
	}
}

// Copies that could not all be asked for at once (a target takes at most
// MaxCopiesPerMinion) are asked for as earlier ones land, with no minion
// changing state.
func TestMaster_Replicate_ThrottledCopiesResume(t *testing.T) {
	m := newTestMaster(t, t.TempDir(), func(m *Master) { m.MaxCopiesPerMinion = 1 })
	addMinions(t, m, 3)
	m.reg.minions["MID-2"].load = 1 << 20
	var ids []uint64
	for i := range 3 {
		ids = append(ids, putSmallFile(t, m, fmt.Sprintf("/f%d", i), 2))
	}
	m.replicate(time.Now())
	for _, id := range ids {
		m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "test"})
	}
	var copied []uint64
	for range len(ids) {
		m.replicate(time.Now())
		got := copiesAsked(m, "MID-2")
		if len(got) != 1 {
			t.Fatalf("copies asked of MID-2 at once: %v, want 1 (of %v; %v done)", got, ids, copied)
		}
		if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-2", BlockID: got[0], Size: 10}); err != nil {
			t.Fatal(err)
		}
		copied = append(copied, got...)
	}
	slices.Sort(copied)
	slices.Sort(ids)
	if !slices.Equal(copied, ids) {
		t.Errorf("copied %v, want %v", copied, ids)
	}
	m.replicate(time.Now())
	if len(m.repl.recheck) != 0 || len(m.repl.copyCmds) != 0 {
		t.Errorf("after every copy: recheck %v, copies %v; want none", m.repl.recheck, m.repl.copyCmds)
	}
}

// A minion that dies (no heartbeat for DeadAfter) has its blocks copied at
// the next tick: a change of state makes the tick look at every block.
func TestMaster_Replicate_MinionDeath(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 3)
	m.reg.minions["MID-2"].load = 1 << 20
	id := putSmallFile(t, m, "/f", 2)
	m.replicate(time.Now())
	m.reg.minions["MID-0"].lastSeen = time.Now().Add(-time.Hour)
	m.replicate(time.Now())
	if got := copiesAsked(m, "MID-2"); !slices.Equal(got, []uint64{id}) {
		t.Errorf("copies asked of MID-2 after MID-0 died: %v, want [%s]", got, blockName(id))
	}
}

// The replica counts follow puts, replacements, removes and a restart.
func TestMaster_ReplicaCounts(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 3)
	for i := range 6 {
		putSmallFile(t, m, fmt.Sprintf("/d/f%d", i), 1+i%3)
	}
	if err := putFile(t, m, "/big", testBlockSize, testBlockSize, 7); err != nil {
		t.Fatal(err)
	}
	cr, err := m.create(&CreateArgs{Path: "/d/f0", Replication: 3, Force: true, FirstBlock: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: cr.First.BlockID, Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.remove(CallID{}, "/d/f1", false); err != nil {
		t.Fatal(err)
	}
	checkReplicaCounts(t, m)
	m.edits.close()
	m2 := newTestMaster(t, dir)
	checkReplicaCounts(t, m2)
	if _, err := m2.remove(CallID{}, "/d", true); err != nil {
		t.Fatal(err)
	}
	checkReplicaCounts(t, m2)
}

// A minion of a put's pipeline is drained, or dies, while the put is open:
// the tick that notices looks at every block, but not yet at this one.
// Completing the put marks it, so the next tick copies it.
func TestMaster_Replicate_PutCompletedAfterStateChange(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, m *Master)
	}{
		{"Decommissioned", func(t *testing.T, m *Master) {
			if _, _, err := m.decommission("127.0.0.1:9000"); err != nil {
				t.Fatal(err)
			}
		}},
		{"Died", func(t *testing.T, m *Master) {
			m.reg.minions["MID-0"].lastSeen = time.Now().Add(-time.Hour)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMaster(t, t.TempDir())
			addMinions(t, m, 3)
			m.reg.minions["MID-2"].load = 1 << 20 // the pipeline is MID-0, MID-1
			m.replicate(time.Now())
			cr, err := m.create(&CreateArgs{Path: "/f", Replication: 2})
			if err != nil {
				t.Fatal(err)
			}
			ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, m)
			m.replicate(time.Now()) // notices the change; the block is not in m.ns.blocks yet
			// Both pipeline minions got the block; the client says so.
			if err := m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 10}}}); err != nil {
				t.Fatal(err)
			}
			if n := m.repl.liveCount(m.ns.blocks[ab.BlockID], time.Now()); n != 1 {
				t.Fatalf("live replicas %d, want 1", n)
			}
			m.replicate(time.Now())
			if got := copiesAsked(m, "MID-2"); !slices.Equal(got, []uint64{ab.BlockID}) {
				t.Errorf("copies asked of MID-2: %v, want [%s] (recheck %v, rescan %v)", got, blockName(ab.BlockID), m.repl.recheck, m.repl.rescan)
			}
		})
	}
}

// Hardening: a report that names one block twice makes listed reach
// mn.replicas with another listed block left out, which is then kept.

// A minion that was dead at the last tick comes back, takes a put, and
// loses its address to another minion before the next tick, which would
// see no change of state: the takeover itself makes it look at every
// block.
func TestMaster_Replicate_AddressTakenBetweenTicks(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 4)
	m.reg.minions["MID-0"].lastSeen = time.Now().Add(-time.Hour)
	m.replicate(time.Now()) // MID-0 counted dead
	if _, err := m.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	m.reg.minions["MID-2"].load = 1 << 20
	m.reg.minions["MID-3"].load = 1 << 20
	id := putSmallFile(t, m, "/f", 2) // on MID-0 and MID-1
	// MID-2 moves to MID-0's address: MID-0 is gone again.
	if _, err := m.register(&RegisterArgs{MinionID: "MID-2", Addr: "127.0.0.1:9000", Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	if n := m.repl.liveCount(m.ns.blocks[id], time.Now()); n != 1 {
		t.Fatalf("live %d, want 1 (replicas %v)", n, m.reg.idsOf(m.ns.blocks[id]))
	}
	m.replicate(time.Now())
	if got := append(copiesAsked(m, "MID-2"), copiesAsked(m, "MID-3")...); len(got) != 1 {
		t.Errorf("copies asked: %v, want one of %s", got, blockName(id))
	}
}

// A copy asked for reserves the block's size on its target until it ends,
// also when the block's file is removed meanwhile.
func TestMaster_Replicate_CopyOfRemovedFileGivesBackItsReservation(t *testing.T) {
	for _, end := range []string{"Received", "Failed", "Late"} {
		t.Run(end, func(t *testing.T) {
			m := newTestMaster(t, t.TempDir())
			addMinions(t, m, 3)
			m.reg.minions["MID-2"].load = 1 << 20
			id := putSmallFile(t, m, "/f", 2)
			m.replicate(time.Now())
			before := m.reg.minions["MID-2"].load
			m.reportBad(&ReportBadArgs{BlockID: id, Addr: "127.0.0.1:9000", Reason: "test"})
			m.replicate(time.Now())
			if got := copiesAsked(m, "MID-2"); !slices.Equal(got, []uint64{id}) {
				t.Fatalf("copies asked of MID-2: %v", got)
			}
			if _, err := m.remove(CallID{}, "/f", false); err != nil {
				t.Fatal(err)
			}
			switch end {
			case "Received", "Failed":
				if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: "MID-2", BlockID: id, Size: 10, Failed: end == "Failed"}); err != nil {
					t.Fatal(err)
				}
			case "Late":
				m.repl.copying[id][0].deadline = time.Now().Add(-time.Second)
				m.replicate(time.Now())
			}
			if got := m.reg.minions["MID-2"].load; got != before {
				t.Errorf("MID-2's load is %d after the copy ended, want %d as before it", got, before)
			}
		})
	}
}

// setReplication changes the replication of a file, or of every file
// below a directory: the next tick copies or trims their blocks, and a
// restart keeps the new replication.
func TestMaster_SetReplication(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 3)
	a := putSmallFile(t, m, "/d/a", 1)
	b := putSmallFile(t, m, "/d/sub/b", 1)
	c := putSmallFile(t, m, "/c", 3)
	m.replicate(time.Now())
	for _, tt := range []struct {
		p   string
		n   int
		err error
	}{
		{"/d", 0, ErrBadArg}, {"/d", maxReplication + 1, ErrBadArg}, {"/nope", 2, ErrNotFound}, {"d", 2, ErrBadPath},
	} {
		if _, err := m.setReplication(tt.p, tt.n); !errors.Is(err, tt.err) {
			t.Errorf("setReplication(%s, %d) = %v, want %v", tt.p, tt.n, err, tt.err)
		}
	}
	if n, err := m.setReplication("/d", 3); err != nil || n != 2 {
		t.Fatalf("setReplication(/d, 3) = %d, %v; want 2 files", n, err)
	}
	if n, err := m.setReplication("/c", 1); err != nil || n != 1 {
		t.Fatalf("setReplication(/c, 1) = %d, %v; want 1 file", n, err)
	}
	m.replicate(time.Now())
	for _, id := range []uint64{a, b} {
		if live, inflight := m.repl.liveCount(m.ns.blocks[id], time.Now()), len(m.repl.copying[id]); live+inflight != 3 {
			t.Errorf("%s: %d live replicas and %d copies asked for, want 3 in all", blockName(id), live, inflight)
		}
	}
	if live := m.repl.liveCount(m.ns.blocks[c], time.Now()); live != 1 {
		t.Errorf("%s: %d live replicas after lowering its replication to 1", blockName(c), live)
	}
	deleted := 0
	for _, mid := range []string{"MID-0", "MID-1", "MID-2"} {
		if slices.Contains(m.deletes.pendingOn(mid), c) {
			deleted++
		}
	}
	if deleted != 2 {
		t.Errorf("%d extra replicas of %s deleted, want 2", deleted, blockName(c))
	}
	checkReplicaCounts(t, m)
	m.edits.close()
	m2 := newTestMaster(t, dir)
	for p, want := range map[string]int{"/d/a": 3, "/d/sub/b": 3, "/c": 1} {
		if fi, err := m2.stat(p); err != nil || fi.Replication != want {
			t.Errorf("after a restart %s has replication %d (%v), want %d", p, fi.Replication, err, want)
		}
	}
	if got := m2.ns.blocks[a].repl; got != 3 {
		t.Errorf("after a restart %s has replication %d, want 3", blockName(a), got)
	}
}

// After a restart the master waits for block reports before it copies or
// deletes anything, and leaves safe mode once the blocks are reported.
func TestMaster_SafeMode(t *testing.T) {
	dir := t.TempDir()
	m := newTestMaster(t, dir)
	addMinions(t, m, 3)
	for i := range 4 {
		if err := putFile(t, m, fmt.Sprintf("/f%d", i), 10); err != nil {
			t.Fatal(err)
		}
	}
	m.edits.close()

	m2 := newTestMaster(t, dir, func(m *Master) { m.SafeModeTimeout = time.Hour })
	if !m2.repl.safeMode {
		t.Fatal("restarted master with blocks is not in safe mode")
	}
	// MID-0 reports everything but one block, plus an orphan; the others
	// are silent. Nothing may be copied or deleted yet.
	var report []BlockReport
	for id, b := range m2.ns.blocks {
		report = append(report, BlockReport{ID: id, Size: b.size})
	}
	reply, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
		Blocks: append(report[1:], BlockReport{ID: 4242, Size: 1})})
	if err != nil {
		t.Fatal(err)
	}
	if len(reply.Delete) != 0 {
		t.Errorf("deletes %v in safe mode", reply.Delete)
	}
	for _, mid := range []string{"MID-1", "MID-2"} {
		m2.reg.minions[mid].lastSeen = time.Now().Add(-time.Hour) // dead
	}
	m2.replicate(time.Now())
	if !m2.repl.safeMode || len(m2.repl.copyCmds) != 0 {
		t.Fatalf("safe mode %v, copies %v: want still in safe mode, no copies", m2.repl.safeMode, m2.repl.copyCmds)
	}
	// The last block reported: safe mode ends, the orphan goes, copies start.
	if _, err := m2.register(&RegisterArgs{MinionID: "MID-0", Addr: "127.0.0.1:9000", Free: 1 << 40,
		Blocks: append(report, BlockReport{ID: 4242, Size: 1})}); err != nil {
		t.Fatal(err)
	}
	if m2.repl.safeMode {
		t.Fatal("still in safe mode with every block reported")
	}
	if !slices.Contains(m2.deletes.pendingOn("MID-0"), 4242) {
		t.Errorf("orphan reported in safe mode not queued for deletion: %v", m2.deletes)
	}
}

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

// A replica reported corrupt is deleted from its minion; once the minion
// says with a heartbeat that the delete is done, that minion may take a
// copy of the block again. Before deletes were acknowledged it stayed
// excluded until its next full block report (10 minutes), so with 3
// minions, replication 2 and one dead, the block stayed under-replicated.
// Without the acknowledgement the block cannot be placed, and fsck says
// why.
func TestMaster_Replicate_AfterDeleteAcknowledged(t *testing.T) {
	for _, acked := range []bool{true, false} {
		t.Run(fmt.Sprintf("acked=%v", acked), func(t *testing.T) {
			m := newTestMaster(t, t.TempDir())
			addMinions(t, m, 3)
			id := putSmallFile(t, m, "/f", 2)
			holders := m.reg.idsOf(m.ns.blocks[id])
			bad, good := m.reg.minions[holders[0]], m.reg.minions[holders[1]]
			var third *minionEntry
			for _, mn := range m.reg.minions {
				if mn != bad && mn != good {
					third = mn
				}
			}
			hb := func(mn *minionEntry, deleted ...uint64) *HeartbeatReply {
				return m.heartbeat(&HeartbeatArgs{MinionID: mn.id, Addr: mn.addr, Free: 1 << 40, Deleted: deleted})
			}
			// The bad replica goes; the third minion copies the block.
			m.reportBad(&ReportBadArgs{BlockID: id, Addr: bad.addr, Reason: "test"})
			m.replicate(time.Now())
			if got := copiesAsked(m, third.id); !slices.Equal(got, []uint64{id}) {
				t.Fatalf("copies asked of %s: %v, want %s", third.id, got, blockName(id))
			}
			if _, err := m.blockReceived(&BlockReceivedArgs{MinionID: third.id, BlockID: id, Size: 10}); err != nil {
				t.Fatal(err)
			}
			if got := hb(bad).Delete; !slices.Equal(got, []uint64{id}) {
				t.Fatalf("deletes handed to %s: %v, want the corrupt replica", bad.id, got)
			}
			if acked {
				hb(bad, id)
			}
			// A holder of a good replica dies: the one minion left to
			// copy to is the one whose replica was deleted.
			m.mu.Lock()
			good.lastSeen = time.Time{}
			m.mu.Unlock()
			m.replicate(time.Now())
			got := copiesAsked(m, bad.id)
			r, err := m.fsck("/f")
			if err != nil {
				t.Fatal(err)
			}
			note := r.Blocks[0].Note
			switch {
			case acked && !slices.Equal(got, []uint64{id}):
				t.Errorf("after the delete was acknowledged, copies asked of %s: %v, want %s", bad.id, got, blockName(id))
			case !acked && len(got) > 0:
				t.Errorf("a copy %v was placed where a delete of the block may still run", got)
			case !acked && !strings.Contains(note, "no minion can take a copy"):
				t.Errorf("fsck note %q, want why the block cannot be copied", note)
			case acked && note != "":
				t.Errorf("fsck note %q for a block being copied", note)
			}
		})
	}
}
