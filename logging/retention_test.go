package logging

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// servable returns the oldest LSN a reader of the log in dirs can start
// after (a standby catching up from the log: Store.ReadLog), and the
// bytes of the segments such a reader reads: the log that is of use to a
// standby.
func servable(t *testing.T, fs vfs.FS, dirs []string) (uint64, int64) {
	t.Helper()
	var from uint64
	for _, dir := range dirs {
		segs, err := listSegments(fs, dir)
		if err != nil || len(segs) == 0 {
			t.Fatalf("%s: segments %v, %v", dir, segs, err)
		}
		if segs[0] == 1 {
			continue
		}
		h, err := readSegmentHeader(fs, dir, segs[0])
		if err != nil {
			t.Fatal(err)
		}
		bound, ok := h.Bound()
		if !ok {
			t.Fatalf("%s: segment %d has no bound", dir, segs[0])
		}
		from = max(from, bound)
	}
	var usable int64
	for _, dir := range dirs {
		segs, err := listSegments(fs, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, seq := range neededSegments(fs, dir, segs, from) {
			n, err := fileSize(fs, filepath.Join(dir, SegmentName(seq)))
			if err != nil {
				t.Fatal(err)
			}
			usable += n
		}
	}
	r, err := NewReader(ReaderOptions{FS: fs, Dirs: dirs, After: from})
	if err != nil {
		t.Fatalf("a reader after LSN %d: %v", from, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if from > 0 {
		if _, err := NewReader(ReaderOptions{FS: fs, Dirs: dirs, After: from - 1}); !errors.Is(err, ErrReleased) {
			t.Fatalf("a reader after LSN %d: %v, want ErrReleased", from-1, err)
		}
	}
	return from, usable
}

// TestReleaseRetainsUsableLog: log_retention_bytes is log kept for the
// standbys that lag (SPEC 5), and a standby catches up from it only if
// every channel still holds the records after its LSN. When the channels
// rotate at different paces (round-robin puts every other commit on the
// same channel, so a workload that alternates a large and a small commit
// fills one channel's segments ten times faster), the segments kept must
// still be the ones holding the newest records in every channel: not the
// old segments of the fast channel while the slow channel's newer ones go.
// Found in review: Release removed segments in order of their seq across
// channels, which says nothing of the LSNs they hold when the channels'
// seqs drift apart.
func TestReleaseRetainsUsableLog(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	const seg = 4096
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: seg, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 600; i++ {
		body := []byte(fmt.Sprintf("small %d", i))
		if i%2 == 0 {
			body = bytes.Repeat([]byte{'L'}, 1500)
		}
		lsn, err := l.Append(body)
		if err == nil {
			err = l.Wait(t.Context(), lsn)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for c, dir := range dirs {
		segs, _ := listSegments(fs, dir)
		t.Logf("channel %d: %d segments", c, len(segs))
	}
	const keep = 40 * seg
	if _, err := l.Release(600, keep); err != nil {
		t.Fatal(err)
	}
	from, usable := servable(t, fs, dirs)
	var total int64
	for _, dir := range dirs {
		segs, _ := listSegments(fs, dir)
		for _, seq := range segs {
			n, _ := fileSize(fs, filepath.Join(dir, SegmentName(seq)))
			total += n
		}
	}
	t.Logf("kept %d bytes; a standby can catch up from LSN %d, reading %d of them", total, from, usable)
	// Each channel may keep up to a segment a reader does not need (the
	// one holding the LSN the other channel's segments start after).
	if usable < keep-int64(len(dirs))*seg {
		t.Fatalf("the log kept for standbys (log_retention_bytes %d) serves only one after LSN %d: %d of the %d bytes kept are of use", keep, from, usable, total)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// dataBytes returns the bytes of records (blocks) the segments in dirs
// hold: where each segment's data ends (its successor's header says, and
// the last's writer, if the log is open), not the preallocated size of
// its file.
func dataBytes(t *testing.T, fs vfs.FS, dirs []string, l *Log) int64 {
	t.Helper()
	var n int64
	for c, dir := range dirs {
		segs, err := listSegments(fs, dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range segs {
			var end int64
			if i+1 < len(segs) {
				h, err := readSegmentHeader(fs, dir, segs[i+1])
				if err != nil {
					t.Fatal(err)
				}
				end = int64(h.PrevEnd)
			} else {
				end = l.chans[c].w.off
			}
			n += end - record.SegmentHeaderSize
		}
	}
	return n
}

// TestReleaseRetentionCountsTheLog: log_retention_bytes counts the log
// kept, not the preallocated space of the segments that hold it. A
// restart starts a new segment in every channel, preallocated and still
// all but empty; counted at its file's size it took the place of as much
// log, and Release removed the log standbys were promised. Found in
// review.
func TestReleaseRetentionCountsTheLog(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	const seg = 8 << 10
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: seg, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	appendConcurrently(l, 1, 400, func(w, i int) []byte { return bytes.Repeat([]byte{byte(i)}, 500) }, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := recoverLog(fs, dirs, false)
	if err != nil || got.last != 400 {
		t.Fatalf("recovered to %d: %v", got.last, err)
	}
	l, err = Open(Options{FS: fs, Dirs: dirs, SegmentSize: seg, NoCompression: true, StartLSN: got.last, Tails: got.tails})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	const keep = 6 * seg
	if _, err := l.Release(got.last, keep); err != nil {
		t.Fatal(err)
	}
	if kept := dataBytes(t, fs, dirs, l); kept < keep {
		t.Fatalf("log_retention_bytes is %d, and release kept %d bytes of log", keep, kept)
	}
}

// TestReleaseCountsTheSegmentBeingWritten: the log in the segment being
// written counts towards log_retention_bytes too, as far as it goes: a
// retention that it covers keeps no older segment.
func TestReleaseCountsTheSegmentBeingWritten(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(1)
	const seg = 8 << 10
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: seg, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	for l.chans[0].w.seq < 4 || l.chans[0].w.off < seg/2 {
		lsn, err := l.Append(bytes.Repeat([]byte{'x'}, 500))
		if err == nil {
			err = l.Wait(t.Context(), lsn)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	const keep = 2 << 10 // less than the segment being written holds
	rel, err := l.Release(l.LastLSN(), keep)
	if err != nil {
		t.Fatal(err)
	}
	if segs, _ := listSegments(fs, dirs[0]); len(segs) != 1 {
		t.Fatalf("release with log_retention_bytes %d, which the segment being written holds: %+v, left %v", keep, rel, segs)
	}
}
