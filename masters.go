// masters.go is the calling side of the metadata path when there may be
// several masters (ha.go): clients and minions take a list, call the
// leader, follow a follower's answer to the leader it names, and try the
// others while an election goes on.
//
// A call is sent again only when that cannot make a change twice: the
// follower that answered ErrNotLeader did nothing, and a connection that
// could not be opened carried no request. A call cut off after it was
// sent, or answered ErrLeadershipLost, is sent again only if it is
// idempotent (reads, heartbeats, and changes that say what the result
// is) or names itself with a CallID that the masters remember (rm, mv,
// mkdir: retrycache.go); the others report the failure, whose text says
// the change may or may not have been made. A put whose Complete is cut
// off so looks for its file (Client.completed) before it reports a
// failure.
package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// failoverWait is how long a call keeps trying the masters while none is
// the leader: an election takes a few seconds with Raft's default timings.
const failoverWait = 15 * time.Second

// masterSet is a list of master addresses and the one that led last.
type masterSet struct {
	spec  string // as given: "HOST:PORT" or "A,B,C"
	addrs []string

	mu     sync.Mutex
	leader string // where calls go first
	known  bool   // leader was found, not guessed

	// client and calls make the CallIDs of changes (retrycache.go).
	client uint64
	calls  atomic.Uint64
}

// splitMasters splits a --master list: "A,B,C".
func splitMasters(spec string) []string {
	var addrs []string
	for _, a := range strings.Split(spec, ",") {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// checkMasters checks each address of a --master list.
func checkMasters(spec string) error {
	addrs := splitMasters(spec)
	if len(addrs) == 0 {
		return fmt.Errorf("%w: no master address in %q", ErrBadArg, spec)
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%w: master address %q: %v", ErrBadArg, a, err)
		}
	}
	return nil
}

func newMasterSet(spec string) *masterSet {
	ms := &masterSet{spec: spec, addrs: splitMasters(spec), client: rand.Uint64()}
	if len(ms.addrs) == 0 {
		ms.addrs = []string{spec}
	}
	ms.leader = ms.addrs[0]
	return ms
}

// current is the master calls go to first.
func (ms *masterSet) current() string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.leader
}

// next moves on from addr, which did not answer or knew no leader.
func (ms *masterSet) next(addr string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.leader != addr {
		return // another call moved on already
	}
	i := slices.Index(ms.addrs, addr)
	ms.leader = ms.addrs[(i+1)%len(ms.addrs)]
}

func (ms *masterSet) follow(addr string) {
	ms.mu.Lock()
	ms.leader, ms.known = addr, true
	ms.mu.Unlock()
}

// discoverWait is how long discover waits for the masters' answers: a
// master that is paused or cut off costs this, not a dial timeout.
const discoverWait = 2 * time.Second

// discover asks every master at once which one leads, and goes there. It
// keeps the current guess if none says it leads.
func (ms *masterSet) discover(ctx context.Context, p *pool) {
	ctx, cancel := context.WithTimeout(ctx, discoverWait)
	defer cancel()
	found := make(chan string, len(ms.addrs))
	for _, a := range ms.addrs {
		go func() {
			var reply PingReply
			if p.call(ctx, a, masterService+".Ping", &PingArgs{}, &reply, discoverWait) == nil && reply.Raft != nil && reply.Raft.Role == "leader" {
				found <- a
				return
			}
			found <- ""
		}()
	}
	for range ms.addrs {
		if a := <-found; a != "" {
			ms.follow(a)
			return
		}
	}
}

// idempotent are the master's methods that may be sent again after a
// failure that leaves unknown whether the first one arrived.
var idempotent = map[string]bool{
	masterService + ".Ping": true, masterService + ".Stat": true, masterService + ".List": true,
	masterService + ".Report": true, masterService + ".Fsck": true, masterService + ".Heartbeat": true,
	masterService + ".Register": true, masterService + ".BlockReceived": true, masterService + ".ReportBad": true,
	masterService + ".SetTimes": true, masterService + ".SetMode": true,
	masterService + ".SetReplication": true, masterService + ".Renew": true, masterService + ".Announce": true,
}

// call calls method at the leader; see the file's comment for when it
// sends a call again. With one address it fails at once when the master
// cannot be reached, as before there were several.
func (ms *masterSet) call(ctx context.Context, p *pool, method string, args, reply any, timeout time.Duration) error {
	// A change that names its call may be sent again: a master that made
	// it already answers as it did (retrycache.go).
	named := false
	if nc, ok := args.(namedCall); ok && len(ms.addrs) > 1 {
		*nc.callID() = CallID{Client: ms.client, Seq: ms.calls.Add(1)}
		named = true
	}
	deadline := time.Now().Add(failoverWait)
	wait := 50 * time.Millisecond
	redirects := 0
	ms.mu.Lock()
	guess := !ms.known && len(ms.addrs) > 1
	ms.mu.Unlock()
	if guess {
		ms.discover(ctx, p)
	}
	for {
		addr := ms.current()
		err := p.call(ctx, addr, method, args, reply, timeout)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var again bool
		switch {
		case errors.Is(err, ErrNotLeader):
			if to := leaderIn(err); to != "" && to != addr && redirects < 3 {
				redirects++
				ms.follow(to)
				continue
			}
			ms.next(addr)
			again = true
		case errors.Is(err, ErrLeadershipLost):
			again = idempotent[method] || named
		case isRemote(err):
			return err
		default: // the master could not be reached, or broke off
			if len(ms.addrs) == 1 && addr == ms.addrs[0] {
				return err
			}
			ms.next(addr)
			again = notSent(err) || idempotent[method] || named
			if again {
				ms.discover(ctx, p)
			}
		}
		if !again || time.Now().Add(wait).After(deadline) {
			return err
		}
		redirects = 0
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// isRemote reports whether err is the answer of the remote node.
func isRemote(err error) bool {
	var re *remoteError
	return errors.As(err, &re)
}

// notSent reports whether err is a failure to connect: no request went out.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
