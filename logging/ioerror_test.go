package logging

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

// failingOpenFS fails every Open of one file with an I/O error, as a
// disk that cannot read a sector, or a file left with the wrong owner,
// does.
type failingOpenFS struct {
	vfs.FS
	name string
}

func (fs failingOpenFS) Open(name string) (vfs.File, error) {
	if filepath.Clean(name) == fs.name {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EIO}
	}
	return fs.FS.Open(name)
}

// TestIgnoreCorruptionStopsAtIOErrors: recovery_ignore_corruption sets
// aside damage, not a segment that cannot be read now. A segment whose
// header fails to open with an I/O error fails recovery, ignore or not,
// rather than ending the channel there (and having Open set the segments
// from there on aside, with the acknowledged records they hold).
func TestIgnoreCorruptionStopsAtIOErrors(t *testing.T) {
	fs, l := syncedSegments(t, 9, 20, 4)
	bad := failingOpenFS{FS: fs, name: filepath.Join(l.dirs[0], SegmentName(2))}
	for _, ignore := range []bool{false, true} {
		got, err := recoverLog(bad, l.dirs, ignore)
		if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("ignore %v: recovered to LSN %d (of %d), tails %+v: %v", ignore, got.last, l.lsn, got.tails, err)
		}
	}
	got, err := recoverLog(fs, l.dirs, true)
	if err != nil || got.last != l.lsn {
		t.Fatalf("once the segment reads: recovered to LSN %d of %d: %v", got.last, l.lsn, err)
	}
}
