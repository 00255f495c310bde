package durability

import (
	"errors"
	"testing"

	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// TestLogBegunAfterAnImageWithoutIt: a node started from an image at LSN
// 100 writes a log that begins after 100. Started again without that
// image (its checkpoint files moved away or lost), it must refuse, as
// it does when segments were released, and leave the log as it was; the
// image put back, every commit is there. Found in review: the reader took
// the log for one that begins at LSN 1, found a gap there, and the store
// started empty, and opening its log voided every record in it (the
// opening segment's base, 0, voids all above it): the commits were lost
// for good, image or not.
func TestLogBegunAfterAnImageWithoutIt(t *testing.T) {
	fs := vfs.NewMemFS()
	fromImage := func(db *mem.DB) (uint64, error) { return 100, nil } // an image of an empty database at LSN 100
	opts := Options{FS: fs, Level: FsyncLog, Dirs: dirs, SegmentSize: 8 << 10, Restore: fromImage}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := setupBank(t, s)
	acked := runBank(s, b, 0, 2, 20, FsyncLog, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	noImage := opts
	noImage.Restore = nil
	if s2, err := Open(noImage); !errors.Is(err, logging.ErrReleased) {
		if err == nil {
			t.Errorf("started without the image the log follows, with %d tables at LSN %d", len(s2.DB().Tables()), s2.DB().LastLSN())
			_ = s2.Close()
		} else {
			t.Errorf("start without the image: %v, want ErrReleased", err)
		}
	}
	s3, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s3.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := s3.DB().Table("acct"); err != nil {
		t.Fatalf("with the image back: %v (the log after it was voided)", err)
	}
	banktest.Check(t, s3.DB(), acked, "with the image back")
}
