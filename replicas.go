// replicas.go is how the master lists the replicas of a block: a master
// holds one list per block, so it is kept to 16 bytes. Minions are named in
// it by slot, a small number each gets when this master process first
// knows it, rather than by their id strings.
package main

import (
	"slices"
	"time"
)

// minionSlot numbers a minion known to this master process. Slots start at
// 1 (0 marks an unused place in a replicaSet) and are never reused: the
// registry only grows. They are not persisted; the image and the edit log
// name minions by id.
type minionSlot uint16

// maxMinions is the number of minions a master can know.
const maxMinions = 1<<16 - 1

// replicaSet lists the minions that hold good replicas of a block, in the
// order they were added (readers try them in that order). It is 16 bytes:
// up to 4 slots inline (8 bytes), or, for a block with more replicas (an
// over-replicated one waiting to be trimmed, or a replication above 4),
// all of them in a slice that only such a block allocates.
type replicaSet struct {
	inline [4]minionSlot // the used places come first; 0 after them
	more   *[]minionSlot // all the slots when there are more than 4, else nil
}

// list returns the slots in order. It is valid until the next add or remove.
func (r *replicaSet) list() []minionSlot {
	if r.more != nil {
		return *r.more
	}
	n := 0
	for n < len(r.inline) && r.inline[n] != 0 {
		n++
	}
	return r.inline[:n]
}

func (r *replicaSet) len() int { return len(r.list()) }

func (r *replicaSet) has(s minionSlot) bool { return slices.Contains(r.list(), s) }

// add appends s unless it is there already.
func (r *replicaSet) add(s minionSlot) {
	l := r.list()
	switch {
	case slices.Contains(l, s):
	case r.more != nil:
		*r.more = append(l, s)
	case len(l) < len(r.inline):
		r.inline[len(l)] = s
	default:
		all := append(slices.Clone(l), s)
		r.more, r.inline = &all, [4]minionSlot{}
	}
}

// remove takes s out, keeping the others in order, and reports whether it
// was there.
func (r *replicaSet) remove(s minionSlot) bool {
	l := r.list()
	i := slices.Index(l, s)
	if i < 0 {
		return false
	}
	l = slices.Delete(l, i, i+1) // on the inline array, zeroes the last place
	switch {
	case r.more == nil: // done in place
	case len(l) <= len(r.inline): // back inline
		copy(r.inline[:], l)
		r.more = nil
	default:
		*r.more = l
	}
	return true
}

// addReplica records a new replica of block id on mn, fresh as of now (a
// block report taken before it may leave it out), for the next replication
// tick to look at. and checked that mn has none.
func (r *replication) addReplica(id uint64, b *blockEntry, mn *minionEntry, now time.Time) {
	b.replicas.add(mn.slot)
	mn.load += b.size
	mn.replicas++
	r.grown[id] = now.UnixNano()
	r.recheck[id] = struct{}{}
}

// dropReplica forgets mn's replica of block id, if the master lists one,
// for the next replication tick to look at..
func (r *replication) dropReplica(id uint64, b *blockEntry, mn *minionEntry) {
	if b.replicas.remove(mn.slot) {
		mn.load -= b.size
		mn.replicas--
		r.recheck[id] = struct{}{}
		r.confirm(id, mn.slot)
	}
}
