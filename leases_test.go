package main

// Tests of the write path at the master: create, add a block, complete,
// abandon, lease expiry.

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestMaster_Create_Conflicts(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	if err := putFile(t, m, "/d/f", 10); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path  string
		force bool
		want  error
	}{
		{"/d/f", false, ErrExists},
		{"/d", true, ErrIsDir},
		{"/", true, ErrIsDir},
		{"/d/f/g", false, ErrNotDir},
		{"/d/f/g/h", true, ErrNotDir},
		{"d/x", false, ErrBadPath},
	}
	for _, tt := range tests {
		_, err := m.create(&CreateArgs{Path: tt.path, Force: tt.force})
		if !errors.Is(err, tt.want) {
			t.Errorf("create %s (force %v) = %v, want %v", tt.path, tt.force, err, tt.want)
		}
	}
	// The same path twice at once.
	if _, err := m.create(&CreateArgs{Path: "/busy"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.create(&CreateArgs{Path: "/busy", Force: true}); !errors.Is(err, ErrBusy) {
		t.Errorf("second create of a path being written = %v, want ErrBusy", err)
	}
}

// A put whose path became a directory (or went under a new file) while it
// ran fails at complete, and its blocks are queued for deletion.
func TestMaster_Complete_RechecksNamespace(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	cr, err := m.create(&CreateArgs{Path: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	if err := putFile(t, m, "/x/inner", 5); err != nil {
		t.Fatal(err)
	}
	err = m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: []BlockInfo{{ID: ab.BlockID, Size: 1}}})
	if !errors.Is(err, ErrIsDir) {
		t.Fatalf("complete over a new directory = %v, want ErrIsDir", err)
	}
	if !slices.Contains(m.deletes.pendingOn("MID-0"), ab.BlockID) {
		t.Errorf("block of the failed put not queued for deletion: %v", m.deletes)
	}
	if _, ok := m.leases.writes[cr.Handle]; ok {
		t.Error("failed put still registered")
	}
}

func TestMaster_Complete_Validates(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 1)
	tests := []struct {
		name  string
		edit  func(blocks []BlockInfo) []BlockInfo
		valid bool
	}{
		{"OK", func(b []BlockInfo) []BlockInfo { return b }, true},
		{"MissingBlock", func(b []BlockInfo) []BlockInfo { return b[:1] }, false},
		{"ExtraBlock", func(b []BlockInfo) []BlockInfo { return append(b, BlockInfo{ID: 42, Size: 1}) }, false},
		{"WrongID", func(b []BlockInfo) []BlockInfo { b[0].ID++; return b }, false},
		{"Swapped", func(b []BlockInfo) []BlockInfo { b[0], b[1] = b[1], b[0]; return b }, false},
		{"ShortMiddleBlock", func(b []BlockInfo) []BlockInfo { b[0].Size--; return b }, false},
		{"OversizeLast", func(b []BlockInfo) []BlockInfo { b[1].Size = testBlockSize + 1; return b }, false},
		{"EmptyLast", func(b []BlockInfo) []BlockInfo { b[1].Size = 0; return b }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := "/v/" + tt.name
			cr, err := m.create(&CreateArgs{Path: p})
			if err != nil {
				t.Fatal(err)
			}
			var blocks []BlockInfo
			for _, size := range []int64{testBlockSize, 7} {
				ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
				if err != nil {
					t.Fatal(err)
				}
				blocks = append(blocks, BlockInfo{ID: ab.BlockID, Size: size})
			}
			err = m.complete(&CompleteArgs{Handle: cr.Handle, Blocks: tt.edit(blocks)})
			if tt.valid != (err == nil) {
				t.Fatalf("complete = %v, want valid %v", err, tt.valid)
			}
			if _, err := m.stat(p); tt.valid != (err == nil) {
				t.Errorf("stat after complete = %v", err)
			}
		})
	}
	if err := m.complete(&CompleteArgs{Handle: 12345}); !errors.Is(err, ErrLease) {
		t.Errorf("complete of an unknown handle = %v, want ErrLease", err)
	}
}

func TestMaster_ExpireWrites(t *testing.T) {
	m := newTestMaster(t, t.TempDir())
	addMinions(t, m, 2)
	cr, _ := m.create(&CreateArgs{Path: "/slow", Replication: 2})
	ab, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle})
	if err != nil {
		t.Fatal(err)
	}
	m.expireWrites(time.Now()) // not yet
	if _, ok := m.leases.writes[cr.Handle]; !ok {
		t.Fatal("fresh put expired")
	}
	m.expireWrites(time.Now().Add(m.LeaseTimeout + time.Second))
	if _, err := m.addBlock(&AddBlockArgs{Handle: cr.Handle}); !errors.Is(err, ErrLease) {
		t.Fatalf("addBlock after expiry = %v, want ErrLease", err)
	}
	for _, mid := range []string{"MID-0", "MID-1"} {
		if !slices.Contains(m.deletes.pendingOn(mid), ab.BlockID) {
			t.Errorf("block of the expired put not queued for deletion on %s", mid)
		}
	}
	// The path is free again.
	if err := putFile(t, m, "/slow", 1); err != nil {
		t.Fatal(err)
	}
}
