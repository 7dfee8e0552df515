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

const imageVersion = 1

// ErrBadImage is returned when the metadata image cannot be trusted.
var ErrBadImage = errors.New("metadata image is damaged")

// image is the persisted state of a master.
type image struct {
	Version   int
	ClusterID string
	// LastSeq is the last edit log record the image contains.
	LastSeq uint64
	Files   []imageFile
	Minions []imageMinion
}

type imageFile struct {
	Path        string
	Replication int
	BlockSize   int64
	ModTime     time.Time
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
	return writeFileAtomic(path, func(w io.Writer) error {
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
	})
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
	if len(raw) < len(imageMagic)+4 || !bytes.Equal(raw[:len(imageMagic)], imageMagic[:]) {
		return nil, fmt.Errorf("%w: %s is not a dfs metadata image", ErrBadImage, path)
	}
	body := raw[len(imageMagic) : len(raw)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(raw[len(raw)-4:]) {
		return nil, fmt.Errorf("%w: %s: checksum mismatch (truncated or corrupted)", ErrBadImage, path)
	}
	img := new(image)
	if err := gob.NewDecoder(bytes.NewReader(body)).Decode(img); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadImage, path, err)
	}
	if img.Version != imageVersion {
		return nil, fmt.Errorf("%w: %s: version %d, this dfs reads version %d", ErrBadImage, path, img.Version, imageVersion)
	}
	if img.ClusterID == "" {
		return nil, fmt.Errorf("%w: %s: no cluster id", ErrBadImage, path)
	}
	return img, nil
}
