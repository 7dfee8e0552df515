// deletes.go is the master's delete queue: the block replicas each minion
// should delete, handed over with its heartbeats, a bounded batch at a time.
//
// A delete goes through three states. Held: the block's file was taken out
// of the namespace by a change whose journal record is not yet on disk; a
// crash before it is would bring the file back, so the replicas must stay
// until release sees the record synced. Pending: queued for the minion's
// next heartbeat. Handed: given to the minion and not yet acknowledged; if
// the heartbeat reply was lost, a block report that still lists the block
// must not make it a good replica again, so reconcile deletes it once more.
// The minion acknowledges the deletes it did with its next heartbeat
// (HeartbeatArgs.Deleted), which ends the handed state: until then the
// master does not place a copy of that block on that minion.
//
// A deleteQueue is safe for concurrent use. Its lock is a leaf: it is held
// only inside its methods, which call nothing outside.
package main

import (
	"slices"
	"sync"
)

type deleteQueue struct {
	// mu guards the fields below.
	mu      sync.Mutex
	pending map[string][]uint64 // minion id -> blocks it should delete
	held    []heldDelete
	handed  map[string]map[uint64]bool // minion id -> blocks handed over, not acknowledged
}

// heldDelete is a delete kept back until record seq is on disk.
type heldDelete struct {
	seq uint64
	mid string
	id  uint64
}

func newDeleteQueue() *deleteQueue {
	return &deleteQueue{pending: make(map[string][]uint64), handed: make(map[string]map[uint64]bool)}
}

// queue asks minion mid to delete block id, at its next heartbeat.
func (q *deleteQueue) queue(mid string, id uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending[mid] = append(q.pending[mid], id)
}

// hold asks minion mid to delete block id once journal record seq is on
// disk (see release).
func (q *deleteQueue) hold(seq uint64, mid string, id uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held = append(q.held, heldDelete{seq, mid, id})
}

// release queues the held deletes whose records are on disk: those up to
// synced.
func (q *deleteQueue) release(synced uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.held) == 0 {
		return
	}
	n := 0
	for _, h := range q.held {
		if h.seq <= synced {
			q.pending[h.mid] = append(q.pending[h.mid], h.id)
		} else {
			q.held[n] = h
			n++
		}
	}
	clear(q.held[n:])
	q.held = q.held[:n]
}

// heldBlocks returns, for each block with a held delete, the newest seq it
// waits for, and the blocks among them held for minion mid.
func (q *deleteQueue) heldBlocks(mid string) (held map[uint64]uint64, here map[uint64]bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	held, here = make(map[uint64]uint64, len(q.held)), make(map[uint64]bool)
	for _, h := range q.held {
		held[h.id] = max(held[h.id], h.seq)
		if h.mid == mid {
			here[h.id] = true
		}
	}
	return held, here
}

// take hands over up to n of minion mid's pending deletes, which stay
// handed until acknowledged.
func (q *deleteQueue) take(mid string, n int) []uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	del := q.pending[mid]
	n = min(len(del), n)
	if n == 0 {
		return nil
	}
	out := slices.Clone(del[:n])
	if q.handed[mid] == nil {
		q.handed[mid] = make(map[uint64]bool)
	}
	for _, id := range out {
		q.handed[mid][id] = true
	}
	if n == len(del) {
		delete(q.pending, mid)
	} else {
		q.pending[mid] = del[n:]
	}
	return out
}

// acked ends the handed state of the deletes minion mid did.
func (q *deleteQueue) acked(mid string, ids []uint64) {
	if len(ids) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.handed[mid]
	for _, id := range ids {
		delete(h, id)
	}
	if len(h) == 0 {
		delete(q.handed, mid)
	}
}

// forget ends the handed state of minion mid's delete of block id: a new
// copy was made there.
func (q *deleteQueue) forget(mid string, id uint64) { q.acked(mid, []uint64{id}) }

// drain takes every pending and handed delete of minion mid out of the
// queue and returns them, for a full block report to settle: each reported
// one is deleted again, the others are gone already.
func (q *deleteQueue) drain(mid string) map[uint64]bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[uint64]bool, len(q.pending[mid])+len(q.handed[mid]))
	for _, id := range q.pending[mid] {
		out[id] = true
	}
	for id := range q.handed[mid] {
		out[id] = true
	}
	delete(q.pending, mid)
	delete(q.handed, mid)
	return out
}

// has reports whether block id is pending or handed for deletion on
// minion mid: a copy placed there now could be deleted by it.
func (q *deleteQueue) has(mid string, id uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.handed[mid][id] || slices.Contains(q.pending[mid], id)
}

// pendingOn returns the deletes pending for minion mid, for tests.
func (q *deleteQueue) pendingOn(mid string) []uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.pending[mid])
}
