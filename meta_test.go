package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the files in testdata/ (go test -run TestImage -update)")

// testImage is a small image with every field set. It is also the content of
// testdata/meta/ok/fsimage. Times are UTC without a monotonic reading, so
// that they survive gob unchanged; slices are non-empty or nil, as gob
// decodes an empty slice as nil.
func testImage() *image {
	img := &image{
		Version:   imageVersion,
		ClusterID: "CID-0123456789abcdef",
		Minions: []imageMinion{
			{ID: "MID-a", Addr: "10.0.0.1:8888"},
			{ID: "MID-b", Addr: "10.0.0.2:8888"},
			{ID: "MID-c", Addr: "[::1]:9999", Decommissioning: true},
		},
	}
	for _, f := range testFiles() {
		img.addFile(&f, img.minionIndex())
	}
	img.DirPaths = []string{"/photos", "/photos/2025", "/tmp"}
	img.DirModTime = []int64{1764118923456789000, 1764118900000000000, 1709251199000000000}
	return img
}

// testFiles are the files of testImage.
func testFiles() []imageFile {
	return []imageFile{
		{
			Path:        "/photos/cat.jpg",
			Replication: 3,
			BlockSize:   64 << 20,
			ModTime:     time.Date(2025, 11, 26, 1, 2, 3, 456789000, time.UTC),
			Blocks: []imageBlock{
				{ID: 0x1122334455667788, Size: 64 << 20, CRC: 0xdeadbeef, Replicas: []string{"MID-a", "MID-b", "MID-c"}},
				{ID: 0x99aabbccddeeff00, Size: 1234, CRC: 0x01020304, Replicas: []string{"MID-b"}},
			},
		},
		{
			Path:        "/empty",
			Replication: 1,
			BlockSize:   512,
			ModTime:     time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC),
		},
	}
}

func TestImage_SaveLoad_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		img  *image
	}{
		{"Full", testImage()},
		{"NoFiles", &image{Version: imageVersion, ClusterID: "CID-new"}},
		{"LocalTime", func() *image {
			img := testImage()
			img.ModTime[0] = time.Now().UnixNano()
			return img
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fsimage")
			if err := saveImage(path, tt.img); err != nil {
				t.Fatalf("saveImage: %v", err)
			}
			got, err := loadImage(path)
			if err != nil {
				t.Fatalf("loadImage: %v", err)
			}
			checkImage(t, got, tt.img)
			if files := filesUnder(t, filepath.Dir(path)); !slices.Equal(files, []string{"fsimage"}) {
				t.Errorf("dir holds %v after saveImage, want only fsimage", files)
			}
		})
	}
}

// checkImage compares two images, file by file as eachFile gives them.
func checkImage(t *testing.T, got, want *image) {
	t.Helper()
	if got == nil {
		t.Fatal("got no image")
	}
	files := func(img *image) []imageFile {
		var out []imageFile
		if err := img.eachFile(func(f *imageFile) {
			c := *f
			c.Blocks = nil
			for _, b := range f.Blocks {
				b.Replicas = slices.Clone(b.Replicas)
				c.Blocks = append(c.Blocks, b)
			}
			out = append(out, c)
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if g, w := files(got), files(want); !reflect.DeepEqual(g, w) {
		t.Errorf("files differ:\n got %+v\nwant %+v", g, w)
	}
	if got.Version != want.Version || got.ClusterID != want.ClusterID || got.LastSeq != want.LastSeq ||
		!reflect.DeepEqual(got.Minions, want.Minions) {
		t.Errorf("image header differs:\n got %+v\nwant %+v", got, want)
	}
}

// A file as eachFile gives it back is the file addFile took.
func TestImage_AddFile_EachFile(t *testing.T) {
	img := testImage()
	var got []imageFile
	if err := img.eachFile(func(f *imageFile) {
		c := *f
		c.Blocks = slices.Clone(f.Blocks)
		got = append(got, c)
	}); err != nil {
		t.Fatal(err)
	}
	want := testFiles()
	for i := range want {
		if len(want[i].Blocks) == 0 {
			want[i].Blocks = nil
		}
		if len(got[i].Blocks) == 0 {
			got[i].Blocks = nil
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("eachFile gave\n%+v\nwant\n%+v", got, want)
	}
}

// A block size that no put can have is damage: the master could not keep
// it (fileEntry.blockUnits).
func TestImage_EachFile_BadBlockSize(t *testing.T) {
	img := testImage()
	img.BlockSize[1] = 1000
	if err := img.eachFile(func(*imageFile) {}); err == nil || !strings.Contains(err.Error(), "/empty") {
		t.Errorf("eachFile = %v, want an error naming /empty", err)
	}
}

func TestImage_Save_Replaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsimage")
	if err := saveImage(path, testImage()); err != nil {
		t.Fatal(err)
	}
	next := &image{Version: imageVersion, ClusterID: "CID-0123456789abcdef", LastSeq: 7,
		Minions: append(testImage().Minions, imageMinion{ID: "MID-d", Addr: "10.0.0.4:8888"})}
	next.addFile(&testFiles()[0], next.minionIndex())
	if err := saveImage(path, next); err != nil {
		t.Fatal(err)
	}
	got, err := loadImage(path)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, got, next)
	if files := filesUnder(t, filepath.Dir(path)); !slices.Equal(files, []string{"fsimage"}) {
		t.Errorf("dir holds %v, want only fsimage", files)
	}
}

func TestImage_Load_Missing(t *testing.T) {
	img, err := loadImage(filepath.Join(t.TempDir(), "fsimage"))
	if img != nil || err != nil {
		t.Fatalf("loadImage of a missing file = %v, %v; want nil, nil", img, err)
	}
}

// imageCases are the directories of testdata/meta, each with one fsimage.
// Only "ok" and "v2" load. v2 is an image of version 2, written before
// real directories (it has no directory columns): it still loads.
var imageCases = []string{"ok", "v2", "truncated", "garbage", "bitflip"}

func TestImage_Load_Testdata(t *testing.T) {
	if *update {
		writeImageTestdata(t)
	}
	for _, name := range imageCases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", "meta", name, "fsimage")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("%v (generate with: go test -run TestImage -update)", err)
			}
			img, err := loadImage(path)
			switch name {
			case "ok":
				if err != nil {
					t.Fatalf("loadImage: %v", err)
				}
				checkImage(t, img, testImage())
				return
			case "v2":
				if err != nil {
					t.Fatalf("loadImage: %v", err)
				}
				want := testImage()
				want.Version, want.DirPaths, want.DirModTime = 2, nil, nil
				checkImage(t, img, want)
				return
			}
			if !errors.Is(err, ErrBadImage) {
				t.Fatalf("loadImage = %v, %v; want ErrBadImage", img, err)
			}
			if img != nil {
				t.Errorf("loadImage returned an image with the error %v", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
		})
	}
}

// writeImageTestdata generates testdata/meta/*/fsimage from testImage.
func writeImageTestdata(t *testing.T) {
	t.Helper()
	dir := filepath.Join("testdata", "meta")
	okPath := filepath.Join(dir, "ok", "fsimage")
	if err := os.MkdirAll(filepath.Dir(okPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := saveImage(okPath, testImage()); err != nil {
		t.Fatal(err)
	}
	ok, err := os.ReadFile(okPath)
	if err != nil {
		t.Fatal(err)
	}
	bitflip := slices.Clone(ok)
	bitflip[len(bitflip)/2] ^= 0xff
	for name, content := range map[string][]byte{
		"truncated": ok[:len(ok)/2],
		"garbage":   []byte("this is not a dfs metadata image, just some text\n"),
		"bitflip":   bitflip,
	} {
		p := filepath.Join(dir, name, "fsimage")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %s (%d bytes) and its damaged copies", okPath, len(ok))
}

// Damage that only code can build: each check of loadImage in turn.
func TestImage_Load_Invalid(t *testing.T) {
	// withCRC frames body as an image file with a correct checksum.
	withCRC := func(body []byte) []byte {
		raw := append(slices.Clone(imageMagic[:]), body...)
		return binary.BigEndian.AppendUint32(raw, crc32.Checksum(body, castagnoli))
	}
	saved := func(img *image) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			p := filepath.Join(t.TempDir(), "fsimage")
			if err := saveImage(p, img); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}
	}
	raw := func(b []byte) func(*testing.T) []byte { return func(*testing.T) []byte { return b } }
	newVersion := testImage()
	newVersion.Version = imageVersion + 1
	noCluster := testImage()
	noCluster.ClusterID = ""
	tests := []struct {
		name    string
		content func(t *testing.T) []byte
	}{
		{"Empty", raw(nil)},
		{"MagicOnly", raw(imageMagic[:])},
		{"WrongMagic", func(t *testing.T) []byte {
			b := saved(testImage())(t)
			b[7] = '2'
			return b
		}},
		{"TrailingByte", func(t *testing.T) []byte { return append(saved(testImage())(t), 0) }},
		{"NotGob", raw(withCRC([]byte("no gob here")))},
		{"EmptyBody", raw(withCRC(nil))},
		{"OtherVersion", saved(newVersion)},
		{"NoClusterID", saved(noCluster)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fsimage")
			if err := os.WriteFile(path, tt.content(t), 0o644); err != nil {
				t.Fatal(err)
			}
			img, err := loadImage(path)
			if !errors.Is(err, ErrBadImage) {
				t.Fatalf("loadImage = %v, %v; want ErrBadImage", img, err)
			}
			if img != nil {
				t.Errorf("loadImage returned an image with the error %v", err)
			}
		})
	}
}

func TestImage_Load_Unreadable(t *testing.T) {
	dir := t.TempDir() // a directory where the file should be
	img, err := loadImage(dir)
	if err == nil || img != nil {
		t.Fatalf("loadImage of a directory = %v, %v; want an error", img, err)
	}
	if errors.Is(err, ErrBadImage) {
		t.Errorf("loadImage of a directory = %v; an I/O error is not a damaged image", err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name    string
		old     string // "" for no file
		write   func(w io.Writer) error
		wantErr error
		want    string // content after; "" for no file
	}{
		{
			name:  "NewFile",
			write: func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err },
			want:  "new",
		},
		{
			name:  "Replace",
			old:   "old content",
			write: func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err },
			want:  "new",
		},
		{
			name:  "ReplaceWithEmpty",
			old:   "old content",
			write: func(w io.Writer) error { return nil },
			want:  "",
		},
		{
			name:    "FailingWriteKeepsOld",
			old:     "old content",
			write:   func(w io.Writer) error { io.WriteString(w, "partial"); return errBoom },
			wantErr: errBoom,
			want:    "old content",
		},
		{
			name:    "FailingWriteNoOld",
			write:   func(w io.Writer) error { io.WriteString(w, "partial"); return errBoom },
			wantErr: errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if tt.old != "" {
				mustWriteFile(t, path, tt.old)
			}
			err := writeFileAtomic(path, tt.write)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("writeFileAtomic: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("writeFileAtomic = %v, want %v", err, tt.wantErr)
			}
			got, rerr := os.ReadFile(path)
			wantFiles := []string{"state.json"}
			switch {
			case tt.old == "" && tt.wantErr != nil:
				if !errors.Is(rerr, fs.ErrNotExist) {
					t.Errorf("after a failed first write: read = %q, %v; want no file", got, rerr)
				}
				wantFiles = nil
			case rerr != nil:
				t.Errorf("read: %v", rerr)
			case string(got) != tt.want:
				t.Errorf("content = %q, want %q", got, tt.want)
			}
			if files := filesUnder(t, dir); !slices.Equal(files, wantFiles) {
				t.Errorf("dir holds %v, want %v (a temp file was left behind)", files, wantFiles)
			}
			if tt.wantErr == nil {
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("mode of %s: %v, want 0644", path, statMode(fi, err))
				}
			}
		})
	}
}

func statMode(fi fs.FileInfo, err error) any {
	if err != nil {
		return err
	}
	return fi.Mode()
}

func TestWriteFileAtomic_MissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "f")
	called := false
	err := writeFileAtomic(path, func(io.Writer) error { called = true; return nil })
	if err == nil {
		t.Fatal("writeFileAtomic into a missing dir succeeded")
	}
	if called {
		t.Error("write func called though the temp file could not be created")
	}
}

func TestLockDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // created by lockDir
	l1, err := lockDir(dir)
	if err != nil {
		t.Fatalf("first lockDir: %v", err)
	}
	l2, err := lockDir(dir)
	if !errors.Is(err, errLocked) {
		l2.unlock()
		t.Fatalf("second lockDir = %v, want errLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the dir %s", err, dir)
	}
	if err := l1.unlock(); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := l1.unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
	l3, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lockDir after unlock: %v", err)
	}
	if err := l3.unlock(); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	var none *dirLock
	if err := none.unlock(); err != nil {
		t.Errorf("unlock of a nil lock: %v", err)
	}
}
