package logging

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

// TestLSNInTwoChannelsNamesWhere: a LSN that two channels hold is
// corruption, and, as all corruption before the tail (SPEC 3), it is
// reported with the files and offsets that hold it, for the operator.
// Found in review: the error named only the LSN.
func TestLSNInTwoChannelsNamesWhere(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 2, 4096, 1)
	for _, rec := range []struct {
		c   int
		lsn uint64
	}{{0, 1}, {1, 2}, {0, 3}, {1, 3}, {0, 4}} {
		if err := l.blocks[rec.c].Add(rec.lsn, 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
		l.flush(rec.c)
	}
	for _, w := range l.writers {
		if err := w.sync(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := recoverLog(fs, l.dirs, false)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LSN 3 in both channels: %v, want ErrCorrupt", err)
	}
	t.Log(err)
	for _, dir := range l.dirs {
		if name := filepath.Join(dir, SegmentName(1)); !strings.Contains(err.Error(), name+" at offset ") {
			t.Errorf("the error does not say where in %s: %v", name, err)
		}
	}
}
