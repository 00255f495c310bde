package logging

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// readAfter reads the log from the record after LSN after, as recovery
// from an image at after does, and checks every body it returns.
func readAfter(t *testing.T, fs vfs.FS, dirs []string, after uint64, bodies map[uint64][]byte) (recovered, error) {
	t.Helper()
	got, err := readLog(ReaderOptions{FS: fs, Dirs: dirs, After: after})
	for lsn, b := range got.bodies {
		if !bytes.Equal(b, bodies[lsn]) {
			t.Fatalf("LSN %d: wrong body", lsn)
		}
	}
	return got, err
}

// TestReleaseKeepsWhatRecoveryNeeds releases the segments an image at
// LSN C holds, across two log openings: recovery from C still reads every
// record after C, a recovery from before C is refused (the records it
// needs are gone) rather than silently starting from what is left, the
// segment being written is never removed, and log_retention_bytes keeps
// segments that could go.
func TestReleaseKeepsWhatRecoveryNeeds(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	bodies, _ := appendConcurrently(l, 4, 500, nil, nil)
	if rel, err := l.Release(1500, 1<<40); err != nil || rel.Segments != 0 {
		t.Fatalf("release with everything retained: %+v, %v", rel, err)
	}
	if rel, err := l.Release(0, 0); err != nil || rel.Segments != 0 {
		t.Fatalf("release up to LSN 0: %+v, %v", rel, err)
	}
	rel, err := l.Release(1500, 0)
	if err != nil || rel.Segments == 0 {
		t.Fatalf("release up to LSN 1500: %+v, %v", rel, err)
	}
	// The log goes on after a release; a second opening follows.
	more, _ := appendConcurrently(l, 4, 100, nil, nil)
	for lsn, b := range more {
		bodies[lsn] = b
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := readAfter(t, fs, dirs, 1500, bodies)
	if err != nil || got.last != 2400 || len(got.bodies) != 900 {
		t.Fatalf("read after LSN 1500: to LSN %d, %d records, %v", got.last, len(got.bodies), err)
	}
	if _, err := readAfter(t, fs, dirs, 0, bodies); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "are gone") {
		t.Fatalf("read from the start after a release: %v", err)
	}
	l, err = Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4096, StartLSN: got.last, Tails: got.tails})
	if err != nil {
		t.Fatal(err)
	}
	more, _ = appendConcurrently(l, 2, 300, nil, nil)
	for lsn, b := range more {
		bodies[lsn] = b
	}
	if _, err := l.Release(2400, 0); err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		segs, err := listSegments(fs, dir)
		if err != nil || len(segs) == 0 {
			t.Fatalf("%s after release: %v, %v", dir, segs, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = readAfter(t, fs, dirs, 2400, bodies)
	if err != nil || got.last != 3000 || len(got.bodies) != 600 {
		t.Fatalf("read after LSN 2400: to LSN %d, %d records, %v", got.last, len(got.bodies), err)
	}
}

// TestReleaseHole: a crash may keep some removals of a release and undo
// others, leaving old segments with a hole after them; recovery from the
// image skips them, hole and all.
func TestReleaseHole(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	bodies, _ := appendConcurrently(l, 2, 500, nil, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(fs, dirs[0])
	if err != nil || len(segs) < 5 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	if err := fs.Remove(filepath.Join(dirs[0], SegmentName(segs[1]))); err != nil {
		t.Fatal(err)
	}
	if got, err := readAfter(t, fs, dirs, 900, bodies); err != nil || got.last != 1000 {
		t.Fatalf("read after LSN 900 with a hole at %s: to %d, %v", SegmentName(segs[1]), got.last, err)
	}
	if _, err := readAfter(t, fs, dirs, 0, bodies); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read from the start with a hole: %v", err)
	}
}

// TestOlderLogWithoutBounds: segments written before headers carried
// FlagBound have base zero; the reader must not take that for a bound
// and skip them.
func TestOlderLogWithoutBounds(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	bodies, _ := appendConcurrently(l, 2, 300, nil, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(fs, dirs[0])
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	for _, seq := range segs[1:] {
		h, err := readSegmentHeader(fs, dirs[0], seq)
		if err != nil {
			t.Fatal(err)
		}
		h.Flags &^= record.FlagBound
		h.Base = 0
		f, err := fs.Open(filepath.Join(dirs[0], SegmentName(seq)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(record.AppendSegmentHeader(nil, h), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := readAfter(t, fs, dirs, 0, bodies); err != nil || got.last != 600 {
		t.Fatalf("an older log read to LSN %d of 600: %v", got.last, err)
	}
}
