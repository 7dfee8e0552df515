// openblocks.go keeps the files of finalized blocks open while they are
// read, so that a block read packet by packet costs one open of its data
// and .meta files, and one check of the .meta header, rather than three
// opens and closes for every packet.
//
// A finalized block's files never change in place (a block is written once,
// in tmp/, then renamed), so a cached descriptor reads what a fresh open
// would. When the block is removed or quarantined its entry is dropped:
// the files are closed once the last read that holds them ends. Files not
// read for openBlockIdle are closed by the minion's housekeeping tick.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	// maxOpenBlocks bounds the cached blocks (two descriptors each).
	maxOpenBlocks = 64
	// openBlockIdle is how long an unread block's files stay open.
	openBlockIdle = 30 * time.Second
)

// openBlock is the open files of one finalized block.
type openBlock struct {
	data, meta *os.File
	// Guarded by openBlocks.mu.
	refs    int
	used    time.Time
	dropped bool
}

func (b *openBlock) close() {
	b.data.Close()
	b.meta.Close()
}

// openBlocks is a small cache of openBlock by block id, safe for
// concurrent use.
type openBlocks struct {
	mu sync.Mutex
	m  map[uint64]*openBlock
}

// get returns the open files of the block at path (data, and path.meta with
// its header checked), opening them if they are not cached; opened reports
// that this call opened them. The caller reads them and then calls release.
func (c *openBlocks) get(id uint64, path string) (b *openBlock, opened bool, err error) {
	c.mu.Lock()
	if b := c.m[id]; b != nil {
		b.refs++
		b.used = time.Now()
		c.mu.Unlock()
		return b, false, nil
	}
	c.mu.Unlock()

	b, err = openBlockFiles(path)
	if err != nil {
		return nil, false, err
	}
	b.refs, b.used = 1, time.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	if have := c.m[id]; have != nil {
		// Opened concurrently by another read: keep one.
		have.refs++
		have.used = b.used
		b.close()
		return have, false, nil
	}
	if c.m == nil {
		c.m = make(map[uint64]*openBlock)
	}
	if len(c.m) >= maxOpenBlocks {
		c.evictLocked()
	}
	c.m[id] = b
	return b, true, nil
}

// openBlockFiles opens a finalized block's data file and its .meta, whose
// header it checks.
func openBlockFiles(path string) (*openBlock, error) {
	data, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	meta, err := os.Open(path + ".meta")
	if err != nil {
		data.Close()
		return nil, err
	}
	b := &openBlock{data: data, meta: meta}
	var hdr [metaHeaderSize]byte
	if _, err := meta.ReadAt(hdr[:], 0); err != nil {
		b.close()
		return nil, fmt.Errorf("read %s.meta: %w", filepath.Base(path), err)
	}
	if [4]byte(hdr[:4]) != metaMagic || binary.BigEndian.Uint32(hdr[4:]) != metaVersion || binary.BigEndian.Uint32(hdr[8:]) != bytesPerChecksum {
		b.close()
		return nil, fmt.Errorf("%w: %s.meta: bad header", ErrChecksum, filepath.Base(path))
	}
	return b, nil
}

// release ends a read of b's files.
func (c *openBlocks) release(b *openBlock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b.refs--
	if b.dropped && b.refs == 0 {
		b.close()
	}
}

// drop forgets block id, as when it is removed or moved away: its files
// close once no read holds them.
func (c *openBlocks) drop(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.m[id]; b != nil {
		delete(c.m, id)
		c.dropLocked(b)
	}
}

func (c *openBlocks) dropLocked(b *openBlock) {
	b.dropped = true
	if b.refs == 0 {
		b.close()
	}
}

// evictLocked drops the least recently read block.
func (c *openBlocks) evictLocked() {
	var oldest uint64
	var ob *openBlock
	for id, b := range c.m {
		if ob == nil || b.used.Before(ob.used) {
			oldest, ob = id, b
		}
	}
	if ob != nil {
		delete(c.m, oldest)
		c.dropLocked(ob)
	}
}

// closeIdle drops the blocks not read for idle.
func (c *openBlocks) closeIdle(idle time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, b := range c.m {
		if time.Since(b.used) > idle {
			delete(c.m, id)
			c.dropLocked(b)
		}
	}
}

// closeAll drops every block, as the store closes.
func (c *openBlocks) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, b := range c.m {
		delete(c.m, id)
		c.dropLocked(b)
	}
}
