// leases.go is the master's side of the write path: puts in progress (open
// files, as HDFS's leases), the pipelines their blocks were given, lease
// renewal and expiry, and the RPCs of a put: Create, AddBlock, Renew,
// Complete, Abandon.
//
// A put holds a lease on its path from Create to Complete or Abandon; a
// second put of the same path is refused (ErrBusy) meanwhile, and a put
// whose client goes quiet for LeaseTimeout is abandoned and its blocks
// deleted. The file enters the namespace only at Complete, through one
// journal record (opPut), and the RPC answers once that is on disk.
package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// leases are the puts in progress. It is safe for concurrent use; its lock
// is a leaf, taken after the master's mu when both are held.
type leases struct {
	// mu guards the fields below and the writeEntries in them.
	mu      sync.Mutex
	writes  map[uint64]*writeEntry // by handle
	writing map[string]uint64      // path -> handle of its put in progress
	byCall  map[CallID]uint64      // handle of the put a named Create opened
}

type writeEntry struct {
	path        string
	replication int
	blockSize   int64
	force       bool
	mode        uint32
	blocks      []allocation
	lastUsed    time.Time
	// A client that sends a Create or an AddBlock again (with several
	// masters, after its connection broke: masters.go) gets the answer
	// the first had. The leader alone keeps these, as it keeps the put.
	call    CallID       // of the Create
	created *CreateReply // its answer
	addCall CallID       // of the last AddBlock
	added   *AddBlockReply
}

type allocation struct {
	id       uint64
	pipeline []string // minion ids
}

func newLeases() *leases {
	return &leases{writes: make(map[uint64]*writeEntry), writing: make(map[string]uint64), byCall: make(map[CallID]uint64)}
}

// open takes the lease of w's path and returns its handle, or ErrBusy.
func (l *leases) open(w *writeEntry) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.writing[w.path]; ok {
		return 0, fmt.Errorf("%w: %s", ErrBusy, w.path)
	}
	h := randomID()
	for l.writes[h] != nil || h == 0 {
		h = randomID()
	}
	l.writes[h] = w
	l.writing[w.path] = h
	if w.call != (CallID{}) {
		l.byCall[w.call] = h
	}
	return h, nil
}

// created returns the answer of the named Create call, if its put is open;
// the put is renewed.
func (l *leases) created(call CallID) *CreateReply {
	if call == (CallID{}) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes[l.byCall[call]]
	if w == nil || w.created == nil {
		return nil
	}
	w.lastUsed = time.Now()
	reply := *w.created
	return &reply
}

// setCreated records the answer of w's Create.
func (l *leases) setCreated(w *writeEntry, reply *CreateReply) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.call != (CallID{}) {
		w.created = reply
	}
}

// get returns the put of handle h, renewed, or ErrLease.
func (l *leases) get(h uint64) (*writeEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes[h]
	if w == nil {
		return nil, ErrLease
	}
	w.lastUsed = time.Now()
	return w, nil
}

// addBlock records a block allocated to the put w.
func (l *leases) addBlock(w *writeEntry, al allocation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.blocks = append(w.blocks, al)
}

// added returns the answer of w's last AddBlock if it was the call named
// call.
func (l *leases) added(w *writeEntry, call CallID) *AddBlockReply {
	if call == (CallID{}) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.addCall != call || w.added == nil {
		return nil
	}
	r := *w.added
	return &r
}

// setAdded records reply as the answer of w's AddBlock named call.
func (l *leases) setAdded(w *writeEntry, call CallID, reply *AddBlockReply) {
	if call == (CallID{}) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	w.addCall, w.added = call, reply
}

// close forgets the put of handle h and returns it, or nil if it is gone.
func (l *leases) close(h uint64) *writeEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writes[h]
	if w == nil {
		return nil
	}
	delete(l.writes, h)
	if l.writing[w.path] == h {
		delete(l.writing, w.path)
	}
	if w.call != (CallID{}) {
		delete(l.byCall, w.call)
	}
	return w
}

// expired returns the handles of the puts idle for longer than timeout.
func (l *leases) expired(now time.Time, timeout time.Duration) []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []uint64
	for h, w := range l.writes {
		if now.Sub(w.lastUsed) > timeout {
			out = append(out, h)
		}
	}
	return out
}

// pendingBlocks returns the blocks allocated to puts in progress.
func (l *leases) pendingBlocks() map[uint64]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[uint64]bool)
	for _, w := range l.writes {
		for _, a := range w.blocks {
			out[a.id] = true
		}
	}
	return out
}

// busy reports whether a put is writing p, or, with below, a path below p.
func (l *leases) busy(p string, below bool) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.writing[p]; ok {
		return p, true
	}
	if below {
		for wp := range l.writing {
			if len(wp) > len(p) && wp[:len(p)] == p && wp[len(p)] == '/' {
				return wp, true
			}
		}
	}
	return "", false
}

// paths returns the paths being written.
func (l *leases) paths() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.writing))
	for p := range l.writing {
		out = append(out, p)
	}
	return out
}

// ---- the RPCs of a put ----

func (m *Master) create(a *CreateArgs) (*CreateReply, error) {
	repl, bs := a.Replication, a.BlockSize
	if repl == 0 {
		repl = m.Replication
	}
	if bs == 0 {
		bs = m.BlockSize
	}
	if repl < 1 || repl > maxReplication {
		return nil, fmt.Errorf("%w: replication %d (want 1 to %d)", ErrBadArg, repl, maxReplication)
	}
	if err := validBlockSize(bs); err != nil {
		return nil, err
	}
	if err := checkPath(a.Path); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if reply := m.leases.created(a.Call); reply != nil {
		return reply, nil // sent again: the put it opened goes on
	}
	// The check Complete's record will pass, made now so that a put
	// that cannot complete fails before it sends a byte.
	if err := m.ns.checkCreate(a.Path, a.Force); err != nil {
		return nil, err
	}
	w := &writeEntry{path: a.Path, replication: repl, blockSize: bs, force: a.Force, mode: a.Mode, lastUsed: time.Now(), call: a.Call}
	h, err := m.leases.open(w)
	if err != nil {
		return nil, err
	}
	reply := &CreateReply{Handle: h, Replication: repl, BlockSize: bs, LeaseTimeout: m.LeaseTimeout}
	if a.FirstBlock {
		// Without room for a block now, the put may still be of an
		// empty file; AddBlock reports the error when a block is wanted.
		if first, err := m.allocate(w, nil); err == nil {
			reply.First = *first
		}
	}
	m.leases.setCreated(w, reply)
	return reply, nil
}

// renew keeps a put alive while its client is slow to produce a block.
func (m *Master) renew(h uint64) error {
	_, err := m.leases.get(h)
	return err
}

func (m *Master) addBlock(a *AddBlockArgs) (*AddBlockReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, err := m.leases.get(a.Handle)
	if err != nil {
		return nil, err
	}
	if reply := m.leases.added(w, a.Call); reply != nil {
		return reply, nil // sent again
	}
	reply, err := m.allocate(w, a.Exclude)
	if err == nil {
		m.leases.setAdded(w, a.Call, reply)
	}
	return reply, err
}

// allocate adds a block to the put w, on a pipeline that avoids the
// minions at the addresses in exclude. The caller holds mu.
func (m *Master) allocate(w *writeEntry, exclude []string) (*AddBlockReply, error) {
	chosen := m.reg.place(w.replication, w.blockSize, func(mn *minionEntry) bool { return slices.Contains(exclude, mn.addr) })
	if len(chosen) == 0 {
		return nil, fmt.Errorf("%w: %d minions known, none live with %d bytes free", ErrNoMinions, len(m.reg.minions), w.blockSize)
	}
	id := randomID()
	for m.ns.blocks[id] != nil || id == 0 {
		id = randomID()
	}
	reply := &AddBlockReply{BlockID: id}
	al := allocation{id: id}
	for _, mn := range chosen {
		reply.Pipeline = append(reply.Pipeline, mn.addr)
		al.pipeline = append(al.pipeline, mn.id)
	}
	reply.Token = issueToken(m.tokenKey, id, reply.Pipeline, time.Now())
	m.leases.addBlock(w, al)
	if len(chosen) < w.replication {
		reply.Warning = fmt.Sprintf("only %d live minions for replication %d", len(chosen), w.replication)
	}
	return reply, nil
}

// complete makes a put visible. It answers only once the new namespace
// entry is on disk.
func (m *Master) complete(a *CompleteArgs) error {
	m.mu.Lock()
	w := m.leases.close(a.Handle)
	if w == nil {
		m.mu.Unlock()
		return ErrLease
	}
	// w is the master's alone now: no other call finds it.
	if len(w.blocks) == 1 && len(a.Blocks) == 0 {
		// The block handed out with Create was not needed: an empty file.
		m.dropAllocations(w.blocks[:1], w.blockSize)
		w.blocks = nil
	}
	if err := m.checkComplete(w, a.Blocks); err != nil {
		m.dropAllocations(w.blocks, w.blockSize)
		m.mu.Unlock()
		return err
	}
	now := time.Now()
	e := &edit{Op: opPut, Path: w.path, Force: w.force, Time: now.UnixNano(),
		File: imageFile{Path: w.path, Replication: w.replication, BlockSize: w.blockSize, ModTime: now, Mode: w.mode}}
	var dropped []allocation // minions that fell out of a pipeline
	for i, b := range a.Blocks {
		al := w.blocks[i]
		replicas := m.pipelineIDs(al, b.Replicas)
		e.File.Blocks = append(e.File.Blocks, imageBlock{ID: b.ID, Size: b.Size, CRC: b.CRC, Replicas: replicas})
		if len(replicas) < len(al.pipeline) {
			gone := slices.DeleteFunc(slices.Clone(al.pipeline), func(mid string) bool { return slices.Contains(replicas, mid) })
			dropped = append(dropped, allocation{id: b.ID, pipeline: gone})
		}
	}
	// The allocations become replicas: their reservations of a full
	// block each go (the namespace's hook adds the real sizes).
	for _, al := range w.blocks {
		m.reg.addLoad(al.pipeline, -w.blockSize)
	}
	seq, _, err := m.commit(e)
	if err != nil {
		m.dropAllocations(w.blocks, 0)
		m.mu.Unlock()
		return err
	}
	for _, b := range e.File.Blocks {
		m.repl.grown[b.ID] = now.UnixNano()
	}
	for _, d := range dropped {
		m.repl.queueDelete(d.id, d.pipeline) // whatever part of the block they got
	}
	m.mu.Unlock()
	return m.syncThenRelease(seq)
}

// checkComplete checks a put's final block list against what was
// allocated. The namespace checks the path when it applies the record.
// The caller holds mu.
func (m *Master) checkComplete(w *writeEntry, blocks []BlockInfo) error {
	if len(blocks) != len(w.blocks) {
		return fmt.Errorf("%w: %d blocks committed, %d allocated", ErrBadArg, len(blocks), len(w.blocks))
	}
	for i, b := range blocks {
		if b.ID != w.blocks[i].id {
			return fmt.Errorf("%w: block %d is %s, allocated %s", ErrBadArg, i, blockName(b.ID), blockName(w.blocks[i].id))
		}
		if b.Size <= 0 || b.Size > w.blockSize || (i < len(blocks)-1 && b.Size != w.blockSize) {
			return fmt.Errorf("%w: block %d has %d bytes (block size %d)", ErrBadArg, i, b.Size, w.blockSize)
		}
		if b.Replicas != nil && len(m.pipelineIDs(w.blocks[i], b.Replicas)) != len(b.Replicas) {
			return fmt.Errorf("%w: block %d: replicas %v are not all of its pipeline", ErrBadArg, i, b.Replicas)
		}
	}
	return nil
}

// pipelineIDs maps the addresses of the minions that hold a block, as the
// client reports them after any pipeline recovery, to the ids of its
// allocated pipeline. No addresses means the whole pipeline. The caller
// holds mu.
func (m *Master) pipelineIDs(al allocation, addrs []string) []string {
	if addrs == nil {
		return slices.Clone(al.pipeline)
	}
	var ids []string
	for _, mid := range al.pipeline {
		if mn := m.reg.minions[mid]; mn != nil && slices.Contains(addrs, mn.addr) {
			ids = append(ids, mid)
		}
	}
	return ids
}

func (m *Master) abandon(a *AbandonArgs) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.leases.close(a.Handle); w != nil {
		m.dropAllocations(w.blocks, w.blockSize)
	}
}

// dropAllocations deletes the blocks of allocations, whatever part of them
// reached their pipelines, and gives back reserved bytes of each. The
// caller holds mu.
func (m *Master) dropAllocations(allocs []allocation, reserved int64) {
	for _, a := range allocs {
		m.repl.queueDelete(a.id, a.pipeline)
		m.reg.addLoad(a.pipeline, -reserved)
	}
}

// expireWrites abandons puts whose client went quiet for LeaseTimeout.
func (m *Master) expireWrites(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.leases.expired(now, m.LeaseTimeout) {
		if w := m.leases.close(h); w != nil {
			m.Logger.Warn("put abandoned: lease expired", "path", w.path)
			m.dropAllocations(w.blocks, w.blockSize)
		}
	}
}
