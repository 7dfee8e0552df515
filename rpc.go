// rpc.go is the wire contract between the client, the master and the minions:
// the service names, every Args/Reply type carried by net/rpc (gob-encoded),
// the sentinel errors and how they survive the trip across the wire.
//
// Metadata path: client -> "Master.*" and minion -> "Master.Register/Heartbeat".
// Data path:     client -> "Minion.WriteBlock/FinalizeBlock/ReadBlock" on the
// first minion of a pipeline, which forwards to the next one.
package main

import (
	"errors"
	"fmt"
	"net/rpc"
	"strings"
	"time"
)

// Service names registered on each node's own rpc.Server.
const (
	masterService = "Master"
	minionService = "Minion"
)

// Sizes of the data path.
const (
	// bytesPerChecksum is how many bytes one CRC32C covers, as in HDFS.
	bytesPerChecksum = 512
	// packetSize is the most file data one WriteBlock or ReadBlock call
	// carries. It is a multiple of bytesPerChecksum.
	packetSize = 1 << 20
	// packetWindow is how many packets a client keeps in flight to one
	// minion, so the network and the disks never wait for each other.
	packetWindow = 8
)

// Default tunables, shared by the CLI and the constructors.
const (
	DefaultMasterAddr  = "127.0.0.1:2131"
	DefaultBlockSize   = 64 << 20
	DefaultReplication = 3
	DefaultHeartbeat   = 3 * time.Second
	DefaultDeadAfter   = 30 * time.Second
	// DefaultReportInterval is how often a minion sends a full block report.
	DefaultReportInterval = 10 * time.Minute
	// DefaultScrubInterval and DefaultScrubRate: a minion re-reads all its
	// blocks every hour, at most 32 MiB/s (a pass takes longer if it must).
	DefaultScrubInterval = time.Hour
	DefaultScrubRate     = 32 << 20
	// maxBlockSize bounds --block-size: a block is one file on a minion
	// and its checksums are kept beside it.
	maxBlockSize   = 4 << 30
	maxReplication = 16
)

// Timeouts of remote calls; net/rpc has none of its own (see pool.go). A
// pipeline call waits the hop timeout plus hopMargin for each minion after
// the callee (hops), so the minion next to a silent one gives up first and
// its answer, which names the silent one, reaches the client in time.
const (
	dialTimeout = 5 * time.Second
	metaTimeout = 15 * time.Second
	// packetHopTimeout bounds one packet (1 MiB at most) on one minion:
	// its acknowledgement deadline, as HDFS's pipeline acks. A healthy
	// minion on a LAN answers in milliseconds, a busy one with a slow disk
	// in well under a second; a minion that was paused or cut off by a
	// partition (no reset, just silence) must cost seconds, not minutes,
	// before the pipeline goes on without it or a read moves to the next
	// replica. It asks for at least 200 KiB/s between two minions.
	packetHopTimeout = 5 * time.Second
	// smallBlockHopTimeout bounds a block of one packet on one minion:
	// stored and synced on receipt (a small file, packed into a volume).
	smallBlockHopTimeout = 3 * packetHopTimeout
	// finalizeHopTimeout bounds the fsync of a whole block on one minion.
	finalizeHopTimeout = 60 * time.Second
	// connWriteTimeout bounds every write on a connection: a peer that
	// stops reading (paused, partitioned) fills the socket's buffers, and
	// a write into them must not block a writer for longer than the
	// packet it carries may take.
	connWriteTimeout = packetHopTimeout
)

// hopMargin is what each minion of a pipeline adds to the timeout of the
// one after it: time to answer once that one answered or timed out. Too
// small a margin on a loaded machine blames the wrong minion (a healthy one
// leaves the pipeline, and re-replication makes up for it); too large a one
// delays noticing a silent first minion.
const hopMargin = 2 * time.Second

// hops is the timeout of a call that goes through n minions, each with the
// timeout d of its own part: a silent first minion of three costs d plus
// two margins, not three times d.
func hops(d time.Duration, n int) time.Duration { return d + time.Duration(max(n, 1)-1)*hopMargin }

// Sentinel errors. Servers return them wrapped (fmt.Errorf("%w: ...")); the
// text crosses the wire and remoteError maps it back, so errors.Is works in
// the client.
var (
	// ErrNotFound is returned when a path does not exist.
	ErrNotFound = errors.New("file not found")
	// ErrExists is returned by a create of a path that exists without force.
	ErrExists = errors.New("file exists")
	// ErrIsDir is returned when a file operation names a directory.
	ErrIsDir = errors.New("is a directory")
	// ErrNotDir is returned when a path goes through a file as if it were a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrBusy is returned when another put of the same path is in progress.
	ErrBusy = errors.New("file is being written by another client")
	// ErrNoMinions is returned when no live minion can take a block.
	ErrNoMinions = errors.New("no live minion with free space")
	// ErrBadPath is returned for a path that is empty, relative or not clean.
	ErrBadPath = errors.New("invalid path")
	// ErrBadArg is returned for an argument out of range.
	ErrBadArg = errors.New("invalid argument")
	// ErrLease is returned when a put's handle is unknown or has expired.
	ErrLease = errors.New("write handle unknown or expired")
	// ErrBlockNotFound is returned by a minion that has no such block.
	ErrBlockNotFound = errors.New("block not found")
	// ErrChecksum is returned when data does not match its CRC32C.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrWrongCluster is returned when a minion's dir belongs to another cluster.
	ErrWrongCluster = errors.New("minion belongs to another cluster")
	// ErrNoSuchMinion is returned for an address where no minion is known.
	ErrNoSuchMinion = errors.New("no such minion")
	// ErrIdentityTaken refuses a registration under the id or address of
	// a minion registered from another live connection.
	ErrIdentityTaken = errors.New("minion identity in use")
	// ErrBadToken is a block write the master did not allow (token.go):
	// no token, one of another block or pipeline, a forged or expired one.
	ErrBadToken = errors.New("write not allowed by the master")
	// ErrNotLeader is the answer of a replicated master that is not the
	// leader (ha.go): it did nothing, so the call may go to the leader
	// the text names (notLeaderError), or be tried again after an
	// election.
	ErrNotLeader = errors.New("not the leader")
	// ErrLeadershipLost is the answer of a leader deposed while it
	// committed the change: the change may or may not have been made.
	ErrLeadershipLost = errors.New("leadership lost before the change was committed; it may or may not have been made")
)

var sentinels = []error{
	ErrNotFound, ErrExists, ErrIsDir, ErrNotDir, ErrBusy, ErrNoMinions,
	ErrBadPath, ErrBadArg, ErrLease, ErrBlockNotFound, ErrChecksum, ErrWrongCluster, ErrNoSuchMinion,
	ErrIdentityTaken, ErrBadToken, errShuttingDown, ErrNotLeader, ErrLeadershipLost,
}

// notLeaderError is a follower's answer: the leader's id and client
// address, when it knows them.
func notLeaderError(id, addr string) error {
	if addr == "" {
		return fmt.Errorf("%w: no leader elected yet", ErrNotLeader)
	}
	return fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, id, addr)
}

// leaderIn is the leader's address that err, a notLeaderError, names; ""
// if it names none.
func leaderIn(err error) string {
	if !errors.Is(err, ErrNotLeader) {
		return ""
	}
	msg := err.Error()
	i := strings.LastIndex(msg, " at ")
	if i < 0 || !strings.Contains(msg, "the leader is ") {
		return ""
	}
	return msg[i+len(" at "):]
}

// remoteError is an error returned by a remote node. It keeps the remote
// text and unwraps to the sentinel the text starts with, if any.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// fromRemote turns an rpc.ServerError back into an error that errors.Is can
// match against the sentinels above. Other errors are returned unchanged.
func fromRemote(err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return err
	}
	return remoteText(string(se))
}

// remoteText is the error a remote node sent as msg, unwrapping to the
// sentinel it names, if any.
func remoteText(msg string) error {
	for _, s := range sentinels {
		// A sentinel starts the text, or follows some context
		// ("block blk_...: checksum mismatch: ...").
		t := s.Error()
		if msg == t || strings.HasPrefix(msg, t+":") || strings.HasSuffix(msg, ": "+t) || strings.Contains(msg, ": "+t+":") {
			return &remoteError{msg: msg, sentinel: s}
		}
	}
	return &remoteError{msg: msg}
}

// ---- Master service ----

// AnnounceArgs is a replicated master telling the leader the addresses
// it serves clients on, for the leader to record (opMaster).
type AnnounceArgs struct {
	Master imageMaster
	peer   *peer
}

// PeerArgs adds a master to the replicated masters (Addr is its Raft
// address) or removes one (Addr empty).
type PeerArgs struct {
	ID, Addr string
}

// PingArgs asks a master who it is.
type PingArgs struct{}

// PingReply identifies a master.
type PingReply struct {
	ClusterID string
	// Raft is the state of one of replicated masters; nil for a single one.
	Raft *MasterInfo
}

// MasterInfo is one of replicated masters: its Raft role (leader,
// follower, candidate; unreachable when it could not be asked, with Err),
// term, and the last log index it has committed and applied.
type MasterInfo struct {
	ID, Addr              string
	Role                  string
	Term, Commit, Applied uint64
	Err                   string
}

// RegisterArgs is sent by a minion when it starts and whenever the master
// does not know it (for example after a master restart).
type RegisterArgs struct {
	MinionID  string
	ClusterID string // empty for a new minion dir
	Addr      string // host:port where the minion serves Minion.*
	Capacity  int64
	Free      int64
	Used      int64
	Blocks    []BlockReport
	// HTTPAddr is the host:port of its --http listener (its status
	// page), "" if it has none.
	HTTPAddr string
	// Disk names the file system that holds its dir (the machine and the
	// device), so that the space of minions sharing one disk is counted
	// once; "" from a minion that does not say.
	Disk string

	peer *peer // the connection it came on (set by the codec, not sent)
}

// BlockReport is one block a minion holds.
type BlockReport struct {
	ID   uint64
	Size int64
}

// RegisterReply tells a minion its cluster and heartbeat interval.
type RegisterReply struct {
	ClusterID string
	Heartbeat time.Duration
	// Delete lists reported blocks the master does not want: orphans of
	// deleted files or failed puts.
	Delete []uint64
	// TokenKey checks the write tokens the master issues (token.go).
	TokenKey []byte
}

// HeartbeatArgs is a minion's periodic report.
type HeartbeatArgs struct {
	MinionID  string
	Addr      string
	Capacity  int64
	Free      int64
	Used      int64
	NumBlocks int
	// Deleted are the blocks it deleted at the master's request since
	// its last heartbeat: the master may place copies of them there again.
	Deleted []uint64

	peer *peer
}

// HeartbeatReply carries the master's commands to a minion.
type HeartbeatReply struct {
	// Reregister asks the minion to register again with a full block report.
	Reregister bool
	// Delete lists blocks the minion should remove.
	Delete []uint64
	// Copy lists blocks the minion should fetch from another minion.
	Copy []CopyCommand
	// Verify lists blocks that a reader or another minion found corrupt
	// here: the minion re-reads each and reports it itself if it is bad.
	Verify []uint64
}

// CopyCommand asks a minion to copy a block from one of Sources (tried in
// order) and to report it with BlockReceived.
type CopyCommand struct {
	BlockID uint64
	Size    int64
	CRC     uint32
	Sources []string
}

// BlockReceivedArgs reports a block that a minion copied at the master's
// request.
type BlockReceivedArgs struct {
	MinionID string
	BlockID  uint64
	Size     int64
	// Failed reports that the copy could not be made, so the master may
	// ask again at once.
	Failed bool
	// Source is the minion the good copy came from: its replica has
	// just proved itself, checked against the block's CRC.
	Source string

	peer *peer
}

// BlockReceivedReply tells the minion whether to keep the block.
type BlockReceivedReply struct {
	// Delete is set when the block is not wanted any more (its file went).
	Delete bool
}

// ReportBadArgs reports a replica that failed its checksums.
type ReportBadArgs struct {
	BlockID uint64
	Addr    string // the minion holding the bad replica
	Reason  string

	peer *peer
}

func (a *RegisterArgs) setPeer(p *peer)      { a.peer = p }
func (a *AnnounceArgs) setPeer(p *peer)      { a.peer = p }
func (a *HeartbeatArgs) setPeer(p *peer)     { a.peer = p }
func (a *BlockReceivedArgs) setPeer(p *peer) { a.peer = p }
func (a *ReportBadArgs) setPeer(p *peer)     { a.peer = p }

// DecommissionArgs names a minion to drain.
type DecommissionArgs struct {
	Addr string
}

// DecommissionReply warns when the drain cannot finish.
type DecommissionReply struct {
	Warning string
}

// ReportArgs asks for the state of the cluster.
type ReportArgs struct{}

// ReportReply is the state of the cluster, as `dfs report` shows it.
type ReportReply struct {
	ClusterID string
	SafeMode  bool
	Files     int
	Blocks    int
	Minions   []MinionInfo
	// Masters are the replicated masters, the leader first; none for a
	// single master.
	Masters []MasterInfo
}

// MinionInfo is one minion as the master sees it.
type MinionInfo struct {
	ID            string
	Addr          string
	State         string // live, dead, decommissioning, decommissioned
	Capacity      int64
	Free          int64
	Used          int64
	Blocks        int
	LastHeartbeat time.Duration // how long ago
	// Disk names the file system of its dir (RegisterArgs.Disk): minions
	// with the same Disk share Capacity and Free.
	Disk string
}

// Block and minion states.
const (
	stateLive            = "live"
	stateDead            = "dead"
	stateDecommissioning = "decommissioning"
	stateDecommissioned  = "decommissioned"

	statusHealthy         = "healthy"
	statusUnderReplicated = "under-replicated"
	statusCorrupt         = "corrupt"
	statusMissing         = "missing"
)

// FsckArgs names the tree to check.
type FsckArgs struct {
	Path string
}

// FsckReply is the health of every block below a path.
type FsckReply struct {
	SafeMode bool
	Files    int
	Blocks   []FsckBlock
}

// FsckBlock is one block's health.
type FsckBlock struct {
	Path     string
	Index    int
	ID       uint64
	Size     int64
	Expected int      // the file's replication
	Live     int      // good replicas on live minions
	Status   string   // healthy, under-replicated, corrupt, missing
	Replicas []string // live good replicas
	Corrupt  []string // replicas known to be corrupt
	Note     string   // why healing cannot go on, if it cannot
}

// CreateArgs starts a put.
type CreateArgs struct {
	Path        string
	Replication int
	BlockSize   int64
	Force       bool
	Mode        uint32 // permission bits; 0: 0644
	// FirstBlock asks for the first block with the reply, saving the
	// AddBlock round trip (a put that has data to write).
	FirstBlock bool
	Call       CallID // with several masters: see leases.go
}

// CreateReply returns the handle of the put.
type CreateReply struct {
	Handle      uint64
	Replication int
	BlockSize   int64
	// LeaseTimeout is how long the put may go without AddBlock or Renew
	// before the master abandons it.
	LeaseTimeout time.Duration
	// First is the first block, when FirstBlock asked for it.
	First AddBlockReply
}

// AddBlockArgs asks for a new block of a put in progress.
type AddBlockArgs struct {
	Handle uint64
	// Exclude lists minions that failed this client during the put.
	Exclude []string
	Call    CallID // with several masters: see leases.go
}

// AddBlockReply names the new block and its pipeline.
type AddBlockReply struct {
	BlockID  uint64
	Pipeline []string // minion addresses, first one receives from the client
	// Warning is set when fewer minions than the replication were live.
	Warning string
	// Token lets the pipeline's minions take the block's packets.
	Token *WriteToken
}

// CompleteArgs commits a put: every block with its final length and CRC32C.
type CompleteArgs struct {
	Handle uint64
	Blocks []BlockInfo
}

// AbandonArgs gives up a put; its blocks are deleted.
type AbandonArgs struct {
	Handle uint64
}

// PathArgs names one path.
type PathArgs struct {
	Path string
	// Durable asks the master to answer only once every change it has
	// applied is on disk, so that what the answer shows survives a crash.
	Durable bool
}

// ListArgs names a path to list.
type ListArgs struct {
	Path      string
	Recursive bool
}

// MkdirArgs makes a directory.
type MkdirArgs struct {
	Path    string
	Parents bool   // make missing parents; an existing directory is no error
	Mode    uint32 // permission bits of Path; 0: 0755
	Call    CallID // with several masters: see retrycache.go
}

// SetTimesArgs sets the modification time of a file or directory.
type SetTimesArgs struct {
	Path    string
	ModTime time.Time
}

// SetModeArgs sets the permission bits of a file or directory.
type SetModeArgs struct {
	Path string
	Mode uint32
}

// DeleteArgs names a path to remove.
type DeleteArgs struct {
	Path      string
	Recursive bool
	Call      CallID // with several masters: see retrycache.go
}

// SetReplicationArgs sets the replication of the file at Path, or of every
// file below it.
type SetReplicationArgs struct {
	Path        string
	Replication int
}

// SetReplicationReply says how many files were set.
type SetReplicationReply struct {
	Files int
}

// RenameArgs moves Src to Dst, or into Dst when it is a directory.
type RenameArgs struct {
	Src, Dst string
	Force    bool   // replace a file at the destination
	Call     CallID // with several masters: see retrycache.go
}

// RenameReply names the path Src moved to and how many files moved.
type RenameReply struct {
	Path  string
	Moved int
}

// DeleteReply says how many files were removed.
type DeleteReply struct {
	Removed int
}

// ListReply lists files and directories.
type ListReply struct {
	Entries []FileInfo
}

// Empty is the reply of calls that return nothing but an error.
type Empty struct{}

// FileInfo describes a file (or, in listings, a directory).
type FileInfo struct {
	Path        string
	Dir         bool
	Size        int64
	Replication int
	BlockSize   int64
	ModTime     time.Time
	Mode        uint32 // permission bits
	Blocks      []BlockInfo
}

// BlockInfo is one block of a file and where it lives.
type BlockInfo struct {
	ID       uint64
	Size     int64
	CRC      uint32   // CRC32C (Castagnoli) of the whole block
	Replicas []string // live minion addresses, best first
}

// ---- Minion service ----

// WriteBlockArgs carries one packet of a block down the pipeline.
type WriteBlockArgs struct {
	BlockID uint64
	Offset  int64    // multiple of bytesPerChecksum
	Data    payload  // at most packetSize bytes, raw after the body (codec.go)
	CRCs    []uint32 // one CRC32C per bytesPerChecksum of Data
	Next    []string // the rest of the pipeline after this minion
	// Final marks a block of this one packet (Offset 0): each minion
	// finalizes it as soon as its copy is written, saving the
	// FinalizeBlock round trip (a small file).
	Final bool
	// Token is the master's permission for this block and pipeline.
	Token *WriteToken
}

// PipelineReply is the answer of WriteBlock and FinalizeBlock: empty when
// the callee and every minion after it did their part, else the address of
// the deepest minion that failed (the callee, or one it forwarded to) and
// why. The failure travels as data, not as net/rpc's error text, so that
// the writer knows which minion to drop from the pipeline.
type PipelineReply struct {
	Failed string // host:port of the minion that failed; "" if none
	Err    string // what went wrong there
}

// fail records that the minion at addr failed with err.
func (r *PipelineReply) fail(addr string, err error) { r.Failed, r.Err = addr, err.Error() }

// err is the failure in r as a *MinionError, or nil.
func (r *PipelineReply) err() *MinionError {
	if r.Failed == "" {
		return nil
	}
	return &MinionError{Addr: r.Failed, Err: remoteText(r.Err)}
}

// MinionError is the failure of one minion of a write pipeline. It unwraps
// to the sentinel the minion named, so errors.Is works across the wire.
type MinionError struct {
	Addr string
	Err  error
}

func (e *MinionError) Error() string { return "minion " + e.Addr + ": " + e.Err.Error() }
func (e *MinionError) Unwrap() error { return e.Err }

// FinalizeBlockArgs ends the write of a block: every minion of the pipeline
// checks the length, fsyncs and makes the block visible.
type FinalizeBlockArgs struct {
	BlockID uint64
	Size    int64
	Next    []string
	Token   *WriteToken
}

// ReadBlockArgs asks for a range of a block.
type ReadBlockArgs struct {
	BlockID uint64
	Offset  int64 // multiple of bytesPerChecksum
	Length  int64 // at most packetSize

	peer *peer
}

func (a *ReadBlockArgs) setPeer(p *peer) { a.peer = p }

// payloadIn receives a packet into a buffer of packetPool, which the
// handler gives back.
func (a *WriteBlockArgs) payloadOut() []byte { return a.Data }
func (a *WriteBlockArgs) payloadIn(n int) []byte {
	if cap(a.Data) < n {
		a.Data = getPacketBuf()
	}
	a.Data = a.Data[:n]
	return a.Data
}

// ReadBlockReply is the data with the stored checksums that cover it.
type ReadBlockReply struct {
	Data payload // raw after the body (codec.go)
	CRCs []uint32
}

// payloadIn receives a packet into the reply's buffer if it is big enough
// (readBlockRange reuses replies), else into one of packetPool.
func (r *ReadBlockReply) payloadOut() []byte { return r.Data }
func (r *ReadBlockReply) payloadIn(n int) []byte {
	if cap(r.Data) < n {
		r.Data = getPacketBuf()
	}
	r.Data = r.Data[:n]
	return r.Data
}

// release recycles the reply's buffer once the server has sent it.
func (r *ReadBlockReply) release() {
	putPacketBuf(r.Data)
	r.Data = nil
}
