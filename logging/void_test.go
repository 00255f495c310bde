package logging

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// blockOffset returns the offset of the block of segment file name that
// begins with LSN lsn.
func blockOffset(t *testing.T, fs vfs.FS, name string, lsn uint64) int64 {
	t.Helper()
	off, _, ok := findBlock(t, fs, name, func(h record.BlockHeader) bool { return h.FirstLSN == lsn })
	if !ok {
		t.Fatalf("no block starts with LSN %d in %s", lsn, name)
	}
	return off
}

// findBlock returns the offset and header of the first block of records
// in segment file name that match says is the one; ok is false if none
// is.
func findBlock(t *testing.T, fs vfs.FS, name string, match func(record.BlockHeader) bool) (off int64, h record.BlockHeader, ok bool) {
	t.Helper()
	data, err := vfs.ReadFile(fs, name)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(record.SegmentHeaderSize); off+record.BlockHeaderSize <= int64(len(data)); off += h.Size() {
		if h, err = record.DecodeBlockHeader(data[off:]); err != nil {
			break
		}
		if h.Count > 0 && match(h) {
			return off, h, true
		}
	}
	return 0, record.BlockHeader{}, false
}

// TestIgnoredCorruptionKeepsVoids: a crash leaves a gap at LSN 100 (its
// channel never synced it) while another channel holds 101..; the log
// reopens at 99, voiding those. Later, corruption in that other channel's
// old segment, past the void records, is ignored at a start: the segments
// after the damage (with the opening that voided them) are set aside.
// The next opening must go on voiding them, or the next start reads the
// old LSN 101 beside the new one ("in two channels").
func TestIgnoredCorruptionKeepsVoids(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 3, 1<<20, 7) // record lsn goes to channel lsn%3
	add := func(n int) {
		for range n {
			l.add(1)
			for c := range l.dirs {
				l.flush(c)
			}
		}
	}
	add(99)
	l.syncAll()
	add(51) // LSNs 100..150
	// Channel 1 (100, 103, ...) never syncs them.
	for _, c := range []int{0, 2} {
		if err := l.writers[c].sync(); err != nil {
			t.Fatal(err)
		}
	}
	fs = fs.Crash(nil)
	got, err := recoverLog(fs, l.dirs, false)
	if err != nil || got.last != 99 {
		t.Fatalf("first recovery: to %d: %v", got.last, err)
	}
	reopen(t, fs, l.dirs, got, numbered("second", 30)...)
	seg := filepath.Join(l.dirs[2], SegmentName(1))
	corruptAt(t, fs, seg, blockOffset(t, fs, seg, 110)+record.BlockHeaderSize+1, []byte{0xEE})
	got2, err := recoverLog(fs, l.dirs, true)
	if err != nil || !got2.tails[2].Corrupt || got2.last != 101 {
		t.Fatalf("recovery ignoring the corruption: to %d, tail %+v: %v", got2.last, got2.tails[2], err)
	}
	reopen(t, fs, l.dirs, got2, numbered("third", 10)...)
	got3, err := recoverLog(fs, l.dirs, false)
	if err != nil {
		t.Fatalf("recovery after the start that ignored corruption: %v (corrupt: %v)", err, errors.Is(err, ErrCorrupt))
	}
	if got3.last != 111 || string(got3.bodies[101]) != string(got2.bodies[101]) {
		t.Fatalf("recovered to %d, LSN 101 is %q (want %q)", got3.last, got3.bodies[101], got2.bodies[101])
	}
}
