// meta.go persists the master's state: the namespace, each block's length,
// checksum and last known replicas, and the minion registry, as one gob
// image in DIR/fsimage.
//
// The file is: 8 bytes of magic, the gob-encoded image, and a CRC32C of the
// gob bytes. It is replaced atomically (temp file, fsync, rename, directory
// fsync), so a crash leaves either the old image or the new one. Loading
// rejects a file that is not an image, is truncated or fails its checksum
// with an error that names the file: a master never starts on a namespace it
// only half read.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"time"
)

var imageMagic = [8]byte{'D', 'F', 'S', 'I', 'M', 'G', '0', '1'}

// imageVersion is the version this master writes. Version 2, before real
// directories, had no directory columns; it is read as well.
const imageVersion = 3

// ErrBadImage is returned when the metadata image cannot be trusted.
var ErrBadImage = errors.New("metadata image is damaged")

// image is the persisted state of a master. Files are stored column by
// column: gob encodes a few long slices of numbers far faster than a
// million small structs, and decoding them allocates almost nothing, so a
// master with a million files restarts quickly. File i has NumBlocks[i]
// blocks, the next ones in the block columns; block j has NumReplicas[j]
// replicas, the next ones in Replicas, each an index into Minions. Use
// addFile and eachFile rather than the columns.
type image struct {
	Version   int
	ClusterID string
	// LastSeq is the last edit log record the image contains.
	LastSeq uint64
	Minions []imageMinion

	Paths       []string
	Replication []int32
	BlockSize   []int64
	ModTime     []int64 // Unix nanoseconds
	NumBlocks   []uint32

	BlockID     []uint64
	BlockLen    []int64
	CRC         []uint32
	NumReplicas []uint8
	Replicas    []uint32

	// Every directory, parents first, with its modification time.
	DirPaths   []string
	DirModTime []int64 // Unix nanoseconds

	// The stored modes of each file and directory (permBits; 0: the
	// default). Images written before modes have none.
	FileMode []uint16
	DirMode  []uint16

	// Of replicated masters (ha.go) only: the token key they share and
	// the client addresses of the masters.
	TokenKey []byte
	Masters  []imageMaster

	// Calls made lately that a client may send again (retrycache.go),
	// oldest first, so that a master started from this image answers them
	// as the one that made them did.
	Retries []imageRetry
}

// imageRetry is one entry of the retry cache.
type imageRetry struct {
	Call     CallID
	Op       editOp
	Path, To string
	N        int
	Time     int64
}

// imageMaster is one of replicated masters: its id (--id) and the
// addresses it serves clients and its web pages on.
type imageMaster struct {
	ID, Addr, HTTP string
}

// numFiles is the number of files in img.
func (img *image) numFiles() int { return len(img.Paths) }

// addFile appends f; replicas on minions not in minionIndex are left out.
func (img *image) addFile(f *imageFile, minionIndex map[string]uint32) {
	img.Paths = append(img.Paths, f.Path)
	img.Replication = append(img.Replication, int32(f.Replication))
	img.BlockSize = append(img.BlockSize, f.BlockSize)
	img.ModTime = append(img.ModTime, f.ModTime.UnixNano())
	img.NumBlocks = append(img.NumBlocks, uint32(len(f.Blocks)))
	for _, b := range f.Blocks {
		img.BlockID = append(img.BlockID, b.ID)
		img.BlockLen = append(img.BlockLen, b.Size)
		img.CRC = append(img.CRC, b.CRC)
		n := 0
		for _, mid := range b.Replicas {
			if i, ok := minionIndex[mid]; ok {
				img.Replicas = append(img.Replicas, i)
				n++
			}
		}
		img.NumReplicas = append(img.NumReplicas, uint8(n))
	}
}

// minionIndex maps each minion id of img to its index.
func (img *image) minionIndex() map[string]uint32 {
	idx := make(map[string]uint32, len(img.Minions))
	for i, mn := range img.Minions {
		idx[mn.ID] = uint32(i)
	}
	return idx
}

// eachFile calls fn for every file in order. The imageFile and its slices
// are reused from one call to the next: fn must copy what it keeps.
func (img *image) eachFile(fn func(*imageFile)) error {
	var f imageFile
	var replicas []string
	blk, rep := 0, 0
	for i, p := range img.Paths {
		if err := validBlockSize(img.BlockSize[i]); err != nil {
			return fmt.Errorf("file %s: %v", p, err) // the master keeps it in units of bytesPerChecksum
		}
		f = imageFile{Path: p, Replication: int(img.Replication[i]), BlockSize: img.BlockSize[i],
			ModTime: time.Unix(0, img.ModTime[i]).UTC(), Blocks: f.Blocks[:0]}
		if len(img.FileMode) != 0 {
			f.Mode = uint32(img.FileMode[i])
		}
		replicas = replicas[:0]
		for range img.NumBlocks[i] {
			if blk >= len(img.BlockID) {
				return fmt.Errorf("file %s: block columns too short", p)
			}
			start := len(replicas)
			for range img.NumReplicas[blk] {
				if rep >= len(img.Replicas) || int(img.Replicas[rep]) >= len(img.Minions) {
					return fmt.Errorf("file %s: bad replica column", p)
				}
				replicas = append(replicas, img.Minions[img.Replicas[rep]].ID)
				rep++
			}
			f.Blocks = append(f.Blocks, imageBlock{ID: img.BlockID[blk], Size: img.BlockLen[blk], CRC: img.CRC[blk],
				Replicas: replicas[start:len(replicas):len(replicas)]})
			blk++
		}
		fn(&f)
	}
	return nil
}

// check reports columns of unequal lengths.
func (img *image) check() error {
	n := len(img.Paths)
	if len(img.Replication) != n || len(img.BlockSize) != n || len(img.ModTime) != n || len(img.NumBlocks) != n {
		return errors.New("file columns of unequal lengths")
	}
	k := len(img.BlockID)
	if len(img.BlockLen) != k || len(img.CRC) != k || len(img.NumReplicas) != k {
		return errors.New("block columns of unequal lengths")
	}
	if len(img.DirPaths) != len(img.DirModTime) {
		return errors.New("directory columns of unequal lengths")
	}
	if len(img.FileMode) != 0 && len(img.FileMode) != n || len(img.DirMode) != 0 && len(img.DirMode) != len(img.DirPaths) {
		return errors.New("mode columns of unequal lengths")
	}
	return nil
}

type imageFile struct {
	Path        string
	Replication int
	BlockSize   int64
	ModTime     time.Time
	Mode        uint32 // permission bits; 0: defaultFileMode
	Blocks      []imageBlock
}

type imageBlock struct {
	ID       uint64
	Size     int64
	CRC      uint32
	Replicas []string // minion ids
}

type imageMinion struct {
	ID              string
	Addr            string
	Decommissioning bool
}

// saveImage writes img to path atomically and durably.
func saveImage(path string, img *image) error {
	return writeFileAtomic(path, func(w io.Writer) error { return writeImage(w, img) })
}

// writeImage writes img to w: the magic, the gob and its CRC32C.
func writeImage(w io.Writer, img *image) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(imageMagic[:]); err != nil {
		return err
	}
	crc := crc32.New(castagnoli)
	if err := gob.NewEncoder(io.MultiWriter(bw, crc)).Encode(img); err != nil {
		return fmt.Errorf("encode image: %w", err)
	}
	if err := binary.Write(bw, binary.BigEndian, crc.Sum32()); err != nil {
		return err
	}
	return bw.Flush()
}

// loadImage reads the image at path. It returns nil, nil when there is none.
func loadImage(path string) (*image, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load metadata: %w", err)
	}
	return readImage(raw, path)
}

// readImage decodes and checks the image in raw, read from name.
func readImage(raw []byte, name string) (*image, error) {
	if len(raw) < len(imageMagic)+4 || !bytes.Equal(raw[:len(imageMagic)], imageMagic[:]) {
		return nil, fmt.Errorf("%w: %s is not a dfs metadata image", ErrBadImage, name)
	}
	body := raw[len(imageMagic) : len(raw)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(raw[len(raw)-4:]) {
		return nil, fmt.Errorf("%w: %s: checksum mismatch (truncated or corrupted)", ErrBadImage, name)
	}
	img := new(image)
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(img); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadImage, name, err)
	}
	if img.Version != imageVersion && img.Version != 2 {
		return nil, fmt.Errorf("%w: %s: version %d, this dfs reads version %d", ErrBadImage, name, img.Version, imageVersion)
	}
	if img.ClusterID == "" {
		return nil, fmt.Errorf("%w: %s: no cluster id", ErrBadImage, name)
	}
	if err := img.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadImage, name, err)
	}
	return img, nil
}
