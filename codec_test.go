package main

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoService is a net/rpc service for the codec and pool tests.
type echoService struct{}

type EchoArgs struct {
	Text string
	N    int
	Data []byte
}

type EchoReply struct {
	Text string
	N    int
	Data []byte
}

func (echoService) Echo(a *EchoArgs, r *EchoReply) error {
	r.Text, r.N, r.Data = a.Text, a.N, a.Data
	return nil
}

func (echoService) Fail(a *EchoArgs, r *EchoReply) error {
	return fmt.Errorf("%w: %s", ErrNotFound, a.Text)
}

// serveEcho serves echoService, under the name Echo, with serveRPC.
func serveEcho(t testing.TB) string {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", echoService{}); err != nil {
		t.Fatal(err)
	}
	s, err := serveRPC("127.0.0.1:0", srv, testLogger(t), nil, roleMaster, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

// serveEchoStock serves echoService with net/rpc's own codec.
func serveEchoStock(t testing.TB) string {
	t.Helper()
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", echoService{}); err != nil {
		t.Fatal(err)
	}
	return listenAuthed(t, func(c net.Conn) { srv.ServeConn(c) })
}

func TestHeaderType_AsGobWritesIt(t *testing.T) {
	// If this fails, this Go's gob writes headers differently: the codec
	// still works (through gob), only slower.
	for _, h := range []*headerType{requestHeader, responseHeader} {
		if h.def == nil || h.id <= 0 {
			t.Errorf("%s: gob's type definition is not the expected one; headers go through gob", h.name)
		}
	}
}

// The codecs write exactly what net/rpc's gob codec writes.
func TestCodec_SameBytesAsGob(t *testing.T) {
	long := strings.Repeat("m", 300)
	reqs := []rpc.Request{
		{ServiceMethod: "Master.Stat", Seq: 0},
		{ServiceMethod: "Master.Stat", Seq: 1},
		{ServiceMethod: "Master.Create", Seq: 127},
		{ServiceMethod: long, Seq: 128},
		{ServiceMethod: "", Seq: 1 << 40},
		{ServiceMethod: "Minion.Ping", Seq: ^uint64(0)},
	}
	bodies := []any{&PathArgs{Path: "/a"}, &PathArgs{Path: "/b", Durable: true}, &CreateArgs{Path: "/c"}, &Empty{}, &EchoArgs{Data: make([]byte, 5000)}, &PathArgs{}}

	var got, want bytes.Buffer
	cc := newClientCodec(nopCloser{&got})
	enc := gob.NewEncoder(&want)
	for i := range reqs {
		if err := cc.WriteRequest(&reqs[i], bodies[i]); err != nil {
			t.Fatal(err)
		}
		enc.Encode(&reqs[i])
		enc.Encode(bodies[i])
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("requests differ from gob's:\n got %x\nwant %x", got.Bytes(), want.Bytes())
	}

	got.Reset()
	want.Reset()
	sc := newServerCodec(nopCloser{&got}, nil)
	enc = gob.NewEncoder(&want)
	for i := range reqs {
		r := rpc.Response{ServiceMethod: reqs[i].ServiceMethod, Seq: reqs[i].Seq}
		if i%2 == 1 {
			r.Error = "file not found: /x" + long[:i*50]
		}
		if err := sc.WriteResponse(&r, bodies[i]); err != nil {
			t.Fatal(err)
		}
		enc.Encode(&r)
		enc.Encode(bodies[i])
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("responses differ from gob's:\n got %x\nwant %x", got.Bytes(), want.Bytes())
	}
}

// The codecs read what net/rpc's gob codec writes, with type ids of
// another process and with header types that are not net/rpc's.
func TestCodec_ReadsOtherStreams(t *testing.T) {
	t.Run("GobStream", func(t *testing.T) {
		var buf bytes.Buffer
		enc := gob.NewEncoder(&buf)
		for i := range 3 {
			enc.Encode(&rpc.Request{ServiceMethod: "Echo.Echo", Seq: uint64(i)})
			enc.Encode(&EchoArgs{Text: fmt.Sprint(i)})
		}
		sc := newServerCodec(nopCloser{&buf}, nil)
		for i := range 3 {
			r, a := readRequest(t, sc)
			if r.ServiceMethod != "Echo.Echo" || r.Seq != uint64(i) || a.Text != fmt.Sprint(i) {
				t.Errorf("read %+v %+v", r, a)
			}
		}
		if sc.hr.id != requestHeader.id || sc.hr.dec != nil {
			t.Errorf("headers did not take the direct path")
		}
	})
	t.Run("OtherTypeID", func(t *testing.T) {
		// A peer whose gob gave rpc.Response another id.
		const id = 1000
		var buf bytes.Buffer
		msg := func(b []byte) { buf.Write(appendUint(nil, uint64(len(b)))); buf.Write(b) }
		msg(responseHeader.definition(id))
		bodies := gob.NewEncoder(&buf)
		for i, e := range []string{"", "boom"} {
			b := appendInt(nil, id)
			b = append(appendString(append(b, 1), "Echo.Echo"), 1)
			b = appendUint(b, uint64(i+1))
			if e != "" {
				b = appendString(append(b, 1), e)
			}
			msg(append(b, 0))
			bodies.Encode(&EchoReply{Text: "r"})
		}
		cc := newClientCodec(nopCloser{&buf})
		for i, e := range []string{"", "boom"} {
			var r rpc.Response
			var reply EchoReply
			if err := cc.ReadResponseHeader(&r); err != nil {
				t.Fatal(err)
			}
			if r.ServiceMethod != "Echo.Echo" || r.Seq != uint64(i+1) || r.Error != e {
				t.Errorf("header %d: %+v", i, r)
			}
			if i == 0 {
				if err := cc.ReadResponseBody(&reply); err != nil || reply.Text != "r" {
					t.Errorf("body: %+v, %v", reply, err)
				}
			} else if err := cc.ReadResponseBody(nil); err != nil {
				t.Errorf("discard body: %v", err)
			}
		}
		if cc.hr.id != id || cc.hr.dec != nil {
			t.Errorf("headers did not take the direct path")
		}
	})
	t.Run("OtherHeaderType", func(t *testing.T) {
		// A header type that is not net/rpc's goes through gob.
		type Request struct {
			ServiceMethod string
			Extra         []int
			Seq           uint64
		}
		var buf bytes.Buffer
		enc := gob.NewEncoder(&buf)
		for i := range 2 {
			enc.Encode(&Request{ServiceMethod: "Echo.Echo", Extra: []int{1, 2}, Seq: uint64(i + 7)})
			enc.Encode(&EchoArgs{Text: "x"})
		}
		sc := newServerCodec(nopCloser{&buf}, nil)
		for i := range 2 {
			r, a := readRequest(t, sc)
			if r.ServiceMethod != "Echo.Echo" || r.Seq != uint64(i+7) || a.Text != "x" {
				t.Errorf("read %+v %+v", r, a)
			}
		}
		if sc.hr.dec == nil {
			t.Errorf("an unknown header type took the direct path")
		}
	})
}

// readRequest reads a request, header and body, from sc.
func readRequest(t *testing.T, sc *serverCodec) (rpc.Request, EchoArgs) {
	t.Helper()
	var r rpc.Request
	var a EchoArgs
	if err := sc.ReadRequestHeader(&r); err != nil {
		t.Fatal(err)
	}
	if err := sc.ReadRequestBody(&a); err != nil {
		t.Fatal(err)
	}
	return r, a
}

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// Calls between this codec and net/rpc's own, both ways.
func TestCodec_StockPeers(t *testing.T) {
	check := func(t *testing.T, call func(method string, a *EchoArgs, r *EchoReply) error) {
		t.Helper()
		for i := range 3 {
			a := &EchoArgs{Text: strings.Repeat("t", i*100), N: i, Data: make([]byte, i*3000)}
			var r EchoReply
			if err := call("Echo.Echo", a, &r); err != nil {
				t.Fatal(err)
			}
			if r.Text != a.Text || r.N != a.N || len(r.Data) != len(a.Data) {
				t.Errorf("echo %d: got %q %d %d", i, r.Text, r.N, len(r.Data))
			}
			err := call("Echo.Fail", &EchoArgs{Text: "/f"}, &r)
			if !errors.Is(fromRemote(err), ErrNotFound) || !strings.Contains(err.Error(), "/f") {
				t.Errorf("Fail: %v", err)
			}
			err = call("Echo.Nope", a, &r)
			if err == nil || !strings.Contains(err.Error(), "can't find method") {
				t.Errorf("unknown method: %v", err)
			}
		}
	}
	t.Run("StockClient", func(t *testing.T) {
		// After the handshake (auth.go), the stream is net/rpc's own.
		addr := serveEcho(t)
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := (*Security)(nil).dial(raw, addr, roleClient, handshakeTimeout)
		if err != nil {
			t.Fatal(err)
		}
		c := rpc.NewClient(conn)
		defer c.Close()
		check(t, func(m string, a *EchoArgs, r *EchoReply) error { return c.Call(m, a, r) })
	})
	t.Run("StockServer", func(t *testing.T) {
		p := newPool(nil, roleClient)
		defer p.close()
		addr := serveEchoStock(t)
		check(t, func(m string, a *EchoArgs, r *EchoReply) error {
			return p.call(t.Context(), addr, m, a, r, time.Minute)
		})
	})
	t.Run("Both", func(t *testing.T) {
		p := newPool(nil, roleClient)
		defer p.close()
		addr := serveEcho(t)
		check(t, func(m string, a *EchoArgs, r *EchoReply) error {
			return p.call(t.Context(), addr, m, a, r, time.Minute)
		})
	})
}

// Many calls at once on one connection, each with its own reply.
func TestPool_ConcurrentCalls(t *testing.T) {
	p := newPool(nil, roleClient)
	defer p.close()
	addr := serveEcho(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := g*1000 + i
				var r EchoReply
				if err := p.call(t.Context(), addr, "Echo.Echo", &EchoArgs{N: n, Text: fmt.Sprint(n)}, &r, time.Minute); err != nil {
					t.Error(err)
					return
				}
				if r.N != n || r.Text != fmt.Sprint(n) {
					t.Errorf("call %d got reply %d %q", n, r.N, r.Text)
				}
			}
		})
	}
	wg.Wait()
}

// Garbage from a peer is an error, never a panic, on both sides.
func TestCodec_Garbage(t *testing.T) {
	inputs := [][]byte{
		{},
		{0},
		{0xff},
		{0xf7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, // a count of 9 bytes
		{0xfc, 0x7f, 0xff, 0xff, 0xff},    // a count of 2 GiB
		{3, 0x01, 0x02, 0x03},             // a definition of nothing
		{4, 0x80, 0x01, 0x02, 0x03},       // a value of an unknown type
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), // another protocol
	}
	// A header of the right type with a broken field.
	var good bytes.Buffer
	gob.NewEncoder(&good).Encode(&rpc.Request{ServiceMethod: "Echo.Echo", Seq: 5})
	for i := 1; i < good.Len(); i++ {
		b := bytes.Clone(good.Bytes())
		b[i] ^= 0x55
		inputs = append(inputs, b, good.Bytes()[:i])
	}
	for _, in := range inputs {
		sc := newServerCodec(nopCloser{bytes.NewBuffer(bytes.Clone(in))}, nil)
		for range 3 { // stop at the first error
			var r rpc.Request
			if err := sc.ReadRequestHeader(&r); err != nil {
				break
			}
			if err := sc.ReadRequestBody(nil); err != nil {
				break
			}
		}
		cc := newClientCodec(nopCloser{bytes.NewBuffer(bytes.Clone(in))})
		var r rpc.Response
		if err := cc.ReadResponseHeader(&r); err == nil {
			cc.ReadResponseBody(nil)
		}
	}

	// Over a connection: the server hangs up, the client gets an error.
	addr := serveEcho(t)
	for _, in := range inputs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c) // returns when the server closes
		c.Close()
	}
	garbage := listen(t, func(c net.Conn) {
		c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02\xff\xfe"))
		c.Close()
	})
	p := newPool(nil, roleClient)
	defer p.close()
	err := p.call(t.Context(), garbage, "Echo.Echo", &EchoArgs{}, &EchoReply{}, time.Minute)
	if err == nil {
		t.Fatal("a call answered with garbage succeeded")
	}
	t.Logf("error: %v", err)
}

func FuzzCodec_ReadRequest(f *testing.F) {
	var good bytes.Buffer
	enc := gob.NewEncoder(&good)
	enc.Encode(&rpc.Request{ServiceMethod: "Echo.Echo", Seq: 5})
	enc.Encode(&EchoArgs{Text: "x"})
	f.Add(good.Bytes())
	f.Add([]byte{0xfe, 1, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		sc := newServerCodec(nopCloser{bytes.NewBuffer(in)}, nil)
		for range 4 {
			var r rpc.Request
			if sc.ReadRequestHeader(&r) != nil || sc.ReadRequestBody(&EchoArgs{}) != nil {
				return
			}
		}
	})
}

// A request that gob cannot encode fails alone; the pool goes on with a
// new connection.
func TestPool_RequestGobCannotEncode(t *testing.T) {
	p := newPool(nil, roleClient)
	defer p.close()
	addr := serveEcho(t)
	type bad struct{ F func() }
	err := p.call(t.Context(), addr, "Echo.Echo", &bad{F: func() {}}, &EchoReply{}, time.Minute)
	if err == nil {
		t.Fatal("a call with a func in its args succeeded")
	}
	t.Logf("error: %v", err)
	var r EchoReply
	if err := p.call(t.Context(), addr, "Echo.Echo", &EchoArgs{N: 7}, &r, time.Minute); err != nil || r.N != 7 {
		t.Fatalf("next call: %+v, %v", r, err)
	}
}

// With a gob that writes headers otherwise than headerType expects, the
// codecs leave headers to gob.
func TestCodec_HeadersThroughGob(t *testing.T) {
	var got, want bytes.Buffer
	cc := newClientCodec(nopCloser{&got})
	cc.hw.t = &headerType{name: "Request"} // no def: as if the check failed
	enc := gob.NewEncoder(&want)
	for i := range 3 {
		r := rpc.Request{ServiceMethod: "Echo.Echo", Seq: uint64(i)}
		if err := cc.WriteRequest(&r, &EchoArgs{N: i}); err != nil {
			t.Fatal(err)
		}
		enc.Encode(&r)
		enc.Encode(&EchoArgs{N: i})
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("requests differ from gob's:\n got %x\nwant %x", got.Bytes(), want.Bytes())
	}
	sc := newServerCodec(nopCloser{&got}, nil)
	sc.hr.t = &headerType{name: "Request", fields: requestHeader.fields}
	for i := range 3 {
		r, a := readRequest(t, sc)
		if r.ServiceMethod != "Echo.Echo" || r.Seq != uint64(i) || a.N != i {
			t.Errorf("read %+v %+v", r, a)
		}
	}
}

// closeCounter is a stream that counts its Close calls.
type closeCounter struct {
	*bytes.Buffer
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

// A block's bytes travel raw after the body of WriteBlock's request and of
// ReadBlock's reply, once, not through gob; every other call is gob's
// stream. Each frame is read whole, whatever the body it follows, so the
// stream stays in step; a broken frame closes the connection.
func TestCodec_Payloads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), packetSize/16)
	crcs := []uint32{1, 2, 3}
	writeBlock := minionService + ".WriteBlock"
	readBlock := minionService + ".ReadBlock"

	t.Run("Request", func(t *testing.T) {
		var wire bytes.Buffer
		cc := newClientCodec(nopCloser{&wire})
		reqs := []struct {
			method string
			body   any
		}{
			{writeBlock, &WriteBlockArgs{BlockID: 7, Offset: 512, Data: data, CRCs: crcs, Next: []string{"a:1"}}},
			{"Echo.Echo", &EchoArgs{Text: "between"}},
			{writeBlock, &WriteBlockArgs{BlockID: 8}}, // an empty payload
			{writeBlock, &WriteBlockArgs{BlockID: 9, Data: data[:100]}},
		}
		for i, r := range reqs {
			if err := cc.WriteRequest(&rpc.Request{ServiceMethod: r.method, Seq: uint64(i)}, r.body); err != nil {
				t.Fatal(err)
			}
		}
		if n := wire.Len(); n > len(data)+100+2048 {
			t.Errorf("%d bytes on the wire for %d bytes of payload: the bytes went through gob", n, len(data)+100)
		}
		sc := newServerCodec(nopCloser{&wire}, nil)
		for i, r := range reqs {
			var h rpc.Request
			if err := sc.ReadRequestHeader(&h); err != nil || h.ServiceMethod != r.method {
				t.Fatalf("request %d: header %+v, %v", i, h, err)
			}
			if i == 3 { // an unknown method: the body is skipped, frame and all
				if err := sc.ReadRequestBody(nil); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got := reflect.New(reflect.TypeOf(r.body).Elem()).Interface()
			if err := sc.ReadRequestBody(got); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if !reflect.DeepEqual(got, r.body) {
				t.Errorf("request %d: read %.80v, want %.80v", i, got, r.body)
			}
		}
		if wire.Len() != 0 {
			t.Errorf("%d bytes left over", wire.Len())
		}
	})

	t.Run("Reply", func(t *testing.T) {
		var wire bytes.Buffer
		sc := newServerCodec(nopCloser{&wire}, nil)
		sc.WriteResponse(&rpc.Response{ServiceMethod: readBlock, Seq: 1}, &ReadBlockReply{Data: bytes.Clone(data), CRCs: crcs})
		sc.WriteResponse(&rpc.Response{ServiceMethod: readBlock, Seq: 2, Error: "block not found"}, &struct{}{})
		sc.WriteResponse(&rpc.Response{ServiceMethod: readBlock, Seq: 3}, &ReadBlockReply{Data: data[:10]})
		cc := newClientCodec(nopCloser{&wire})
		reused := &ReadBlockReply{Data: make([]byte, 0, 64)}
		for i, want := range []*ReadBlockReply{{Data: data, CRCs: crcs}, nil, {Data: data[:10]}} {
			var h rpc.Response
			if err := cc.ReadResponseHeader(&h); err != nil || h.Seq != uint64(i+1) {
				t.Fatalf("reply %d: header %+v, %v", i, h, err)
			}
			if want == nil { // net/rpc reads an error's body into nil
				if err := cc.ReadResponseBody(nil); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got := &ReadBlockReply{}
			if i == 2 {
				got = reused
			}
			if err := cc.ReadResponseBody(got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Data, want.Data) || !slices.Equal(got.CRCs, want.CRCs) {
				t.Errorf("reply %d: %d bytes, crcs %v", i, len(got.Data), got.CRCs)
			}
			if i == 2 && &got.Data[0] != &reused.Data[:1][0] {
				t.Error("a reply with room for the payload got a new buffer")
			}
		}
	})

	t.Run("Broken", func(t *testing.T) {
		var good bytes.Buffer
		cc := newClientCodec(nopCloser{&good})
		cc.WriteRequest(&rpc.Request{ServiceMethod: writeBlock, Seq: 1}, &WriteBlockArgs{BlockID: 1, Data: data[:1000]})
		frame := bytes.LastIndex(good.Bytes(), data[:1000]) - 3 // count: 0xfe 0x03 0xe8
		tooBig := slices.Concat(good.Bytes()[:frame], appendUint(nil, maxPayload+1), data[:100])
		cases := map[string][]byte{
			"truncated": good.Bytes()[:good.Len()-1],
			"no frame":  good.Bytes()[:frame],
			"too big":   tooBig,
		}
		for name, in := range cases {
			s := &closeCounter{Buffer: bytes.NewBuffer(bytes.Clone(in))}
			sc := newServerCodec(s, nil)
			var h rpc.Request
			if err := sc.ReadRequestHeader(&h); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			err := sc.ReadRequestBody(&WriteBlockArgs{})
			if err == nil || s.closed == 0 {
				t.Errorf("%s: err %v, closed %d times", name, err, s.closed)
			}
		}
		// Too big to send.
		var wire closeCounter
		wire.Buffer = new(bytes.Buffer)
		cc = newClientCodec(&wire)
		big := make([]byte, maxPayload+1)
		if err := cc.WriteRequest(&rpc.Request{ServiceMethod: writeBlock, Seq: 1}, &WriteBlockArgs{Data: big}); err == nil || wire.closed == 0 {
			t.Errorf("a payload over the bound was sent: %v", err)
		}
	})
}
