// ha_net.go is the network side of replicated masters (ha.go): Raft's
// connections (with the cluster handshake), the masters' announcements of
// their client addresses, their report, and changes of membership.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

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
