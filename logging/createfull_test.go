package logging

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmdb/mmdb/logging/vfs"
)

// noNameFS fails one step of making a new segment with full's errno
// while it is set: Create (no room for the new file itself, as when the
// inodes are used up, before there is anything to preallocate), the
// header's sync (a thin-provisioned or network volume finds out late),
// or the rename into place.
type noNameFS struct {
	vfs.FS
	step string // "create", "sync" or "rename"
	full atomic.Pointer[unix.Errno]

	mu      sync.Mutex
	unnamed map[string]*noSyncFile // files created and not yet renamed
}

func (fs *noNameFS) Create(name string) (vfs.File, error) {
	if e := fs.full.Load(); e != nil && fs.step == "create" {
		return nil, &os.PathError{Op: "open", Path: name, Err: *e}
	}
	f, err := fs.FS.Create(name)
	if err != nil || fs.step != "sync" {
		return f, err
	}
	nf := &noSyncFile{File: f, fs: fs}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.unnamed == nil {
		fs.unnamed = map[string]*noSyncFile{}
	}
	fs.unnamed[name] = nf
	return nf, nil
}

func (fs *noNameFS) Rename(from, to string) error {
	if e := fs.full.Load(); e != nil && fs.step == "rename" {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: *e}
	}
	fs.mu.Lock()
	if f := fs.unnamed[from]; f != nil {
		f.placed.Store(true)
		delete(fs.unnamed, from)
	}
	fs.mu.Unlock()
	return fs.FS.Rename(from, to)
}

// noSyncFile is a file noNameFS made, whose Sync fails while the disk is
// full, until it is renamed (a segment's data sync failing is not a
// full disk the log recovers from).
type noSyncFile struct {
	vfs.File
	fs     *noNameFS
	placed atomic.Bool
}

func (f *noSyncFile) Sync() error {
	if e := f.fs.full.Load(); e != nil && !f.placed.Load() {
		return &os.PathError{Op: "sync", Path: f.Name(), Err: *e}
	}
	return f.File.Sync()
}

// TestNoRoomToCreateASegment: a disk too full to create the next
// segment's file, to sync its header or to rename it into place is a
// full disk like one too full to preallocate it: commits are refused
// with ErrFull (RESOURCE_EXHAUSTED) and the log takes them again once
// space is freed, rather than failing for good.
func TestNoRoomToCreateASegment(t *testing.T) {
	for _, c := range []struct {
		step  string
		errno unix.Errno
	}{{"create", unix.ENOSPC}, {"create", unix.EDQUOT}, {"sync", unix.ENOSPC}, {"rename", unix.ENOSPC}} {
		errno := c.errno
		t.Run(c.step+"/"+errno.Error(), func(t *testing.T) {
			fs := &noNameFS{FS: vfs.NewMemFS(), step: c.step}
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
