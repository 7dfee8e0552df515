// registry.go is the master's minion registry: which minions exist, their
// addresses, liveness, capacity and load, and block placement over them;
// and the RPCs minions make to stay in it (Register with a full block
// report, Heartbeat).
//
// Minions are known by id (from their dir's minion.json) and numbered by
// slot for the replica lists (replicas.go). What the registry keeps is
// soft state except each minion's id, address and drain, which are logged
// (opMinion) so that a restarted master can serve replica addresses before
// the minions report in.
//
// The registry is not safe for concurrent use: the master's mu guards it,
// since placement and replication read it alongside the block map.
package main

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// registry is the minions known to this master process.
type registry struct {
	// deadAfter is how long a minion may stay silent before it is dead.
	deadAfter time.Duration
	minions   map[string]*minionEntry // by minion id
	bySlot    []*minionEntry          // by slot; bySlot[0] is nil
}

type minionEntry struct {
	id, addr  string
	slot      minionSlot // its number in replica lists
	lastSeen  time.Time
	capacity  int64
	free      int64
	used      int64
	numBlocks int
	// load is the bytes the master has put on it: the replicas it maps
	// there plus a full block for each allocation of a put in progress
	// or copy asked for. Placement goes by load rather than the reported
	// use, which lags.
	load   int64
	copies int // copies asked of it and not yet done
	// replicas is the number of replicas the master lists on it (kept
	// by addReplica, dropReplica and the namespace's hooks): a block
	// report that names as many of them has left none out.
	replicas        int
	decommissioning bool // being drained: no new blocks, replicas not counted
	// http is the host:port of its status page, as it registered it.
	http string
	// disk names the file system of its dir, as it registered it.
	disk string
	// registered is set once it registered with this master process; a
	// minion known only from the image or log has sent no stats or block
	// report yet.
	registered bool
	// conn is the connection it registered on: its heartbeats and
	// reports count only from there (nil: registered from this process,
	// in tests).
	conn *peer
	// counted is how it stood at the last replication tick: a change
	// makes the tick look at every block (see replicate).
	counted replicaState
}

func newRegistry(deadAfter time.Duration) *registry {
	return &registry{deadAfter: deadAfter, minions: make(map[string]*minionEntry), bySlot: []*minionEntry{nil}}
}

// add registers a new minion under id and gives it a slot. The caller has
// checked that id is not known.
func (r *registry) add(id string) (*minionEntry, error) {
	if len(r.bySlot) > maxMinions {
		return nil, fmt.Errorf("%w: minion %s: this master knows %d minions, the most it can", ErrBadArg, id, maxMinions)
	}
	mn := &minionEntry{id: id, slot: minionSlot(len(r.bySlot))}
	r.bySlot = append(r.bySlot, mn)
	r.minions[id] = mn
	return mn, nil
}

// at returns the minion in slot s.
func (r *registry) at(s minionSlot) *minionEntry { return r.bySlot[s] }

// byAddr returns the minion at addr, or nil.
func (r *registry) byAddr(addr string) *minionEntry {
	for _, mn := range r.minions {
		if mn.addr == addr {
			return mn
		}
	}
	return nil
}

// slotsOf makes a replicaSet of the minions with the given ids. A replica
// on a minion not in the registry cannot be served or counted and is left
// out: the image only lists replicas on the minions it lists, and the edit
// log records a minion before any replica on it.
func (r *registry) slotsOf(ids []string) replicaSet {
	var s replicaSet
	for _, id := range ids {
		if mn := r.minions[id]; mn != nil {
			s.add(mn.slot)
		}
	}
	return s
}

// idsOf returns the ids of the minions that hold b's replicas.
func (r *registry) idsOf(b *blockEntry) []string {
	ids := make([]string, 0, b.replicas.len())
	for _, s := range b.replicas.list() {
		ids = append(ids, r.at(s).id)
	}
	return ids
}

// addLoad adds delta bytes to the load of each of minions.
func (r *registry) addLoad(minions []string, delta int64) {
	for _, mid := range minions {
		if mn := r.minions[mid]; mn != nil {
			mn.load += delta
		}
	}
}

// alive reports whether mn was heard from in the last deadAfter.
func (r *registry) alive(mn *minionEntry, now time.Time) bool {
	return now.Sub(mn.lastSeen) <= r.deadAfter
}

// usable reports whether mn can serve reads: known, addressed and alive.
func (r *registry) usable(mn *minionEntry, now time.Time) bool {
	return mn != nil && mn.addr != "" && r.alive(mn, now)
}

// apply records a minion known from the image or the log. Known minions
// get a full deadAfter to report in after a restart; until then their
// replicas are served as before.
func (r *registry) apply(im imageMinion) error {
	for _, other := range r.minions {
		if other.id != im.ID && other.addr == im.Addr {
			other.addr = "" // a new dir took over the address
		}
	}
	mn := r.minions[im.ID]
	if mn == nil {
		var err error
		if mn, err = r.add(im.ID); err != nil {
			return err
		}
		mn.lastSeen = time.Now()
	}
	mn.addr, mn.decommissioning = im.Addr, im.Decommissioning
	return nil
}

// updateStats records what a minion said of itself.
func (r *registry) updateStats(mn *minionEntry, capacity, free, used int64, numBlocks int) {
	mn.lastSeen = time.Now()
	mn.capacity, mn.free, mn.used, mn.numBlocks = capacity, free, used, numBlocks
}

// place picks up to n distinct live minions with room for a block of size
// bytes, least loaded first, skipping those for which skip is true, and
// adds the block to their loads.
func (r *registry) place(n int, size int64, skip func(*minionEntry) bool) []*minionEntry {
	now := time.Now()
	var live []*minionEntry
	for _, mn := range r.minions {
		// A minion not yet registered since a restart has sent no
		// stats: trust it with the block; it refuses if it is full.
		roomy := !mn.registered || mn.free >= size
		if r.alive(mn, now) && mn.addr != "" && !mn.decommissioning && roomy && (skip == nil || !skip(mn)) {
			live = append(live, mn)
		}
	}
	slices.SortFunc(live, func(a, b *minionEntry) int {
		return cmp.Or(cmp.Compare(a.load, b.load),
			cmp.Compare(a.numBlocks, b.numBlocks), strings.Compare(a.id, b.id))
	})
	var chosen []*minionEntry
	for _, mn := range live {
		if len(chosen) == n {
			break
		}
		if !slices.ContainsFunc(chosen, func(c *minionEntry) bool { return c.addr == mn.addr }) {
			chosen = append(chosen, mn)
			mn.load += size
		}
	}
	return chosen
}

// minions returns the registry as the image keeps it, in slot order.
func (r *registry) image() []imageMinion {
	out := make([]imageMinion, 0, len(r.bySlot)-1)
	for _, mn := range r.bySlot[1:] {
		out = append(out, imageMinion{ID: mn.id, Addr: mn.addr, Decommissioning: mn.decommissioning})
	}
	return out
}

// ---- the RPCs of minions ----

// claimable reports why a registration of id at addr, on connection p, may
// not take over a minion already registered: one identity (id or address)
// belongs to one live connection. A registration replaces another only
// once that one's connection has ended or it has gone silent (dead), as
// when a minion restarts.
func (r *registry) claimable(id, addr string, p *peer, now time.Time) error {
	for _, mn := range r.minions {
		if mn.id != id && mn.addr != addr {
			continue
		}
		if !mn.registered || mn.conn == nil || mn.conn == p || mn.conn.gone() || !r.alive(mn, now) {
			continue
		}
		what := "minion id " + id
		if mn.id != id {
			what = "address " + addr + " (minion " + mn.id + ")"
		}
		return fmt.Errorf("%w: %s is registered from %s, a live connection", ErrIdentityTaken, what, mn.conn.addr)
	}
	return nil
}

// register records a minion and reconciles its block report.
func (m *Master) register(a *RegisterArgs) (*RegisterReply, error) {
	if a.MinionID == "" {
		return nil, fmt.Errorf("%w: empty minion id", ErrBadArg)
	}
	if _, _, err := net.SplitHostPort(a.Addr); err != nil {
		return nil, fmt.Errorf("%w: minion address %q: %v", ErrBadArg, a.Addr, err)
	}
	if a.peer != nil && a.peer.role != roleMinion {
		return nil, fmt.Errorf("%w: a %v may not register as a minion", ErrBadArg, a.peer.role)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.ClusterID != "" && a.ClusterID != m.clusterID {
		return nil, fmt.Errorf("%w: minion dir is of %s, this master is %s", ErrWrongCluster, a.ClusterID, m.clusterID)
	}
	if err := m.reg.claimable(a.MinionID, a.Addr, a.peer, time.Now()); err != nil {
		return nil, err
	}
	for _, other := range m.reg.minions {
		if other.id != a.MinionID && other.addr == a.Addr {
			// Another dir now answers at this address: the old one
			// is gone, whatever its last heartbeat said.
			other.lastSeen = time.Time{}
			other.addr = ""
			m.repl.rescan = true // it may have come back and died again since the last tick
		}
	}
	mn := m.reg.minions[a.MinionID]
	if mn == nil {
		var err error
		if mn, err = m.reg.add(a.MinionID); err != nil {
			return nil, err
		}
	}
	if mn.addr != a.Addr { // a new minion, or a new address
		// Not synced here: the next put or delete takes it to disk.
		if _, err := m.logEdit(&edit{Op: opMinion, V: editVersion, Minion: imageMinion{ID: a.MinionID, Addr: a.Addr, Decommissioning: mn.decommissioning}}); err != nil {
			m.Logger.Error("log minion address", "err", err)
		}
	}
	mn.addr = a.Addr
	mn.http = a.HTTPAddr
	mn.disk = a.Disk
	mn.registered = true
	mn.conn = a.peer
	m.reg.updateStats(mn, a.Capacity, a.Free, a.Used, len(a.Blocks))

	reply := &RegisterReply{ClusterID: m.clusterID, Heartbeat: m.Heartbeat, TokenKey: m.tokenKey}
	reply.Delete = m.reconcile(mn, a.Blocks, time.Now())
	m.Logger.Info("minion registered", "id", mn.id, "addr", mn.addr, "blocks", len(a.Blocks), "deleting", len(reply.Delete))
	return reply, nil
}

// reportGrace is how new a replica may be and still be missing from a
// block report without being dropped: the report may have been taken on the
// minion before the block was finalized there.
const reportGrace = 2 * metaTimeout

// reconcile brings the master's view of mn's replicas in line with its full
// block report and returns the reported blocks mn should delete. The
// caller holds mu.
func (m *Master) reconcile(mn *minionEntry, report []BlockReport, now time.Time) []uint64 {
	m.deletes.release(m.journal.synced())
	pending := m.leases.pendingBlocks()
	// Blocks of files a change not yet on disk removed: a crash would
	// bring them back, so they are kept until their delete is queued.
	held, heldHere := m.deletes.heldBlocks(mn.id)
	// Deletes queued for mn, handed over or not: a trimmed or corrupt
	// replica must not be adopted again because it is reported. Each
	// is in del below, or gone from mn already.
	queued := m.deletes.drain(mn.id)
	var del []uint64
	listed := 0 // reported replicas the master lists on mn
	for _, r := range report {
		b := m.ns.blocks[r.ID]
		switch {
		case queued[r.ID]:
			del = append(del, r.ID)
		case b != nil && b.size == r.Size:
			if m.repl.safeMode {
				m.repl.reported[r.ID] = true
			}
			switch {
			case b.replicas.has(mn.slot):
				listed++
			case !slices.Contains(m.repl.corrupt[r.ID], mn.id):
				m.repl.adopt(r.ID, b, mn, now)
				listed++
				m.repl.dropCorrupt(r.ID)
			}
		case b == nil && pending[r.ID]:
			// Part of a put in progress: Complete will record it.
		case b == nil && held[r.ID] > 0:
			// Its delete is held back until the change is on disk;
			// a copy the change did not know of goes then too.
			if !heldHere[r.ID] {
				m.deletes.hold(held[r.ID], mn.id, r.ID)
				heldHere[r.ID] = true
			}
		case b == nil && m.repl.safeMode:
			// Perhaps an orphan; but until every minion has reported,
			// the master deletes nothing. It is queued when safe mode ends.
			m.repl.safeOrphans[mn.id] = append(m.repl.safeOrphans[mn.id], r.ID)
		default:
			// A block of a deleted file or a failed put, or a
			// replica of the wrong length: not a replica, however
			// new.
			if b != nil {
				m.repl.dropReplica(r.ID, b, mn)
			}
			del = append(del, r.ID)
		}
	}
	// Replicas the master lists on mn and the report left out: lost by
	// the minion, unless too new to be in it. Only then is every block
	// looked at. This counts on a report naming each block once, as a
	// minion's does (it lists its index, a map).
	if listed < mn.replicas {
		reported := make(map[uint64]bool, len(report))
		for _, r := range report {
			if b := m.ns.blocks[r.ID]; b != nil && b.size == r.Size && !queued[r.ID] {
				reported[r.ID] = true // not one of the wrong length
			}
		}
		for id, b := range m.ns.blocks {
			if b.replicas.has(mn.slot) && !reported[id] && !m.repl.grewLately(id, now) {
				m.repl.dropReplica(id, b, mn)
			}
		}
	}
	m.repl.checkSafeMode(now)
	return del
}

// maxDeletesPerHeartbeat bounds the block deletes handed to a minion at once.
const maxDeletesPerHeartbeat = 1000

// heartbeat records a minion's report and hands it the blocks to delete
// and to copy.
func (m *Master) heartbeat(a *HeartbeatArgs) *HeartbeatReply {
	m.mu.Lock()
	defer m.mu.Unlock()
	mn := m.reg.minions[a.MinionID]
	if mn == nil || mn.addr != a.Addr || !mn.registered || (a.peer != nil && a.peer != mn.conn) {
		// Unknown, moved, known only from before a restart, or on
		// another connection than its registration's: the master
		// wants its block report (blocks to delete may have been
		// queued in the old process's memory), on this connection.
		return &HeartbeatReply{Reregister: true}
	}
	m.reg.updateStats(mn, a.Capacity, a.Free, a.Used, a.NumBlocks)
	// The deletes it says it did are done: placement may pick it for
	// those blocks again.
	m.deletes.acked(mn.id, a.Deleted)
	m.deletes.release(m.journal.synced())
	reply := &HeartbeatReply{Copy: m.repl.copyCmds[mn.id], Verify: m.repl.verify[mn.id]}
	delete(m.repl.copyCmds, mn.id)
	delete(m.repl.verify, mn.id)
	// A bounded batch per heartbeat (as HDFS's invalidate limit), so that
	// a big rm -r does not hold up the minion's heartbeats.
	reply.Delete = m.deletes.take(mn.id, maxDeletesPerHeartbeat)
	return reply
}
