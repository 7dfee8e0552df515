package main

import (
	"slices"
	"testing"
)

// A replicaSet keeps its order through adds and removes, inline and past
// 4 replicas, and goes back inline when it shrinks.
func TestReplicaSet(t *testing.T) {
	var r replicaSet
	want := []minionSlot{}
	check := func(what string) {
		t.Helper()
		if got := r.list(); !slices.Equal(got, want) || r.len() != len(want) {
			t.Fatalf("%s: list %v, want %v", what, got, want)
		}
		if inline := r.more == nil; inline != (len(want) <= 4) {
			t.Fatalf("%s: inline %v with %d replicas", what, inline, len(want))
		}
	}
	check("empty")
	for s := minionSlot(1); s <= 6; s++ {
		r.add(s)
		r.add(s) // a second add changes nothing
		want = append(want, s)
		check("add")
	}
	for _, s := range []minionSlot{3, 6, 1, 4, 2, 5} {
		if r.remove(9) || !r.has(s) || !r.remove(s) || r.has(s) {
			t.Fatalf("remove %d from %v", s, r.list())
		}
		want = slices.DeleteFunc(want, func(x minionSlot) bool { return x == s })
		check("remove")
	}
}

// Replica lists name minions by slot, and by id again in the image.
func TestMaster_ReplicaSlots(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 3)
	for i, mid := range []string{"MID-0", "MID-1", "MID-2"} {
		if mn := m.reg.minions[mid]; mn.slot != minionSlot(i+1) || m.reg.at(mn.slot) != mn {
			t.Fatalf("%s has slot %d", mid, mn.slot)
		}
	}
	r := m.reg.slotsOf([]string{"MID-2", "MID-unknown", "MID-0"})
	if got := m.reg.idsOf(&blockEntry{replicas: r}); !slices.Equal(got, []string{"MID-2", "MID-0"}) {
		t.Errorf("replicas %v, want MID-2 and MID-0 (an unknown minion left out)", got)
	}
}
