package server

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// syncFailFS is a MemFS whose files' syncs fail with ENOSPC once failing
// is set, as an fdatasync may (thin provisioning, NFS).
type syncFailFS struct {
	*vfs.MemFS
	failing atomic.Bool
}

type syncFailFile struct {
	vfs.File
	fs *syncFailFS
}

func (f syncFailFile) Sync() error {
	if f.fs.failing.Load() {
		return syscall.ENOSPC
	}
	return f.File.Sync()
}

func (fs *syncFailFS) Create(name string) (vfs.File, error) {
	f, err := fs.MemFS.Create(name)
	if err != nil {
		return nil, err
	}
	return syncFailFile{f, fs}, nil
}

func (fs *syncFailFS) Open(name string) (vfs.File, error) {
	f, err := fs.MemFS.Open(name)
	if err != nil {
		return nil, err
	}
	return syncFailFile{f, fs}, nil
}

// TestSyncENOSPCFailsTheLog: ENOSPC from a sync fails the log for good
// (the file's unsynced pages may be lost): the commit whose sync failed
// is INTERNAL with NOT_DURABLE, and the writes after it, which the failed
// log refuses and which change nothing, are UNAVAILABLE ("the redo log
// failed"), as docs/operations.md says, so clients send them to another
// node. They were RESOURCE_EXHAUSTED, as for a full disk that frees up,
// which keeps clients on a node that takes no more writes.
func TestSyncENOSPCFailsTheLog(t *testing.T) {
	fs := &syncFailFS{MemFS: vfs.NewMemFS()}
	store, s := memFSService(t, fs)
	c := ctx(t)
	fs.failing.Store(true)
	last := store.DB().LastLSN()
	_, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 100)})
	wantCode(t, err, codes.Internal, "redo log failed", fmt.Sprint("LSN ", last+1))
	_, err = s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(2, 100)})
	wantCode(t, err, codes.Unavailable, "log failed")
	if got := store.DB().LastLSN(); got != last+1 {
		t.Fatalf("the refused write changed the database: last LSN %d, want %d", got, last+1)
	}
}
