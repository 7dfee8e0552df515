package main

// Benchmarks of the hot paths. Speed goals live here, never in tests.

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func BenchmarkChecksums(b *testing.B) {
	data := make([]byte, packetSize)
	crcs := make([]uint32, 0, packetSize/bytesPerChecksum)
	b.SetBytes(packetSize)
	for b.Loop() {
		crcs = checksums(crcs[:0], data)
	}
}

func BenchmarkVerifyChecksums(b *testing.B) {
	data := make([]byte, packetSize)
	crcs := checksums(nil, data)
	b.SetBytes(packetSize)
	for b.Loop() {
		if err := verifyChecksums(data, crcs, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBlockStore_WriteFinalize writes 8 MiB blocks in 1 MiB packets,
// with the fsyncs of finalize.
func BenchmarkBlockStore_WriteFinalize(b *testing.B) {
	s, err := openBlockStore(b.TempDir(), DefaultPackMax, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, packetSize)
	crcs := checksums(nil, data)
	const packets = 8
	b.SetBytes(packets * packetSize)
	var id uint64
	for b.Loop() {
		id++
		for i := range packets {
			if err := s.write(id, int64(i)*packetSize, data, crcs); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.finalize(id, packets*packetSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBlockStore_SmallPut stores 4 KiB blocks whole, as a minion does
// for small files: packed into a volume (1 writer: one fdatasync each; 16:
// they share them) or, with packing off, as two files each.
func BenchmarkBlockStore_SmallPut(b *testing.B) {
	data := blockBytes(1, 4096)
	crcs := checksums(nil, data)
	for _, tc := range []struct {
		name    string
		packMax int64
		writers int
	}{{"packed/writers=1", DefaultPackMax, 1}, {"packed/writers=16", DefaultPackMax, 16}, {"files/writers=16", 0, 16}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := openBlockStore(b.TempDir(), tc.packMax, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			var next atomic.Uint64
			start := time.Now()
			if tc.writers == 1 {
				for b.Loop() {
					if err := s.put(next.Add(1), data, crcs); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(max(1, tc.writers/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.put(next.Add(1), data, crcs); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
		})
	}
}

// BenchmarkBlockStore_OpenPacked opens a store of 100,000 packed 4 KiB
// blocks in two volumes, the older one read headers only: a minion's start.
func BenchmarkBlockStore_OpenPacked(b *testing.B) {
	dir := b.TempDir()
	s, err := openBlockStore(dir, DefaultPackMax, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	data := blockBytes(1, 4096)
	crcs := checksums(nil, data)
	const n = 100_000
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if err := s.put(uint64(i+1), data, crcs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.close()
	for b.Loop() {
		s, err := openBlockStore(dir, DefaultPackMax, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		if _, k := s.usage(); k != n {
			b.Fatalf("%d blocks after open, want %d", k, n)
		}
		s.close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/block")
}

func BenchmarkBlockStore_Read(b *testing.B) {
	s, err := openBlockStore(b.TempDir(), DefaultPackMax, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, packetSize)
	if err := s.write(1, 0, data, checksums(nil, data)); err != nil {
		b.Fatal(err)
	}
	if err := s.finalize(1, packetSize); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(packetSize)
	for b.Loop() {
		if _, _, err := s.read(1, 0, packetSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaster_CreateComplete measures puts of empty files through the
// master's namespace and edit log, with 1 caller (every put pays its own
// fsync) and 16 (they share fsyncs: group commit). Reported as ops/s.
func BenchmarkMaster_CreateComplete(b *testing.B) {
	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			m := NewMaster(b.TempDir(), "127.0.0.1:0")
			m.Logger = testLogger(b)
			if err := m.load(); err != nil {
				b.Fatal(err)
			}
			defer m.edits.close()
			var n atomic.Int64
			put := func() bool {
				p := fmt.Sprintf("/bench/%d", n.Add(1))
				cr, err := m.create(&CreateArgs{Path: p})
				if err == nil {
					err = m.complete(&CompleteArgs{Handle: cr.Handle})
				}
				if err != nil {
					b.Error(err)
				}
				return err == nil
			}
			b.ResetTimer()
			if callers == 1 {
				for i := 0; i < b.N && put(); i++ {
				}
			} else {
				b.SetParallelism(callers / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() && put() {
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			m.edits.mu.Lock()
			b.ReportMetric(float64(m.edits.syncs)/float64(b.N), "fsyncs/op")
			m.edits.mu.Unlock()
		})
	}
}

// BenchmarkEditLog_Replay measures the decoding of edit log records, as a
// master's start and its checkpoints replay them. Reported as records/s.
func BenchmarkEditLog_Replay(b *testing.B) {
	dir := b.TempDir()
	l, err := openEditLog(dir, 0)
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	var seq uint64
	for i := range n {
		if seq, err = l.append(putEdit(fmt.Sprintf("/bench/d%d/f%d", i%100, i))); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.sync(seq); err != nil {
		b.Fatal(err)
	}
	l.close()
	b.ResetTimer()
	for b.Loop() {
		got := 0
		if _, _, err := replayEdits(dir, 0, func(*edit) error { got++; return nil }); err != nil || got != n {
			b.Fatalf("replayed %d records, want %d: %v", got, n, err)
		}
	}
	b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkCluster_PutGet moves 16 MiB files through an in-process cluster
// of 3 minions, with replication 1 and 3.
func BenchmarkCluster_PutGet(b *testing.B) {
	data := make([]byte, 16<<20)
	for _, repl := range []int{1, 3} {
		b.Run(fmt.Sprintf("put/repl=%d", repl), func(b *testing.B) {
			cl := startCluster(b, 3)
			c := newTestClient(b, cl)
			b.SetBytes(int64(len(data)))
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Put(b.Context(), bytes.NewReader(data), fmt.Sprintf("/b%d", i), PutOptions{Replication: repl, BlockSize: 4 << 20}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("get", func(b *testing.B) {
		cl := startCluster(b, 3)
		c := newTestClient(b, cl)
		mustPut(b, c, "/g", data, PutOptions{Replication: 1, BlockSize: 4 << 20})
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := c.Get(b.Context(), "/g", io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMaster_MillionFiles fills a master with 1,000,000 one-block files
// (3 replicas each), reports the heap it takes per file, then checkpoints
// and measures how long a restart takes to load them. Run it alone:
// go test -run '^$' -bench MillionFiles -benchtime 1x
func BenchmarkMaster_MillionFiles(b *testing.B) {
	const files = 1_000_000
	for b.Loop() {
		dir := b.TempDir()
		m := NewMaster(dir, "127.0.0.1:0")
		m.Logger = slog.New(slog.DiscardHandler)
		if err := m.load(); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		fillMaster(m, files)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/files, "heap-bytes/file")
		if err := m.checkpoint(); err != nil {
			b.Fatal(err)
		}
		m.edits.close()

		start := time.Now()
		m2 := NewMaster(dir, "127.0.0.1:0")
		m2.Logger = m.Logger
		if err := m2.load(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "restart-s")
		if m2.ns.files != files {
			b.Fatalf("%d files after restart", m2.ns.files)
		}
		m2.edits.close()
	}
}

// fillMaster gives m three minions and the given number of one-block
// files, 3 replicas each.
func fillMaster(m *Master, files int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range 3 {
		m.reg.apply(imageMinion{ID: fmt.Sprintf("MID-%d", i), Addr: fmt.Sprintf("10.0.0.%d:8888", i)})
	}
	replicas := []string{"MID-0", "MID-1", "MID-2"}
	for i := range files {
		p := fmt.Sprintf("/data/d%03d/file-%07d", i%1000, i)
		f := imageFile{Path: p, Replication: 3, BlockSize: 64 << 20,
			Blocks: []imageBlock{{ID: uint64(i + 1), Size: 1 << 20, CRC: uint32(i), Replicas: replicas}}}
		if _, err := m.ns.apply(&edit{Op: opPut, V: editVersion, Path: p, File: f}); err != nil {
			panic(err)
		}
	}
}

// millionFileMaster is a master, not serving, filled by fillMaster with
// 1,000,000 files.
func millionFileMaster(b *testing.B) *Master {
	m := NewMaster(b.TempDir(), "127.0.0.1:0")
	m.Logger = slog.New(slog.DiscardHandler)
	if err := m.load(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.edits.close() })
	fillMaster(m, 1_000_000)
	return m
}

// BenchmarkMaster_ReplicateTick measures the replication check of a
// housekeeping tick, which holds the master's lock, with 1,000,000 blocks:
// when nothing changed, and when every block is looked at (a minion died).
func BenchmarkMaster_ReplicateTick(b *testing.B) {
	m := millionFileMaster(b)
	m.replicate(time.Now())
	b.Run("Steady", func(b *testing.B) {
		for b.Loop() {
			m.replicate(time.Now())
		}
	})
	b.Run("Rescan", func(b *testing.B) {
		for b.Loop() {
			m.repl.rescan = true
			m.replicate(time.Now())
		}
	})
}

// BenchmarkMaster_Snapshot measures the part of a checkpoint that holds
// the master's lock, with 1,000,000 files: taking the image to write.
func BenchmarkMaster_Snapshot(b *testing.B) {
	m := millionFileMaster(b)
	for b.Loop() {
		m.mu.Lock()
		m.snapshot()
		m.mu.Unlock()
	}
}

// BenchmarkMaster_BlockReport measures the master taking in one minion's
// full block report of 1,000,000 blocks, as at every --report-interval and
// at each minion's registration after a restart. It holds the master's
// lock throughout.
func BenchmarkMaster_BlockReport(b *testing.B) {
	m := millionFileMaster(b)
	report := make([]BlockReport, 0, len(m.ns.blocks))
	for id := range m.ns.blocks {
		report = append(report, BlockReport{ID: id, Size: 1 << 20})
	}
	args := &RegisterArgs{MinionID: "MID-0", Addr: "10.0.0.0:8888", Free: 1 << 40, Blocks: report}
	for b.Loop() {
		if _, err := m.register(args); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaster_RPC measures master operations over net/rpc on loopback
// with 16 callers, each with its own connection, as `dfs bench meta` does.
func BenchmarkMaster_RPC(b *testing.B) {
	cl := startCluster(b, 0)
	const callers = 16
	clients := make([]*Client, callers)
	for i := range clients {
		clients[i] = newTestClient(b, cl)
	}
	var n atomic.Int64
	run := func(b *testing.B, op func(c *Client, i int64) error) {
		var w atomic.Int64
		cpu0 := processCPU(b)
		b.SetParallelism(callers / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			c := clients[w.Add(1)%callers]
			for pb.Next() {
				if err := op(c, n.Add(1)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		// CPU of the whole process (clients and master) per operation: a
		// steadier measure than ops/s on a machine shared with others.
		b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	}
	b.Run("create+complete", func(b *testing.B) {
		run(b, func(c *Client, i int64) error {
			var cr CreateReply
			if err := c.meta(b.Context(), "Create", &CreateArgs{Path: fmt.Sprintf("/rpc/%d", i)}, &cr); err != nil {
				return err
			}
			return c.meta(b.Context(), "Complete", &CompleteArgs{Handle: cr.Handle}, &Empty{})
		})
	})
	b.Run("open", func(b *testing.B) {
		mustPut(b, clients[0], "/rpc-open", nil, PutOptions{Force: true})
		run(b, func(c *Client, _ int64) error {
			_, err := c.Stat(b.Context(), "/rpc-open")
			return err
		})
	})
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMaster_CreateCompleteRaft compares the create+complete rate of
// one master with that of three replicated masters (ha.go), 16 callers.
func BenchmarkMaster_CreateCompleteRaft(b *testing.B) {
	const callers = 16
	bench := func(b *testing.B, clients []*Client) {
		var n, w atomic.Int64
		b.SetParallelism(callers / runtime.GOMAXPROCS(0))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := clients[w.Add(1)%callers]
			for pb.Next() {
				var cr CreateReply
				if err := c.meta(b.Context(), "Create", &CreateArgs{Path: fmt.Sprintf("/rpc/%d", n.Add(1))}, &cr); err != nil {
					b.Error(err)
					return
				}
				if err := c.meta(b.Context(), "Complete", &CompleteArgs{Handle: cr.Handle}, &Empty{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	}
	b.Run("masters=1", func(b *testing.B) {
		cl := startCluster(b, 0)
		clients := make([]*Client, callers)
		for i := range clients {
			clients[i] = newTestClient(b, cl)
		}
		bench(b, clients)
	})
	b.Run("masters=3", func(b *testing.B) {
		hc := startHACluster(b, 3, 0)
		clients := make([]*Client, callers)
		for i := range clients {
			clients[i] = hc.client()
		}
		bench(b, clients)
		h := hc.masters[hc.leader()].ha
		b.ReportMetric(float64(h.edits.Load())/float64(max(1, h.entries.Load())), "edits/entry")
	})
}
