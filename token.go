package main

// Write tokens: the master's permission to write one block on one
// pipeline, in the spirit of HDFS's block access tokens.
//
// A minion forwards a packet to the next address the writer names, so a
// writer could make it dial any address. With a token it dials only a
// minion the master placed in that block's pipeline: the master signs
// (block, pipeline, expiry) with a key of its own, which it gives to the
// minions when they register and to nobody else; a minion refuses a
// packet whose token does not verify, is for another block or has
// expired, or whose forward list names an address the token does not.
// Pipeline recovery only drops minions, so the rest of a pipeline is
// always covered by the token the master issued for it.
//
// The key lives in the master's dir (token.key, mode 0600), so tokens
// issued before a restart stay good after it. It travels to a minion over
// that minion's authenticated connection (in clear without TLS; see the
// README's Security section for what that means).

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	tokenKeyFile = "token.key"
	tokenKeySize = 32
	// tokenLifetime is how long a block's token is good for, as HDFS's
	// block token (10 hours): no block write takes that long, and a
	// minion's clock may be off by minutes without harm.
	tokenLifetime = 10 * time.Hour
)

// WriteToken is the master's permission to write BlockID on Pipeline
// (minion addresses, in order) until Expires (Unix seconds).
type WriteToken struct {
	BlockID  uint64
	Pipeline []string
	Expires  int64
	MAC      []byte
}

// tokenMAC is the HMAC-SHA256 under key of a token's fields.
func tokenMAC(key []byte, id uint64, pipeline []string, expires int64) []byte {
	h := hmac.New(sha256.New, key)
	var b [8]byte
	h.Write([]byte("dfs write token\x00"))
	binary.BigEndian.PutUint64(b[:], id)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(expires))
	h.Write(b[:])
	for _, addr := range pipeline {
		binary.BigEndian.PutUint64(b[:], uint64(len(addr)))
		h.Write(b[:])
		h.Write([]byte(addr))
	}
	return h.Sum(nil)
}

// issueToken signs a token for block id on pipeline.
func issueToken(key []byte, id uint64, pipeline []string, now time.Time) *WriteToken {
	exp := now.Add(tokenLifetime).Unix()
	return &WriteToken{BlockID: id, Pipeline: slices.Clone(pipeline), Expires: exp, MAC: tokenMAC(key, id, pipeline, exp)}
}

// checkToken reports whether t allows a packet of block id that this
// minion forwards to next. key is nil while the minion has no master.
func checkToken(key []byte, t *WriteToken, id uint64, next []string, now time.Time) error {
	switch {
	case key == nil:
		return fmt.Errorf("%w: this minion is not registered with a master yet", ErrBadToken)
	case t == nil:
		return fmt.Errorf("%w: no write token", ErrBadToken)
	case !hmac.Equal(t.MAC, tokenMAC(key, t.BlockID, t.Pipeline, t.Expires)):
		return fmt.Errorf("%w: the write token is not the master's", ErrBadToken)
	case t.BlockID != id:
		return fmt.Errorf("%w: the write token is for block %016x, not %016x", ErrBadToken, t.BlockID, id)
	case now.Unix() > t.Expires:
		return fmt.Errorf("%w: the write token expired at %s", ErrBadToken, time.Unix(t.Expires, 0).UTC().Format(time.RFC3339))
	}
	for _, addr := range next {
		if !slices.Contains(t.Pipeline, addr) {
			return fmt.Errorf("%w: forward address %s is not in the block's pipeline", ErrBadToken, addr)
		}
	}
	return nil
}

// loadTokenKey reads the master's token key from dir, making one there
// the first time.
func loadTokenKey(dir string) ([]byte, error) {
	p := filepath.Join(dir, tokenKeyFile)
	key, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, tokenKeySize)
		rand.Read(key)
		if err := writeFileAtomicMode(p, 0o600, func(w io.Writer) error { _, err := w.Write(key); return err }); err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	if len(key) != tokenKeySize {
		return nil, fmt.Errorf("token key %s: %d bytes, want %d", p, len(key), tokenKeySize)
	}
	return key, nil
}
