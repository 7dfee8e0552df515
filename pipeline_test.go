package main

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// silentPeer is an address that accepts connections and never reads or
// answers, as a paused minion or one behind a partition: no reset, only
// silence.
func silentPeer(t testing.TB) string {
	return listen(t, func(c net.Conn) {
		var b [1]byte
		c.Read(b[:0]) // hold the connection open, read nothing
		<-t.Context().Done()
	})
}

// The failure of a minion of a write pipeline comes back across a real RPC
// as a *MinionError naming that minion, whichever it is: the one called,
// one it forwards to, the deepest, a silent one, one shutting down.
func TestPipeline_MinionError(t *testing.T) {
	cl := startCluster(t, 3)
	a, b, c := cl.MinionSet[0].advertised(), cl.MinionSet[1].advertised(), cl.MinionSet[2].advertised()
	dead := closedPort(t)
	silent := silentPeer(t)
	data := bytes.Repeat([]byte("x"), 4096)
	good := checksums(nil, data)
	bad := append([]uint32{good[0] ^ 1}, good[1:]...)
	for _, tt := range []struct {
		name   string
		to     string
		next   []string
		crcs   []uint32
		packet bool // a packet of a larger block, not a whole small block
		before func()
		failed string // "" for none
		is     error  // a sentinel the error must match
	}{
		{name: "AllGood", to: a, next: []string{b, c}, crcs: good},
		{name: "Checksum", to: a, crcs: bad, failed: a, is: ErrChecksum},
		{name: "ChecksumDeepest", to: a, next: []string{b}, crcs: bad, failed: b, is: ErrChecksum},
		{name: "NextDown", to: a, next: []string{dead}, crcs: good, failed: dead},
		{name: "DeepestDown", to: a, next: []string{b, dead}, crcs: good, failed: dead},
		{name: "DeepestSilentPacket", to: a, next: []string{b, silent}, crcs: good, failed: silent, packet: true},
		{name: "NextShuttingDown", to: a, next: []string{c}, crcs: good, failed: c, is: errShuttingDown,
			before: func() { cl.MinionSet[2].cancel() }}, // its server still answers
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			p := newPool(nil, roleClient)
			defer p.close()
			var reply PipelineReply
			id := randomID()
			token := issueToken(cl.Master.tokenKey, id, append([]string{tt.to}, tt.next...), time.Now())
			args := &WriteBlockArgs{BlockID: id, Data: data, CRCs: tt.crcs, Next: tt.next, Final: !tt.packet, Token: token}
			if err := p.call(t.Context(), tt.to, minionService+".WriteBlock", args, &reply, hops(finalizeHopTimeout, 3)); err != nil {
				t.Fatalf("the call failed itself: %v", err)
			}
			err := reply.err()
			switch {
			case tt.failed == "" && err != nil:
				t.Fatalf("failure %v, want none", err)
			case tt.failed == "":
				return
			case err == nil:
				t.Fatalf("no failure, want one of %s", tt.failed)
			case err.Addr != tt.failed:
				t.Errorf("failure names %s (%v), want %s", err.Addr, err, tt.failed)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("failure %v does not match %v", err, tt.is)
			}
		})
	}
}

// A put whose pipeline holds a minion that went silent (registered, then
// no answer and no reset) completes without it within a few packet
// deadlines, not the minute a write timeout took, and reads back whole.
func TestPipeline_SilentMinionDropped(t *testing.T) {
	cl := startCluster(t, 2)
	silent := silentPeer(t)
	m := cl.Master
	if _, err := m.register(&RegisterArgs{MinionID: "MID-silent", Addr: silent, Capacity: 1 << 40, Free: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.reg.minions["MID-silent"].load = -1 << 40 // placed first: at the head of the pipeline
	m.mu.Unlock()
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*packetSize+100)
	start := time.Now()
	n, err := c.Put(t.Context(), bytes.NewReader(data), "/f", PutOptions{Replication: 3, BlockSize: 4 << 20})
	took := time.Since(start)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("put = %d, %v", n, err)
	}
	// The bound is the deadlines' (the first minion of three costs
	// hops(packetHopTimeout, 3)), with room for a loaded machine, far
	// below the minute it was.
	if limit := hops(packetHopTimeout, 3) + 10*time.Second; took > limit {
		t.Errorf("put took %v with a silent minion, want under %v", took, limit)
	}
	fi, err := c.Stat(t.Context(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range fi.Blocks {
		for _, r := range b.Replicas {
			if r == silent {
				t.Errorf("block %s lists the silent minion as a replica", blockName(b.ID))
			}
		}
	}
	var out bytes.Buffer
	if _, err := c.Get(t.Context(), "/f", &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("get = %d bytes, %v; want the %d put", out.Len(), err, len(data))
	}
}
