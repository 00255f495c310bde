package logging

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

// TestChannelSetAsideWhole: damage in the header of the first segment a
// recovery needs sets aside the whole channel (recovery_ignore_corruption)
// while another channel goes on past the image, so the start ends past
// the image's LSN. The channel's new first segment must not claim the
// log began there: the next start, from the same image and without
// ignoring anything, reads the commits made since (it refused, taking
// the log for one begun after a missing image, and a start still
// ignoring corruption set those commits aside). A start from an older
// image is still refused: the channel no longer holds the records after
// it.
func TestChannelSetAsideWhole(t *testing.T) {
	for _, image := range []uint64{0, 100} {
		t.Run(fmt.Sprint("image=", image), func(t *testing.T) {
			fs := vfs.NewMemFS()
			l := newTestLog(t, fs, 2, 2048, 3)
			for i := 0; i < 10; i++ {
				l.add(20)
				l.syncAll()
			}
			for seq := uint64(1); seq <= l.writers[0].seq; seq++ {
				corruptAt(t, fs, filepath.Join(l.dirs[0], SegmentName(seq)), 3, []byte{0xFF})
			}
			// Channel 0 holds the even LSNs: image+1 comes from channel 1.
			opts := ReaderOptions{FS: fs, Dirs: l.dirs, After: image, IgnoreCorruption: true}
			got, err := readLog(opts)
			if err != nil || got.last != image+1 || !got.tails[0].Corrupt || got.tails[0].Seq != 0 {
				t.Fatalf("ignoring the damage: to LSN %d (want %d), tails %+v: %v", got.last, image+1, got.tails, err)
			}
			lsns := reopen(t, fs, l.dirs, got, numbered("new", 5)...)
			opts.IgnoreCorruption = false
			again, err := readLog(opts)
			if err != nil || again.last != lsns[len(lsns)-1] {
				t.Fatalf("the next start: to LSN %d (want %d): %v", again.last, lsns[len(lsns)-1], err)
			}
			for i, lsn := range lsns {
				if want := fmt.Sprintf("new %d", i); !bytes.Equal(again.bodies[lsn], []byte(want)) {
					t.Fatalf("LSN %d is %q, want %q", lsn, again.bodies[lsn], want)
				}
			}
			if image > 0 {
				opts.After = image - 1
				if _, err := readLog(opts); !errors.Is(err, ErrReleased) {
					t.Fatalf("a start from an older image: %v, want ErrReleased", err)
				}
			}
		})
	}
}
