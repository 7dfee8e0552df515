// codec.go is the gob codec of net/rpc with the headers done by hand. Every
// call carries a header (rpc.Request, rpc.Response) in front of its body, and
// encoding/gob spends about as much on a header as on a small body:
// reflection, a fresh buffer for each message it reads and a string for the
// method name.
// Here headers are written and read directly in gob's wire format, while
// bodies still go through encoding/gob. The bytes on the wire are exactly
// those of net/rpc's own gob codec, so either end may be a stock net/rpc
// peer once the handshake of auth.go is done, except for the two calls of
// the data path, whose block bytes travel raw after their bodies (payloads,
// at the end of this file).
//
// A gob stream is a sequence of messages, each a byte count and then a type
// id: a negative id defines the type -id (its wireType follows), a positive
// one is a value of that type. Type ids are the sender's; the receiver learns
// them from the definitions. The headers and the bodies of one stream share
// the ids, but never refer to each other's types, so the stream splits in
// two: headers, read here, and bodies, read by a gob.Decoder on the same
// buffered reader. A header whose type definition is not the one net/rpc
// sends is handed to a gob.Decoder of its own, so any gob peer is understood.
package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net/rpc"
)

// A header type: its fields, in the order of its Go struct, and what this
// process sends for it on each new stream (its type definition message).
type headerType struct {
	name   string
	fields []headerField
	// id is this process's gob type id for the type, and def the type
	// definition gob sends before the first value; nil if this gob does
	// not send what headerType expects (then the codec uses gob for
	// headers too).
	id  int64
	def []byte
}

type headerField struct {
	name string
	typ  int64 // gob's id of a predefined type
}

// gob's predefined type ids (encoding/gob/type.go): they are part of the
// wire format.
const (
	gobUint   = 3
	gobString = 6
)

var (
	requestHeader = newHeaderType(&rpc.Request{ServiceMethod: "x", Seq: 1}, "Request",
		headerField{"ServiceMethod", gobString}, headerField{"Seq", gobUint})
	responseHeader = newHeaderType(&rpc.Response{ServiceMethod: "x", Seq: 1, Error: "x"}, "Response",
		headerField{"ServiceMethod", gobString}, headerField{"Seq", gobUint}, headerField{"Error", gobString})
)

// newHeaderType learns v's type id and definition from gob itself, and
// checks that the definition is what definition builds: then the headers
// this process writes by hand are those gob would write.
func newHeaderType(v any, name string, fields ...headerField) *headerType {
	t := &headerType{name: name, fields: fields}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		return t
	}
	def, err := readMessage(&buf)
	if err != nil {
		return t
	}
	id, n := gobInt(def)
	if n <= 0 || id >= 0 || !bytes.Equal(def, t.definition(-id)) {
		return t
	}
	if val, err := readMessage(&buf); err != nil || buf.Len() != 0 {
		return t
	} else if vid, n := gobInt(val); n <= 0 || vid != -id {
		return t
	}
	t.id = -id
	t.def = appendUint(nil, uint64(len(def)))
	t.def = append(t.def, def...)
	return t
}

// definition is the body of the message that defines the type as id,
// as gob writes it: a wireType with only StructT set.
func (t *headerType) definition(id int64) []byte {
	b := appendInt(nil, -id)
	b = appendUint(b, 3) // wireType.StructT, field 2
	b = appendUint(b, 1) // structType.CommonType
	b = appendUint(b, 1) // CommonType.Name
	b = appendString(b, t.name)
	b = appendUint(b, 1) // CommonType.Id
	b = appendInt(b, id)
	b = appendUint(b, 0)                     // end of CommonType
	b = appendUint(b, 1)                     // structType.Field
	b = appendUint(b, uint64(len(t.fields))) // []fieldType
	for _, f := range t.fields {
		b = appendUint(b, 1) // fieldType.Name
		b = appendString(b, f.name)
		b = appendUint(b, 1) // fieldType.Id
		b = appendInt(b, f.typ)
		b = appendUint(b, 0)
	}
	b = appendUint(b, 0) // end of structType
	return appendUint(b, 0)
}

// gob's integer encodings. An unsigned integer under 128 is one byte;
// a larger one is its minimal big-endian bytes after their count, negated.
// A signed integer is sent as an unsigned one, its sign in the low bit.

func appendUint(b []byte, x uint64) []byte {
	if x < 128 {
		return append(b, byte(x))
	}
	n := 0
	for y := x; y > 0; y >>= 8 {
		n++
	}
	b = append(b, byte(-n))
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(x>>(8*i)))
	}
	return b
}

func appendInt(b []byte, i int64) []byte {
	if i < 0 {
		return appendUint(b, uint64(^i)<<1|1)
	}
	return appendUint(b, uint64(i)<<1)
}

func appendString(b []byte, s string) []byte {
	return append(appendUint(b, uint64(len(s))), s...)
}

// gobUintAt decodes an unsigned integer from the front of b and returns it
// and its length, or a length of 0 if b does not start with one.
func gobUintAt(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	if b[0] < 128 {
		return uint64(b[0]), 1
	}
	n := -int(int8(b[0]))
	if n > 8 || len(b) < 1+n {
		return 0, 0
	}
	var x uint64
	for _, c := range b[1 : 1+n] {
		x = x<<8 | uint64(c)
	}
	return x, 1 + n
}

func gobInt(b []byte) (int64, int) {
	u, n := gobUintAt(b)
	if u&1 != 0 {
		return ^int64(u >> 1), n
	}
	return int64(u >> 1), n
}

// maxHeader bounds a header message; gob's own bound is 1 GiB.
const maxHeader = 1 << 20

// readMessage reads one message (its count, then that many bytes) from r.
func readMessage(r io.ByteReader) ([]byte, error) {
	n, err := readUint(r)
	if err != nil {
		return nil, err
	}
	if n > maxHeader {
		return nil, fmt.Errorf("rpc: header of %d bytes", n)
	}
	b := make([]byte, n)
	for i := range b {
		if b[i], err = r.ReadByte(); err != nil {
			return nil, io.ErrUnexpectedEOF
		}
	}
	return b, nil
}

// readUint reads a message count. io.EOF means the stream ended cleanly,
// before a message.
func readUint(r io.ByteReader) (uint64, error) {
	c, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if c < 128 {
		return uint64(c), nil
	}
	n := -int(int8(c))
	if n > 8 {
		return 0, errors.New("rpc: bad message count")
	}
	var x uint64
	for range n {
		c, err := r.ReadByte()
		if err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		x = x<<8 | uint64(c)
	}
	return x, nil
}

// headerWriter writes the headers of one stream.
type headerWriter struct {
	t    *headerType
	sent bool // the type definition is on the stream
	buf  []byte
}

// write writes a header with the given fields to w: hdr, an *rpc.Request
// or *rpc.Response, through enc if this gob does not write headers the way
// headerType expects, else by hand (zero fields are left out, as gob does).
func (h *headerWriter) write(w *bufio.Writer, enc *gob.Encoder, hdr any, method string, seq uint64, errText string) error {
	if h.t.def == nil {
		return enc.Encode(hdr)
	}
	if !h.sent {
		if _, err := w.Write(h.t.def); err != nil {
			return err
		}
		h.sent = true
	}
	// The message: its count, then the type id and the fields. The count
	// comes first but depends on the rest: leave room for the largest
	// count a header can have, then move the message up against it.
	const room = 4
	b := append(h.buf[:0], make([]byte, room)...)
	b = appendInt(b, h.t.id)
	last := -1
	field := func(i int) {
		b = appendUint(b, uint64(i-last))
		last = i
	}
	if method != "" {
		field(0)
		b = appendString(b, method)
	}
	if seq != 0 {
		field(1)
		b = appendUint(b, seq)
	}
	if errText != "" {
		field(2)
		b = appendString(b, errText)
	}
	b = appendUint(b, 0)
	n := len(b) - room
	if n > maxHeader {
		return fmt.Errorf("rpc: header of %d bytes", n)
	}
	var cb [9]byte
	count := appendUint(cb[:0], uint64(n))
	start := room - len(count)
	copy(b[start:], count)
	h.buf = b
	_, err := w.Write(b[start:])
	return err
}

// headerReader reads the headers of one stream from the reader that its
// bodies are read from, leaving the reader at the body.
type headerReader struct {
	t *headerType
	r *bufio.Reader
	// id is the peer's id for t's type once its definition has been seen,
	// else 0.
	id int64
	// Headers of other types go to dec, which reads what slow holds: the
	// definitions seen so far and the header at hand.
	slow bytes.Buffer
	dec  *gob.Decoder
	big  []byte
	// last is the last method name read: a connection mostly calls one
	// or a few methods, and this saves a string per header.
	last string
}

// next reads the next header's message, a value: the definitions in front
// of it are taken in. It returns the type id and the value's fields.
func (h *headerReader) next() (int64, []byte, error) {
	for {
		n, err := readUint(h.r)
		if err != nil {
			return 0, nil, err
		}
		if n > maxHeader {
			return 0, nil, fmt.Errorf("rpc: header of %d bytes", n)
		}
		if n == 0 {
			return 0, nil, errors.New("rpc: empty message")
		}
		var msg []byte
		if int(n) <= h.r.Size() {
			if msg, err = h.r.Peek(int(n)); err != nil {
				return 0, nil, unexpected(err)
			}
			h.r.Discard(int(n))
		} else {
			if cap(h.big) < int(n) {
				h.big = make([]byte, n)
			}
			msg = h.big[:n]
			if _, err := io.ReadFull(h.r, msg); err != nil {
				return 0, nil, unexpected(err)
			}
		}
		id, k := gobInt(msg)
		if k == 0 {
			return 0, nil, errors.New("rpc: bad type id")
		}
		if id >= 0 {
			return id, msg, nil
		}
		// A type definition. Keep it for dec in any case; if it is
		// the one net/rpc sends, the values come here.
		if err := h.keep(msg); err != nil {
			return 0, nil, err
		}
		if h.t.def != nil && bytes.Equal(msg, h.t.definition(-id)) {
			h.id = -id
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// keep adds a message to what dec will read.
func (h *headerReader) keep(msg []byte) error {
	if h.slow.Len()+len(msg) > maxHeader {
		return errors.New("rpc: too many type definitions")
	}
	var c [9]byte
	h.slow.Write(appendUint(c[:0], uint64(len(msg))))
	h.slow.Write(msg)
	return nil
}

// decodeSlow has gob decode the header msg into v.
func (h *headerReader) decodeSlow(msg []byte, v any) error {
	if err := h.keep(msg); err != nil {
		return err
	}
	if h.dec == nil {
		h.dec = gob.NewDecoder(&h.slow)
	}
	err := h.dec.Decode(v)
	if err == nil && h.slow.Len() != 0 {
		err = errors.New("rpc: extra data after header")
	}
	return err
}

// fields decodes the fields of a header value (msg after its type id) into
// strs (the string fields, by index) and seq. Fields are absent when zero.
func (h *headerReader) fields(msg []byte, strs *[3]string, seq *uint64) error {
	_, k := gobInt(msg)
	msg = msg[k:]
	field := -1
	for {
		d, k := gobUintAt(msg)
		if k == 0 || d > uint64(len(h.t.fields)) {
			return errors.New("rpc: bad header")
		}
		msg = msg[k:]
		if d == 0 {
			break
		}
		field += int(d)
		if field >= len(h.t.fields) {
			return errors.New("rpc: bad header")
		}
		x, k := gobUintAt(msg)
		if k == 0 {
			return errors.New("rpc: bad header")
		}
		msg = msg[k:]
		if h.t.fields[field].typ == gobUint {
			*seq = x
			continue
		}
		if x > uint64(len(msg)) {
			return errors.New("rpc: bad header")
		}
		s := msg[:x]
		msg = msg[x:]
		if field == 0 && string(s) == h.last { // no allocation
			strs[field] = h.last
		} else {
			strs[field] = string(s)
			if field == 0 {
				h.last = strs[field]
			}
		}
	}
	if len(msg) != 0 {
		return errors.New("rpc: extra data in header")
	}
	return nil
}

// read reads a header: by hand into strs and seq, if it is of the type
// net/rpc sends (direct), else into slow through gob.
func (h *headerReader) read(slow any, strs *[3]string, seq *uint64) (direct bool, err error) {
	id, msg, err := h.next()
	if err != nil {
		return false, err
	}
	if id != h.id || h.id == 0 {
		return false, h.decodeSlow(msg, slow)
	}
	return true, h.fields(msg, strs, seq)
}

func (h *headerReader) readRequest(r *rpc.Request) error {
	var strs [3]string
	var seq uint64
	direct, err := h.read(r, &strs, &seq)
	if direct && err == nil {
		r.ServiceMethod, r.Seq = strs[0], seq
	}
	return err
}

func (h *headerReader) readResponse(r *rpc.Response) error {
	var strs [3]string
	var seq uint64
	direct, err := h.read(r, &strs, &seq)
	if direct && err == nil {
		r.ServiceMethod, r.Seq, r.Error = strs[0], seq, strs[2]
	}
	return err
}

// Bounds of one body message (a gob message: a request's or a reply's
// body, or a type definition), checked against the message's byte count
// before gob allocates for it. gob's own bound is 8 GiB on 64-bit machines.
// The largest requests are block reports, a few bytes a block: 128 MiB is a
// minion of several million blocks. The largest replies are listings.
const (
	maxRequestBody = 128 << 20
	maxReplyBody   = 512 << 20
)

// errTooBig is a message over its bound.
var errTooBig = errors.New("rpc: message too big")

// msgLimiter sits between a connection's buffered reader and the gob.Decoder
// of bodies, and fails a message whose byte count is over max before gob
// sees the count. gob reads exactly one message at a time from an
// io.ByteReader (it does not buffer one of its own), so the limiter knows
// where each message starts.
type msgLimiter struct {
	r    *bufio.Reader
	max  uint64
	left uint64 // bytes of the current message, its count included, still to come
}

// start checks the count of the message that begins at the reader.
func (l *msgLimiter) start() error {
	b, err := l.r.Peek(1)
	if err != nil {
		return err
	}
	width := 1
	var n uint64
	if b[0] < 128 {
		n = uint64(b[0])
	} else {
		width += -int(int8(b[0]))
		if width > 9 {
			return errors.New("rpc: bad message count")
		}
		if b, err = l.r.Peek(width); err != nil {
			return unexpected(err)
		}
		for _, c := range b[1:] {
			n = n<<8 | uint64(c)
		}
	}
	if n > l.max {
		return fmt.Errorf("%w: %d bytes, at most %d", errTooBig, n, l.max)
	}
	l.left = uint64(width) + n
	return nil
}

func (l *msgLimiter) Read(p []byte) (int, error) {
	if l.left == 0 {
		if err := l.start(); err != nil {
			return 0, err
		}
	}
	if uint64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= uint64(n)
	return n, err
}

func (l *msgLimiter) ReadByte() (byte, error) {
	if l.left == 0 {
		if err := l.start(); err != nil {
			return 0, err
		}
	}
	c, err := l.r.ReadByte()
	if err == nil {
		l.left--
	}
	return c, err
}

// clientCodec is the calling side's codec: requests out, replies in.
type clientCodec struct {
	rwc    io.ReadWriteCloser
	w      *bufio.Writer
	enc    *gob.Encoder
	hw     headerWriter
	dec    *gob.Decoder
	hr     headerReader
	broken bool // a request was half written; guarded by net/rpc's send lock
	// payload: the reply whose header was read last has a payload frame
	// after its body.
	payload bool
}

func newClientCodec(conn io.ReadWriteCloser) *clientCodec {
	w := bufio.NewWriter(conn)
	r := bufio.NewReader(conn)
	c := &clientCodec{rwc: conn, w: w, enc: gob.NewEncoder(w), dec: gob.NewDecoder(&msgLimiter{r: r, max: maxReplyBody})}
	c.hw.t = requestHeader
	c.hr.t, c.hr.r = responseHeader, r
	return c
}

// WriteRequest writes the request in one write. If it cannot be encoded,
// the stream is broken (a header without its body, or half a message in
// the buffer): the connection is closed, so the calls on it fail and the
// pool dials anew.
func (c *clientCodec) WriteRequest(r *rpc.Request, body any) error {
	if c.broken {
		return rpc.ErrShutdown
	}
	if err := c.hw.write(c.w, c.enc, r, r.ServiceMethod, r.Seq, ""); err != nil {
		return c.fail(err)
	}
	if err := c.enc.Encode(body); err != nil {
		return c.fail(err)
	}
	if requestHasPayload(r.ServiceMethod) {
		if err := writePayload(c.w, body); err != nil {
			return c.fail(err)
		}
	}
	if err := c.w.Flush(); err != nil {
		return c.fail(err)
	}
	return nil
}

func (c *clientCodec) fail(err error) error {
	c.broken = true
	c.rwc.Close()
	return err
}

func (c *clientCodec) ReadResponseHeader(r *rpc.Response) error {
	err := c.hr.readResponse(r)
	c.payload = err == nil && replyHasPayload(r.ServiceMethod)
	return err
}

// ReadResponseBody reads the body, and its payload if it has one. A payload
// that cannot be read leaves the stream at no message boundary, and net/rpc
// would go on reading after it: the connection is closed.
func (c *clientCodec) ReadResponseBody(body any) error {
	if err := c.dec.Decode(body); err != nil {
		return err
	}
	if c.payload {
		if err := readPayload(c.hr.r, body); err != nil {
			c.rwc.Close()
			return err
		}
	}
	return nil
}

func (c *clientCodec) Close() error { return c.rwc.Close() }

// ---- payloads ----
//
// A block's bytes do not go through gob, which would copy them twice (into
// its message buffer, then into a fresh slice) on the way in and once on the
// way out. They travel raw, after the gob body of the two calls of the data
// path: the request of WriteBlock and the reply of ReadBlock. That frame is
// a byte count in gob's encoding of an unsigned integer, then the bytes. It
// follows every request or reply of those methods, whatever its body (an
// error reply has an empty one), so a reader knows from the header alone
// whether one comes. The bytes are read straight into a packet buffer; the
// field that holds them is of type payload, which gob leaves empty.
//
// Except for these two methods, the stream is net/rpc's gob stream.

// payload is a block's bytes in an RPC body. gob sends nothing of it: the
// codec sends them after the body.
type payload []byte

func (payload) GobEncode() ([]byte, error) { return nil, nil }
func (*payload) GobDecode([]byte) error    { return nil }

// payloadBody is a body with a payload: the bytes to send, and a buffer of
// n bytes to receive them in.
type payloadBody interface {
	payloadOut() []byte
	payloadIn(n int) []byte
}

// maxPayload bounds a payload frame: one packet.
const maxPayload = packetSize

func requestHasPayload(method string) bool { return method == minionService+".WriteBlock" }
func replyHasPayload(method string) bool   { return method == minionService+".ReadBlock" }

// writePayload writes the payload frame of body to w.
func writePayload(w *bufio.Writer, body any) error {
	var data []byte
	if p, ok := body.(payloadBody); ok {
		data = p.payloadOut()
	}
	if len(data) > maxPayload {
		return fmt.Errorf("rpc: payload of %d bytes, at most %d", len(data), maxPayload)
	}
	var cb [9]byte
	if _, err := w.Write(appendUint(cb[:0], uint64(len(data)))); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// readPayload reads a payload frame from r into body's buffer, or past it
// if body has none (a call of an unknown method, an error reply).
func readPayload(r *bufio.Reader, body any) error {
	n, err := readUint(r)
	if err != nil {
		return fmt.Errorf("rpc: payload: %w", unexpected(err))
	}
	if n > maxPayload {
		return fmt.Errorf("rpc: payload of %d bytes, at most %d", n, maxPayload)
	}
	p, ok := body.(payloadBody)
	if !ok {
		if _, err := r.Discard(int(n)); err != nil {
			return fmt.Errorf("rpc: payload: %w", unexpected(err))
		}
		return nil
	}
	if _, err := io.ReadFull(r, p.payloadIn(int(n))); err != nil {
		return fmt.Errorf("rpc: payload: %w", unexpected(err))
	}
	return nil
}
