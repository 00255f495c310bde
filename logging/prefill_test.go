package logging

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmdb/mmdb/logging/vfs"
)

// allocFS counts the preallocations (fallocate) of the files it makes,
// and fails every write of nothing but zeros while zerosFail is set: a
// spare's, never a block's or a header's.
type allocFS struct {
	*vfs.MemFS
	allocs    atomic.Int64
	zerosFail atomic.Bool
	// maxUnsynced is the most bytes written to a temporary file (a spare
	// being made) and not yet synced.
	maxUnsynced atomic.Int64
}

func (fs *allocFS) Create(name string) (vfs.File, error) {
	f, err := fs.MemFS.Create(name)
	if err != nil {
		return nil, err
	}
	return &allocFile{File: f, fs: fs}, nil
}

type allocFile struct {
	vfs.File
	fs       *allocFS
	unsynced atomic.Int64 // bytes written since the last Sync
}

func (f *allocFile) Sync() error {
	f.unsynced.Store(0)
	return f.File.Sync()
}

func (f *allocFile) Allocate(size int64) error {
	f.fs.allocs.Add(1)
	return f.File.Allocate(size)
}

func (f *allocFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.zerosFail.Load() && !slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: unix.EIO}
	}
	if strings.HasSuffix(f.Name(), tempSuffix) {
		n := f.unsynced.Add(int64(len(p)))
		for m := f.fs.maxUnsynced.Load(); n > m && !f.fs.maxUnsynced.CompareAndSwap(m, n); m = f.fs.maxUnsynced.Load() {
		}
	}
	return f.File.WriteAt(p, off)
}

// waitSpare waits until channel c's spare, if it has one, is finished,
// and reports whether it was made. The flusher sets the spare when it
// starts a segment, before the block that made it start one is written,
// so it is safe to look once Wait on that block has returned.
func waitSpare(c *channel) bool {
	s := c.w.spare
	if s == nil {
		return false
	}
	<-s.done
	return s.f != nil
}

// TestSpareSyncsAsItGoes: a spare's zeros are synced a chunk at a time,
// never more than spareChunk bytes of them unsynced: one sync of a whole
// 64 MiB segment held the log's own syncs up behind it (docs/benchmarks.md).
func TestSpareSyncsAsItGoes(t *testing.T) {
	const segSize = 3 << 20
	fs := &allocFS{MemFS: vfs.NewMemFS()}
	l, err := Open(Options{FS: fs, Dirs: channelDirs(1), SegmentSize: segSize, NoCompression: true, Prefill: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	body := bytes.Repeat([]byte("r"), 4000)
	for l.chans[0].w.spare == nil {
		lsn, err := l.Append(body)
		if err == nil {
			err = l.Wait(t.Context(), lsn)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !waitSpare(l.chans[0]) {
		t.Fatalf("the spare failed: %v", l.chans[0].w.spare.err)
	}
	if got := fs.maxUnsynced.Load(); got == 0 || got > spareChunk {
		t.Fatalf("the spare of %d bytes had up to %d bytes unsynced; want at most %d", segSize, got, spareChunk)
	}
}

// TestPrefill: with Options.Prefill each segment after the first is the
// spare made once the one before was half full, zeros written and synced,
// and not preallocated anew; the records read back across the switches; the
// spare left at Close is removed. A spare that fails, or that the disk
// has no room for, leaves the log to preallocate the segment itself.
func TestPrefill(t *testing.T) {
	const segSize = 64 << 10
	fs := &allocFS{MemFS: vfs.NewMemFS()}
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: segSize, NoCompression: true, Prefill: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fs.allocs.Load(); got != 1 {
		t.Fatalf("%d preallocations for the first segment, want 1", got)
	}
	body := bytes.Repeat([]byte("r"), 4000)
	var want [][]byte
	appendOne := func() {
		t.Helper()
		b := fmt.Appendf(slices.Clone(body), " %d", len(want))
		lsn, err := l.Append(b)
		if err == nil {
			err = l.Wait(t.Context(), lsn)
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	// Fill four segments, letting each spare finish before its segment
	// is needed.
	for range 4 * segSize / len(body) {
		appendOne()
		waitSpare(l.chans[0])
	}
	if got := fs.allocs.Load(); got != 1 {
		t.Errorf("%d preallocations after three switches to prefilled segments, want 1", got)
	}

	// A spare whose zeros fail to write is removed, and the segment is
	// preallocated when it is needed.
	for !waitSpare(l.chans[0]) {
		appendOne()
	}
	fs.zerosFail.Store(true)
	untilNextSegment := func(check func()) {
		t.Helper()
		for seq := l.chans[0].w.seq; l.chans[0].w.seq == seq; {
			appendOne()
			check()
		}
	}
	untilNextSegment(func() {})
	if got := fs.allocs.Load(); got != 1 {
		t.Errorf("%d preallocations; the spare made before the zeros failed was not used", got)
	}
	noSpare := func(why string) func() {
		return func() {
			if waitSpare(l.chans[0]) {
				t.Fatalf("a spare was made %s", why)
			}
		}
	}
	untilNextSegment(noSpare("though its zeros failed to write"))
	if got := fs.allocs.Load(); got != 2 {
		t.Errorf("%d preallocations, want 2: the segment after the failed spare", got)
	}
	fs.zerosFail.Store(false)

	// A disk without room for three segments gets no spare.
	fs.SetSpace(int64(len(names(t, fs, dirs[0])))*segSize + 2*segSize)
	untilNextSegment(noSpare("on a disk with room for two segments"))
	if got := fs.allocs.Load(); got != 3 {
		t.Errorf("%d preallocations, want 3", got)
	}
	fs.SetSpace(0)
	for !waitSpare(l.chans[0]) {
		appendOne()
	}
	if !slices.ContainsFunc(names(t, fs, dirs[0]), func(n string) bool { return strings.HasSuffix(n, tempSuffix) }) {
		t.Fatal("the finished spare is not in the channel's directory")
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names(t, fs, dirs[0]) {
		if strings.HasSuffix(n, tempSuffix) {
			t.Errorf("%s is left after Close", n)
		}
	}
	got, err := recoverLog(fs, dirs, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.last != uint64(len(want)) {
		t.Fatalf("recovered to LSN %d, want %d", got.last, len(want))
	}
	for i, b := range want {
		if !bytes.Equal(got.bodies[uint64(i+1)], b) {
			t.Fatalf("LSN %d differs", i+1)
		}
	}

	// The first segment since the log opened, which has no spare, is
	// small, so that the first spare comes soon.
	l, err = Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 * firstPrefilled, StartLSN: got.last, Tails: got.tails, Prefill: true})
	if err != nil {
		t.Fatal(err)
	}
	if l.chans[0].w.end != firstPrefilled {
		t.Errorf("the first segment since opening has %d bytes, want %d", l.chans[0].w.end, firstPrefilled)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// names lists dir.
func names(t *testing.T, fs vfs.FS, dir string) []string {
	t.Helper()
	n, err := fs.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
