// minion.go is the block server (the DataNode). It serves the block RPCs of
// the data path, forwards each packet it receives to the next minion of the
// pipeline while it stores its own copy, and keeps the master informed with
// a block report at registration and a heartbeat after that.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// writerIdle is how long a block being received may go without a packet
// before the minion drops it: its client or upstream minion is gone. It is
// only a backstop: the master deletes the blocks of a put it abandons.
const writerIdle = time.Hour

// Minion serves blocks from Dir. Set the exported fields before Start.
type Minion struct {
	// Dir holds the blocks and the minion's identity.
	Dir string
	// Listen is the address to bind, e.g. ":8888" or "127.0.0.1:0".
	Listen string
	// Host is the host name or IP that clients and other minions use to
	// reach this minion. Empty means the bound IP when it is a specific
	// one, else the local IP of the route to the master.
	Host string
	// MasterAddr is the master's host:port, or the replicated masters'
	// (ha.go): "A,B,C".
	MasterAddr string
	masters    *masterSet
	// Heartbeat is the interval of heartbeats; 0 means the master's.
	Heartbeat time.Duration
	// ReportInterval is how often the minion sends a full block report.
	ReportInterval time.Duration
	// ScrubInterval is how often the scrubber starts a pass over every
	// block, reading at most ScrubRate bytes a second; 0 turns it off.
	ScrubInterval time.Duration
	ScrubRate     int64
	// PackMax is the largest block packed into a volume file (volume.go)
	// when it arrives whole, in one packet; 0 gives every block its own file.
	PackMax int64
	// Security is how the minion trusts its peers (auth.go); nil: no
	// secret, loopback only.
	Security *Security
	// HTTPAddr, if set, is where the minion serves /metrics (metrics.go).
	HTTPAddr string
	Logger   *slog.Logger

	metrics *minionMetrics
	http    *httpServer
	// scrubbing is the scrubber's progress, for the status page.
	scrubbing scrubProgress

	lock  *dirLock
	store *blockStore
	srv   *rpcServer
	pool  *pool
	// verifyQ holds blocks to check at the master's request (verifyLoop).
	verifyQ chan uint64
	// tokenKey checks write tokens (token.go): the master's, from the
	// last registration; nil before the first.
	tokenKey atomic.Pointer[[]byte]
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once

	// mu guards the fields below.
	mu         sync.Mutex
	ident      identity
	addr       string // advertised host:port, once known
	interval   time.Duration
	registered bool
	lastReport time.Time
	copying    map[uint64]bool // blocks being copied here
	// deleted are the blocks deleted at the master's request and not yet
	// acknowledged to it with a heartbeat.
	deleted []uint64
}

// identity is what makes a minion dir itself across restarts and address
// changes. It lives in DIR/minion.json.
type identity struct {
	MinionID  string `json:"minion_id"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// NewMinion returns a minion with the default settings. It does no I/O.
func NewMinion(dir, listen, master string) *Minion {
	return &Minion{Dir: dir, Listen: listen, MasterAddr: master, Logger: slog.Default(),
		ReportInterval: DefaultReportInterval, ScrubInterval: DefaultScrubInterval, ScrubRate: DefaultScrubRate, PackMax: DefaultPackMax}
}

// Start opens the dir, starts serving and registers with the master. A
// master that cannot be reached yet is not an error: the minion keeps
// trying in the background, as a daemon whose master starts later must. A
// master of another cluster is an error.
func (m *Minion) Start() (err error) {
	if err := checkMasters(m.MasterAddr); err != nil {
		return err
	}
	m.masters = newMasterSet(m.MasterAddr)
	lock, err := lockDir(m.Dir)
	if err != nil {
		return fmt.Errorf("minion dir: %w", err)
	}
	m.lock = lock
	defer func() {
		if err != nil {
			m.closeAll()
		}
	}()
	if m.ident, err = loadIdentity(m.Dir); err != nil {
		return err
	}
	if m.store, err = openBlockStore(m.Dir, m.PackMax, m.Logger); err != nil {
		return err
	}
	m.pool = newPool(m.Security, roleMinion)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	srv := rpc.NewServer()
	if err := srv.RegisterName(minionService, &minionRPC{m}); err != nil {
		return err
	}
	m.metrics = newMinionMetrics(m)
	if m.srv, err = serveRPC(m.Listen, srv, m.Logger, m.Security, roleMinion, m.metrics.rpcs); err != nil {
		return fmt.Errorf("minion listen: %w", err)
	}
	m.interval = m.Heartbeat
	if m.interval <= 0 {
		m.interval = DefaultHeartbeat
	}
	m.Security.describe(m.Logger, "minion", m.srv.Addr().String())
	if m.HTTPAddr != "" {
		if m.http, err = serveHTTP(m.HTTPAddr, "minion", newMinionWeb(m), m.Security, m.Logger); err != nil {
			return err
		}
	}
	var refused *RefusedError
	regErr := m.register()
	// Restarted at once, this minion may find its last process's
	// connection still open at the master for a moment.
	for i := 0; i < 20 && errors.Is(regErr, ErrIdentityTaken); i++ {
		time.Sleep(50 * time.Millisecond)
		regErr = m.register()
	}
	if errors.Is(regErr, ErrWrongCluster) || errors.As(regErr, &refused) {
		return regErr
	} else if regErr != nil {
		m.Logger.Warn("not registered with the master yet; retrying", "master", m.MasterAddr, "err", regErr)
	}
	m.copying = make(map[uint64]bool)
	m.verifyQ = make(chan uint64, maxVerify)
	m.wg.Add(2)
	go m.loop()
	go m.verifyLoop()
	if m.ScrubInterval > 0 {
		m.wg.Add(1)
		go m.scrubLoop()
	}
	used, n := m.store.usage()
	m.Logger.Info("minion started", "addr", m.advertised(), "dir", m.Dir, "id", m.ident.MinionID, "blocks", n, "bytes", used)
	return nil
}

// Addr is the address the minion is bound to.
func (m *Minion) Addr() net.Addr { return m.srv.Addr() }

// Close stops the minion. Blocks being received are dropped; stored blocks
// are on disk already. It is safe to call more than once.
func (m *Minion) Close() error {
	var err error
	m.once.Do(func() { err = m.closeAll() })
	return err
}

func (m *Minion) closeAll() error {
	if m.cancel != nil {
		m.cancel()
	}
	if m.pool != nil {
		m.pool.close() // fails forwards in flight, so handlers return
	}
	var err error
	if m.srv != nil {
		err = m.srv.Close()
	}
	m.http.Close()
	m.wg.Wait()
	if m.store != nil {
		m.store.close()
	}
	if uerr := m.lock.unlock(); uerr != nil && err == nil {
		err = uerr
	}
	return err
}

func (m *Minion) loop() {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		d := m.interval
		m.mu.Unlock()
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(d):
		}
		m.tick()
	}
}

// tick sends one heartbeat (or registration) and drops stale writes.
func (m *Minion) tick() {
	for _, id := range m.store.expire(writerIdle) {
		m.Logger.Warn("dropped unfinished block: no packet for a while", "block", blockName(id), "idle", writerIdle)
	}
	m.mu.Lock()
	registered := m.registered
	m.mu.Unlock()
	if !registered || (m.ReportInterval > 0 && time.Since(m.lastReportTime()) > m.ReportInterval) {
		// Registering again is the periodic full block report.
		if err := m.register(); err != nil {
			m.Logger.Debug("register", "err", err)
		}
		return
	}
	if err := m.heartbeat(); err != nil {
		m.Logger.Warn("heartbeat failed; will register again", "master", m.MasterAddr, "err", err)
		m.mu.Lock()
		m.registered = false
		m.mu.Unlock()
	}
}

func (m *Minion) lastReportTime() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastReport
}

func (m *Minion) advertised() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// advertiseAddr works out the host:port others should dial.
func (m *Minion) advertiseAddr() (string, error) {
	_, port, err := net.SplitHostPort(m.srv.Addr().String())
	if err != nil {
		return "", err
	}
	host := m.Host
	if host == "" {
		if h, _, err := net.SplitHostPort(m.Listen); err == nil {
			if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
				host = h
			}
		}
	}
	if host == "" {
		// The local end of a route to the master is an address that
		// the master, and so the clients near it, can reach. A UDP
		// "connection" finds the route without sending a packet.
		conn, err := net.Dial("udp", m.masters.current())
		if err != nil {
			return "", err
		}
		host, _, _ = net.SplitHostPort(conn.LocalAddr().String())
		conn.Close()
	}
	return net.JoinHostPort(host, port), nil
}

func (m *Minion) stats() (capacity, free, used int64, n int) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.Dir, &st); err == nil {
		capacity = int64(st.Blocks) * int64(st.Bsize)
		free = int64(st.Bavail) * int64(st.Bsize)
	}
	used, n = m.store.usage()
	return
}

// diskOf names the file system that holds dir: this machine's id (or its
// host name) and the device number, "" if dir cannot be looked at.
func diskOf(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	machine, err := os.ReadFile("/etc/machine-id")
	if id := strings.TrimSpace(string(machine)); err == nil && id != "" {
		return fmt.Sprintf("%s/%d", id, st.Dev)
	}
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s/%d", host, st.Dev)
}

// register sends a full block report and records the cluster id.
func (m *Minion) register() error {
	addr, err := m.advertiseAddr()
	if err != nil {
		return fmt.Errorf("register with %s: %w", m.MasterAddr, err)
	}
	m.mu.Lock()
	m.addr = addr
	ident := m.ident
	m.mu.Unlock()
	capacity, free, used, _ := m.stats()
	args := &RegisterArgs{MinionID: ident.MinionID, ClusterID: ident.ClusterID, Addr: addr,
		Capacity: capacity, Free: free, Used: used, Blocks: m.store.report(), HTTPAddr: m.httpAdvertised(addr), Disk: diskOf(m.Dir)}
	reportTime := time.Now()
	var reply RegisterReply
	if err := m.masters.call(m.ctx, m.pool, masterService+".Register", args, &reply, metaTimeout); err != nil {
		return fmt.Errorf("register with %s: %w", m.MasterAddr, err)
	}
	if ident.ClusterID == "" {
		ident.ClusterID = reply.ClusterID
		if err := saveIdentity(m.Dir, ident); err != nil {
			return err
		}
	}
	if reply.TokenKey != nil {
		m.tokenKey.Store(&reply.TokenKey)
	}
	m.mu.Lock()
	m.ident = ident
	m.registered = true
	m.lastReport = reportTime
	if m.Heartbeat <= 0 && reply.Heartbeat > 0 {
		m.interval = reply.Heartbeat
	}
	m.mu.Unlock()
	m.deleteBlocks(reply.Delete)
	m.Logger.Debug("registered with master", "master", m.MasterAddr, "cluster", reply.ClusterID, "addr", addr)
	return nil
}

func (m *Minion) heartbeat() error {
	capacity, free, used, n := m.stats()
	m.mu.Lock()
	args := &HeartbeatArgs{MinionID: m.ident.MinionID, Addr: m.addr, Capacity: capacity, Free: free, Used: used, NumBlocks: n,
		Deleted: m.deleted}
	m.mu.Unlock()
	var reply HeartbeatReply
	// A heartbeat is answered at once. With several masters, one that
	// does not answer soon is paused or cut off: the next leader wants
	// this minion's report within seconds, not after metaTimeout.
	timeout := metaTimeout
	if len(m.masters.addrs) > 1 {
		timeout = max(2*time.Second, m.interval)
	}
	if err := m.masters.call(m.ctx, m.pool, masterService+".Heartbeat", args, &reply, timeout); err != nil {
		return err // the deletes are acknowledged with the next one
	}
	m.mu.Lock()
	m.deleted = m.deleted[len(args.Deleted):]
	m.mu.Unlock()
	// At once, not in the background: the block must be gone before any
	// later report or copy. The master hands over a bounded number at a
	// time, and places no copy of them here until this minion says, with
	// its next heartbeat, that they are gone.
	if m.deleteBlocks(reply.Delete) {
		m.mu.Lock()
		m.deleted = append(m.deleted, reply.Delete...)
		m.mu.Unlock()
	}
	for _, cmd := range reply.Copy {
		m.startCopy(cmd)
	}
	for _, id := range reply.Verify {
		select {
		case m.verifyQ <- id:
		default: // full: whoever found it bad reports it again
		}
	}
	if reply.Reregister {
		return m.register()
	}
	return nil
}

// deleteBlocks deletes the blocks ids and reports whether every one is
// gone.
func (m *Minion) deleteBlocks(ids []uint64) bool {
	if err := m.store.removeAll(ids); err != nil {
		m.Logger.Warn("delete blocks", "err", err)
		return false
	}
	if len(ids) > 0 {
		m.Logger.Debug("deleted blocks", "count", len(ids))
	}
	return true
}

// ---- identity ----

func loadIdentity(dir string) (identity, error) {
	var id identity
	p := filepath.Join(dir, "minion.json")
	raw, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		id.MinionID = "MID-" + randomHex(8)
		return id, saveIdentity(dir, id)
	}
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(raw, &id); err != nil || id.MinionID == "" {
		return id, fmt.Errorf("%s: not a minion identity file (%v)", p, err)
	}
	return id, nil
}

func saveIdentity(dir string, id identity) error {
	return writeFileAtomic(filepath.Join(dir, "minion.json"), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(id)
	})
}

// ---- the RPC surface ----

// minionRPC is what a minion registers with net/rpc.
type minionRPC struct{ m *Minion }

// WriteBlock stores one packet and forwards it down the pipeline. The
// packet goes to the next minion before it is written here, so the network
// and the disk work at once; the call answers when both copies are written
// (and, for a Final packet, finalized). A failure is in the reply, naming
// the minion that failed (see PipelineReply); the call itself fails only
// when the connection does.
func (r *minionRPC) WriteBlock(a *WriteBlockArgs, reply *PipelineReply) error {
	m := r.m
	// The packet is forwarded (encoded onto the socket) and written by
	// the time this returns: its buffer can take the next one.
	defer putPacketBuf(a.Data)
	if m.ctx.Err() != nil {
		reply.fail(m.advertised(), errShuttingDown)
		return nil
	}
	if err := m.checkNext(a.Token, a.BlockID, a.Next); err != nil {
		reply.fail(m.advertised(), err)
		return nil
	}
	// The local write runs beside the forward: the copy onto the next
	// minion's socket and the one into the page cache (or the sync of a
	// small block) overlap.
	local := make(chan error, 1)
	go func() {
		switch {
		case !a.Final:
			local <- m.store.write(a.BlockID, a.Offset, a.Data, a.CRCs)
		case a.Offset != 0:
			local <- fmt.Errorf("%w: a final packet must be the whole block", ErrBadArg)
		case m.store.sizeOf(a.BlockID) == int64(len(a.Data)):
			local <- nil // sent again after a pipeline recovery: finalized here already
		default:
			local <- m.store.put(a.BlockID, a.Data, a.CRCs)
		}
	}()
	var fwd *forward
	if len(a.Next) > 0 {
		timeout := hops(packetHopTimeout, len(a.Next))
		if a.Final {
			timeout = hops(smallBlockHopTimeout, len(a.Next))
		}
		fwdArgs := &WriteBlockArgs{BlockID: a.BlockID, Offset: a.Offset, Data: a.Data, CRCs: a.CRCs, Next: a.Next[1:], Final: a.Final, Token: a.Token}
		fwd = m.startForward(a.Next[0], minionService+".WriteBlock", fwdArgs, timeout)
	}
	err := <-local
	if err == nil {
		m.metrics.written.WithLabelValues("client").Add(float64(len(a.Data)))
	}
	m.answer(reply, err, fwd)
	return nil
}

// checkNext checks a packet of block id and the rest of its pipeline
// before this minion stores it or dials any of next: the master's token
// allows the block and names every address of next (token.go), no longer
// than a replication can be, each a host:port. (The dial then proves each
// holds the cluster secret, auth.go, before a byte of the block goes.)
func (m *Minion) checkNext(t *WriteToken, id uint64, next []string) error {
	var key []byte
	if k := m.tokenKey.Load(); k != nil {
		key = *k
	}
	if err := checkToken(key, t, id, next, time.Now()); err != nil {
		return err
	}
	if len(next) >= maxReplication {
		return fmt.Errorf("%w: a pipeline of %d more minions", ErrBadArg, len(next))
	}
	for _, addr := range next {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" || port == "0" {
			return fmt.Errorf("%w: forward address %q", ErrBadArg, addr)
		}
	}
	return nil
}

// errShuttingDown is a minion's answer once it is closing: the writer drops
// it from the pipeline.
var errShuttingDown = errors.New("minion shutting down")

// forward is a pipeline call to the next minion, in flight.
type forward struct {
	next    string
	pc      *pendingCall // nil if it could not be sent
	err     error        // why it could not be sent
	reply   PipelineReply
	timeout time.Duration
}

// startForward sends a pipeline call to next without waiting for it.
func (m *Minion) startForward(next, method string, args any, timeout time.Duration) *forward {
	f := &forward{next: next, timeout: timeout}
	f.pc, f.err = m.pool.start(m.ctx, next, method, args, &f.reply)
	return f
}

// wait returns the failure of the forward and of the rest of the
// pipeline after it, nil if there is none. A forward that got no answer
// blames next; one cut short by this minion's own shutdown blames this
// minion, since the writer must drop this one, not the next.
func (f *forward) wait(m *Minion) *MinionError {
	err := f.err
	if err == nil {
		err = f.pc.wait(m.ctx, f.timeout)
	}
	switch {
	case m.ctx.Err() != nil:
		return &MinionError{Addr: m.advertised(), Err: errShuttingDown}
	case err != nil:
		return &MinionError{Addr: f.next, Err: err}
	}
	return f.reply.err()
}

// answer fills reply with the outcome of this minion's part (err) and of
// the forward, if any, waiting for it. The deepest failure is named: a
// minion after this one that failed must go from the pipeline first.
func (m *Minion) answer(reply *PipelineReply, err error, fwd *forward) {
	if fwd != nil {
		if ferr := fwd.wait(m); ferr != nil {
			reply.fail(ferr.Addr, ferr.Err)
			return
		}
	}
	if err != nil {
		reply.fail(m.advertised(), err)
	}
}

// FinalizeBlock makes the block durable here and on the rest of the
// pipeline. It answers only when every copy is fsynced; a failure is in
// the reply, as for WriteBlock.
func (r *minionRPC) FinalizeBlock(a *FinalizeBlockArgs, reply *PipelineReply) error {
	m := r.m
	if m.ctx.Err() != nil {
		reply.fail(m.advertised(), errShuttingDown)
		return nil
	}
	if err := m.checkNext(a.Token, a.BlockID, a.Next); err != nil {
		reply.fail(m.advertised(), err)
		return nil
	}
	var fwd *forward
	if len(a.Next) > 0 {
		args := &FinalizeBlockArgs{BlockID: a.BlockID, Size: a.Size, Next: a.Next[1:], Token: a.Token}
		fwd = m.startForward(a.Next[0], minionService+".FinalizeBlock", args, hops(finalizeHopTimeout, len(a.Next)))
	}
	m.answer(reply, m.store.finalize(a.BlockID, a.Size), fwd)
	return nil
}

// ReadBlock returns a range of a block with its stored checksums.
func (r *minionRPC) ReadBlock(a *ReadBlockArgs, reply *ReadBlockReply) error {
	data, crcs, err := r.m.store.read(a.BlockID, a.Offset, a.Length)
	if err == nil {
		reader := "client"
		if a.peer != nil && a.peer.role == roleMinion {
			reader = "replication"
		}
		r.m.metrics.read.WithLabelValues(reader).Add(float64(len(data)))
	}
	if err != nil {
		return err
	}
	reply.Data, reply.CRCs = data, crcs
	return nil
}
