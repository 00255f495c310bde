package logging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmdb/mmdb/logging/vfs"
)

// noNameFS fails Create with full's errno while it is set: a full disk
// (or quota) with no room for the new file itself, as when the inodes
// are used up, before there is anything to preallocate.
type noNameFS struct {
	vfs.FS
	full atomic.Pointer[unix.Errno]
}

func (fs *noNameFS) Create(name string) (vfs.File, error) {
	if e := fs.full.Load(); e != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: *e}
	}
	return fs.FS.Create(name)
}

// TestNoRoomToCreateASegment: a disk too full to create the next
// segment's file is a full disk like one too full to preallocate it:
// commits are refused with ErrFull (RESOURCE_EXHAUSTED) and the log takes
// them again once space is freed, rather than failing for good.
func TestNoRoomToCreateASegment(t *testing.T) {
	for _, errno := range []unix.Errno{unix.ENOSPC, unix.EDQUOT} {
		t.Run(errno.Error(), func(t *testing.T) {
			fs := &noNameFS{FS: vfs.NewMemFS()}
			dirs := channelDirs(1)
			l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, NoCompression: true})
			if err != nil {
				t.Fatal(err)
			}
			fs.full.Store(&errno)
			bodies := map[uint64][]byte{}
			var held uint64 // the record waiting for the next segment
			for i := 0; held == 0; i++ {
				if i == 1000 {
					t.Fatal("a thousand records filled no segment")
				}
				body := bytes.Repeat([]byte{byte(i)}, 100)
				lsn, err := l.Append(body)
				if err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
				bodies[lsn] = body
				if err := l.Wait(context.Background(), lsn); err != nil {
					if !errors.Is(err, ErrFull) || !errors.Is(err, errno) || errors.Is(err, ErrFailed) {
						t.Fatalf("waiting for LSN %d with no room for a segment: %v, want ErrFull", lsn, err)
					}
					held = lsn
				}
			}
			if _, err := l.Append([]byte("refused")); !errors.Is(err, ErrFull) || errors.Is(err, ErrFailed) {
				t.Fatalf("an append with no room for a segment: %v, want ErrFull", err)
			}
			fs.full.Store(nil) // space is freed
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.Follow(ctx, held, false); err != nil {
				t.Fatalf("the record held back once space is freed: %v", err)
			}
			var lsn uint64
			for {
				if lsn, err = l.Append([]byte("after")); err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil || lsn != held+1 {
				t.Fatalf("appending once space is freed: LSN %d (want %d): %v", lsn, held+1, err)
			}
			bodies[lsn] = []byte("after")
			if err := l.Wait(ctx, lsn); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got, _, err := readAllRecords(t, fs, dirs, bodies); err != nil || got != lsn {
				t.Fatalf("read to LSN %d, want %d: %v", got, lsn, err)
			}
		})
	}
}
