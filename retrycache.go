// retrycache.go lets a client send a change again after a failover without
// making it twice. With several masters, a client names each rm, mv and
// mkdir with a CallID (masters.go), the same on every try of it. The
// master writes the id into the change's record, so every master that
// applies the record (the leader as it commits it, followers through Raft,
// a restart through its log) remembers what the call did. A try that
// arrives after the call was made gets the first answer instead of "no
// such file", as HDFS's NameNode retry cache does.
//
// Entries live for retryTTL, measured in the records' own times so that
// every master forgets the same ones, and at most retryMax of them. They
// are part of the image (and so of Raft's snapshots): a master started or
// restored from one, or restarted from its last snapshot after it was
// deposed, answers the calls made before it too.
package main

import "time"

// CallID names one call of a client: Client is random per client process,
// Seq counts its calls. The zero CallID names none.
type CallID struct {
	Client, Seq uint64
}

// namedCall is the arguments of a change that may carry a CallID.
type namedCall interface{ callID() *CallID }

func (a *DeleteArgs) callID() *CallID { return &a.Call }
func (a *RenameArgs) callID() *CallID { return &a.Call }
func (a *MkdirArgs) callID() *CallID  { return &a.Call }

// Create and AddBlock name their calls too; the leader keeps their answers
// with the put (leases.go), in its memory only, as the put itself: after a
// failover the put's lease is gone anyway (ErrLease).
func (a *CreateArgs) callID() *CallID   { return &a.Call }
func (a *AddBlockArgs) callID() *CallID { return &a.Call }

const (
	retryTTL = 2 * time.Minute // far longer than a failover (failoverWait)
	retryMax = 100_000
)

// retryEntry is what a call did.
type retryEntry struct {
	op   editOp
	path string
	n    int    // files changed
	to   string // opRename: where it moved
	// seq is the change's seq in this master's journal, if it was made
	// here (it may not be durable yet); 0 if it came committed (a
	// follower's, a replay's).
	seq  uint64
	time int64 // the record's Time
}

// retryCache holds the calls made lately. The master's mu guards it.
type retryCache struct {
	entries map[CallID]*retryEntry
	order   []CallID // oldest first
}

func newRetryCache() *retryCache { return &retryCache{entries: make(map[CallID]*retryEntry)} }

// add records e, applied with n files changed, if it names a call.
func (c *retryCache) add(e *edit, n int) *retryEntry {
	if e.Call == (CallID{}) {
		return nil
	}
	return c.put(e.Call, &retryEntry{op: e.Op, path: e.Path, n: n, to: e.Dst, time: e.Time})
}

// put adds the entry r of call id, and forgets the entries too old or too
// many.
func (c *retryCache) put(id CallID, r *retryEntry) *retryEntry {
	if old, ok := c.entries[id]; ok { // made again after it was forgotten
		*old = *r
		return old
	}
	c.entries[id] = r
	c.order = append(c.order, id)
	for len(c.order) > 0 {
		old := c.entries[c.order[0]]
		if len(c.entries) <= retryMax && old.time >= r.time-int64(retryTTL) {
			break
		}
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	return r
}

// image returns the entries, oldest first, as the image keeps them.
func (c *retryCache) image() []imageRetry {
	var out []imageRetry
	for _, id := range c.order {
		r := c.entries[id]
		out = append(out, imageRetry{Call: id, Op: r.op, Path: r.path, To: r.to, N: r.n, Time: r.time})
	}
	return out
}

// load adds the entries of an image, committed all.
func (c *retryCache) load(rs []imageRetry) {
	for _, r := range rs {
		c.put(r.Call, &retryEntry{op: r.Op, path: r.Path, to: r.To, n: r.N, time: r.Time})
	}
}

// lookup returns what the call id did, if it was a change op of p.
func (c *retryCache) lookup(id CallID, op editOp, p string) (retryEntry, bool) {
	if id == (CallID{}) {
		return retryEntry{}, false
	}
	r, ok := c.entries[id]
	if !ok || r.op != op || r.path != p {
		return retryEntry{}, false
	}
	return *r, true
}

// durable waits until the change of a call made already is durable
// (committed), as the first call did before it answered.
func (r retryEntry) durable(j journal) error {
	if r.seq == 0 {
		return nil
	}
	return j.sync(r.seq)
}

// noteSeq records the journal seq of e, just committed, in its entry.
func (c *retryCache) noteSeq(e *edit, seq uint64) {
	if e.Call == (CallID{}) {
		return
	}
	if r := c.entries[e.Call]; r != nil {
		r.seq = seq
	}
}
