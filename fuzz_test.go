package main

// Fuzz targets for every decoder that reads bytes from outside the process:
// the handshake (both sides), the RPC codec (fuzzed in codec_test.go and
// here), edit-log records and segments, the checkpoint image, volume
// records, block and volume file names, and sizes on the command line.
// `make test` runs their seed corpora (testdata/fuzz/) as ordinary tests;
// `make fuzz` runs each for FUZZTIME.

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// scriptedConn is a connection whose peer says in and then hangs up, and
// which takes whatever is written to it.
type scriptedConn struct {
	r      *bytes.Reader
	remote net.Addr
	out    bytes.Buffer
}

func newScriptedConn(in []byte) *scriptedConn {
	return &scriptedConn{r: bytes.NewReader(in), remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}}
}

func (c *scriptedConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptedConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptedConn) Close() error                     { return nil }
func (c *scriptedConn) LocalAddr() net.Addr              { return c.remote }
func (c *scriptedConn) RemoteAddr() net.Addr             { return c.remote }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }

// goodDialerBytes are the bytes a dialer with secret sends, in a handshake
// whose listener's nonce was zero: a seed that gets past the hello.
func goodDialerBytes(self role) []byte {
	b := append([]byte{}, handshakeMagic[:]...)
	b = append(b, byte(self), 0)
	b = append(b, make([]byte, nonceSize)...)
	return append(b, make([]byte, proofSize)...)
}

// The listener's side: whatever the dialer sends, accept returns (no panic,
// no hang on bytes that end), and lets in only a dialer with a right proof,
// which a fuzzer cannot make without the secret.
func FuzzHandshake_Accept(f *testing.F) {
	f.Add(goodDialerBytes(roleClient), false)
	f.Add(goodDialerBytes(roleMinion), true)
	f.Add([]byte("DFS\x01c\x00"), true)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, withSecret bool) {
		var sec *Security
		if withSecret {
			sec = &Security{Secret: testSecret}
		}
		_, p, err := sec.accept(newScriptedConn(in), roleMaster, "")
		if err == nil && withSecret {
			t.Fatalf("a fuzzed dialer got in with a secret in force (peer %+v)", p)
		}
	})
}

// The dialer's side: whatever the listener answers, dial returns, and a
// listener that cannot prove the secret is never trusted.
func FuzzHandshake_Dial(f *testing.F) {
	hello := append(append([]byte{}, handshakeMagic[:]...), byte(roleMaster))
	f.Add(append(append(append([]byte{}, hello...), statusNoSecret), append(make([]byte, nonceSize), 0)...), false)
	f.Add(append(append(append([]byte{}, hello...), statusProof), make([]byte, nonceSize+proofSize+1)...), true)
	f.Add(appendReason(append(append([]byte{}, hello...), statusRefused), reasonTooMany), true)
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, withSecret bool) {
		var sec *Security
		if withSecret {
			sec = &Security{Secret: testSecret}
		}
		_, err := sec.dial(newScriptedConn(in), "127.0.0.1:4000", roleClient, time.Second)
		if err == nil && withSecret {
			t.Fatal("a fuzzed listener was trusted with a secret in force")
		}
	})
}

// The RPC codec's replies, and requests into every kind of argument a
// server decodes, packets of the data path among them.
func FuzzCodec_ReadResponse(f *testing.F) {
	var good bytes.Buffer
	sc := newServerCodec(nopCloser{&good}, nil)
	sc.WriteResponse(&rpc.Response{ServiceMethod: "Minion.ReadBlock", Seq: 5}, &ReadBlockReply{Data: []byte("data"), CRCs: []uint32{1}})
	sc.WriteResponse(&rpc.Response{ServiceMethod: "Minion.ReadBlock", Seq: 6, Error: "x"}, &struct{}{})
	f.Add(good.Bytes())
	f.Add([]byte{0xfc, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		cc := newClientCodec(nopCloser{bytes.NewBuffer(in)})
		for range 4 {
			var r rpc.Response
			if cc.ReadResponseHeader(&r) != nil || cc.ReadResponseBody(&ReadBlockReply{}) != nil {
				return
			}
		}
	})
}

func FuzzCodec_ReadWriteBlock(f *testing.F) {
	var good bytes.Buffer
	cc := newClientCodec(nopCloser{&good})
	cc.WriteRequest(&rpc.Request{ServiceMethod: "Minion.WriteBlock", Seq: 1}, &WriteBlockArgs{BlockID: 7, Data: []byte("packet"), CRCs: []uint32{3}, Next: []string{"127.0.0.1:1"}, Final: true})
	cc.WriteRequest(&rpc.Request{ServiceMethod: "Master.Register", Seq: 2}, &RegisterArgs{MinionID: "m", Addr: "127.0.0.1:2", Blocks: []BlockReport{{ID: 1, Size: 2}}})
	f.Add(good.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		sc := newServerCodec(nopCloser{bytes.NewBuffer(in)}, &peer{addr: "127.0.0.1:9", role: roleMinion})
		for i := range 4 {
			var r rpc.Request
			if sc.ReadRequestHeader(&r) != nil {
				return
			}
			var body any = &WriteBlockArgs{}
			if i%2 == 1 {
				body = &RegisterArgs{}
			}
			if sc.ReadRequestBody(body) != nil {
				return
			}
			if a, ok := body.(*WriteBlockArgs); ok {
				if len(a.Data) > maxPayload {
					t.Fatalf("a packet of %d bytes", len(a.Data))
				}
				putPacketBuf(a.Data)
			}
		}
	})
}

// editRecord frames body as the edit log does, with good checksums, so that
// the fuzzer's bytes reach gob and the namespace.
func editRecord(seq uint64, body []byte) []byte {
	rec := make([]byte, editHeaderSize, editHeaderSize+len(body))
	rec = append(rec, body...)
	binary.BigEndian.PutUint32(rec[0:], uint32(len(body)))
	binary.BigEndian.PutUint64(rec[4:], seq)
	binary.BigEndian.PutUint32(rec[12:], crc32.Checksum(body, castagnoli))
	binary.BigEndian.PutUint32(rec[16:], crc32.Checksum(rec[:16], castagnoli))
	return rec
}

func gobEdit(e *edit) []byte {
	var b bytes.Buffer
	gob.NewEncoder(&b).Encode(e)
	return b.Bytes()
}

func fuzzMaster(t testing.TB) *Master {
	m := NewMaster(t.TempDir(), "")
	m.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m.reset()
	return m
}

// Edit-log records whose frames are good and whose bodies are anything:
// replay applies what the namespace's check lets through and refuses the
// rest; it never panics.
func FuzzEditLog_Records(f *testing.F) {
	f.Add(gobEdit(&edit{Op: opMkdir, V: editVersion, Path: "/d", Parents: true}),
		gobEdit(&edit{Op: opPut, V: editVersion, Path: "/d/f", File: imageFile{Path: "/d/f", Replication: 1, BlockSize: 1 << 20, Blocks: []imageBlock{{ID: 1, Size: 3, CRC: 9}}}}))
	f.Add(gobEdit(&edit{Op: opRename, V: editVersion, Path: "/a", Dst: "/b"}), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		m := fuzzMaster(t)
		path := filepath.Join(m.Dir, segmentName(1))
		if err := os.WriteFile(path, append(editRecord(1, a), editRecord(2, b)...), 0o644); err != nil {
			t.Fatal(err)
		}
		replaySegment(path, true, 0, m.replay)
	})
}

// Whole segments of anything: the framing tells torn tails from damage and
// never reads out of bounds.
func FuzzEditLog_Segment(f *testing.F) {
	good := append(editRecord(1, gobEdit(&edit{Op: opMkdir, V: editVersion, Path: "/d"})), editRecord(2, gobEdit(&edit{Op: opDelete, V: editVersion, Path: "/d"}))...)
	f.Add(good, true)
	f.Add(good[:len(good)-3], true)
	f.Add(good[:editHeaderSize+2], false)
	f.Fuzz(func(t *testing.T, in []byte, isLast bool) {
		dir := t.TempDir()
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, in, 0o644); err != nil {
			t.Fatal(err)
		}
		last, _, err := replaySegment(path, isLast, 0, func(*edit) error { return nil })
		if err == nil && last > uint64(len(in)/editHeaderSize) {
			t.Fatalf("last record %d from %d bytes", last, len(in))
		}
	})
}

// Checkpoint images whose frame is good and whose gob body is anything: the
// image's own checks and the namespace's refuse what does not hold
// together; nothing panics.
func FuzzImage_Load(f *testing.F) {
	for _, name := range []string{"ok", "v2"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "meta", name, "fsimage"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw[len(imageMagic) : len(raw)-4])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m := fuzzMaster(t)
		raw := append(append([]byte{}, imageMagic[:]...), body...)
		raw = binary.BigEndian.AppendUint32(raw, crc32.Checksum(body, castagnoli))
		path := imagePath(m.Dir)
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := loadImage(path)
		if err != nil {
			return
		}
		m.applyImage(img)
	})
}

// Volume files: good records around anything. The scan reports records
// only inside the file, in order, and goes on after damage.
func FuzzVolume_Scan(f *testing.F) {
	data := []byte("a small block")
	rec := appendRecord(nil, 5, data, checksums(nil, data))
	f.Add(rec, data, false)
	f.Add(rec[:len(rec)-1], []byte{}, true)
	f.Add(append(rec, rec...), data, true)
	f.Fuzz(func(t *testing.T, junk, block []byte, headersOnly bool) {
		if len(block) > packetSize {
			return
		}
		good := appendRecord(nil, 7, block, checksums(nil, block))
		in := append(append(append([]byte{}, good...), junk...), good...)
		path := filepath.Join(t.TempDir(), volumeName(0))
		if err := os.WriteFile(path, in, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		sc := &volumeScan{f: fh, size: int64(len(in)), headersOnly: headersOnly}
		last := int64(-1)
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		end, err := sc.scan(volumeName(0), logger, func(h volumeHeader, off int64) {
			if off <= last || off+recordSize(h.size) > int64(len(in)) {
				t.Fatalf("record at %d (of %d bytes) after one at %d, in a file of %d", off, h.size, last, len(in))
			}
			last = off
		}, nil)
		if err == nil && (end > int64(len(in)) || end < int64(len(good))) {
			t.Fatalf("scan ended at %d of %d; the first record alone is %d", end, len(in), len(good))
		}
	})
}

// Names in a minion's directories: only the exact form of an id is a block
// or a volume, so no name (and no id) means a path of another form.
func FuzzNames(f *testing.F) {
	f.Add("blk_00000000000000ff")
	f.Add("blk_../../etc/passwd")
	f.Add("vol_0000000a")
	f.Fuzz(func(t *testing.T, name string) {
		if id, ok := parseBlockName(name); ok && blockName(id) != name {
			t.Fatalf("%q parsed as block %x, named %q", name, id, blockName(id))
		}
		if seq, ok := parseVolumeName(name); ok && volumeName(seq) != name {
			t.Fatalf("%q parsed as volume %x", name, seq)
		}
	})
}

// Sizes on the command line: parsed or refused, and humanSize of a parsed
// size never panics.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "1g", "10 MB", "1048576", "-1", "9999999999999999999TiB", "1.5GiB", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil {
			if n < 0 {
				t.Fatalf("parseSize(%q) = %d", s, n)
			}
			humanSize(n)
		}
	})
}
