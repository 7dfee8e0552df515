// master.go is the metadata server (the NameNode): the namespace of files,
// each file's blocks, each block's replicas, the registry of minions with
// their liveness, and block placement. It never touches file data.
//
// All state sits behind one mutex, held briefly and never across network or
// disk I/O. A change that a client must be able to rely on (a completed put,
// a delete) is appended to the edit log under the lock and fsynced after it,
// before the RPC answers (editlog.go); checkpoints fold the log into the
// image (meta.go).
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
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
	Logger             *slog.Logger

	lock   *dirLock
	srv    *rpcServer
	cancel context.CancelFunc
	wg     sync.WaitGroup

	edits *editLog
	// ckptMu serialises checkpoints; checkpointing is set while one
	// runs in the background (see housekeeping).
	ckptMu        sync.Mutex
	checkpointing atomic.Bool

	// mu guards everything below.
	mu        sync.Mutex
	clusterID string
	files     map[string]*fileEntry
	dirs      map[string]int // directory -> number of files below it
	blocks    map[uint64]*blockEntry
	minions   map[string]*minionEntry // by minion id
	bySlot    []*minionEntry          // by slot (replicas.go); bySlot[0] is nil
	// grown holds, for the blocks whose replicas grew in the last
	// reportGrace, when they did (Unix nanoseconds): a block report may
	// leave those replicas out (see reconcile). expireGrown prunes it.
	grown   map[uint64]int64
	writes  map[uint64]*writeEntry // puts in progress, by handle
	writing map[string]uint64      // path -> handle of its put in progress
	deletes map[string][]uint64    // minion id -> blocks it should delete
	// held are deletes of the blocks of files that a logged change
	// (rm, or a file replaced by put or mv --force) took out of the
	// namespace, kept back until its record is on disk: a crash before
	// that brings the file back, and its blocks must still be there.
	// holdUntil is the seq of the change being applied, 0 if none.
	held      []heldDelete
	holdUntil uint64
	// handed are the deletes given to a minion and not yet confirmed by a
	// block report that leaves them out: if the heartbeat reply was lost,
	// the block is deleted again rather than taken for a good replica.
	handed map[string]map[uint64]bool
	closed bool

	// Re-replication and safe mode; see replication.go.
	copying  map[uint64][]pendingCopy // block -> copies asked for
	copyCmds map[string][]CopyCommand // minion id -> copies to hand it
	// recheck holds the blocks whose replication the next tick looks
	// at; rescan makes it look at every block, and lastRescan is when
	// it last did (see replicate).
	recheck    map[uint64]struct{}
	rescan     bool
	lastRescan time.Time
	safeMode   bool
	safeUntil  time.Time
	reported   map[uint64]bool // blocks reported since the restart, in safe mode
	// corrupt lists, by block, replicas that failed their checksums and
	// are kept because no good replica is left. It is rare and small.
	corrupt map[uint64][]string
	// safeOrphans are reported blocks the master did not know in safe
	// mode, by minion id; they are deleted when safe mode ends.
	safeOrphans map[string][]uint64
}

// fileEntry is a file of the namespace. It is kept small (32 bytes, with
// the block id of a one-block file inline): a master holds one per file.
// Its size is the sum of its blocks'.
type fileEntry struct {
	blocks  blockList // 16 bytes
	modTime int64     // Unix nanoseconds
	// blockUnits is the block size over bytesPerChecksum, which divides
	// it (validBlockSize): 4 bytes where the size would take 8.
	blockUnits  uint32
	replication int32
}

func (f *fileEntry) blockSize() int64 { return int64(f.blockUnits) * bytesPerChecksum }

// blockList is the ids of a file's blocks, in 16 bytes. Most files have
// one block: it is kept inline. Any other file (empty, or of several
// blocks) has its ids in a slice of its own.
type blockList struct {
	one  [1]uint64 // the block of a one-block file
	more *[]uint64 // the blocks of any other file; nil for a one-block file
}

// blockListOf lists the ids of blocks.
func blockListOf(blocks []imageBlock) blockList {
	if len(blocks) == 1 {
		return blockList{one: [1]uint64{blocks[0].ID}}
	}
	ids := make([]uint64, len(blocks))
	for i, b := range blocks {
		ids[i] = b.ID
	}
	return blockList{more: &ids}
}

// list returns the ids in order. The caller must not change them.
func (l *blockList) list() []uint64 {
	if l.more != nil {
		return *l.more
	}
	return l.one[:]
}

// blockEntry is a block of a file (32 bytes, up to 4 replicas included).
type blockEntry struct {
	replicas replicaSet // 16 bytes: the minions of the good replicas
	size     int64
	crc      uint32
	repl     int32 // the replication of its file
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
	// by addReplica, dropReplica and the namespace's add and remove): a
	// block report that names as many of them has left none out.
	replicas        int
	decommissioning bool // being drained: no new blocks, replicas not counted
	// registered is set once it registered with this master process; a
	// minion known only from the image or log has sent no stats or block
	// report yet.
	registered bool
	// counted is how it stood at the last replication tick: a change
	// makes the tick look at every block (see replicate).
	counted replicaState
}

type writeEntry struct {
	path        string
	replication int
	blockSize   int64
	force       bool
	blocks      []allocation
	lastUsed    time.Time
}

type allocation struct {
	id       uint64
	pipeline []string // minion ids
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
	if err := m.load(); err != nil {
		lock.unlock()
		return err
	}
	srv := rpc.NewServer()
	if err := srv.RegisterName(masterService, &masterRPC{m}); err != nil {
		lock.unlock()
		return err
	}
	s, err := serveRPC(m.Addr, srv, m.Logger)
	if err != nil {
		lock.unlock()
		return fmt.Errorf("master listen: %w", err)
	}
	m.srv = s
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go m.housekeeping(ctx)
	m.Logger.Info("master started", "addr", m.AddrString(), "dir", m.Dir, "cluster", m.clusterID,
		"files", len(m.files), "blocks", len(m.blocks))
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
		m.edits, err = openEditLog(m.Dir, 0)
		return err
	}
	if err := m.applyImage(img); err != nil {
		return err
	}
	last, torn, err := replayEdits(m.Dir, img.LastSeq, m.applyEdit)
	if err != nil {
		return err
	}
	if torn {
		m.Logger.Warn("edit log: cut off a torn last record (a crash during an append that was never acknowledged)")
	}
	if len(m.blocks) > 0 {
		m.enterSafeMode()
	}
	// grown stays empty: replica lists from disk are hints until the
	// minions report, with no grace for one that a report leaves out.
	if m.edits, err = openEditLog(m.Dir, last); err != nil {
		return err
	}
	if last > img.LastSeq {
		m.Logger.Info("replayed edit log", "records", last-img.LastSeq)
		return m.checkpoint()
	}
	return nil
}

// reset empties the master's state. The caller holds mu or has not
// started serving.
func (m *Master) reset() {
	m.files = make(map[string]*fileEntry)
	m.dirs = make(map[string]int)
	m.blocks = make(map[uint64]*blockEntry)
	m.minions = make(map[string]*minionEntry)
	m.bySlot = []*minionEntry{nil} // slot 0 is no minion
	m.grown = make(map[uint64]int64)
	m.writes = make(map[uint64]*writeEntry)
	m.writing = make(map[string]uint64)
	m.deletes = make(map[string][]uint64)
	m.handed = make(map[string]map[uint64]bool)
	m.copying = make(map[uint64][]pendingCopy)
	m.corrupt = make(map[uint64][]string)
	m.copyCmds = make(map[string][]CopyCommand)
	m.recheck = make(map[uint64]struct{})
	m.rescan = true
}

// applyImage loads img into the reset state. The caller holds mu or has
// not started serving.
func (m *Master) applyImage(img *image) error {
	m.clusterID = img.ClusterID
	for _, mn := range img.Minions {
		if err := m.applyMinion(mn); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadImage, imagePath(m.Dir), err)
		}
	}
	m.files = make(map[string]*fileEntry, img.numFiles())
	m.blocks = make(map[uint64]*blockEntry, len(img.BlockID))
	if err := img.eachFile(m.applyPut); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadImage, imagePath(m.Dir), err)
	}
	return nil
}

// applyEdit applies one replayed record.
func (m *Master) applyEdit(e *edit) error {
	switch e.Op {
	case opPut:
		if err := m.checkCreate(e.Path, true); err != nil {
			return err
		}
		if err := validBlockSize(e.File.BlockSize); err != nil {
			return err // the master keeps it in units of bytesPerChecksum
		}
		m.applyPut(&e.File)
	case opDelete:
		if _, err := m.applyDelete(e.Path, e.Recursive); err != nil {
			return err
		}
	case opMinion:
		return m.applyMinion(e.Minion)
	case opSetReplication:
		if err := m.setReplicationCheck(e.Path, e.Replication); err != nil {
			return err
		}
		m.applySetReplication(e.Path, e.Replication)
	case opRename:
		if err := m.checkRename(e.Path, e.Dst, e.Force); err != nil {
			return err
		}
		m.applyRename(e.Path, e.Dst)
	default:
		return fmt.Errorf("unknown operation %d", e.Op)
	}
	return nil
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
	m.wg.Wait()
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

// housekeeping expires abandoned puts until ctx ends.
func (m *Master) housekeeping(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now()
			m.expireWrites(now)
			m.expireGrown(now)
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

// expireWrites abandons puts whose client went quiet for LeaseTimeout.
func (m *Master) expireWrites(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, w := range m.writes {
		if now.Sub(w.lastUsed) > m.LeaseTimeout {
			m.Logger.Warn("put abandoned: lease expired", "path", w.path)
			m.dropWrite(h, w)
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
	last, _, err := replayEditsUpTo(m.Dir, img.LastSeq, upTo, ns.applyEdit)
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

// logEdit appends e to the edit log. The caller holds mu and applies the
// change only if this succeeds; it calls edits.sync after releasing mu.
func (m *Master) logEdit(e *edit) (uint64, error) {
	seq, err := m.edits.append(e)
	if err != nil {
		return 0, fmt.Errorf("metadata not saved: %w", err)
	}
	return seq, nil
}

// snapshot copies the persisted state. The caller holds mu, so no edit is
// appended meanwhile and LastSeq is exactly what the copy contains.
func (m *Master) snapshot() *image {
	// It runs under mu, which every RPC waits for: the columns are
	// filled straight from the entries, sized up front, with no value
	// made per file.
	img := &image{Version: imageVersion, ClusterID: m.clusterID,
		Paths:       make([]string, 0, len(m.files)),
		Replication: make([]int32, 0, len(m.files)),
		BlockSize:   make([]int64, 0, len(m.files)),
		ModTime:     make([]int64, 0, len(m.files)),
		NumBlocks:   make([]uint32, 0, len(m.files)),
		BlockID:     make([]uint64, 0, len(m.blocks)),
		BlockLen:    make([]int64, 0, len(m.blocks)),
		CRC:         make([]uint32, 0, len(m.blocks)),
		NumReplicas: make([]uint8, 0, len(m.blocks)),
		Replicas:    make([]uint32, 0, 3*len(m.blocks)),
	}
	if m.edits != nil {
		m.edits.mu.Lock()
		img.LastSeq = m.edits.lastSeq
		m.edits.mu.Unlock()
	}
	// Minions in slot order; a replica's slot maps to its index.
	index := make([]uint32, len(m.bySlot))
	for s, mn := range m.bySlot[1:] {
		index[s+1] = uint32(len(img.Minions))
		img.Minions = append(img.Minions, imageMinion{ID: mn.id, Addr: mn.addr, Decommissioning: mn.decommissioning})
	}
	for p, f := range m.files {
		ids := f.blocks.list()
		img.Paths = append(img.Paths, p)
		img.Replication = append(img.Replication, f.replication)
		img.BlockSize = append(img.BlockSize, f.blockSize())
		img.ModTime = append(img.ModTime, f.modTime)
		img.NumBlocks = append(img.NumBlocks, uint32(len(ids)))
		for _, id := range ids {
			b := m.blocks[id]
			img.BlockID = append(img.BlockID, id)
			img.BlockLen = append(img.BlockLen, b.size)
			img.CRC = append(img.CRC, b.crc)
			slots := b.replicas.list()
			img.NumReplicas = append(img.NumReplicas, uint8(len(slots)))
			for _, s := range slots {
				img.Replicas = append(img.Replicas, index[s])
			}
		}
	}
	return img
}

// applyPut puts the file imf in the namespace, replacing a file at its
// path. The caller holds mu and has checked the path.
func (m *Master) applyPut(imf *imageFile) {
	if _, ok := m.files[imf.Path]; ok {
		m.removeFile(imf.Path)
	}
	for _, b := range imf.Blocks {
		be := &blockEntry{size: b.Size, crc: b.CRC, repl: int32(imf.Replication), replicas: m.replicaSetOf(b.Replicas)}
		for _, s := range be.replicas.list() {
			mn := m.minionAt(s)
			mn.load += b.Size
			mn.replicas++
		}
		m.blocks[b.ID] = be
		// A pipeline lost minions, or one is dead or draining now. Not
		// while a look at every block is due anyway (at start, where it
		// would cost a count per block of the image).
		if !m.rescan && m.liveCount(be, time.Now()) < int(be.repl) {
			m.recheck[b.ID] = struct{}{}
		}
	}
	f := &fileEntry{blocks: blockListOf(imf.Blocks), modTime: imf.ModTime.UnixNano(),
		blockUnits: uint32(imf.BlockSize / bytesPerChecksum), replication: int32(imf.Replication)}
	m.addFile(imf.Path, f)
}

// applyMinion records a minion known from the image or the log. Known
// minions get a full DeadAfter to report in after a restart; until then
// their replicas are served as before. The caller holds mu.
func (m *Master) applyMinion(im imageMinion) error {
	for _, other := range m.minions {
		if other.id != im.ID && other.addr == im.Addr {
			other.addr = "" // a new dir took over the address
		}
	}
	mn := m.minions[im.ID]
	if mn == nil {
		var err error
		if mn, err = m.addMinion(im.ID); err != nil {
			return err
		}
		mn.lastSeen = time.Now()
	}
	mn.addr, mn.decommissioning = im.Addr, im.Decommissioning
	return nil
}

// applyDelete removes the file at p, or every file below directory p when
// recursive, and returns how many went. The caller holds mu.
func (m *Master) applyDelete(p string, recursive bool) (int, error) {
	switch {
	case m.files[p] != nil:
		m.removeFile(p)
		return 1, nil
	case p == "/" || m.dirs[p] > 0:
		if !recursive {
			return 0, fmt.Errorf("%w: %s (use -r to remove it and everything below)", ErrIsDir, p)
		}
		below := m.filesAt(p)
		for _, fp := range below {
			m.removeFile(fp)
		}
		return len(below), nil
	}
	return 0, fmt.Errorf("%w: %s", ErrNotFound, p)
}

// ---- namespace ----

// maxPathLen is the longest path the namespace takes, in bytes.
const maxPathLen = 4096

// checkPath returns ErrBadPath unless p is absolute and clean.
func checkPath(p string) error {
	if p == "" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || len(p) > maxPathLen {
		return fmt.Errorf("%w: %q (want a clean absolute path such as /dir/name)", ErrBadPath, p)
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: %q contains control characters", ErrBadPath, p)
	}
	return nil
}

// ancestors calls fn for every directory above p, "/" excluded.
func ancestors(p string, fn func(dir string) bool) {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if !fn(d) {
			return
		}
	}
}

// checkCreate says whether a file may be created at p. The caller holds mu.
func (m *Master) checkCreate(p string, force bool) error {
	if err := checkPath(p); err != nil {
		return err
	}
	if p == "/" || m.dirs[p] > 0 {
		return fmt.Errorf("%w: %s", ErrIsDir, p)
	}
	var err error
	ancestors(p, func(d string) bool {
		if _, ok := m.files[d]; ok {
			err = fmt.Errorf("%w: %s", ErrNotDir, d)
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	if _, ok := m.files[p]; ok && !force {
		return fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, p)
	}
	return nil
}

// addFile puts f at p. The caller holds mu and has checked p.
func (m *Master) addFile(p string, f *fileEntry) {
	m.files[p] = f
	ancestors(p, func(d string) bool { m.dirs[d]++; return true })
}

// unlinkFile takes the file at p out of the namespace and returns it; its
// blocks stay. The caller holds mu.
func (m *Master) unlinkFile(p string) *fileEntry {
	f := m.files[p]
	delete(m.files, p)
	ancestors(p, func(d string) bool {
		if m.dirs[d]--; m.dirs[d] <= 0 {
			delete(m.dirs, d)
		}
		return true
	})
	return f
}

// removeFile takes the file at p out of the namespace and queues its blocks
// for deletion on their minions. The caller holds mu.
func (m *Master) removeFile(p string) {
	f := m.unlinkFile(p)
	for _, id := range f.blocks.list() {
		if b := m.blocks[id]; b != nil {
			for _, s := range b.replicas.list() {
				mn := m.minionAt(s)
				m.queueDeleteOn(id, mn.id)
				mn.load -= b.size
				mn.replicas--
			}
			m.queueDelete(id, m.corrupt[id])
			delete(m.corrupt, id)
		}
		delete(m.blocks, id)
		delete(m.grown, id)
	}
}

// addLoad adds delta bytes to the load of each of minions. The caller holds mu.
func (m *Master) addLoad(minions []string, delta int64) {
	for _, mid := range minions {
		if mn := m.minions[mid]; mn != nil {
			mn.load += delta
		}
	}
}

// queueDelete asks the given minions to delete block id, at once or, while
// a logged change is applied (holdUntil), once its record is on disk. The
// caller holds mu.
func (m *Master) queueDelete(id uint64, minions []string) {
	for _, mid := range minions {
		m.queueDeleteOn(id, mid)
	}
}

// queueDeleteOn is queueDelete on the one minion mid.
func (m *Master) queueDeleteOn(id uint64, mid string) {
	if m.holdUntil > 0 {
		m.held = append(m.held, heldDelete{m.holdUntil, mid, id})
	} else {
		m.deletes[mid] = append(m.deletes[mid], id)
	}
}

// heldDelete is a delete kept back until record seq is on disk.
type heldDelete struct {
	seq uint64
	mid string
	id  uint64
}

// releaseHeld queues the held deletes whose records are on disk. The
// caller holds mu.
func (m *Master) releaseHeld() {
	if len(m.held) == 0 {
		return
	}
	synced := m.edits.synced()
	n := 0
	for _, h := range m.held {
		if h.seq <= synced {
			m.deletes[h.mid] = append(m.deletes[h.mid], h.id)
		} else {
			m.held[n] = h
			n++
		}
	}
	clear(m.held[n:])
	m.held = m.held[:n]
}

// dropWrite forgets a put in progress and deletes its blocks. The caller holds mu.
func (m *Master) dropWrite(h uint64, w *writeEntry) {
	delete(m.writes, h)
	if m.writing[w.path] == h {
		delete(m.writing, w.path)
	}
	for _, a := range w.blocks {
		m.queueDelete(a.id, a.pipeline)
		m.addLoad(a.pipeline, -w.blockSize)
	}
}

// fileInfo describes the file at p. The caller holds mu.
func (m *Master) fileInfo(p string, f *fileEntry, withBlocks bool) FileInfo {
	fi := FileInfo{Path: p, Size: m.fileSize(f), Replication: int(f.replication), BlockSize: f.blockSize(), ModTime: time.Unix(0, f.modTime)}
	if !withBlocks {
		return fi
	}
	now := time.Now()
	ids := f.blocks.list()
	fi.Blocks = make([]BlockInfo, 0, len(ids))
	for _, id := range ids {
		b := m.blocks[id]
		bi := BlockInfo{ID: id, Size: b.size, CRC: b.crc, Replicas: []string{}}
		var draining []string
		for _, s := range b.replicas.list() {
			if mn := m.minionAt(s); m.alive(mn, now) {
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

// fileSize is the sum of f's block sizes. The caller holds mu.
func (m *Master) fileSize(f *fileEntry) int64 {
	var n int64
	for _, id := range f.blocks.list() {
		n += m.blocks[id].size
	}
	return n
}

func (m *Master) alive(mn *minionEntry, now time.Time) bool {
	return now.Sub(mn.lastSeen) <= m.DeadAfter
}

// ---- placement ----

// place picks up to n distinct live minions with room for a block of size
// bytes, least loaded first, skipping those for which skip is true. The
// caller holds mu.
func (m *Master) place(n int, size int64, skip func(*minionEntry) bool) []*minionEntry {
	now := time.Now()
	var live []*minionEntry
	for _, mn := range m.minions {
		// A minion not yet registered since a restart has sent no
		// stats: trust it with the block; it refuses if it is full.
		roomy := !mn.registered || mn.free >= size
		if m.alive(mn, now) && mn.addr != "" && !mn.decommissioning && roomy && (skip == nil || !skip(mn)) {
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

// ---- minion registry ----

// register records a minion and reconciles its block report.
func (m *Master) register(a *RegisterArgs) (*RegisterReply, error) {
	if a.MinionID == "" {
		return nil, fmt.Errorf("%w: empty minion id", ErrBadArg)
	}
	if _, _, err := net.SplitHostPort(a.Addr); err != nil {
		return nil, fmt.Errorf("%w: minion address %q: %v", ErrBadArg, a.Addr, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.ClusterID != "" && a.ClusterID != m.clusterID {
		return nil, fmt.Errorf("%w: minion dir is of %s, this master is %s", ErrWrongCluster, a.ClusterID, m.clusterID)
	}
	for _, other := range m.minions {
		if other.id != a.MinionID && other.addr == a.Addr {
			// Another dir now answers at this address: the old one
			// is gone, whatever its last heartbeat said.
			other.lastSeen = time.Time{}
			other.addr = ""
			m.rescan = true // it may have come back and died again since the last tick
		}
	}
	mn := m.minions[a.MinionID]
	if mn == nil {
		var err error
		if mn, err = m.addMinion(a.MinionID); err != nil {
			return nil, err
		}
	}
	if mn.addr != a.Addr { // a new minion, or a new address
		// Not synced here: the next put or delete takes it to disk.
		if _, err := m.logEdit(&edit{Op: opMinion, Minion: imageMinion{ID: a.MinionID, Addr: a.Addr, Decommissioning: mn.decommissioning}}); err != nil {
			m.Logger.Error("log minion address", "err", err)
		}
	}
	mn.addr = a.Addr
	mn.registered = true
	m.updateStats(mn, a.Capacity, a.Free, a.Used, len(a.Blocks))

	reply := &RegisterReply{ClusterID: m.clusterID, Heartbeat: m.Heartbeat}
	reply.Delete = m.reconcile(mn, a.Blocks, time.Now())
	m.Logger.Info("minion registered", "id", mn.id, "addr", mn.addr, "blocks", len(a.Blocks), "deleting", len(reply.Delete))
	return reply, nil
}

// maxDeletesPerHeartbeat bounds the block deletes handed to a minion at once.
const maxDeletesPerHeartbeat = 1000

// reportGrace is how new a replica may be and still be missing from a
// block report without being dropped: the report may have been taken on the
// minion before the block was finalized there.
const reportGrace = 2 * metaTimeout

// grewLately reports whether the replicas of block id grew in the last
// reportGrace. The caller holds mu.
func (m *Master) grewLately(id uint64, now time.Time) bool {
	t, ok := m.grown[id]
	return ok && now.Sub(time.Unix(0, t)) <= reportGrace
}

// expireGrown forgets the growths of replicas older than reportGrace.
func (m *Master) expireGrown(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.grown {
		if !m.grewLately(id, now) {
			delete(m.grown, id)
		}
	}
}

// reconcile brings the master's view of mn's replicas in line with its full
// block report and returns the reported blocks mn should delete. The
// caller holds mu.
func (m *Master) reconcile(mn *minionEntry, report []BlockReport, now time.Time) []uint64 {
	m.releaseHeld()
	pending := m.pendingBlocks()
	// Blocks of files a change not yet on disk removed: a crash would
	// bring them back, so they are kept until their delete is queued.
	var held map[uint64]uint64 // block -> seq of its hold
	var heldHere map[uint64]bool
	if len(m.held) > 0 {
		held = make(map[uint64]uint64, len(m.held))
		heldHere = make(map[uint64]bool)
		for _, h := range m.held {
			held[h.id] = max(held[h.id], h.seq)
			if h.mid == mn.id {
				heldHere[h.id] = true
			}
		}
	}
	// Deletes queued for mn and not yet handed over: a trimmed or
	// corrupt replica must not be adopted again because it is reported.
	queued := make(map[uint64]bool, len(m.deletes[mn.id]))
	for _, id := range m.deletes[mn.id] {
		queued[id] = true
	}
	for id := range m.handed[mn.id] {
		queued[id] = true // handed over, perhaps never received
	}
	delete(m.deletes, mn.id) // each is in del below, or gone from mn already
	delete(m.handed, mn.id)
	var del []uint64
	listed := 0 // reported replicas the master lists on mn
	for _, r := range report {
		b := m.blocks[r.ID]
		switch {
		case queued[r.ID]:
			del = append(del, r.ID)
		case b != nil && b.size == r.Size:
			if m.safeMode {
				m.reported[r.ID] = true
			}
			switch {
			case b.replicas.has(mn.slot):
				listed++
			case !slices.Contains(m.corrupt[r.ID], mn.id):
				m.addReplica(r.ID, b, mn, now)
				listed++
				m.dropCorrupt(r.ID)
			}
		case b == nil && pending[r.ID]:
			// Part of a put in progress: Complete will record it.
		case b == nil && held[r.ID] > 0:
			// Its delete is held back until the change is on disk;
			// a copy the change did not know of goes then too.
			if !heldHere[r.ID] {
				m.held = append(m.held, heldDelete{held[r.ID], mn.id, r.ID})
				heldHere[r.ID] = true
			}
		case b == nil && m.safeMode:
			// Perhaps an orphan; but until every minion has reported,
			// the master deletes nothing. It is queued when safe mode ends.
			m.safeOrphans[mn.id] = append(m.safeOrphans[mn.id], r.ID)
		default:
			// A block of a deleted file or a failed put, or a
			// replica of the wrong length: not a replica, however
			// new.
			if b != nil {
				m.dropReplica(r.ID, b, mn)
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
			if b := m.blocks[r.ID]; b != nil && b.size == r.Size && !queued[r.ID] {
				reported[r.ID] = true // not one of the wrong length
			}
		}
		for id, b := range m.blocks {
			if b.replicas.has(mn.slot) && !reported[id] && !m.grewLately(id, now) {
				m.dropReplica(id, b, mn)
			}
		}
	}
	m.checkSafeMode(now)
	return del
}

// pendingBlocks returns the blocks allocated to puts in progress. The caller holds mu.
func (m *Master) pendingBlocks() map[uint64]bool {
	out := make(map[uint64]bool)
	for _, w := range m.writes {
		for _, a := range w.blocks {
			out[a.id] = true
		}
	}
	return out
}

func (m *Master) updateStats(mn *minionEntry, capacity, free, used int64, numBlocks int) {
	mn.lastSeen = time.Now()
	mn.capacity, mn.free, mn.used, mn.numBlocks = capacity, free, used, numBlocks
}

// heartbeat records a minion's report and hands it the blocks to delete.
func (m *Master) heartbeat(a *HeartbeatArgs) *HeartbeatReply {
	m.mu.Lock()
	defer m.mu.Unlock()
	mn := m.minions[a.MinionID]
	if mn == nil || mn.addr != a.Addr || !mn.registered {
		// Unknown, moved, or known only from before a restart: the
		// master wants its block report (blocks to delete may have
		// been queued in the old process's memory).
		return &HeartbeatReply{Reregister: true}
	}
	m.updateStats(mn, a.Capacity, a.Free, a.Used, a.NumBlocks)
	m.releaseHeld()
	reply := &HeartbeatReply{Copy: m.copyCmds[mn.id]}
	delete(m.copyCmds, mn.id)
	// A bounded batch per heartbeat (as HDFS's invalidate limit), so that
	// a big rm -r does not hold up the minion's heartbeats.
	del := m.deletes[mn.id]
	n := min(len(del), maxDeletesPerHeartbeat)
	reply.Delete = slices.Clone(del[:n])
	if n > 0 && m.handed[mn.id] == nil {
		m.handed[mn.id] = make(map[uint64]bool)
	}
	for _, id := range reply.Delete {
		m.handed[mn.id][id] = true
	}
	if n == len(del) {
		delete(m.deletes, mn.id)
	} else {
		m.deletes[mn.id] = del[n:]
	}
	return reply
}

// ---- the write path ----

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
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkCreate(a.Path, a.Force); err != nil {
		return nil, err
	}
	if _, ok := m.writing[a.Path]; ok {
		return nil, fmt.Errorf("%w: %s", ErrBusy, a.Path)
	}
	h := randomID()
	for m.writes[h] != nil {
		h = randomID()
	}
	w := &writeEntry{path: a.Path, replication: repl, blockSize: bs, force: a.Force, lastUsed: time.Now()}
	reply := &CreateReply{Handle: h, Replication: repl, BlockSize: bs, LeaseTimeout: m.LeaseTimeout}
	if a.FirstBlock {
		// Without room for a block now, the put may still be of an
		// empty file; AddBlock reports the error when a block is wanted.
		if first, err := m.allocate(w, nil); err == nil {
			reply.First = *first
		}
	}
	m.writes[h] = w
	m.writing[a.Path] = h
	return reply, nil
}

// renew keeps a put alive while its client is slow to produce a block.
func (m *Master) renew(h uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.writes[h]
	if w == nil {
		return ErrLease
	}
	w.lastUsed = time.Now()
	return nil
}

func (m *Master) addBlock(a *AddBlockArgs) (*AddBlockReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.writes[a.Handle]
	if w == nil {
		return nil, ErrLease
	}
	w.lastUsed = time.Now()
	return m.allocate(w, a.Exclude)
}

// allocate adds a block to the put w, on a pipeline that avoids the
// minions at the addresses in exclude. The caller holds mu.
func (m *Master) allocate(w *writeEntry, exclude []string) (*AddBlockReply, error) {
	chosen := m.place(w.replication, w.blockSize, func(mn *minionEntry) bool { return slices.Contains(exclude, mn.addr) })
	if len(chosen) == 0 {
		return nil, fmt.Errorf("%w: %d minions known, none live with %d bytes free", ErrNoMinions, len(m.minions), w.blockSize)
	}
	id := randomID()
	for m.blocks[id] != nil || id == 0 {
		id = randomID()
	}
	reply := &AddBlockReply{BlockID: id}
	al := allocation{id: id}
	for _, mn := range chosen {
		reply.Pipeline = append(reply.Pipeline, mn.addr)
		al.pipeline = append(al.pipeline, mn.id)
	}
	w.blocks = append(w.blocks, al)
	if len(chosen) < w.replication {
		reply.Warning = fmt.Sprintf("only %d live minions for replication %d", len(chosen), w.replication)
	}
	return reply, nil
}

// complete makes a put visible. It answers only once the new namespace
// entry is on disk.
func (m *Master) complete(a *CompleteArgs) error {
	m.mu.Lock()
	w := m.writes[a.Handle]
	if w == nil {
		m.mu.Unlock()
		return ErrLease
	}
	if len(w.blocks) == 1 && len(a.Blocks) == 0 {
		// The block handed out with Create was not needed: an empty file.
		unused := w.blocks[0]
		w.blocks = nil
		m.queueDelete(unused.id, unused.pipeline)
		m.addLoad(unused.pipeline, -w.blockSize)
	}
	if err := m.checkComplete(w, a.Blocks); err != nil {
		m.dropWrite(a.Handle, w)
		m.mu.Unlock()
		return err
	}
	imf := imageFile{Path: w.path, Replication: w.replication, BlockSize: w.blockSize, ModTime: time.Now()}
	var dropped []allocation // minions that fell out of a pipeline
	for i, b := range a.Blocks {
		al := w.blocks[i]
		replicas := m.pipelineIDs(al, b.Replicas)
		imf.Blocks = append(imf.Blocks, imageBlock{ID: b.ID, Size: b.Size, CRC: b.CRC, Replicas: replicas})
		if len(replicas) < len(al.pipeline) {
			gone := slices.DeleteFunc(slices.Clone(al.pipeline), func(mid string) bool { return slices.Contains(replicas, mid) })
			dropped = append(dropped, allocation{id: b.ID, pipeline: gone})
		}
	}
	seq, err := m.logEdit(&edit{Op: opPut, Path: w.path, File: imf})
	if err != nil {
		m.dropWrite(a.Handle, w)
		m.mu.Unlock()
		return err
	}
	// The allocations become replicas: drop their reservations of a full
	// block each (applyPut adds the real sizes) and forget the put.
	for _, al := range w.blocks {
		m.addLoad(al.pipeline, -w.blockSize)
	}
	delete(m.writes, a.Handle)
	delete(m.writing, w.path)
	held := len(m.held)
	m.holdUntil = seq
	m.applyPut(&imf) // replaces the file at the path with --force
	m.holdUntil = 0
	replaced := len(m.held) > held
	now := time.Now().UnixNano()
	for _, b := range imf.Blocks {
		m.grown[b.ID] = now
	}
	for _, d := range dropped {
		m.queueDelete(d.id, d.pipeline) // whatever part of the block they got
	}
	m.mu.Unlock()
	if replaced {
		return m.syncThenRelease(seq)
	}
	return m.edits.sync(seq)
}

// checkComplete checks a put's final block list against what was allocated
// and the namespace as it is now. The caller holds mu.
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
	// Another put may have made a directory of this path, or a file of
	// one of its parents, since create; a move may have put a file there.
	return m.checkCreate(w.path, w.force)
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
		if mn := m.minions[mid]; mn != nil && slices.Contains(addrs, mn.addr) {
			ids = append(ids, mid)
		}
	}
	return ids
}

func (m *Master) abandon(a *AbandonArgs) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w := m.writes[a.Handle]; w != nil {
		m.dropWrite(a.Handle, w)
	}
}

// ---- the read side of the namespace ----

func (m *Master) stat(p string) (FileInfo, error) {
	if err := checkPath(p); err != nil {
		return FileInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.files[p]; ok {
		return m.fileInfo(p, f, true), nil
	}
	if p == "/" || m.dirs[p] > 0 {
		return FileInfo{Path: p, Dir: true}, nil
	}
	return FileInfo{}, fmt.Errorf("%w: %s", ErrNotFound, p)
}

// list returns the file at p, or the entries of directory p (every file
// below it when recursive), sorted by path.
func (m *Master) list(p string, recursive bool) ([]FileInfo, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.files[p]; ok {
		return []FileInfo{m.fileInfo(p, f, false)}, nil
	}
	if p != "/" && m.dirs[p] == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	out := []FileInfo{}
	subdirs := make(map[string]int) // name -> index in out
	for fp, f := range m.files {
		rel, ok := strings.CutPrefix(fp, prefix)
		if !ok {
			continue
		}
		if i := strings.IndexByte(rel, '/'); i >= 0 && !recursive {
			dp := prefix + rel[:i]
			j, seen := subdirs[dp]
			if !seen {
				j = len(out)
				subdirs[dp] = j
				out = append(out, FileInfo{Path: dp, Dir: true})
			}
			out[j].Size += m.fileSize(f)
			if mt := time.Unix(0, f.modTime); mt.After(out[j].ModTime) {
				out[j].ModTime = mt
			}
			continue
		}
		out = append(out, m.fileInfo(fp, f, false))
	}
	slices.SortFunc(out, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// remove deletes the file at p, or with recursive every file below directory p.
func (m *Master) remove(p string, recursive bool) (int, error) {
	if err := checkPath(p); err != nil {
		return 0, err
	}
	m.mu.Lock()
	if m.files[p] == nil && p != "/" && m.dirs[p] == 0 {
		m.mu.Unlock()
		return 0, fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	if m.files[p] == nil && !recursive {
		m.mu.Unlock()
		return 0, fmt.Errorf("%w: %s (use -r to remove it and everything below)", ErrIsDir, p)
	}
	seq, err := m.logEdit(&edit{Op: opDelete, Path: p, Recursive: recursive})
	if err != nil {
		m.mu.Unlock()
		return 0, err
	}
	m.holdUntil = seq
	n, err := m.applyDelete(p, recursive)
	m.holdUntil = 0
	m.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return n, m.syncThenRelease(seq)
}

// syncThenRelease waits until record seq is on disk, then queues the
// deletes held back until it was.
func (m *Master) syncThenRelease(seq uint64) error {
	if err := m.edits.sync(seq); err != nil {
		return err
	}
	m.mu.Lock()
	m.releaseHeld()
	m.mu.Unlock()
	return nil
}

// rename moves the file or directory at src to dst, or into dst when dst
// is a directory (as mv does), and returns the path it moved to and the
// number of files moved. It replaces a file at that path only if force.
// One edit log record moves a whole directory: a crash leaves all of it
// moved or none.
func (m *Master) rename(src, dst string, force bool) (string, int, error) {
	if err := checkPath(src); err != nil {
		return "", 0, err
	}
	if err := checkPath(dst); err != nil {
		return "", 0, err
	}
	m.mu.Lock()
	to := dst
	if dst == "/" || m.dirs[dst] > 0 {
		to = path.Join(dst, path.Base(src))
	}
	if err := m.checkRename(src, to, force); err != nil {
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
	seq, err := m.logEdit(&edit{Op: opRename, Path: src, Dst: to, Force: force})
	if err != nil {
		m.mu.Unlock()
		return "", 0, err
	}
	m.holdUntil = seq // a file replaced with force
	n := m.applyRename(src, to)
	m.holdUntil = 0
	m.mu.Unlock()
	return to, n, m.syncThenRelease(seq)
}

// checkRename says whether the file or directory at src may move to the
// path to. The caller holds mu.
func (m *Master) checkRename(src, to string, force bool) error {
	isFile := m.files[src] != nil
	switch {
	case src == "/":
		return fmt.Errorf("%w: cannot move /", ErrBadArg)
	case !isFile && m.dirs[src] == 0:
		return fmt.Errorf("%w: %s", ErrNotFound, src)
	case to == src:
		return nil
	case !isFile && strings.HasPrefix(to, src+"/"):
		return fmt.Errorf("%w: cannot move directory %s into itself (%s)", ErrBadArg, src, to)
	case m.dirs[to] > 0:
		return fmt.Errorf("%w: %s is a directory", ErrExists, to)
	case m.files[to] != nil && !isFile:
		return fmt.Errorf("%w: %s (moving directory %s)", ErrNotDir, to, src)
	case m.files[to] != nil && !force:
		return fmt.Errorf("%w: %s (use --force to replace it)", ErrExists, to)
	}
	var err error
	ancestors(to, func(d string) bool {
		if m.files[d] != nil {
			err = fmt.Errorf("%w: %s", ErrNotDir, d)
			return false
		}
		return true
	})
	return err
}

// checkRenameLength refuses a move that makes a path longer than a put
// may. Not checked at replay: older masters logged such moves.
func (m *Master) checkRenameLength(src, to string) error {
	if err := checkPath(to); err != nil {
		return err
	}
	if m.files[src] == nil {
		for _, p := range m.filesAt(src) {
			if q := to + strings.TrimPrefix(p, src); len(q) > maxPathLen {
				return fmt.Errorf("%w: moving %s to %s makes a path of %d bytes (at most %d)", ErrBadPath, p, q[:64]+"...", len(q), maxPathLen)
			}
		}
	}
	return nil
}

// checkRenameBusy refuses a move onto a path a put is writing (it would
// replace the moved file when it completes) and of a directory a put is
// writing into (it would complete at the old path). The caller holds mu.
func (m *Master) checkRenameBusy(src, to string) error {
	if _, ok := m.writing[to]; ok {
		return fmt.Errorf("%w: %s", ErrBusy, to)
	}
	if m.files[src] == nil {
		for p := range m.writing {
			if strings.HasPrefix(p, src+"/") {
				return fmt.Errorf("%w: %s, below %s", ErrBusy, p, src)
			}
			if rel, ok := strings.CutPrefix(p, to+"/"); ok && m.files[src+"/"+rel] != nil {
				return fmt.Errorf("%w: %s, where %s/%s would go", ErrBusy, p, src, rel)
			}
		}
	}
	return nil
}

// applyRename moves the file or directory at src to the path to, which
// checkRename allowed, and returns the number of files moved. The caller
// holds mu.
func (m *Master) applyRename(src, to string) int {
	if src == to {
		return 0
	}
	if m.files[src] != nil {
		if m.files[to] != nil {
			m.removeFile(to) // replaced: its blocks go
		}
		m.addFile(to, m.unlinkFile(src))
		return 1
	}
	below := m.filesAt(src) // collected first: the loop adds files
	for _, p := range below {
		m.addFile(to+strings.TrimPrefix(p, src), m.unlinkFile(p))
	}
	return len(below)
}

// setReplication sets the replication of the file at p, or of every file
// below directory p, and returns how many files it set. The next
// replication tick copies or trims their blocks.
func (m *Master) setReplication(p string, n int) (int, error) {
	if err := checkPath(p); err != nil {
		return 0, err
	}
	m.mu.Lock()
	if err := m.setReplicationCheck(p, n); err != nil {
		m.mu.Unlock()
		return 0, err
	}
	seq, err := m.logEdit(&edit{Op: opSetReplication, Path: p, Replication: n})
	if err != nil {
		m.mu.Unlock()
		return 0, err
	}
	files := m.applySetReplication(p, n)
	m.mu.Unlock()
	return files, m.edits.sync(seq)
}

// setReplicationCheck says whether the replication of p may be set to n.
// The caller holds mu.
func (m *Master) setReplicationCheck(p string, n int) error {
	if n < 1 || n > maxReplication {
		return fmt.Errorf("%w: replication %d (want 1 to %d)", ErrBadArg, n, maxReplication)
	}
	if m.files[p] == nil && p != "/" && m.dirs[p] == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, p)
	}
	return nil
}

// applySetReplication sets the replication of the files at or below p to
// n, and of their blocks, for the next replication tick to look at, and
// returns how many files it set. The caller holds mu.
func (m *Master) applySetReplication(p string, n int) int {
	paths := m.filesAt(p)
	for _, fp := range paths {
		f := m.files[fp]
		f.replication = int32(n)
		for _, id := range f.blocks.list() {
			if b := m.blocks[id]; b != nil {
				b.repl = int32(n)
				m.recheck[id] = struct{}{}
			}
		}
	}
	return len(paths)
}

// filesAt returns p if it is a file, else the paths of every file below
// directory p. The caller holds mu.
func (m *Master) filesAt(p string) []string {
	if m.files[p] != nil {
		return []string{p}
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	var out []string
	for fp := range m.files {
		if strings.HasPrefix(fp, prefix) {
			out = append(out, fp)
		}
	}
	return out
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
	return nil
}

func (r *masterRPC) Register(a *RegisterArgs, reply *RegisterReply) error {
	rep, err := r.m.register(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Heartbeat(a *HeartbeatArgs, reply *HeartbeatReply) error {
	*reply = *r.m.heartbeat(a)
	return nil
}

func (r *masterRPC) Create(a *CreateArgs, reply *CreateReply) error {
	rep, err := r.m.create(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) AddBlock(a *AddBlockArgs, reply *AddBlockReply) error {
	rep, err := r.m.addBlock(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Complete(a *CompleteArgs, _ *Empty) error { return r.m.complete(a) }

func (r *masterRPC) Renew(a *AbandonArgs, _ *Empty) error { return r.m.renew(a.Handle) }

func (r *masterRPC) Abandon(a *AbandonArgs, _ *Empty) error {
	r.m.abandon(a)
	return nil
}

func (r *masterRPC) BlockReceived(a *BlockReceivedArgs, reply *BlockReceivedReply) error {
	rep, err := r.m.blockReceived(a)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) ReportBad(a *ReportBadArgs, _ *Empty) error {
	r.m.reportBad(a)
	return nil
}

func (r *masterRPC) Decommission(a *DecommissionArgs, reply *DecommissionReply) error {
	rep, seq, err := r.m.decommission(a.Addr)
	if err != nil {
		return err
	}
	*reply = *rep
	return r.m.edits.sync(seq)
}

func (r *masterRPC) Report(_ *ReportArgs, reply *ReportReply) error {
	*reply = *r.m.report()
	return nil
}

func (r *masterRPC) Fsck(a *FsckArgs, reply *FsckReply) error {
	rep, err := r.m.fsck(a.Path)
	if err != nil {
		return err
	}
	*reply = *rep
	return nil
}

func (r *masterRPC) Stat(a *PathArgs, reply *FileInfo) error {
	fi, err := r.m.stat(a.Path)
	*reply = fi
	if err == nil && a.Durable {
		// stat has seen every change applied so far; none of them may
		// be shown as done before it is on disk.
		r.m.edits.mu.Lock()
		seq := r.m.edits.lastSeq
		r.m.edits.mu.Unlock()
		err = r.m.edits.sync(seq)
	}
	return err
}

func (r *masterRPC) List(a *ListArgs, reply *ListReply) error {
	entries, err := r.m.list(a.Path, a.Recursive)
	reply.Entries = entries
	return err
}

func (r *masterRPC) SetReplication(a *SetReplicationArgs, reply *SetReplicationReply) error {
	n, err := r.m.setReplication(a.Path, a.Replication)
	reply.Files = n
	return err
}

func (r *masterRPC) Rename(a *RenameArgs, reply *RenameReply) error {
	to, n, err := r.m.rename(a.Src, a.Dst, a.Force)
	reply.Path, reply.Moved = to, n
	return err
}

func (r *masterRPC) Delete(a *DeleteArgs, reply *DeleteReply) error {
	n, err := r.m.remove(a.Path, a.Recursive)
	reply.Removed = n
	return err
}
