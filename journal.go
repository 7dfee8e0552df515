// journal.go is the seam between the master's namespace and the disk: the
// ordered, durable record of changes that the namespace's apply replays.
//
// The master appends a checked edit under its lock, applies it, releases
// the lock, and syncs before it answers: an acknowledged change is in the
// journal. The edit log (editlog.go), with checkpoints into the image
// (meta.go), is today's journal; a replicated log (Raft) can take its place
// without touching the namespace, since replay and the live path already
// apply records through the same method.
package main

// journal is an ordered log of edits. Implementations are safe for
// concurrent use.
type journal interface {
	// append adds e after every record appended before and returns its
	// seq. The record is not durable until sync(seq) returns. The caller
	// holds the master's lock, so seqs follow the order of apply.
	append(e *edit) (seq uint64, err error)
	// sync returns once every record up to seq is durable.
	sync(seq uint64) error
	// synced is the last durable record.
	synced() uint64
	// last is the last record appended.
	last() uint64
}

var _ journal = (*editLog)(nil)
