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
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	failedTo uint64        // seqs above syncedTo and up to here failed
	epoch    uint64        // incremented at each restart of the node
	closed   bool

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
	scratch.retries = nil // a copy answers no calls
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
	for h.syncedTo < seq && h.failedTo < seq {
		h.cond.Wait()
	}
	if h.syncedTo >= seq {
		return nil
	}
	return ErrLeadershipLost
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
			h.failedTo = h.lastSeq
			h.queue = nil
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
	dirty := h.lastSeq > h.syncedTo
	if dirty {
		h.failedTo = h.lastSeq
		h.queue = nil
		h.epoch++
	}
	h.cond.Broadcast()
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
	h.failedTo = h.lastSeq
	h.cond.Broadcast()
	h.mu.Unlock()
	h.cancel()
	r := h.r.Load()
	if err := r.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		h.logger.Warn("snapshot at stop", "err", err)
	}
	err := r.Shutdown().Error()
	h.wg.Wait()
	if cerr := h.logs.Close(); err == nil {
		err = cerr
	}
	return err
}

// ---- the FSM ----

// haFSM is the haNode as Raft's FSM.
type haFSM haNode

// Apply applies a committed entry's edits, unless this node applied them
// when it proposed them as leader.
func (f *haFSM) Apply(l *raft.Log) interface{} {
	h := (*haNode)(f)
	if l.Type != raft.LogCommand {
		return nil
	}
	h.applied.Store(l.Index)
	if l.Term == h.leaderTerm.Load() {
		return nil
	}
	edits, err := h.decodeBatch(l.Data)
	if err != nil {
		h.logger.Error("skipped a raft entry", "index", l.Index, "err", err)
		return err
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range edits {
		if _, err := m.applyEdit(e); err != nil {
			// The leader applied it to the same namespace: it cannot
			// be refused here unless the namespaces differ.
			h.logger.Error("a committed edit was refused", "index", l.Index, "op", e.Op, "path", e.Path, "err", err)
		}
	}
	// Deletes go to minions from the leader only; a follower forgets
	// them (as leader, it learns what to delete from block reports).
	m.deletes = newDeleteQueue()
	m.repl.deletes = m.deletes
	return nil
}

// Snapshot hands Raft the applied index; Persist builds the image.
func (f *haFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &haSnapshot{h: (*haNode)(f), upTo: f.applied.Load()}, nil
}

// Restore replaces the namespace with a snapshot's.
func (f *haFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	h := (*haNode)(f)
	raw, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	img, err := readImage(raw, "raft snapshot")
	if err != nil {
		return err
	}
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resetState()
	return m.applyImage(img)
}

// haSnapshot is a snapshot of the committed entries up to upTo.
type haSnapshot struct {
	h    *haNode
	upTo uint64
}

// Persist writes the image of the last snapshot with the committed
// entries after it, up to s.upTo, replayed into a master of its own.
func (s *haSnapshot) Persist(sink raft.SnapshotSink) error {
	img, err := s.h.build(s.upTo)
	if err == nil {
		err = writeImage(sink, img)
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("raft snapshot: %w", err)
	}
	return sink.Close()
}

func (s *haSnapshot) Release() {}

// build is the image of the entries up to upTo: the newest snapshot, with
// the log after it replayed.
func (h *haNode) build(upTo uint64) (*image, error) {
	m := h.m
	scratch := &Master{Dir: m.Dir, Logger: m.Logger, DeadAfter: m.DeadAfter}
	scratch.reset()
	scratch.retries = nil // a copy answers no calls
	var from uint64
	metas, err := h.snaps.List()
	if err != nil {
		return nil, err
	}
	if len(metas) > 0 {
		_, rc, err := h.snaps.Open(metas[0].ID)
		if err != nil {
			return nil, err
		}
		raw, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		img, err := readImage(raw, "raft snapshot "+metas[0].ID)
		if err != nil {
			return nil, err
		}
		if err := scratch.applyImage(img); err != nil {
			return nil, err
		}
		from = metas[0].Index
	}
	if from == 0 {
		if from, err = h.logs.FirstIndex(); err != nil {
			return nil, err
		}
		from = max(from, 1) - 1
	}
	for i := from + 1; i <= upTo; i++ {
		var l raft.Log
		if err := h.logs.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		edits, err := h.decodeBatch(l.Data)
		if err != nil {
			return nil, err
		}
		for _, e := range edits {
			if _, err := scratch.applyEdit(e); err != nil {
				h.logger.Error("snapshot: a committed edit was refused", "index", i, "op", e.Op, "path", e.Path, "err", err)
			}
		}
	}
	return scratch.snapshot(), nil
}

// ---- Raft's connections ----

// raftStream is Raft's stream layer: a listener whose connections opened
// with the handshake as masters, and a dialer that opens them so.
type raftStream struct {
	ln     net.Listener
	sec    *Security
	logger *slog.Logger
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
}

func listenRaft(addr string, sec *Security, logger *slog.Logger) (*raftStream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &raftStream{ln: ln, sec: sec, logger: logger, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.acceptLoop()
	return s, nil
}

func (s *raftStream) acceptLoop() {
	var refusals refusalLog
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			c, p, err := s.sec.accept(conn, roleMaster, "")
			if err == nil && p.role != roleMaster {
				c.Close()
				err = fmt.Errorf("a %v on the raft port", p.role)
			}
			if err != nil {
				refusals.log(s.logger, conn.RemoteAddr().String(), err)
				return
			}
			select {
			case s.conns <- c:
			case <-s.done:
				c.Close()
			}
		}()
	}
}

func (s *raftStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

func (s *raftStream) Close() error {
	s.once.Do(func() { close(s.done) })
	return s.ln.Close()
}

func (s *raftStream) Addr() net.Addr { return s.ln.Addr() }

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
	raw, err := d.Dial("tcp", string(addr))
	if err != nil {
		return nil, err
	}
	return s.sec.dial(raw, string(addr), roleMaster, min(timeout, handshakeTimeout))
}

// slogWriter takes hclog's lines into the master's log.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelError
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[DEBUG]"), strings.HasPrefix(line, "[TRACE]"):
		level = slog.LevelDebug
	}
	if i := strings.Index(line, "]"); i >= 0 && strings.HasPrefix(line, "[") {
		line = strings.TrimSpace(line[i+1:])
	}
	if strings.Contains(line, "found temporary snapshot") {
		// The snapshot being written, seen by build's List: not news.
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}

// ---- the masters' housekeeping ----

// housekeeping is the housekeeping of a replicated master: the leader's
// is a single master's (without checkpoints: Raft snapshots); a follower
// makes sure the leader has recorded its client address.
func (h *haNode) housekeeping(ctx context.Context) {
	m := h.m
	m.mu.Lock()
	leading := h.leading
	me := m.selfMaster()
	leader := ""
	if !leading && m.masters[m.ID] != me {
		leader = leaderIn(h.notLeader())
	}
	m.mu.Unlock()
	if leading {
		now := time.Now()
		m.expireWrites(now)
		m.replicate(now)
		return
	}
	if leader == "" {
		return
	}
	if err := m.peers.call(ctx, leader, masterService+".Announce", &AnnounceArgs{Master: me}, &Empty{}, metaTimeout); err != nil {
		m.Logger.Debug("announce to the leader", "leader", leader, "err", err)
	}
}

// announce records the client addresses of a master of the cluster.
func (h *haNode) announce(a *AnnounceArgs) error {
	m := h.m
	if a.peer != nil && a.peer.role != roleMaster {
		return fmt.Errorf("%w: a %v may not announce itself as a master", ErrBadArg, a.peer.role)
	}
	if err := checkAdvertised(a.Master.Addr); err != nil {
		return fmt.Errorf("%w: master %s: %v", ErrBadArg, a.Master.ID, err)
	}
	cf := h.r.Load().GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	if !slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == a.Master.ID }) {
		return fmt.Errorf("%w: master %s is not a peer", ErrBadArg, a.Master.ID)
	}
	m.mu.Lock()
	if m.masters[a.Master.ID] == a.Master {
		m.mu.Unlock()
		return nil
	}
	seq, err := m.logAndApply(&edit{Op: opMaster, Master: a.Master})
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.journal.sync(seq)
}

// info is this master's Raft state. The caller holds m.mu (Ping does).
func (h *haNode) info() MasterInfo {
	r := h.r.Load()
	if r == nil {
		return MasterInfo{ID: h.m.ID, Addr: h.m.AddrString(), Role: "starting"}
	}
	mi := MasterInfo{ID: h.m.ID, Addr: h.m.AddrString(), Role: strings.ToLower(r.State().String()),
		Term: r.CurrentTerm(), Commit: r.CommitIndex(), Applied: r.AppliedIndex()}
	if mi.Role == "leader" && !h.leading {
		mi.Role = "leader (catching up)"
	}
	return mi
}

// masterInfos asks every master of the Raft configuration for its state,
// this one first, each with a second to answer.
func (h *haNode) masterInfos() []MasterInfo {
	m := h.m
	cf := h.r.Load().GetConfiguration()
	var servers []raft.Server
	if cf.Error() == nil {
		servers = cf.Configuration().Servers
	}
	m.mu.Lock()
	out := []MasterInfo{h.info()}
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = m.masters[string(s.ID)].Addr
	}
	m.mu.Unlock()
	others := make([]MasterInfo, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		if string(s.ID) == m.ID {
			continue
		}
		others[i] = MasterInfo{ID: string(s.ID), Addr: addrs[i], Role: "unreachable"}
		if addrs[i] == "" {
			others[i].Err = "its client address is not known yet"
			continue
		}
		wg.Go(func() {
			var reply PingReply
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err := m.peers.call(ctx, addrs[i], masterService+".Ping", &PingArgs{}, &reply, time.Second)
			switch {
			case err != nil:
				others[i].Err = err.Error()
			case reply.Raft == nil:
				others[i].Err = "not a replicated master"
			default:
				others[i] = *reply.Raft
			}
		})
	}
	wg.Wait()
	for i, s := range servers {
		if string(s.ID) != m.ID {
			out = append(out, others[i])
		}
	}
	return out
}

// changePeers adds or removes a master (a Raft configuration change) and
// records a removed one's addresses gone.
func (h *haNode) changePeers(a *PeerArgs) error {
	m := h.m
	if a.ID == "" {
		return fmt.Errorf("%w: no master id", ErrBadArg)
	}
	r := h.r.Load()
	if a.Addr != "" {
		if err := checkAdvertised(a.Addr); err != nil {
			return fmt.Errorf("%w: master %s: %v", ErrBadArg, a.ID, err)
		}
		if err := r.AddVoter(raft.ServerID(a.ID), raft.ServerAddress(a.Addr), 0, metaTimeout).Error(); err != nil {
			return fmt.Errorf("add master %s: %w", a.ID, raftError(err))
		}
		m.Logger.Info("master added", "peer", a.ID, "raft", a.Addr)
		return nil
	}
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	if !slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == a.ID }) {
		return fmt.Errorf("%w: master %s is not a peer", ErrNotFound, a.ID)
	}
	if err := r.RemoveServer(raft.ServerID(a.ID), 0, metaTimeout).Error(); err != nil {
		return fmt.Errorf("remove master %s: %w", a.ID, raftError(err))
	}
	m.Logger.Info("master removed", "peer", a.ID)
	if a.ID == m.ID {
		return nil // no longer the leader: the next one forgets its address
	}
	m.mu.Lock()
	seq, err := m.logAndApply(&edit{Op: opMaster, Master: imageMaster{ID: a.ID}})
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.journal.sync(seq)
}

// raftError maps Raft's errors to ours: a leader change is ErrLeadershipLost.
func raftError(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%w: %v", ErrLeadershipLost, err)
	}
	return err
}
