// ha.go runs the master's journal on Raft (github.com/hashicorp/raft, with
// raft-boltdb for its log): three or five masters, one leader, and every
// change committed by a majority of them before it is acknowledged.
//
// The seam is journal.go's. The leader does what a single master does: it
// checks and applies an edit under the master's lock, appends it to the
// journal, and answers once the journal says it is durable; here, durable
// means committed by Raft. A feeder goroutine takes the edits appended
// meanwhile and proposes them as one Raft entry (group commit), in the
// order they were applied. Followers apply committed entries through the
// FSM with the same applyEdit as a replay of the edit log. The leader's
// FSM skips the entries of its own term: it applied them when it proposed
// them.
//
// A leader deposed with edits proposed but not known committed has applied
// changes that the new leader may drop. It restarts its Raft node from its
// last snapshot and log, so that its namespace is again exactly what was
// committed, and follows.
//
// The FSM snapshot is the image of meta.go, built as the edit log's
// checkpoint is (checkpointBehind): the last snapshot, with the committed
// entries after it replayed into a namespace of its own. So a snapshot
// never holds what the leader applied ahead of the commit, and taking one
// never stops the master.
//
// Raft's connections open with the handshake of auth.go, as masters: with
// a cluster secret, no stranger can vote or append.
//
// This file holds the node's start, the journal and leadership; the FSM is
// in ha_fsm.go, the connections and membership in ha_net.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Peer is one of replicated masters: its id (--id) and its Raft address.
type Peer struct {
	ID   string
	Addr string
}

// parsePeers parses --peers: "NAME=HOST:PORT,..." with distinct names and
// addresses.
func parsePeers(s string) ([]Peer, error) {
	var peers []Peer
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, addr, ok := strings.Cut(f, "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("%w: peer %q: want NAME=HOST:PORT", ErrBadArg, f)
		}
		if err := checkAdvertised(addr); err != nil {
			return nil, fmt.Errorf("%w: peer %s: %v", ErrBadArg, id, err)
		}
		for _, p := range peers {
			if p.ID == id || p.Addr == addr {
				return nil, fmt.Errorf("%w: peer %s=%s named twice", ErrBadArg, id, addr)
			}
		}
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: no peers", ErrBadArg)
	}
	return peers, nil
}

// checkAdvertised checks that addr is a host and port that others can dial.
func checkAdvertised(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" || port == "" || port == "0" {
		return fmt.Errorf("%q: want HOST:PORT with a host and a port others can dial", addr)
	}
	return nil
}

// Raft timings. Raft's defaults: a leader that fails is replaced within
// about two seconds.
const (
	defaultRaftHeartbeat = time.Second
	defaultRaftElection  = time.Second
	defaultRaftLease     = 500 * time.Millisecond
	// maxBatchEdits bounds the edits of one Raft entry.
	maxBatchEdits = 4096
	// maxInflight bounds the entries proposed and not yet committed.
	maxInflight = 1
)

// haNode is a master's Raft node and its journal.
type haNode struct {
	m      *Master
	logger *slog.Logger

	logs  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
	conf  *raft.Config
	r     atomic.Pointer[raft.Raft]

	// leaderTerm is the term this node leads (0: none since its last
	// restart). The FSM skips entries of that term: their edits were
	// applied when proposed.
	leaderTerm atomic.Uint64
	// leading is set when this node takes changes; read and written
	// under m.mu.
	leading bool
	// applied is the index of the last command entry the FSM has seen.
	applied atomic.Uint64
	// notify carries Raft's leadership changes; lost, a failed proposal.
	notify chan bool
	lost   chan struct{}

	// mu guards the fields below; cond signals a change of synced or failed.
	mu   sync.Mutex
	cond *sync.Cond
	// queue holds the edits appended and not yet proposed.
	queue    []*edit
	queued   chan struct{} // signalled when queue becomes non-empty
	lastSeq  uint64        // last seq appended
	syncedTo uint64        // every seq up to here is committed
	// The seqs above failedAfter and up to failedTo failed (were not
	// known committed), even if later ones committed since.
	failedAfter, failedTo uint64
	// tainted: a proposal failed, so the namespace may hold edits that
	// were never committed; stepDown restarts the node.
	tainted bool
	epoch   uint64 // incremented at each restart of the node
	closed  bool

	codec gobRecord[haBatch] // an entry is a batch's gob record
	// entries and edits count what this node proposed as leader.
	entries, edits atomic.Uint64

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

var _ journal = (*haNode)(nil)

// raftDir is where a replicated master keeps Raft's log and snapshots.
func raftDir(dir string) string { return filepath.Join(dir, "raft") }

// startHA opens the Raft node of m, bootstrapping the cluster of m.Peers
// on a first start, and starts following.
func startHA(m *Master) error {
	self := slices.IndexFunc(m.Peers, func(p Peer) bool { return p.ID == m.ID })
	if m.ID == "" || self < 0 {
		return fmt.Errorf("%w: --id %q is not one of --peers", ErrBadArg, m.ID)
	}
	if m.RaftAddr == "" {
		m.RaftAddr = m.Peers[self].Addr
	}
	_, err := os.Stat(imagePath(m.Dir))
	single := err == nil
	if err := os.MkdirAll(filepath.Join(raftDir(m.Dir), "snapshots"), 0o755); err != nil {
		return err
	}
	h := &haNode{m: m, logger: m.Logger.With("raft", m.ID), notify: make(chan bool, 16), lost: make(chan struct{}, 1),
		queued: make(chan struct{}, 1)}
	h.cond = sync.NewCond(&h.mu)
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: slogWriter{h.logger}, DisableTime: true})
	if h.logs, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir(m.Dir), "raft.db")}); err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	if h.snaps, err = raft.NewFileSnapshotStoreWithLogger(raftDir(m.Dir), 2, hl); err != nil {
		h.logs.Close()
		return fmt.Errorf("raft snapshots: %w", err)
	}
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(m.ID)
	c.HeartbeatTimeout = cmpDur(m.RaftHeartbeat, defaultRaftHeartbeat)
	c.ElectionTimeout = cmpDur(m.RaftElection, defaultRaftElection)
	c.LeaderLeaseTimeout = cmpDur(m.RaftLease, defaultRaftLease)
	c.NotifyCh = h.notify
	c.Logger = hl
	h.conf = c
	existing, err := raft.HasExistingState(h.logs, h.logs, h.snaps)
	if err != nil {
		h.logs.Close()
		return err
	}
	if single && !existing {
		// A single master's metadata becomes the first snapshot of a
		// cluster of this master alone; add-peer brings in the others.
		if len(m.Peers) != 1 {
			h.logs.Close()
			return fmt.Errorf("%w: %s holds a single master's metadata: start it with --peers naming only itself (%s=%s), then add the other masters with dfs master add-peer (see the README's HA section)",
				ErrBadArg, m.Dir, m.ID, m.RaftAddr)
		}
		if err := h.fromSingle(); err != nil {
			h.logs.Close()
			return fmt.Errorf("moving %s to replicated masters: %w", m.Dir, err)
		}
		existing = true
	}
	if single {
		if err := moveSingleAside(m.Dir); err != nil {
			h.logs.Close()
			return err
		}
	}
	m.mu.Lock()
	m.journal, m.ha = h, h // RPCs are served already: they answer "not the leader"
	m.mu.Unlock()
	r, err := h.newRaft()
	if err != nil {
		h.logs.Close()
		return err
	}
	if !existing && m.Join {
		h.logger.Info("waiting to be added to the masters (dfs master add-peer)", "raft", m.RaftAddr)
	} else if !existing {
		var cfg raft.Configuration
		for _, p := range m.Peers {
			cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := r.BootstrapCluster(cfg).Error(); err != nil {
			r.Shutdown().Error()
			h.logs.Close()
			return fmt.Errorf("raft bootstrap: %w", err)
		}
		h.logger.Info("bootstrapped a new cluster of masters", "peers", len(m.Peers))
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.wg.Add(2)
	go h.feed(ctx)
	go h.watch(ctx)
	return nil
}

// fromSingle writes the image of a single master's metadata in m.Dir (its
// image and edit log) as the first Raft snapshot, of a configuration of
// this master alone.
func (h *haNode) fromSingle() error {
	m := h.m
	img, err := loadImage(imagePath(m.Dir))
	if err != nil {
		return err
	}
	scratch := &Master{Dir: m.Dir, Logger: m.Logger, DeadAfter: m.DeadAfter}
	scratch.reset()
	if err := scratch.applyImage(img); err != nil {
		return err
	}
	last, _, err := replayEdits(m.Dir, img.LastSeq, scratch.replay)
	if err != nil {
		return err
	}
	scratch.tokenKey, scratch.haState = m.tokenKey, true
	_, trans := raft.NewInmemTransport("")
	cfg := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)}}}
	sink, err := h.snaps.Create(raft.SnapshotVersionMax, 1, 1, cfg, 1, trans)
	if err != nil {
		return err
	}
	if err := writeImage(sink, scratch.snapshot()); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	h.logger.Info("took a single master's metadata as the first snapshot", "files", scratch.ns.files, "edits", last-img.LastSeq)
	return nil
}

// moveSingleAside moves a single master's image and edit log, taken into
// Raft, to dir/single-master, so that nothing reads them again.
func moveSingleAside(dir string) error {
	to := filepath.Join(dir, "single-master")
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	firsts, err := segments(dir)
	if err != nil {
		return err
	}
	names := []string{filepath.Base(imagePath(dir))}
	for _, f := range firsts {
		names = append(names, segmentName(f))
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(to, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return syncDir(dir)
}

func cmpDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// newRaft starts a Raft node on the stores, with a new transport. NewRaft
// restores the last snapshot into the FSM.
func (h *haNode) newRaft() (*raft.Raft, error) {
	stream, err := listenRaft(h.m.RaftAddr, h.m.Security, h.logger)
	if err != nil {
		return nil, fmt.Errorf("raft listen: %w", err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: h.conf.Logger})
	r, err := raft.NewRaft(h.conf, (*haFSM)(h), h.logs, h.logs, h.snaps, trans)
	if err != nil {
		trans.Close()
		return nil, err
	}
	h.r.Store(r)
	return r, nil
}

// ---- the journal ----

// append queues e to be proposed. The caller holds m.mu and has applied
// e or is about to: only a leader takes edits.
func (h *haNode) append(e *edit) (uint64, error) {
	if !h.leading {
		return 0, h.notLeader()
	}
	c := *e
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, errors.New("master closing")
	}
	h.lastSeq++
	h.queue = append(h.queue, &c)
	if len(h.queue) == 1 {
		select {
		case h.queued <- struct{}{}:
		default:
		}
	}
	return h.lastSeq, nil
}

// sync waits until seq is committed, or failed with a change of leader.
func (h *haNode) sync(seq uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.syncedTo < seq && !h.failed(seq) {
		h.cond.Wait()
	}
	if h.failed(seq) {
		return ErrLeadershipLost
	}
	return nil
}

// failed reports whether seq failed. The caller holds h.mu.
func (h *haNode) failed(seq uint64) bool { return seq > h.failedAfter && seq <= h.failedTo }

// failPending marks every seq appended and not known committed failed, and
// drops the edits not proposed yet. The caller holds h.mu.
func (h *haNode) failPending() {
	if !h.tainted || h.failedTo <= h.failedAfter {
		h.failedAfter = h.syncedTo
	}
	h.failedTo = h.lastSeq
	h.queue = nil
	h.cond.Broadcast()
}

func (h *haNode) synced() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncedTo
}

func (h *haNode) last() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastSeq
}

// proposal is a Raft entry proposed: its future and the seqs it carries.
type proposal struct {
	f     raft.ApplyFuture
	upTo  uint64
	epoch uint64
}

// feed proposes the queued edits, as many as have gathered in one entry,
// in order, with one entry in flight at a time: the edits of the callers
// waiting gather while it commits. (16 callers, three masters in one
// process: one in flight made entries of 7.7 edits and 3,100 commits/s;
// two, 4.7 edits and 2,700/s; eight, 3.2 and 1,800/s.)
func (h *haNode) feed(ctx context.Context) {
	defer h.wg.Done()
	inflight := make(chan proposal, maxInflight)
	slots := make(chan struct{}, maxInflight)
	h.wg.Add(1)
	go h.resolve(inflight, slots)
	defer close(inflight)
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.queued:
		}
		for {
			// Edits gather while the proposals in flight commit.
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			h.mu.Lock()
			n := min(len(h.queue), maxBatchEdits)
			batch := h.queue[:n]
			h.queue = h.queue[n:]
			upTo := h.lastSeq - uint64(len(h.queue))
			epoch := h.epoch
			h.mu.Unlock()
			if n == 0 {
				<-slots
				break
			}
			var f raft.ApplyFuture
			if data, err := h.codec.encode(nil, &haBatch{Edits: batch}); err != nil {
				f = errorApply{err}
			} else {
				f = h.r.Load().Apply(data, 0)
				h.entries.Add(1)
				h.edits.Add(uint64(n))
			}
			select {
			case inflight <- proposal{f: f, upTo: upTo, epoch: epoch}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// resolve waits for each proposal in order and moves syncedTo, or marks
// every seq appended so far failed and tells watch that leadership is lost.
func (h *haNode) resolve(inflight <-chan proposal, slots <-chan struct{}) {
	defer h.wg.Done()
	for p := range inflight {
		err := p.f.Error()
		<-slots
		h.mu.Lock()
		switch {
		case p.epoch != h.epoch: // of a node restarted since: failed with it
		case err == nil:
			h.syncedTo = max(h.syncedTo, p.upTo)
		default:
			h.failPending()
			h.tainted = true
			select {
			case h.lost <- struct{}{}:
			default:
			}
			h.logger.Warn("proposal failed", "err", err)
		}
		h.cond.Broadcast()
		h.mu.Unlock()
	}
}

// errorApply is a proposal that failed before Raft saw it.
type errorApply struct{ err error }

func (e errorApply) Error() error          { return e.err }
func (e errorApply) Index() uint64         { return 0 }
func (e errorApply) Response() interface{} { return nil }

// haBatch is one Raft entry: edits in the order the leader applied them.
type haBatch struct {
	Edits []*edit
}

// decodeBatch returns the edits of a Raft entry.
func (h *haNode) decodeBatch(data []byte) ([]*edit, error) {
	var b haBatch
	if err := h.codec.decode(data, &b); err != nil {
		return nil, fmt.Errorf("%w: raft entry: %v", ErrBadEditLog, err)
	}
	return b.Edits, nil
}

// ---- leadership ----

// watch follows leadership changes: a node elected catches up and starts
// taking changes; a node deposed stops, and restarts if it may have
// applied what was not committed.
func (h *haNode) watch(ctx context.Context) {
	defer h.wg.Done()
	var gen atomic.Uint64 // the leadership change being acted on
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-h.notify:
			g := gen.Add(1)
			if isLeader {
				h.wg.Add(1)
				go func() {
					defer h.wg.Done()
					h.lead(ctx, g, &gen)
				}()
			} else {
				h.stepDown(ctx)
			}
		case <-h.lost:
			gen.Add(1)
			h.stepDown(ctx)
		}
	}
}

// lead makes an elected node the leader: once every entry of earlier
// terms is applied, it formats the cluster if new, records its client
// address, and takes changes. A restarted namespace waits in safe mode for
// the minions' block reports, as after a restart.
func (h *haNode) lead(ctx context.Context, g uint64, gen *atomic.Uint64) {
	r := h.r.Load()
	term := r.CurrentTerm()
	h.leaderTerm.Store(term)
	if err := r.Barrier(0).Error(); err != nil {
		h.logger.Warn("elected, but could not catch up", "err", err)
		return
	}
	m := h.m
	m.mu.Lock()
	if gen.Load() != g || ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	h.leading = true
	var seq uint64
	var err error
	if m.clusterID == "" {
		seq, err = m.logAndApply(&edit{Op: opFormat, Cluster: "CID-" + randomHex(8), Key: m.tokenKey})
	}
	if me := m.selfMaster(); err == nil && m.masters[m.ID] != me {
		seq, err = m.logAndApply(&edit{Op: opMaster, Master: me})
	}
	if len(m.ns.blocks) > 0 {
		m.repl.enterSafeMode()
	}
	// As after a restart: the minions the namespace knows count as live
	// until they have had the time to register here, so that reads go to
	// the replicas the log names meanwhile.
	now := time.Now()
	for _, mn := range m.reg.minions {
		if !mn.registered {
			mn.lastSeen = now
		}
	}
	m.mu.Unlock()
	if err == nil {
		err = h.sync(seq)
	}
	if err != nil {
		h.logger.Warn("elected, but could not record it", "err", err)
		return
	}
	h.logger.Info("leading", "term", term, "cluster", m.clusterID)
}

// stepDown stops taking changes. If some were applied here and are not
// known committed, the node restarts from what Raft has committed.
func (h *haNode) stepDown(ctx context.Context) {
	m := h.m
	m.mu.Lock()
	was := h.leading
	h.leading = false
	m.mu.Unlock()
	h.mu.Lock()
	dirty := h.lastSeq > h.syncedTo || h.tainted
	if dirty {
		h.failPending()
		h.tainted = false // the namespace is rebuilt below
		h.epoch++
	}
	h.mu.Unlock()
	if was {
		h.logger.Info("no longer the leader", "restart", dirty)
	}
	if !dirty || ctx.Err() != nil {
		return
	}
	if err := h.r.Load().Shutdown().Error(); err != nil {
		h.logger.Warn("raft shutdown", "err", err)
	}
	m.mu.Lock()
	m.resetState()
	h.leaderTerm.Store(0)
	m.mu.Unlock()
	h.applied.Store(0)
	for ctx.Err() == nil {
		if _, err := h.newRaft(); err == nil {
			return
		} else {
			h.logger.Error("raft restart; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// notLeader is the answer of a node that takes no changes. The caller
// holds m.mu.
func (h *haNode) notLeader() error {
	r := h.r.Load()
	if r == nil { // starting
		return notLeaderError("", "")
	}
	_, id := r.LeaderWithID()
	if id == "" || id == raft.ServerID(h.m.ID) {
		return notLeaderError("", "")
	}
	mi, ok := h.m.masters[string(id)]
	if !ok || mi.Addr == "" {
		return notLeaderError("", "")
	}
	return notLeaderError(string(id), mi.Addr)
}

// close takes a last snapshot (saving the namespace as the image, as a
// single master does at a clean stop) and stops the node.
func (h *haNode) close() error {
	h.mu.Lock()
	h.closed = true
	h.failPending()
	h.mu.Unlock()
	h.cancel()
	r := h.r.Load()
	if err := r.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		h.logger.Warn("snapshot at stop", "err", err)
	}
	err := r.Shutdown().Error()
	h.wg.Wait()
	// A deposed node may have restarted Raft while this one stopped.
	if again := h.r.Load(); again != r {
		if serr := again.Shutdown().Error(); err == nil {
			err = serr
		}
	}
	if cerr := h.logs.Close(); err == nil {
		err = cerr
	}
	return err
}
