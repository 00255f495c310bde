package checkpoint_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/logging/vfs"
)

// TestNoLogAfterAGap: an fsync-log node crashes (at each of many points)
// leaving a gap in its log, with records of unacknowledged commits past
// it on another channel; it restarts at no-log over the same data dir,
// recovers up to the gap, commits (reusing the LSNs past the gap) and
// checkpoints. The next restart must not replay the old records past the
// gap on top of the image: that would show commits that were never
// acknowledged and were dropped by the first recovery.
func TestNoLogAfterAGap(t *testing.T) {
	gaps := 0
	for k := 1; k < 600 && gaps < 10; k++ {
		fs := vfs.NewMemFS()
		fsyncOpts := durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: dirs, SegmentSize: 8 << 10}
		s, _, err := checkpoint.Restart(fs, ckptDir, fsyncOpts, nil)
		if err != nil {
			t.Fatal(err)
		}
		wait := func(lsn uint64) error { return s.Wait(context.Background(), lsn, durability.FsyncLog) }
		b := banktest.Setup(t, s.DB(), wait)
		// Syncs that take a while keep several commits in flight on each
		// channel, however busy the machine: the gaps a crash leaves.
		fs.SetSyncDelay(200 * time.Microsecond)
		fs.CrashAfter(k)
		banktest.Run(s.DB(), b, 0, 8, 20, wait, nil)
		_ = s.Close() // the file system crashed under it
		after := fs.Crash(rand.New(rand.NewPCG(uint64(k), 9)))

		noLog := durability.Options{FS: after, Level: durability.NoLog, Dirs: dirs, SegmentSize: 8 << 10}
		s2, slots, err := checkpoint.Restart(after, ckptDir, noLog, nil)
		if err != nil {
			continue // the crash came before the table was made durable
		}
		if !strings.Contains(s2.Recovery().Stop, "gap") {
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		gaps++
		l := s2.DB().LastLSN()
		lsn, err := banktest.Of(t, s2.DB()).Transfer(s2.DB(), 1, 2, 1, "nolog-commit")
		if err != nil || lsn != l+1 {
			t.Fatalf("k=%d: no-log commit: LSN %d, %v", k, lsn, err)
		}
		res, err := checkpoint.New(s2.DB(), s2, slots, checkpoint.Options{FS: after, Dir: ckptDir}).Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		s3, _, err := checkpoint.Restart(after, ckptDir, noLog, nil)
		if err != nil {
			t.Fatalf("k=%d: restart: %v", k, err)
		}
		got := s3.DB().LastLSN()
		banktest.Check(t, s3.DB(), map[string]bool{"nolog-commit": true}, fmt.Sprintf("k=%d: the restart after the no-log checkpoint", k))
		if err := s3.Close(); err != nil {
			t.Fatal(err)
		}
		if got != res.Image.LSN {
			t.Fatalf("k=%d: recovery stopped at the gap after LSN %d; the image is at %d; the next restart replayed old records up to LSN %d (%s)",
				k, l, res.Image.LSN, got, s3.Recovery().Stop)
		}
	}
	if gaps == 0 {
		t.Fatal("no crash left a gap: the test tests nothing")
	}
	t.Logf("%d crashes left a gap", gaps)
}
