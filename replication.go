// replication.go is how the master keeps every block at its replication.
//
// Each housekeeping tick counts the good replicas on live minions of the
// blocks whose replicas changed since the last tick (of every block when a
// minion died, came back or began to drain). A block with fewer than its file's replication is copied by
// another live minion, fewest replicas first, at most MaxCopiesPerMinion
// copies landing on one minion at a time: the master hands the target a
// CopyCommand with its next heartbeat, the target pulls the block from a
// source replica, checking every checksum, and reports it with
// BlockReceived. A block with more replicas than asked loses the replicas
// on its most loaded minions. A replica that fails its checksums (reported by
// a reader or a minion's scrubber) is dropped and deleted, unless it is the
// last one. A decommissioning minion takes no new blocks and its replicas do
// not count, so its blocks are copied elsewhere while it still serves them.
//
// After a restart the master is in safe mode until the minions have
// reported nearly every block (or SafeModeTimeout passes): it neither
// re-replicates nor deletes, so a restart does not set off a storm of
// copies of blocks whose minions simply have not reported yet.
package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// A copy may take copyTimeoutBase plus its block's size at copyMinRate
// before the master asks another minion: a copy stuck behind a source or
// target that stopped answering without closing its connections (paused,
// or cut off by a partition) is rescheduled within a minute for a block of
// 64 MiB, as HDFS reschedules pending reconstruction, rather than holding
// the block under-replicated for minutes.
const (
	copyTimeoutBase = 20 * time.Second
	copyMinRate     = 4 << 20 // bytes a second
)

// copyTimeout is how long a copy of size bytes may take.
func copyTimeout(size int64) time.Duration {
	return copyTimeoutBase + time.Duration(size)*time.Second/copyMinRate
}

// safeModeThreshold is the fraction of blocks that must be reported before
// a restarted master leaves safe mode.
const safeModeThreshold = 0.999

// replication is the master's healing: safe mode, the blocks to look at,
// the copies in flight and the corrupt replicas kept, and the decisions
// over them. Its state is soft, rebuilt from block reports after a
// restart. It reads the namespace's blocks and the registry and changes
// the replica sets of blocks (the block map); the master's mu guards all
// of them, so every method is called with mu held.
type replication struct {
	ns      *namespace
	reg     *registry
	leases  *leases
	deletes *deleteQueue
	logger  *slog.Logger
	// maxCopies bounds the copies in flight to one minion.
	maxCopies int
	// safeModeTimeout is the longest wait for block reports after a start.
	safeModeTimeout time.Duration
	// holdUntil is the seq of the change of the namespace being applied
	// by the live path, 0 if none: the deletes of the blocks it removes
	// are held until its record is on disk (see deleteQueue).
	holdUntil uint64

	copying  map[uint64][]pendingCopy // block -> copies asked for
	copyCmds map[string][]CopyCommand // minion id -> copies to hand it
	// recheck holds the blocks whose replication the next tick looks
	// at; rescan makes it look at every block, and lastRescan is when
	// it last did (see replicate).
	recheck    map[uint64]struct{}
	rescan     bool
	lastRescan time.Time
	// stuck holds the under-replicated blocks that no minion could take
	// a copy of at the last tick, with why; fsck shows it.
	stuck map[uint64]string
	// grown holds, for the blocks whose replicas grew in the last
	// reportGrace, when they did (Unix nanoseconds): a block report may
	// leave those replicas out (see reconcile). expireGrown prunes it.
	grown map[uint64]int64

	safeMode  bool
	safeUntil time.Time
	reported  map[uint64]bool // blocks reported since the restart, in safe mode
	// safeOrphans are reported blocks the master did not know in safe
	// mode, by minion id; they are deleted when safe mode ends.
	safeOrphans map[string][]uint64
	// corrupt lists, by block, replicas that failed their checksums and
	// are kept because no good replica is left. It is rare and small.
	corrupt map[uint64][]string
	// unconfirmed lists, by block, the replicas the master knows only
	// from a minion's block report: not placed by it in this process
	// (a write or a copy it asked for), and not yet the checked source
	// of a copy. Trimming takes them first, so a report that lies cannot
	// make the master delete a replica it placed. Small: returning
	// minions' blocks, mostly.
	unconfirmed map[uint64][]minionSlot
	// verify holds, by minion id, blocks that a reader or another minion
	// found corrupt there, for the minion to check (a report from
	// anyone but the holder is not believed as such).
	verify map[string][]uint64
	// copied counts the copies done (a metric; nil in tests of the parts).
	copied prometheus.Counter
}

// maxVerify bounds the blocks waiting for a minion to check them.
const maxVerify = 1024

func newReplication(ns *namespace, reg *registry, l *leases, d *deleteQueue, logger *slog.Logger, maxCopies int, safeModeTimeout time.Duration) *replication {
	if safeModeTimeout <= 0 {
		safeModeTimeout = reg.deadAfter
	}
	return &replication{
		ns: ns, reg: reg, leases: l, deletes: d, logger: logger, maxCopies: maxCopies, safeModeTimeout: safeModeTimeout,
		copying:  make(map[uint64][]pendingCopy),
		copyCmds: make(map[string][]CopyCommand),
		recheck:  make(map[uint64]struct{}),
		rescan:   true,
		stuck:    make(map[uint64]string),
		grown:    make(map[uint64]int64),
		corrupt:  make(map[uint64][]string),

		unconfirmed: make(map[uint64][]minionSlot),
		verify:      make(map[string][]uint64),
	}
}

// adopt records a replica that mn's block report names and the master did
// not list: a replica, but an unconfirmed one.
func (r *replication) adopt(id uint64, b *blockEntry, mn *minionEntry, now time.Time) {
	r.addReplica(id, b, mn, now)
	r.unconfirmed[id] = append(r.unconfirmed[id], mn.slot)
}

// confirm marks mn's replica of block id as proven.
func (r *replication) confirm(id uint64, s minionSlot) {
	l := r.unconfirmed[id]
	if i := slices.Index(l, s); i >= 0 {
		if l = slices.Delete(l, i, i+1); len(l) == 0 {
			delete(r.unconfirmed, id)
		} else {
			r.unconfirmed[id] = l
		}
	}
}

func (r *replication) isUnconfirmed(id uint64, s minionSlot) bool {
	return slices.Contains(r.unconfirmed[id], s)
}

// askVerify queues block id for mn to check.
func (r *replication) askVerify(id uint64, mn *minionEntry) {
	l := r.verify[mn.id]
	if len(l) < maxVerify && !slices.Contains(l, id) {
		r.verify[mn.id] = append(l, id)
	}
}

// queueDelete asks the given minions to delete block id, at once or, while
// a change of the namespace is applied (holdUntil), once its record is on
// disk.
func (r *replication) queueDelete(id uint64, minions []string) {
	for _, mid := range minions {
		if r.holdUntil > 0 {
			r.deletes.hold(r.holdUntil, mid, id)
		} else {
			r.deletes.queue(mid, id)
		}
	}
}

// ---- what the namespace's changes mean for the block map (nsHooks) ----

func (r *replication) replicaSetOf(ids []string) replicaSet { return r.reg.slotsOf(ids) }

// blockAdded counts a new block's replicas on their minions and has the
// next tick look at it if its pipeline lost minions, or one is dead or
// draining now. Not while a look at every block is due anyway (at start,
// where it would cost a count per block of the image).
func (r *replication) blockAdded(id uint64, b *blockEntry) {
	for _, s := range b.replicas.list() {
		mn := r.reg.at(s)
		mn.load += b.size
		mn.replicas++
	}
	if !r.rescan && r.liveCount(b, time.Now()) < int(b.repl) {
		r.recheck[id] = struct{}{}
	}
}

// blockRemoved deletes the replicas of a block that left the namespace,
// corrupt ones included, and forgets what replication knew of it.
func (r *replication) blockRemoved(id uint64, b *blockEntry) {
	for _, s := range b.replicas.list() {
		mn := r.reg.at(s)
		r.queueDelete(id, []string{mn.id})
		mn.load -= b.size
		mn.replicas--
	}
	r.queueDelete(id, r.corrupt[id])
	r.forget(id)
}

func (r *replication) replicationSet(id uint64) { r.recheck[id] = struct{}{} }

// forget drops what replication knows of block id, whose file is gone.
// Copies in flight end by themselves (their target's report finds no block).
func (r *replication) forget(id uint64) {
	delete(r.corrupt, id)
	delete(r.unconfirmed, id)
	delete(r.grown, id)
	delete(r.stuck, id)
}

// grewLately reports whether the replicas of block id grew in the last
// reportGrace.
func (r *replication) grewLately(id uint64, now time.Time) bool {
	t, ok := r.grown[id]
	return ok && now.Sub(time.Unix(0, t)) <= reportGrace
}

// expireGrown forgets the growths of replicas older than reportGrace.
func (r *replication) expireGrown(now time.Time) {
	for id := range r.grown {
		if !r.grewLately(id, now) {
			delete(r.grown, id)
		}
	}
}

// pendingCopy is a copy of a block asked of a minion.
type pendingCopy struct {
	target   string // minion id
	deadline time.Time
	size     int64    // reserved on the target until the copy ends
	sources  []string // minion addresses it may read from
}

// enterSafeMode starts the wait for block reports.
func (r *replication) enterSafeMode() {
	r.safeMode = true
	r.safeUntil = time.Now().Add(r.safeModeTimeout)
	r.reported = make(map[uint64]bool)
	r.safeOrphans = make(map[string][]uint64)
}

// checkSafeMode leaves safe mode once enough blocks were reported or the
// timeout passed.
func (r *replication) checkSafeMode(now time.Time) {
	if !r.safeMode {
		return
	}
	n, total := len(r.reported), len(r.ns.blocks)
	if float64(n) < safeModeThreshold*float64(total) && now.Before(r.safeUntil) {
		return
	}
	r.safeMode = false
	r.reported = nil
	r.rescan = true // every block, now that the reports are in
	pending := r.leases.pendingBlocks()
	orphans := 0
	for mid, ids := range r.safeOrphans {
		for _, id := range ids {
			if r.ns.blocks[id] == nil && !pending[id] {
				r.queueDelete(id, []string{mid})
				orphans++
			}
		}
	}
	r.safeOrphans = nil
	r.logger.Info("left safe mode", "reported_blocks", n, "blocks", total, "orphans_to_delete", orphans)
}

// liveCount is the number of b's replicas that count towards its
// replication: good, on live minions that are not being drained.
func (r *replication) liveCount(b *blockEntry, now time.Time) int {
	n := 0
	for _, s := range b.replicas.list() {
		if mn := r.reg.at(s); r.reg.usable(mn, now) && !mn.decommissioning {
			n++
		}
	}
	return n
}

// rescanInterval is how often tick looks at every block even when
// nothing it watches changed: a safety net under the recheck set, as a
// minion's full block report is under its incremental ones.
const rescanInterval = 10 * time.Minute

// replicaState is what decides whether a minion's replicas count towards
// their blocks' replication, and which of them trim may drop.
type replicaState struct{ usable, decommissioning, registered bool }

// tick asks for copies of under-replicated blocks and trims
// over-replicated ones. It does nothing in safe mode.
//
// It looks only at the blocks in recheck: those whose replicas changed
// (a block report, a copy made, failed or late, a corrupt replica, a put
// whose pipeline lost minions) and those it could not settle last time.
// A change of any minion's state (dead, back, drained, registered) makes
// it look at every block, as does leaving safe mode and, as a safety net,
// rescanInterval. So a busy master with a million blocks does not spend
// its lock on a full scan every heartbeat.
func (r *replication) tick(now time.Time) {
	r.checkSafeMode(now)
	if r.safeMode {
		return
	}
	r.expireCopies(now)
	for _, mn := range r.reg.bySlot[1:] {
		st := replicaState{r.reg.usable(mn, now), mn.decommissioning, mn.registered}
		if st != mn.counted {
			mn.counted = st
			r.rescan = true
		}
	}
	if now.Sub(r.lastRescan) >= rescanInterval {
		r.rescan = true
	}

	type need struct {
		id   uint64
		b    *blockEntry
		live int
		want int
	}
	var needs []need
	// settle trims block id, or adds it to needs, and reports whether
	// the tick may forget it: it is as it should be, or waits for copies
	// whose end (endCopy) puts it back in recheck.
	settle := func(id uint64, b *blockEntry) bool {
		live, repl := r.liveCount(b, now), int(b.repl)
		inflight := len(r.copying[id])
		switch {
		case live > repl && inflight == 0:
			return r.trim(id, b, now) // not yet if a replica that counts is not registered
		case live+inflight < repl:
			needs = append(needs, need{id, b, live, repl - live - inflight})
			return false
		}
		return true
	}
	look := func(id uint64, b *blockEntry) {
		if b != nil && !settle(id, b) {
			r.recheck[id] = struct{}{}
		} else {
			delete(r.recheck, id) // settled, or its file is gone
			if len(r.stuck) > 0 {
				delete(r.stuck, id)
			}
		}
	}
	if r.rescan {
		r.rescan, r.lastRescan = false, now
		clear(r.recheck)
		for id, b := range r.ns.blocks {
			look(id, b)
		}
	} else {
		for id := range r.recheck {
			look(id, r.ns.blocks[id])
		}
	}
	// Fewest live replicas first: a block with one copy left is in more
	// danger than one with two.
	slices.SortFunc(needs, func(a, b need) int { return cmp.Or(cmp.Compare(a.live, b.live), cmp.Compare(a.id, b.id)) })
	for _, n := range needs {
		var sources []string
		for _, s := range n.b.replicas.list() {
			if mn := r.reg.at(s); r.reg.usable(mn, now) {
				sources = append(sources, mn.addr)
			}
		}
		if len(sources) == 0 {
			delete(r.stuck, n.id)
			continue // missing: nothing to copy from; fsck reports it
		}
		targets := r.reg.place(n.want, n.b.size, func(mn *minionEntry) bool {
			return mn.copies >= r.maxCopies || n.b.replicas.has(mn.slot) ||
				slices.Contains(r.corrupt[n.id], mn.id) || r.isCopying(n.id, mn.id) ||
				r.deletes.has(mn.id, n.id) // a copy there is yet to go
		})
		for i, t := range targets {
			// Spread the reads of the copies over the sources.
			k := int((n.id + uint64(i)) % uint64(len(sources)))
			src := append(slices.Clone(sources[k:]), sources[:k]...)
			r.copyCmds[t.id] = append(r.copyCmds[t.id], CopyCommand{BlockID: n.id, Size: n.b.size, CRC: n.b.crc, Sources: src})
			r.copying[n.id] = append(r.copying[n.id], pendingCopy{target: t.id, deadline: now.Add(copyTimeout(n.b.size)), size: n.b.size, sources: src})
			t.copies++
			// place added a full reservation of the block's size to t.load;
			// blockReceived turns it into a replica or gives it back.
		}
		switch {
		case len(targets) == n.want:
			delete(r.recheck, n.id) // settled until the copies end
			delete(r.stuck, n.id)
		case len(targets) == 0 && len(r.copying[n.id]) == 0:
			// Nothing in flight and nowhere to copy to: say so once,
			// and show it in fsck, rather than wait in silence.
			if _, known := r.stuck[n.id]; !known {
				why := r.noTargetReason(n.b, now)
				r.stuck[n.id] = why
				r.logger.Warn("block under-replicated with no minion to copy it to", "block", blockName(n.id),
					"live", n.live, "want", int(n.b.repl), "why", why)
			}
		}
	}
}

// noTargetReason says why no live minion can take a copy of b.
func (r *replication) noTargetReason(b *blockEntry, now time.Time) string {
	var live, holding, full, busy int
	for _, mn := range r.reg.minions {
		if !r.reg.usable(mn, now) || mn.decommissioning {
			continue
		}
		live++
		switch {
		case b.replicas.has(mn.slot):
			holding++
		case mn.registered && mn.free < b.size:
			full++
		case mn.copies >= r.maxCopies:
			busy++
		}
	}
	return fmt.Sprintf("no minion can take a copy: of %d live, %d hold it, %d are full, %d are busy with copies, %d wait for a delete or hold a corrupt copy of it",
		live, holding, full, busy, live-holding-full-busy)
}

// isCopying reports whether a copy of block id to minion mid is in flight.
func (r *replication) isCopying(id uint64, mid string) bool {
	for _, pc := range r.copying[id] {
		if pc.target == mid {
			return true
		}
	}
	return false
}

// expireCopies forgets copies that took too long or whose target died, so
// they are asked again.
func (r *replication) expireCopies(now time.Time) {
	type key struct {
		id  uint64
		mid string
	}
	var late []key
	for id, pcs := range r.copying {
		for _, pc := range pcs {
			if !r.reg.usable(r.reg.minions[pc.target], now) || now.After(pc.deadline) || !r.anyUsable(pc.sources, now) {
				late = append(late, key{id, pc.target})
			}
		}
	}
	for mid := range r.copyCmds {
		if !r.reg.usable(r.reg.minions[mid], now) {
			delete(r.copyCmds, mid) // never collected
		}
	}
	for _, k := range late {
		r.endCopy(k.id, k.mid)
	}
}

// anyUsable reports whether any of the minions at addrs can serve reads:
// a copy whose sources all died is asked again, from the replicas left.
func (r *replication) anyUsable(addrs []string, now time.Time) bool {
	return slices.ContainsFunc(addrs, func(a string) bool { return r.reg.usable(r.reg.byAddr(a), now) })
}

// endCopy forgets the copy of block id to minion mid and gives back its
// reservation.
func (r *replication) endCopy(id uint64, mid string) bool {
	pcs := r.copying[id]
	i := slices.IndexFunc(pcs, func(pc pendingCopy) bool { return pc.target == mid })
	if i < 0 {
		return false
	}
	size := pcs[i].size // its file may be gone: the reservation still is not
	if len(pcs) == 1 {
		delete(r.copying, id)
	} else {
		r.copying[id] = slices.Delete(pcs, i, i+1)
	}
	r.recheck[id] = struct{}{} // made, failed or late: look again
	if mn := r.reg.minions[mid]; mn != nil {
		mn.copies--
		mn.load -= size
	}
	return true
}

// trim drops extra good replicas of block id from the most loaded live
// minions and deletes them. It counts only replicas that their minions
// reported to this master process: after a restart, the replica lists from
// the image may name minions that lost the block or never come back, and
// a replica that exists only on paper must never make a real one look
// extra. It reports whether the block is down to its replication among
// those replicas.
func (r *replication) trim(id uint64, b *blockEntry, now time.Time) bool {
	var live []*minionEntry
	for _, s := range b.replicas.list() {
		if mn := r.reg.at(s); r.reg.usable(mn, now) && !mn.decommissioning && mn.registered {
			live = append(live, mn)
		}
	}
	if len(live) <= int(b.repl) {
		return r.liveCount(b, now) <= int(b.repl)
	}
	// Unconfirmed replicas go first: a replica the master placed is
	// never trimmed for one it only has a minion's word for.
	unconfirmed := func(mn *minionEntry) int {
		if r.isUnconfirmed(id, mn.slot) {
			return 0
		}
		return 1
	}
	slices.SortFunc(live, func(a, b *minionEntry) int {
		return cmp.Or(cmp.Compare(unconfirmed(a), unconfirmed(b)), cmp.Compare(b.load, a.load), strings.Compare(a.id, b.id))
	})
	for _, mn := range live[:len(live)-int(b.repl)] {
		r.dropReplica(id, b, mn)
		r.queueDelete(id, []string{mn.id})
	}
	return r.liveCount(b, now) <= int(b.repl)
}

// blockReceived records a copy made at the master's request.
func (r *replication) received(a *BlockReceivedArgs) (*BlockReceivedReply, error) {
	mn := r.reg.minions[a.MinionID]
	if mn == nil {
		return nil, fmt.Errorf("%w: unknown minion %s", ErrBadArg, a.MinionID)
	}
	if a.peer != nil && a.peer != mn.conn {
		return nil, fmt.Errorf("%w: minion %s reports only on the connection it registered on", ErrBadArg, a.MinionID)
	}
	r.endCopy(a.BlockID, mn.id)
	r.deletes.forget(mn.id, a.BlockID) // a new copy, not the one deleted before
	if a.Failed {
		return &BlockReceivedReply{}, nil
	}
	b := r.ns.blocks[a.BlockID]
	if b == nil || b.size != a.Size {
		return &BlockReceivedReply{Delete: true}, nil // its file went meanwhile
	}
	if !b.replicas.has(mn.slot) {
		r.addReplica(a.BlockID, b, mn, time.Now())
	}
	r.confirm(a.BlockID, mn.slot)
	if r.copied != nil {
		r.copied.Inc()
	}
	// The source served the whole block, checked against its CRC.
	if src := r.reg.byAddr(a.Source); src != nil && b.replicas.has(src.slot) {
		r.confirm(a.BlockID, src.slot)
	}
	r.dropCorrupt(a.BlockID)
	return &BlockReceivedReply{}, nil
}

// reportBad drops a replica that failed its checksums. The last replica of
// a block is kept, marked corrupt: some of its bytes may still be wanted.
// Only the holder's own report (its scrubber's, on the connection it
// registered on) is taken as it is; a reader's or another minion's asks the
// holder to check the block, so that nobody can make the master drop good
// replicas by saying they are bad.
func (r *replication) reportBad(a *ReportBadArgs) {
	b := r.ns.blocks[a.BlockID]
	if b == nil {
		return
	}
	var mn *minionEntry
	for _, x := range r.reg.minions {
		if x.addr == a.Addr && b.replicas.has(x.slot) {
			mn = x
		}
	}
	if mn == nil {
		return
	}
	if a.peer != nil && a.peer != mn.conn {
		r.logger.Info("replica reported corrupt; asking its minion to check it", "block", blockName(a.BlockID), "minion", a.Addr, "by", a.peer.addr, "reason", a.Reason)
		r.askVerify(a.BlockID, mn)
		return
	}
	r.logger.Warn("corrupt replica", "block", blockName(a.BlockID), "minion", a.Addr, "reason", a.Reason)
	r.dropReplica(a.BlockID, b, mn)
	// Delete it only if a good replica is on a minion that can serve it
	// now; else keep it: some of its bytes may be all that is left.
	now := time.Now()
	// Only a replica whose minion reported it to this master process
	// counts: after a restart the lists from disk are hints.
	if slices.ContainsFunc(b.replicas.list(), func(s minionSlot) bool { mn := r.reg.at(s); return r.reg.usable(mn, now) && mn.registered }) {
		r.queueDelete(a.BlockID, []string{mn.id})
	} else {
		r.corrupt[a.BlockID] = append(r.corrupt[a.BlockID], mn.id)
	}
}

// dropCorrupt deletes the corrupt replicas kept of block id, now that it has
// a good one again.
func (r *replication) dropCorrupt(id uint64) {
	if bad := r.corrupt[id]; len(bad) > 0 {
		r.queueDelete(id, bad)
		delete(r.corrupt, id)
	}
}

// ---- the master's RPCs of healing ----

// replicate expires old replica growths and runs a replication tick.
func (m *Master) replicate(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.repl.expireGrown(now)
	m.repl.tick(now)
}

// blockReceived records a copy made at the master's request.
func (m *Master) blockReceived(a *BlockReceivedArgs) (*BlockReceivedReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.repl.received(a)
}

// reportBad drops a replica that failed its checksums.
func (m *Master) reportBad(a *ReportBadArgs) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.repl.reportBad(a)
}

// report describes every minion and the cluster.
func (m *Master) report() *ReportReply {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.repl.report(m.clusterID)
}

// fsck reports the health of every block of the files at or below p.
func (m *Master) fsck(p string) (*FsckReply, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.repl.fsck(p)
}

// decommission starts draining the minion at addr, and logs it so that a
// restart goes on with the drain; the caller syncs the log up to seq. The
// reply warns when too few other minions are live to hold every block it has.
func (m *Master) decommission(addr string) (_ *DecommissionReply, seq uint64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var target *minionEntry
	for _, mn := range m.reg.minions {
		if mn.addr == addr {
			target = mn
		}
	}
	if target == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrNoSuchMinion, addr)
	}
	if !target.decommissioning {
		im := imageMinion{ID: target.id, Addr: target.addr, Decommissioning: true}
		if seq, err = m.logEdit(&edit{Op: opMinion, V: editVersion, Minion: im}); err != nil {
			return nil, 0, err
		}
		target.decommissioning = true
		m.Logger.Info("decommissioning minion", "addr", addr)
	}
	now := time.Now()
	others := 0
	for _, mn := range m.reg.minions {
		if m.reg.usable(mn, now) && !mn.decommissioning {
			others++
		}
	}
	most := 0
	for _, b := range m.ns.blocks {
		if b.replicas.has(target.slot) {
			most = max(most, int(b.repl))
		}
	}
	reply := &DecommissionReply{}
	if others < most {
		reply.Warning = fmt.Sprintf("only %d other live minions for blocks of replication %d: the drain finishes when more minions join", others, most)
	}
	return reply, seq, nil
}

// report describes every minion and the cluster.
func (r *replication) report(clusterID string) *ReportReply {
	now := time.Now()
	// A decommissioning minion is done when every block it holds has
	// its full replication elsewhere.
	draining := make(map[string]bool)
	for _, b := range r.ns.blocks {
		short := r.liveCount(b, now) < int(b.repl)
		for _, s := range b.replicas.list() {
			if mn := r.reg.at(s); mn.decommissioning && short {
				draining[mn.id] = true
			}
		}
	}
	rep := &ReportReply{ClusterID: clusterID, SafeMode: r.safeMode, Files: r.ns.files, Blocks: len(r.ns.blocks)}
	for _, mn := range r.reg.minions {
		state := stateLive
		switch {
		case !r.reg.alive(mn, now) || mn.addr == "":
			state = stateDead
		case mn.decommissioning && draining[mn.id]:
			state = stateDecommissioning
		case mn.decommissioning:
			state = stateDecommissioned
		}
		rep.Minions = append(rep.Minions, MinionInfo{ID: mn.id, Addr: mn.addr, State: state, Capacity: mn.capacity,
			Free: mn.free, Used: mn.used, Blocks: mn.numBlocks, LastHeartbeat: now.Sub(mn.lastSeen), Disk: mn.disk})
	}
	slices.SortFunc(rep.Minions, func(a, b MinionInfo) int { return cmp.Or(strings.Compare(a.Addr, b.Addr), strings.Compare(a.ID, b.ID)) })
	return rep
}

// fsck reports the health of every block of the files at or below p.
// blockStatus is a block's health from its replicas on usable minions
// (available), those of them not being drained (live), its known corrupt
// replicas and its file's replication.
func blockStatus(available, live, corrupt, repl int) string {
	switch {
	case available == 0 && corrupt > 0:
		return statusCorrupt
	case available == 0:
		return statusMissing
	case live < repl:
		return statusUnderReplicated
	}
	return statusHealthy
}

// health counts the blocks of every status, as fsck of / would.
func (r *replication) health(now time.Time) map[string]int {
	counts := map[string]int{statusHealthy: 0, statusUnderReplicated: 0, statusCorrupt: 0, statusMissing: 0}
	for id, b := range r.ns.blocks {
		available, live := 0, 0
		for _, s := range b.replicas.list() {
			if mn := r.reg.at(s); r.reg.usable(mn, now) {
				available++
				if !mn.decommissioning {
					live++
				}
			}
		}
		counts[blockStatus(available, live, len(r.corrupt[id]), int(b.repl))]++
	}
	return counts
}

func (r *replication) fsck(p string) (*FsckReply, error) {
	if !r.ns.exists(p) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	paths := r.ns.filesAt(p)
	slices.Sort(paths)
	now := time.Now()
	rep := &FsckReply{SafeMode: r.safeMode, Files: len(paths), Blocks: []FsckBlock{}}
	for _, fp := range paths {
		f := r.ns.file(fp)
		for i, id := range f.blocks.list() {
			b := r.ns.blocks[id]
			fb := FsckBlock{Path: fp, Index: i, ID: id, Size: b.size, Expected: int(b.repl), Replicas: []string{}}
			available := 0
			for _, s := range b.replicas.list() {
				if mn := r.reg.at(s); r.reg.usable(mn, now) {
					fb.Replicas = append(fb.Replicas, mn.addr)
					available++
					if !mn.decommissioning {
						fb.Live++
					}
				}
			}
			for _, mid := range r.corrupt[id] {
				if mn := r.reg.minions[mid]; mn != nil {
					fb.Corrupt = append(fb.Corrupt, mn.addr)
				}
			}
			if fb.Live < int(b.repl) {
				fb.Note = r.stuck[id]
			}
			fb.Status = blockStatus(available, fb.Live, len(fb.Corrupt), int(b.repl))
			rep.Blocks = append(rep.Blocks, fb)
		}
	}
	return rep, nil
}
