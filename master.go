// master.go is the metadata server (the NameNode). It holds the parts of
// the master together and serves their RPCs; it never touches file data.
//
//   - the namespace (namespace.go): directories, files and their blocks,
//     changed only by applying journal records;
//   - the journal (journal.go): where each change is appended and synced
//     before the RPC that made it answers; the edit log (editlog.go) with
//     checkpoints into the image (meta.go) is today's;
//   - the minion registry (registry.go): minions, liveness, capacity,
//     placement, and the Register and Heartbeat RPCs;
//   - write leases (leases.go): puts in progress and their pipelines;
//   - the delete queue (deletes.go): held, pending and handed deletes;
//   - replication (replication.go): safe mode, under-replicated and
//     corrupt blocks, copies in flight.
//
// mu guards the namespace, the registry and replication, which read each
// other on every decision (placing a copy looks at a block's replicas, the
// minions' liveness and the copies in flight). It is held briefly and never
// across network or disk I/O: a change is appended to the journal in memory
// under it and synced after it is released. Leases and the delete queue
// have locks of their own, leaves taken after mu.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/rpc"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Master serves the namespace. Set the exported fields before Start.
type Master struct {
	// Addr is the address to listen on, e.g. ":2131" or "127.0.0.1:0".
	Addr string
	// Dir holds the metadata: the image and the edit log.
	Dir string
	// BlockSize and Replication are the defaults of a put that names none.
	BlockSize   int64
	Replication int
	// Heartbeat is how often minions report and the master does its
	// housekeeping. Minions that set no interval of their own use it.
	Heartbeat time.Duration
	// DeadAfter is how long a minion may stay silent before it counts as dead.
	DeadAfter time.Duration
	// LeaseTimeout is how long a put may go without asking for a block or
	// completing before it is abandoned and its blocks deleted.
	LeaseTimeout time.Duration
	// CheckpointBytes is the size of the edit log past which the image is
	// rewritten and the log started afresh.
	CheckpointBytes int64
	// SafeModeTimeout is the longest a restarted master waits for block
	// reports before it re-replicates or deletes anything.
	SafeModeTimeout time.Duration
	// MaxCopiesPerMinion bounds the re-replication copies a minion receives at once.
	MaxCopiesPerMinion int
	// Security is how the master trusts its peers (auth.go); nil: no
	// secret, loopback only.
	Security *Security
	// HTTPAddr, if set, is where the master serves /metrics (metrics.go).
	// A bind failure stops Start only if HTTPRequired.
	HTTPAddr     string
	HTTPRequired bool
	Logger       *slog.Logger

	// Peers, if set, makes this master one of replicated masters (ha.go):
	// every master's id and Raft address. ID is this master's id, and
	// RaftAddr the address its Raft listens on (its peer's address if
	// empty). The Raft timings are Raft's defaults if zero.
	Peers    []Peer
	ID       string
	RaftAddr string
	// Join starts a master with no Raft state without bootstrapping a
	// cluster: it waits to be added (dfs master add-peer).
	Join                                   bool
	RaftHeartbeat, RaftElection, RaftLease time.Duration

	metrics *masterMetrics
	http    *httpServer

	lock *dirLock
	// tokenKey signs write tokens (token.go); set by Start.
	tokenKey []byte
	srv      *rpcServer
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// journal is where changes go before they are applied; edits is the
	// same edit log, for the checkpoints that fold it into the image.
	journal journal
	edits   *editLog
	// ckptMu serialises checkpoints; checkpointing is set while one
	// runs in the background (see housekeeping).
	ckptMu        sync.Mutex
	checkpointing atomic.Bool

	leases  *leases
	deletes *deleteQueue

	// ha is the Raft node of a replicated master, nil for a single one;
	// peers calls the other masters.
	ha    *haNode
	peers *pool

	// mu guards the fields below.
	mu        sync.Mutex
	clusterID string
	ns        *namespace
	reg       *registry
	repl      *replication
	retries   *retryCache // calls that may be sent again (retrycache.go)
	closed    bool
	// masters are the replicated masters by id, with their client
	// addresses (opMaster); haState is set once the namespace is of
	// replicated masters (opFormat), whose image carries the token key.
	masters map[string]imageMaster
	haState bool
}

// NewMaster returns a master with the default settings. It does no I/O.
func NewMaster(dir, addr string) *Master {
	return &Master{
		Addr:               addr,
		Dir:                dir,
		BlockSize:          DefaultBlockSize,
		Replication:        DefaultReplication,
		Heartbeat:          DefaultHeartbeat,
		DeadAfter:          DefaultDeadAfter,
		LeaseTimeout:       10 * time.Minute,
		CheckpointBytes:    64 << 20,
		MaxCopiesPerMinion: 4,
		Logger:             slog.Default(),
	}
}

// Start loads the metadata from Dir (or formats a new cluster there), starts
// listening and returns. Serving goes on in the background until Close.
func (m *Master) Start() error {
	if err := validBlockSize(m.BlockSize); err != nil {
		return err
	}
	if m.Replication < 1 || m.Replication > maxReplication {
		return fmt.Errorf("%w: replication %d (want 1 to %d)", ErrBadArg, m.Replication, maxReplication)
	}
	if m.Heartbeat <= 0 || m.DeadAfter <= m.Heartbeat {
		return fmt.Errorf("%w: heartbeat %v and dead-after %v (want 0 < heartbeat < dead-after)", ErrBadArg, m.Heartbeat, m.DeadAfter)
	}
	lock, err := lockDir(m.Dir)
	if err != nil {
		return fmt.Errorf("master dir: %w", err)
	}
	m.lock = lock
	if m.tokenKey, err = loadTokenKey(m.Dir); err != nil {
		lock.unlock()
		return err
	}
	if m.Peers != nil {
		m.resetState()
	} else if err := m.load(); err != nil {
		lock.unlock()
		return err
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName(masterService, &masterRPC{m}); err != nil {
		lock.unlock()
		return err
	}
	m.metrics = newMasterMetrics(m)
	m.repl.copied = m.metrics.rereplications
	m.peers = newPool(m.Security, roleMaster)
	s, err := serveRPC(m.Addr, srv, m.Logger, m.Security, roleMaster, m.metrics.rpcs)
	if err != nil {
		lock.unlock()
		return fmt.Errorf("master listen: %w", err)
	}
	m.srv = s
	m.Security.describe(m.Logger, "master", s.Addr().String())
	if m.HTTPAddr != "" {
		if m.http, err = serveHTTP(m.HTTPAddr, "master", newMasterWeb(m), m.Security, m.Logger); err != nil {
			if m.HTTPRequired {
				s.Close()
				lock.unlock()
				return err
			}
			m.Logger.Warn("no web listener", "err", err)
		}
	}
	if m.Peers != nil {
		if err := startHA(m); err != nil {
			s.Close()
			m.http.Close()
			lock.unlock()
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go m.housekeeping(ctx)
	m.Logger.Info("master started", "addr", m.AddrString(), "dir", m.Dir, "cluster", m.clusterID,
		"files", m.ns.files, "dirs", m.ns.dirs, "blocks", len(m.ns.blocks))
	return nil
}

// load reads the image in Dir and replays the edit log after it, or
// formats a new cluster when there is no image. It leaves the edit log open.
func (m *Master) load() error {
	img, err := loadImage(imagePath(m.Dir))
	if err != nil {
		return err
	}
	if m.CheckpointBytes <= 0 {
		m.CheckpointBytes = 64 << 20
	}
	m.reset()
	if img == nil { // a new cluster
		if firsts, err := segments(m.Dir); err != nil || len(firsts) > 0 {
			return fmt.Errorf("%w: %s has edit log segments but no image", ErrBadEditLog, m.Dir)
		}
		m.clusterID = "CID-" + randomHex(8)
		if err := saveImage(imagePath(m.Dir), m.snapshot()); err != nil {
			return fmt.Errorf("format %s: %w", m.Dir, err)
		}
		return m.openJournal(0)
	}
	if err := m.applyImage(img); err != nil {
		return err
	}
	last, torn, err := replayEdits(m.Dir, img.LastSeq, m.replay)
	if err != nil {
		return err
	}
	if torn {
		m.Logger.Warn("edit log: cut off a torn last record (a crash during an append that was never acknowledged)")
	}
	if len(m.ns.blocks) > 0 {
		m.repl.enterSafeMode()
	}
	// grown stays empty: replica lists from disk are hints until the
	// minions report, with no grace for one that a report leaves out.
	if err := m.openJournal(last); err != nil {
		return err
	}
	if last > img.LastSeq {
		m.Logger.Info("replayed edit log", "records", last-img.LastSeq)
		return m.checkpoint()
	}
	return nil
}

// openJournal opens the edit log after record last as the journal.
func (m *Master) openJournal(last uint64) error {
	l, err := openEditLog(m.Dir, last)
	if err != nil {
		return err
	}
	m.edits, m.journal = l, l
	return nil
}

// reset gives the master empty parts. The caller holds mu or has not
// started serving.
func (m *Master) reset() {
	m.ns = newNamespace(nil)
	m.reg = newRegistry(m.DeadAfter)
	m.leases = newLeases()
	m.deletes = newDeleteQueue()
	m.repl = newReplication(m.ns, m.reg, m.leases, m.deletes, m.Logger, m.MaxCopiesPerMinion, m.SafeModeTimeout)
	m.ns.hooks = m.repl
	m.retries = newRetryCache()
}

// resetState is reset for a running master: its replication keeps
// counting into the metrics. The caller holds mu or has not started
// serving.
func (m *Master) resetState() {
	m.reset()
	m.clusterID, m.masters, m.haState = "", make(map[string]imageMaster), false
	if m.metrics != nil {
		m.repl.copied = m.metrics.rereplications
	}
}

// applyImage loads img into the reset state. The caller holds mu or has
// not started serving.
func (m *Master) applyImage(img *image) error {
	m.clusterID = img.ClusterID
	if img.TokenKey != nil {
		m.tokenKey, m.haState = img.TokenKey, true
	}
	m.masters = make(map[string]imageMaster, len(img.Masters))
	for _, mi := range img.Masters {
		m.masters[mi.ID] = mi
	}
	m.retries.load(img.Retries)
	for _, mn := range img.Minions {
		if err := m.reg.apply(mn); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadImage, imagePath(m.Dir), err)
		}
	}
	m.ns.blocks = make(map[uint64]*blockEntry, len(img.BlockID))
	// Directories first, then the files, each checked as a put is.
	for i, p := range img.DirPaths {
		var mode uint32
		if len(img.DirMode) != 0 {
			mode = uint32(img.DirMode[i])
		}
		if _, err := m.ns.apply(&edit{Op: opMkdir, V: editVersion, Path: p, Parents: true, Mode: mode, Time: img.DirModTime[i]}); err != nil {
			return fmt.Errorf("%w: %s: directory %s: %v", ErrBadImage, imagePath(m.Dir), p, err)
		}
	}
	var bad error
	err := img.eachFile(func(f *imageFile) {
		if bad != nil {
			return
		}
		if _, err := m.ns.apply(&edit{Op: opPut, V: editVersion, Path: f.Path, File: *f}); err != nil {
			bad = fmt.Errorf("file %s: %v", f.Path, err)
		}
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadImage, imagePath(m.Dir), err)
	}
	// The files' puts made their directories newer; a directory's time
	// set (utimes) to before a file below it comes back only now.
	for i, p := range img.DirPaths {
		if _, err := m.ns.apply(&edit{Op: opSetTimes, V: editVersion, Path: p, Time: img.DirModTime[i]}); err != nil {
			return fmt.Errorf("%w: %s: directory %s: %v", ErrBadImage, imagePath(m.Dir), p, err)
		}
	}
	return nil
}

// replay applies one record read back from the journal. It is the same
// apply as the live path's (see commit), so the namespace after a replay is
// the one the records were applied to.
func (m *Master) replay(e *edit) error {
	_, err := m.applyEdit(e)
	return err
}

// applyEdit applies one record to the namespace, or to the registry for
// opMinion, and returns the number of files it changed. The caller holds
// mu or has not started serving.
func (m *Master) applyEdit(e *edit) (int, error) {
	switch e.Op {
	case opMinion:
		return 0, m.reg.apply(e.Minion)
	case opFormat:
		m.clusterID, m.tokenKey, m.haState = e.Cluster, e.Key, true
		return 0, nil
	case opMaster:
		if m.masters == nil {
			m.masters = make(map[string]imageMaster)
		}
		if e.Master.Addr == "" { // removed
			delete(m.masters, e.Master.ID)
		} else {
			m.masters[e.Master.ID] = e.Master
		}
		return 0, nil
	}
	n, err := m.ns.apply(e)
	if err == nil {
		m.retries.add(e, n)
	}
	return n, err
}

// logAndApply appends e, a change of the master's own state (not checked
// as the namespace's are), and applies it. The caller holds mu and syncs
// seq after releasing it.
func (m *Master) logAndApply(e *edit) (uint64, error) {
	e.V = editVersion
	seq, err := m.logEdit(e)
	if err != nil {
		return 0, err
	}
	_, err = m.applyEdit(e)
	return seq, err
}

// leaderOnly refuses a call to a replicated master that is not the leader.
func (m *Master) leaderOnly() error {
	if m.Peers == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ha == nil {
		return notLeaderError("", "")
	}
	if !m.ha.leading {
		return m.ha.notLeader()
	}
	return nil
}

// selfMaster is this master as opMaster records it. The caller holds mu.
func (m *Master) selfMaster() imageMaster {
	me := imageMaster{ID: m.ID, Addr: m.AddrString()}
	if m.http != nil {
		me.HTTP = m.http.Addr()
	}
	return me
}

// AddrString is the address the master listens on, e.g. "127.0.0.1:2131".
func (m *Master) AddrString() string { return m.srv.Addr().String() }

// Close stops serving and saves the metadata. It is safe to call more than once.
func (m *Master) Close() error {
	m.mu.Lock()
	if m.closed || m.srv == nil { // closed already, or never started
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()

	m.cancel()
	err := m.srv.Close()
	m.http.Close()
	m.wg.Wait()
	m.peers.close()
	if m.ha != nil {
		if cerr := m.ha.close(); cerr != nil && err == nil {
			err = cerr
		}
		if uerr := m.lock.unlock(); uerr != nil && err == nil {
			err = uerr
		}
		m.Logger.Info("master stopped", "saved", raftDir(m.Dir))
		return err
	}
	// A final checkpoint: every acknowledged change is in the log already,
	// but replica locations and the minion registry may be newer.
	if cerr := m.checkpoint(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := m.edits.close(); cerr != nil && err == nil {
		err = cerr
	}
	if uerr := m.lock.unlock(); uerr != nil && err == nil {
		err = uerr
	}
	m.Logger.Info("master stopped", "saved", imagePath(m.Dir))
	return err
}

// housekeeping expires abandoned puts, heals and checkpoints until ctx ends.
func (m *Master) housekeeping(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.ha != nil {
				m.ha.housekeeping(ctx)
				continue
			}
			now := time.Now()
			m.expireWrites(now)
			m.replicate(now)
			if m.edits.size() > m.CheckpointBytes && m.checkpointing.CompareAndSwap(false, true) {
				m.wg.Add(1)
				go func() {
					defer m.wg.Done()
					defer m.checkpointing.Store(false)
					if err := m.checkpointBehind(); err != nil {
						m.Logger.Error("checkpoint", "err", err)
					}
				}()
			}
		}
	}
}

// ---- persistence ----

// checkpoint writes the image and drops the edit log segments it covers. The
// log rolls first, so the image's seq falls in the new segment and every
// older one can go.
func (m *Master) checkpoint() error {
	m.ckptMu.Lock()
	defer m.ckptMu.Unlock()
	if _, err := m.edits.roll(); err != nil {
		return err
	}
	m.mu.Lock()
	img := m.snapshot()
	m.mu.Unlock()
	if err := saveImage(imagePath(m.Dir), img); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return removeSegmentsBefore(m.Dir, img.LastSeq)
}

// checkpointBehind writes an image without the master's lock, as HDFS's
// secondary namenode does: it rolls the log, then loads the last image
// into a namespace of its own, replays the closed segments into it, and
// saves that as the new image, dropping the segments it covers. Puts and
// reads go on meanwhile; the lock is taken only by the roll's append
// lock, for an instant. It costs a second namespace in memory while it
// runs. The image's replica lists are those of the last image and of the
// puts since (copies made since are not logged); after a restart they are
// hints until the minions report, as always. checkpoint, at a clean stop,
// writes the live lists.
func (m *Master) checkpointBehind() error {
	m.ckptMu.Lock()
	defer m.ckptMu.Unlock()
	upTo, err := m.edits.roll()
	if err != nil {
		return err
	}
	img, err := loadImage(imagePath(m.Dir))
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if img == nil {
		return fmt.Errorf("checkpoint: %w: %s is gone", ErrBadImage, imagePath(m.Dir))
	}
	if img.LastSeq >= upTo {
		return nil // nothing logged since the last image
	}
	ns := &Master{Dir: m.Dir, Logger: m.Logger, DeadAfter: m.DeadAfter}
	ns.reset()
	if err := ns.applyImage(img); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	last, _, err := replayEditsUpTo(m.Dir, img.LastSeq, upTo, ns.replay)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if last != upTo {
		return fmt.Errorf("checkpoint: %w: the closed segments end at record %d, want %d", ErrBadEditLog, last, upTo)
	}
	next := ns.snapshot()
	next.LastSeq = upTo
	if err := saveImage(imagePath(m.Dir), next); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return removeSegmentsBefore(m.Dir, upTo)
}

// logEdit appends e to the journal. The caller holds mu and applies the
// change only if this succeeds; it syncs after releasing mu.
func (m *Master) logEdit(e *edit) (uint64, error) {
	seq, err := m.journal.append(e)
	if err != nil {
		return 0, fmt.Errorf("metadata not saved: %w", err)
	}
	return seq, nil
}

// commit is the live path's one way to change the namespace: it checks e,
// appends it to the journal and applies it, and returns the record's seq
// and the number of files changed. Deletes of the blocks it removes are
// held until the record is on disk: the caller calls syncThenRelease(seq)
// after releasing mu, and answers only then. The caller holds mu.
func (m *Master) commit(e *edit) (seq uint64, n int, err error) {
	e.V = editVersion
	if err := m.ns.check(e); err != nil {
		return 0, 0, err
	}
	if seq, err = m.logEdit(e); err != nil {
		return 0, 0, err
	}
	m.repl.holdUntil = seq
	n, err = m.applyEdit(e)
	m.repl.holdUntil = 0
	if err != nil {
		// check passed under the same lock: apply cannot refuse it.
		panic(fmt.Sprintf("master: a checked %v of %s was refused: %v", e.Op, e.Path, err))
	}
	m.retries.noteSeq(e, seq)
	return seq, n, nil
}

// syncThenRelease waits until record seq is on disk, then queues the
// deletes held back until it was.
func (m *Master) syncThenRelease(seq uint64) error {
	if err := m.journal.sync(seq); err != nil {
		return err
	}
	m.deletes.release(m.journal.synced())
	return nil
}

// snapshot copies the persisted state. The caller holds mu, so no edit is
// appended meanwhile and LastSeq is exactly what the copy contains.
func (m *Master) snapshot() *image {
	// It runs under mu, which every RPC waits for: the columns are
	// filled straight from the entries, sized up front.
	ns := m.ns
	img := &image{Version: imageVersion, ClusterID: m.clusterID,
		Paths:       make([]string, 0, ns.files),
		Replication: make([]int32, 0, ns.files),
		BlockSize:   make([]int64, 0, ns.files),
		ModTime:     make([]int64, 0, ns.files),
		NumBlocks:   make([]uint32, 0, ns.files),
		BlockID:     make([]uint64, 0, len(ns.blocks)),
		BlockLen:    make([]int64, 0, len(ns.blocks)),
		CRC:         make([]uint32, 0, len(ns.blocks)),
		NumReplicas: make([]uint8, 0, len(ns.blocks)),
		Replicas:    make([]uint32, 0, 3*len(ns.blocks)),
		DirPaths:    make([]string, 0, ns.dirs),
		DirModTime:  make([]int64, 0, ns.dirs),
		FileMode:    make([]uint16, 0, ns.files),
		DirMode:     make([]uint16, 0, ns.dirs),
	}
	if m.journal != nil {
		img.LastSeq = m.journal.last()
	}
	if m.haState {
		img.TokenKey = m.tokenKey
	}
	for _, mi := range m.masters {
		img.Masters = append(img.Masters, mi)
	}
	slices.SortFunc(img.Masters, func(a, b imageMaster) int { return strings.Compare(a.ID, b.ID) })
	img.Retries = m.retries.image()
	// Minions in slot order; a replica's slot maps to its index.
	img.Minions = m.reg.image()
	walkDirs("", &ns.root, func(p string, d *dirNode) {
		img.DirPaths = append(img.DirPaths, p)
		img.DirModTime = append(img.DirModTime, d.modTime)
		img.DirMode = append(img.DirMode, d.mode)
	})
	walkDir("", &ns.root, func(p string, f *fileEntry) bool {
		ids := f.blocks.list()
		img.Paths = append(img.Paths, p)
		img.Replication = append(img.Replication, int32(f.replication))
		img.FileMode = append(img.FileMode, f.mode)
		img.BlockSize = append(img.BlockSize, f.blockSize())
		img.ModTime = append(img.ModTime, f.modTime)
		img.NumBlocks = append(img.NumBlocks, uint32(len(ids)))
		for _, id := range ids {
			b := ns.blocks[id]
			img.BlockID = append(img.BlockID, id)
			img.BlockLen = append(img.BlockLen, b.size)
			img.CRC = append(img.CRC, b.crc)
			slots := b.replicas.list()
			img.NumReplicas = append(img.NumReplicas, uint8(len(slots)))
			for _, s := range slots {
				img.Replicas = append(img.Replicas, uint32(s-1)) // slot s is Minions[s-1]
			}
		}
		return true
	})
	return img
}

// ---- the namespace's RPCs ----

func (m *Master) stat(p string) (FileInfo, error) {
	if err := checkPath(p); err != nil {
		return FileInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, d := m.ns.lookup(p)
	switch {
	case f != nil:
		return m.fileInfo(p, f, true), nil
	case d != nil:
		return dirInfo(p, d), nil
	}
	return FileInfo{}, fmt.Errorf("%w: %s", ErrNotFound, p)
}

// list returns the file at p, or the entries of directory p (every file
// and directory below it when recursive), sorted by path.
func (m *Master) list(p string, recursive bool) ([]FileInfo, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, d := m.ns.lookup(p)
	switch {
	case f != nil:
		return []FileInfo{m.fileInfo(p, f, false)}, nil
	case d == nil:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	prefix := strings.TrimSuffix(p, "/")
	out := []FileInfo{}
	if recursive {
		walkDirs(prefix, d, func(dp string, sub *dirNode) { out = append(out, dirInfo(dp, sub)) })
		walkDir(prefix, d, func(fp string, f *fileEntry) bool {
			out = append(out, m.fileInfo(fp, f, false))
			return true
		})
	} else {
		for name, sub := range d.dirs {
			out = append(out, dirInfo(prefix+"/"+name, sub))
		}
		for name, f := range d.files {
			out = append(out, m.fileInfo(prefix+"/"+name, f, false))
		}
	}
	slices.SortFunc(out, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// dirInfo describes the directory d at p: its size is that of every file
// below it.
func dirInfo(p string, d *dirNode) FileInfo {
	fi := FileInfo{Path: p, Dir: true, Size: d.size, Mode: modeOr(d.mode, defaultDirMode)}
	if d.modTime != 0 {
		fi.ModTime = time.Unix(0, d.modTime)
	}
	return fi
}

// mkdir makes the directory p, and its missing parents with parents. call
// names the client's call, if it may send it again (retrycache.go).
func (m *Master) mkdir(call CallID, p string, parents bool, mode uint32) error {
	if err := checkPath(p); err != nil {
		return err
	}
	m.mu.Lock()
	if r, ok := m.retries.lookup(call, opMkdir, p); ok {
		m.mu.Unlock()
		return r.durable(m.journal)
	}
	if parents && m.ns.isDir(p) {
		m.mu.Unlock()
		return nil // there already: nothing to log
	}
	seq, _, err := m.commit(&edit{Op: opMkdir, Path: p, Parents: parents, Mode: mode, Time: time.Now().UnixNano(), Call: call})
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.journal.sync(seq)
}

// setTimes sets the modification time of the file or directory p.
func (m *Master) setTimes(p string, mtime time.Time) error {
	_, err := m.change(&edit{Op: opSetTimes, Path: p, Time: mtime.UnixNano()})
	return err
}

// setMode sets the permission bits of the file or directory p.
func (m *Master) setMode(p string, mode uint32) error {
	_, err := m.change(&edit{Op: opSetMode, Path: p, Mode: mode})
	return err
}

// change commits e, a change of the namespace at e.Path, and waits until
// it is on disk. It returns the number of files changed.
func (m *Master) change(e *edit) (int, error) {
	if err := checkPath(e.Path); err != nil {
		return 0, err
	}
	m.mu.Lock()
	seq, n, err := m.commit(e)
	m.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return n, m.journal.sync(seq)
}

// remove deletes the file at p, or the directory p if it is empty or with
// recursive, with everything below it. It returns the number of files
// removed. call is as for mkdir.
func (m *Master) remove(call CallID, p string, recursive bool) (int, error) {
	if err := checkPath(p); err != nil {
		return 0, err
	}
	m.mu.Lock()
	if r, ok := m.retries.lookup(call, opDelete, p); ok {
		m.mu.Unlock()
		return r.n, r.durable(m.journal)
	}
	seq, n, err := m.commit(&edit{Op: opDelete, Path: p, Recursive: recursive, Time: time.Now().UnixNano(), Call: call})
	m.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return n, m.syncThenRelease(seq)
}

// rename moves the file or directory at src to dst, or into dst when dst
// is a directory (as mv does), and returns the path it moved to and the
// number of files moved. It replaces a file at that path only if force.
// call is as for mkdir.
// One record moves a whole directory: a crash leaves all of it moved or
// none.
func (m *Master) rename(call CallID, src, dst string, force bool) (string, int, error) {
	if err := checkPath(src); err != nil {
		return "", 0, err
	}
	if err := checkPath(dst); err != nil {
		return "", 0, err
	}
	m.mu.Lock()
	if r, ok := m.retries.lookup(call, opRename, src); ok {
		m.mu.Unlock()
		return r.to, r.n, r.durable(m.journal)
	}
	to := dst
	if m.ns.isDir(dst) {
		to = path.Join(dst, path.Base(src))
	}
	e := &edit{Op: opRename, Path: src, Dst: to, Force: force, Time: time.Now().UnixNano(), Call: call}
	if err := m.ns.check(e); err != nil {
		m.mu.Unlock()
		return "", 0, err
	}
	if err := m.checkRenameLength(src, to); err != nil {
		m.mu.Unlock()
		return "", 0, err
	}
	if err := m.checkRenameBusy(src, to); err != nil {
		m.mu.Unlock()
		return "", 0, err
	}
	if to == src {
		m.mu.Unlock()
		return to, 0, nil
	}
	seq, n, err := m.commit(e)
	m.mu.Unlock()
	if err != nil {
		return "", 0, err
	}
	return to, n, m.syncThenRelease(seq)
}

// checkRenameLength refuses a move that makes a path longer than a put
// may. Not a check of the record: older masters logged such moves. The
// caller holds mu.
func (m *Master) checkRenameLength(src, to string) error {
	if err := checkPath(to); err != nil {
		return err
	}
	if !m.ns.isDir(src) {
		return nil
	}
	var err error
	m.ns.walk(src, func(p string, _ *fileEntry) bool {
		if q := to + strings.TrimPrefix(p, src); len(q) > maxPathLen {
			err = fmt.Errorf("%w: moving %s to %s makes a path of %d bytes (at most %d)", ErrBadPath, p, q[:64]+"...", len(q), maxPathLen)
			return false
		}
		return true
	})
	return err
}

// checkRenameBusy refuses a move onto a path a put is writing (it would
// replace the moved file when it completes) and of a directory a put is
// writing into (it would complete at the old path). The caller holds mu.
func (m *Master) checkRenameBusy(src, to string) error {
	if _, busy := m.leases.busy(to, false); busy {
		return fmt.Errorf("%w: %s", ErrBusy, to)
	}
	if !m.ns.isDir(src) {
		return nil
	}
	if p, busy := m.leases.busy(src, true); busy {
		return fmt.Errorf("%w: %s, below %s", ErrBusy, p, src)
	}
	for _, p := range m.leases.paths() {
		if rel, ok := strings.CutPrefix(p, to+"/"); ok && m.ns.file(src+"/"+rel) != nil {
			return fmt.Errorf("%w: %s, where %s/%s would go", ErrBusy, p, src, rel)
		}
	}
	return nil
}

// setReplication sets the replication of the file at p, or of every file
// below directory p, and returns how many files it set. The next
// replication tick copies or trims their blocks.
func (m *Master) setReplication(p string, n int) (int, error) {
	return m.change(&edit{Op: opSetReplication, Path: p, Replication: n, Time: time.Now().UnixNano()})
}

// fileInfo describes the file at p. The caller holds mu.
func (m *Master) fileInfo(p string, f *fileEntry, withBlocks bool) FileInfo {
	fi := FileInfo{Path: p, Size: m.ns.fileSize(f), Replication: int(f.replication), BlockSize: f.blockSize(), ModTime: time.Unix(0, f.modTime),
		Mode: modeOr(f.mode, defaultFileMode)}
	if !withBlocks {
		return fi
	}
	now := time.Now()
	ids := f.blocks.list()
	fi.Blocks = make([]BlockInfo, 0, len(ids))
	for _, id := range ids {
		b := m.ns.blocks[id]
		bi := BlockInfo{ID: id, Size: b.size, CRC: b.crc, Replicas: []string{}}
		var draining []string
		for _, s := range b.replicas.list() {
			if mn := m.reg.at(s); m.reg.alive(mn, now) {
				if mn.decommissioning {
					draining = append(draining, mn.addr)
				} else {
					bi.Replicas = append(bi.Replicas, mn.addr)
				}
			}
		}
		// Readers start with the first replica: rotate by block id so
		// that the blocks of one file are read from all its minions.
		if n := len(bi.Replicas); n > 1 {
			k := int(id % uint64(n))
			bi.Replicas = append(bi.Replicas[k:], bi.Replicas[:k]...)
		}
		bi.Replicas = append(bi.Replicas, draining...) // read them last
		fi.Blocks = append(fi.Blocks, bi)
	}
	return fi
}

// ---- helpers ----

func validBlockSize(bs int64) error {
	if bs < bytesPerChecksum || bs > maxBlockSize || bs%bytesPerChecksum != 0 {
		return fmt.Errorf("%w: block size %d (want a multiple of %d between %d and %d)",
			ErrBadArg, bs, bytesPerChecksum, bytesPerChecksum, int64(maxBlockSize))
	}
	return nil
}

func randomID() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func imagePath(dir string) string { return filepath.Join(dir, "fsimage") }

// ---- the RPC surface ----

// masterRPC is what the master registers with net/rpc: exactly the methods
// listed here are callable from the network.
type masterRPC struct{ m *Master }

func (r *masterRPC) Ping(_ *PingArgs, reply *PingReply) error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	reply.ClusterID = r.m.clusterID
	if r.m.ha != nil {
		mi := r.m.ha.info()
		reply.Raft = &mi
	}
	return nil
}

func (r *masterRPC) Register(a *RegisterArgs, reply *RegisterReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, err := r.m.register(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Heartbeat(a *HeartbeatArgs, reply *HeartbeatReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	*reply = *r.m.heartbeat(a)
	return nil
}

func (r *masterRPC) Create(a *CreateArgs, reply *CreateReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, err := r.m.create(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) AddBlock(a *AddBlockArgs, reply *AddBlockReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, err := r.m.addBlock(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Complete(a *CompleteArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	return r.m.complete(a)
}

func (r *masterRPC) Renew(a *AbandonArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	return r.m.renew(a.Handle)
}

func (r *masterRPC) Abandon(a *AbandonArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	r.m.abandon(a)
	return nil
}

func (r *masterRPC) BlockReceived(a *BlockReceivedArgs, reply *BlockReceivedReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, err := r.m.blockReceived(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) ReportBad(a *ReportBadArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	r.m.reportBad(a)
	return nil
}

func (r *masterRPC) Decommission(a *DecommissionArgs, reply *DecommissionReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, seq, err := r.m.decommission(a.Addr)
	if err != nil {
		return err
	}
	*reply = *rep
	return r.m.journal.sync(seq)
}

func (r *masterRPC) Report(_ *ReportArgs, reply *ReportReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	*reply = *r.m.report()
	if r.m.ha != nil {
		reply.Masters = r.m.ha.masterInfos()
	}
	return nil
}

func (r *masterRPC) Fsck(a *FsckArgs, reply *FsckReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	rep, err := r.m.fsck(a.Path)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Stat(a *PathArgs, reply *FileInfo) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	fi, err := r.m.stat(a.Path)
	*reply = fi
	if err == nil && a.Durable {
		// stat has seen every change applied so far; none of them may
		// be shown as done before it is on disk.
		err = r.m.journal.sync(r.m.journal.last())
	}
	return err
}

func (r *masterRPC) List(a *ListArgs, reply *ListReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	entries, err := r.m.list(a.Path, a.Recursive)
	reply.Entries = entries
	return err
}

func (r *masterRPC) Mkdir(a *MkdirArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	return r.m.mkdir(a.Call, a.Path, a.Parents, a.Mode)
}

func (r *masterRPC) SetTimes(a *SetTimesArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	return r.m.setTimes(a.Path, a.ModTime)
}

func (r *masterRPC) SetMode(a *SetModeArgs, _ *Empty) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	return r.m.setMode(a.Path, a.Mode)
}

func (r *masterRPC) SetReplication(a *SetReplicationArgs, reply *SetReplicationReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	n, err := r.m.setReplication(a.Path, a.Replication)
	reply.Files = n
	return err
}

func (r *masterRPC) Rename(a *RenameArgs, reply *RenameReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	to, n, err := r.m.rename(a.Call, a.Src, a.Dst, a.Force)
	reply.Path, reply.Moved = to, n
	return err
}

func (r *masterRPC) Delete(a *DeleteArgs, reply *DeleteReply) error {
	if err := r.m.leaderOnly(); err != nil {
		return err
	}
	n, err := r.m.remove(a.Call, a.Path, a.Recursive)
	reply.Removed = n
	return err
}

func (r *masterRPC) Announce(a *AnnounceArgs, _ *Empty) error {
	h, err := r.m.replicated()
	if err != nil {
		return err
	}
	return h.announce(a)
}

func (r *masterRPC) ChangePeers(a *PeerArgs, _ *Empty) error {
	h, err := r.m.replicated()
	if err != nil {
		return err
	}
	return h.changePeers(a)
}

// replicated is the Raft node of a replicated master that leads; an
// error for a single master or a follower.
func (m *Master) replicated() (*haNode, error) {
	if err := m.leaderOnly(); err != nil {
		return nil, err
	}
	if m.ha == nil {
		return nil, fmt.Errorf("%w: not one of replicated masters (start the masters with --peers)", ErrBadArg)
	}
	return m.ha, nil
}
