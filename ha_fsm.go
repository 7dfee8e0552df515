// ha_fsm.go is the Raft FSM of replicated masters (ha.go): committed
// entries applied to the namespace, and its snapshots, which are images
// (meta.go) built from the last snapshot and the committed log.
package main

import (
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

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
