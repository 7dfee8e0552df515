// progress.go is the progress bar of `dfs put` and `dfs get`: bytes, rate
// and time left on stderr, when stderr is a terminal (or --progress says
// so), and nothing at all otherwise, so that scripts and pipes see only
// what they asked for. stdout is never touched.
package main

import (
	"errors"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
)

func progressFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "progress", Usage: "show a progress bar on stderr even when it is not a terminal"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// wantProgress reports whether the command shows a progress bar.
func wantProgress(c *cli.Context, e *env) bool {
	return !c.Bool("quiet") && (c.Bool("progress") || isTerminal(e.stderr))
}

// newProgress returns a bar for a transfer of size bytes (-1: unknown)
// named what, or nil when none is to be shown.
func newProgress(c *cli.Context, e *env, what string, size int64) *progressbar.ProgressBar {
	if !wantProgress(c, e) {
		return nil
	}
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionOnCompletion(func() { io.WriteString(e.stderr, "\n") }),
	)
}

// countingWriter passes writes to w and counts them on bar.
type countingWriter struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.bar.Add(n)
	return n, err
}

// countingReader passes reads from r and counts them on bar.
type countingReader struct {
	r   io.Reader
	bar *progressbar.ProgressBar
}

// Seek seeks the reader if it can, and the bar with it.
func (c countingReader) Seek(off int64, whence int) (int64, error) {
	s, ok := c.r.(io.Seeker)
	if !ok {
		return 0, errors.New("not seekable")
	}
	pos, err := s.Seek(off, whence)
	if err == nil {
		c.bar.Set64(pos)
	}
	return pos, err
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.bar.Add(n)
	return n, err
}
