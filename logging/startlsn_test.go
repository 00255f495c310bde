package logging

import (
	"errors"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

// TestLogBegunAfterAnImage: a log first opened after LSN 100 (a node
// that started from an image: bootstrap_from, serve -from-image, a
// re-image, a no-log node that turns to fsync-log) holds no record up to
// 100; its first segment says so (an opened segment, base 100). A reader
// asked for the records after an earlier LSN must fail with ErrReleased,
// as when segments were released: recovery without that image (the
// images moved away, as the docs say to do to start from the log alone)
// must refuse to start, not find a gap at LSN 1, start empty and void
// the whole log at the next opening; and a primary catching up a standby
// behind LSN 100 must send it for an image (ErrReleased), not retry a
// log that ends, for it, before it begins. Found in review: the check
// skipped a channel's segment 1.
func TestLogBegunAfterAnImage(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 64 << 10, StartLSN: 100})
	if err != nil {
		t.Fatal(err)
	}
	bodies, acked := appendConcurrently(l, 2, 20, nil, nil)
	if len(acked) != 40 {
		t.Fatalf("%d acknowledged", len(acked))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, after := range []uint64{0, 50, 99} {
		if _, err := readAfter(t, fs, dirs, after, bodies); !errors.Is(err, ErrReleased) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("read after LSN %d of a log that begins after LSN 100: %v, want ErrReleased", after, err)
		}
	}
	got, err := readAfter(t, fs, dirs, 100, bodies)
	if err != nil || got.last != 140 || len(got.bodies) != 40 {
		t.Fatalf("read after LSN 100: to %d, %d records: %v", got.last, len(got.bodies), err)
	}
}
