// gobrecord.go: records that each hold one value as a whole gob stream (the
// type definitions, then the value), as a fresh gob.Encoder writes it, so
// that any record decodes on its own: an edit log record, a Raft entry.
package main

import (
	"bytes"
	"encoding/gob"
	"errors"
	"io"
	"sync"
)

// gob numbers the types a process encodes in the order it first sends
// them, and a record's definitions carry those numbers. The records' types
// are numbered first, at start, so that every process of a build writes
// the same definitions, whatever it encoded before (an RPC's reply, an
// image), and decodes the records of the others on its primed decoder.
func init() {
	for _, v := range []any{&haBatch{}, &edit{}} {
		if err := gob.NewEncoder(io.Discard).Encode(v); err != nil {
			panic("gob record: " + err.Error())
		}
	}
}

// gobRecord encodes and decodes the records of values of type T. The
// definitions are the same in every record this binary writes, so it finds
// them once, and decodes a record that starts with them on a decoder that
// has read them already: a fresh encoder and decoder per record compile
// gob's types every time, which cost more than the values (decoding the
// edit log in a checkpoint's replay was a fifth of a busy master's CPU).
// A record of another build, whose definitions differ, is decoded on its own.
// It is safe for concurrent use.
type gobRecord[T any] struct {
	mu   sync.Mutex
	enc  *gob.Encoder // writes to out; has sent the definitions
	out  bytes.Buffer
	defs []byte       // what a fresh encoder writes before the value
	dec  *gob.Decoder // has read defs; reads from in
	in   bytes.Reader
}

// init finds the definitions, and primes a decoder with them.
func (c *gobRecord[T]) init() error {
	if c.enc != nil {
		return nil
	}
	var zero T
	c.out.Reset()
	enc := gob.NewEncoder(&c.out)
	if err := enc.Encode(&zero); err != nil {
		return err
	}
	first := bytes.Clone(c.out.Bytes())
	c.out.Reset()
	if err := enc.Encode(&zero); err != nil {
		return err
	}
	value := c.out.Bytes() // the second message has no definitions
	if !bytes.HasSuffix(first, value) {
		return errors.New("gob record: cannot split gob's type definitions")
	}
	c.defs = first[:len(first)-len(value)]
	c.in.Reset(first)
	c.dec = gob.NewDecoder(&c.in)
	if err := c.dec.Decode(new(T)); err != nil {
		return err
	}
	c.enc = enc
	return nil
}

// encode appends the record of v to dst.
func (c *gobRecord[T]) encode(dst []byte, v *T) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.init(); err != nil {
		return nil, err
	}
	c.out.Reset()
	if err := c.enc.Encode(v); err != nil {
		c.enc = nil // its state is not known: start again
		return nil, err
	}
	dst = append(dst, c.defs...)
	return append(dst, c.out.Bytes()...), nil
}

// decode decodes the record data, all of it, into v.
func (c *gobRecord[T]) decode(data []byte, v *T) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.init(); err == nil && bytes.HasPrefix(data, c.defs) {
		c.in.Reset(data[len(c.defs):])
		if err := c.dec.Decode(v); err == nil && c.in.Len() == 0 {
			return nil
		}
		c.enc = nil // the decoder's state is not known: start again
		*v = *new(T)
	}
	r := bytes.NewReader(data)
	if err := gob.NewDecoder(r).Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return errors.New("trailing bytes after the value")
	}
	return nil
}
