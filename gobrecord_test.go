package main

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"
)

var testEdits = []*edit{
	{Op: opPut, Path: "/a", File: imageFile{Path: "/a", Replication: 3, BlockSize: 1 << 26, ModTime: time.Unix(1700000000, 5),
		Blocks: []imageBlock{{ID: 1, Size: 10, CRC: 7, Replicas: []string{"MID-1", "MID-2"}}, {ID: 2}}}},
	{Op: opDelete, Path: "/d", Recursive: true},
	{Op: opMinion, Minion: imageMinion{ID: "MID-9", Addr: "10.0.0.9:8888", Decommissioning: true}},
	{},
	{Op: opMkdir, V: editVersion, Path: "/a", Parents: true, Time: 1},
	{Op: opFormat, Cluster: "CID-1", Key: []byte{1, 2, 3}},
	{Op: opMaster, Master: imageMaster{ID: "m1", Addr: "h:1", HTTP: "h:2"}},
	{Op: opPut, Path: "/empty", File: imageFile{Path: "/empty"}},
}

// checkGobRecords encodes each value twice over with one codec, and checks
// that every record is what a fresh gob encoder writes, and that it decodes
// to the value again with the same codec, another codec and a fresh decoder;
// then that damaged records are refused and good ones still decode after.
func checkGobRecords[T any](t *testing.T, values []*T) {
	t.Helper()
	var w, r gobRecord[T] // r: another process's
	// Two values are the same if gob writes them the same.
	same := func(what string, got, want *T) {
		t.Helper()
		var g, w bytes.Buffer
		if err := gob.NewEncoder(&g).Encode(got); err != nil {
			t.Fatal(err)
		}
		if err := gob.NewEncoder(&w).Encode(want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.Bytes(), w.Bytes()) {
			t.Errorf("%s: decoded %+v, want %+v", what, got, want)
		}
	}
	for i, v := range append(values, values...) {
		var fresh bytes.Buffer
		if err := gob.NewEncoder(&fresh).Encode(v); err != nil {
			t.Fatal(err)
		}
		rec, err := w.encode([]byte("hdr"), v)
		if err != nil {
			t.Fatal(err)
		}
		if string(rec[:3]) != "hdr" || !bytes.Equal(rec[3:], fresh.Bytes()) {
			t.Fatalf("value %d: record %x, want hdr%x (a fresh encoder's)", i, rec, fresh.Bytes())
		}
		rec = rec[3:]
		for _, c := range []*gobRecord[T]{&w, &r} {
			back := new(T)
			if err := c.decode(rec, back); err != nil {
				t.Fatalf("value %d: decode: %v", i, err)
			}
			same(fmt.Sprintf("value %d", i), back, v)
		}
		back := new(T)
		if err := gob.NewDecoder(bytes.NewReader(rec)).Decode(back); err != nil {
			t.Fatalf("value %d: a fresh decoder: %v", i, err)
		}
		same(fmt.Sprintf("value %d, fresh decoder", i), back, v)
	}
	good, err := w.encode(nil, values[0])
	if err != nil {
		t.Fatal(err)
	}
	for what, bad := range map[string][]byte{
		"garbage": []byte("garbage"), "empty": nil, "cut short": good[:len(good)-3],
		"trailing bytes": append(bytes.Clone(good), 0), "a second value": append(bytes.Clone(good), good[len(w.defs):]...),
	} {
		if err := r.decode(bad, new(T)); err == nil {
			t.Errorf("%s: decoded, want an error", what)
		}
	}
	back := new(T)
	if err := r.decode(good, back); err != nil {
		t.Fatalf("after bad records: %v", err)
	}
	same("after bad records", back, values[0])
}

func TestGobRecord_Edits(t *testing.T) { checkGobRecords(t, testEdits) }

func TestGobRecord_RaftBatches(t *testing.T) {
	checkGobRecords(t, []*haBatch{{Edits: testEdits}, {}, {Edits: testEdits[:1]}})
}

// A Raft entry that is not a batch is refused as a damaged log.
func TestHA_DecodeBatchRefusesGarbage(t *testing.T) {
	var h haNode
	for _, bad := range [][]byte{[]byte("garbage"), nil} {
		if _, err := h.decodeBatch(bad); !errors.Is(err, ErrBadEditLog) {
			t.Errorf("decode %q: %v, want %v", bad, err, ErrBadEditLog)
		}
	}
}

// Another process of this build, which encoded other types first, writes
// records with the same definitions: this one decodes them on its primed
// decoder, not on its own.
func TestGobRecord_SameAcrossProcesses(t *testing.T) {
	if os.Getenv("DFS_GOBRECORD_CHILD") != "" {
		// Types this test process never encodes, sent first.
		gob.NewEncoder(io.Discard).Encode(struct{ A, B, C string }{"a", "b", "c"})
		gob.NewEncoder(io.Discard).Encode(&image{Paths: []string{"/x"}})
		var c gobRecord[edit]
		rec, err := c.encode(nil, testEdits[0])
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.Write(rec)
		os.Exit(0)
	}
	gob.NewEncoder(io.Discard).Encode(struct{ X, Y int }{1, 2}) // a type the child never sends
	cmd := exec.Command(os.Args[0], "-test.run=^TestGobRecord_SameAcrossProcesses$")
	cmd.Env = append(os.Environ(), "DFS_GOBRECORD_CHILD=1")
	rec, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var c gobRecord[edit]
	if err := c.init(); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(rec, c.defs) {
		t.Errorf("the other process's record starts %x, want this one's definitions %x", rec[:min(len(rec), len(c.defs))], c.defs)
	}
	var e edit
	if err := c.decode(rec, &e); err != nil || e.Path != testEdits[0].Path {
		t.Errorf("decode the other process's record: %+v, %v", e, err)
	}
}
