package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A minion takes a block's packets only with the master's token for that
// block, and forwards them only to addresses the token names: a peer that
// holds the cluster secret can neither write a block the master did not
// allocate nor make a minion dial an address of its choosing. Nothing is
// stored and nothing is dialled for a refused packet.
func TestToken_MinionRefusesWritesTheMasterDidNotAllow(t *testing.T) {
	sec := &Security{Secret: testSecret}
	cl := startSecureCluster(t, 2, sec)
	a, b := cl.MinionSet[0].advertised(), cl.MinionSet[1].advertised()
	key := cl.Master.tokenKey
	var dialled atomic.Int32
	stranger := listen(t, func(c net.Conn) { dialled.Add(1) })
	otherKey := make([]byte, tokenKeySize)
	now := time.Now()
	data := []byte("a block the master never allocated")

	for _, tt := range []struct {
		name  string
		token func(id uint64) *WriteToken
		next  []string
		want  error // nil: stored on a and b
	}{
		{name: "Allowed", token: func(id uint64) *WriteToken { return issueToken(key, id, []string{a, b}, now) }, next: []string{b}},
		{name: "NoToken", token: func(uint64) *WriteToken { return nil }, want: ErrBadToken},
		{name: "OtherBlock", token: func(id uint64) *WriteToken { return issueToken(key, id+1, []string{a}, now) }, want: ErrBadToken},
		{name: "Forged", token: func(id uint64) *WriteToken { return issueToken(otherKey, id, []string{a}, now) }, want: ErrBadToken},
		{name: "Expired", token: func(id uint64) *WriteToken {
			return issueToken(key, id, []string{a}, now.Add(-tokenLifetime-time.Minute))
		}, want: ErrBadToken},
		{name: "PipelineAltered", token: func(id uint64) *WriteToken {
			tk := issueToken(key, id, []string{a, b}, now)
			tk.Pipeline[1] = stranger
			return tk
		}, next: []string{stranger}, want: ErrBadToken},
		{name: "ForwardNotPlaced", token: func(id uint64) *WriteToken { return issueToken(key, id, []string{a, b}, now) }, next: []string{stranger}, want: ErrBadToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(sec, roleClient)
			defer p.close()
			for _, final := range []bool{true, false} {
				id := randomID()
				var reply PipelineReply
				args := &WriteBlockArgs{BlockID: id, Data: data, CRCs: checksums(nil, data), Next: tt.next, Final: final, Token: tt.token(id)}
				if err := p.call(t.Context(), a, minionService+".WriteBlock", args, &reply, 5*time.Second); err != nil {
					t.Fatalf("the call failed itself: %v", err)
				}
				err := reply.err()
				switch {
				case tt.want == nil && err != nil:
					t.Fatalf("final=%v: %v, want it stored", final, err)
				case tt.want != nil && !errors.Is(err, tt.want):
					t.Fatalf("final=%v: %v, want %v", final, err, tt.want)
				case tt.want != nil && err.Addr != a:
					t.Errorf("refusal names %s, want %s", err.Addr, a)
				}
				if !final {
					fa := &FinalizeBlockArgs{BlockID: id, Size: int64(len(data)), Next: tt.next, Token: tt.token(id)}
					reply = PipelineReply{}
					if err := p.call(t.Context(), a, minionService+".FinalizeBlock", fa, &reply, 5*time.Second); err != nil {
						t.Fatalf("finalize failed itself: %v", err)
					}
					if err := reply.err(); (tt.want == nil) != (err == nil) {
						t.Fatalf("finalize: %v, want %v", err, tt.want)
					}
				}
				for i, mn := range cl.MinionSet {
					stored := mn.store.has(id)
					if want := tt.want == nil && (i == 0 || len(tt.next) > 0); stored != want {
						t.Errorf("final=%v: minion %d holds the block: %v, want %v", final, i, stored, want)
					}
				}
			}
		})
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("a minion dialled the stranger's address %d times", n)
	}
}

// Tokens issued before a master restart are still good after it: the key
// stays in the master's dir, readable by its owner only.
func TestToken_KeyKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadTokenKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadTokenKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	tk := issueToken(k1, 7, []string{"127.0.0.1:1"}, time.Now())
	if err := checkToken(k2, tk, 7, nil, time.Now()); err != nil {
		t.Fatalf("token of the first key under the second: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, tokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s has mode %v, want no access for group or others", tokenKeyFile, fi.Mode().Perm())
	}
}
