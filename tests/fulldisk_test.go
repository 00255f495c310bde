package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// blobBytes is the size of each row TestFullDisk writes: random, so that
// the log's compression does not shrink it.
const blobBytes = 16 << 10

// TestFullDisk fills the disk under a real mmdbd: its data directory is
// a small tmpfs the test mounts (it needs root, or CAP_SYS_ADMIN, and is
// skipped without), with one log channel, whose 64 MiB segments are
// preallocated. At fsync-log and at mmap-log (where a write into a
// mapping past the disk's space would raise SIGBUS), once the disk is
// full (SPEC 4 and 9):
//   - a write is refused with RESOURCE_EXHAUSTED saying so, and changes
//     nothing; one already in memory but not in the log gets the same
//     code at once, not at its deadline, with the NOT_DURABLE detail;
//   - the node stays up and serves reads of what it acknowledged; a read
//     of a row a NOT_DURABLE commit wrote fails at once with
//     RESOURCE_EXHAUSTED and the SEEN_NOT_DURABLE detail;
//   - a checkpoint, which has no room for its image either, fails with
//     RESOURCE_EXHAUSTED and leaves no partial file taking space;
//   - once the volume grows, writes are taken again;
//   - after kill -9 and a restart, every acknowledged write is there,
//     whole.
//
// Once more at fsync-log with a standby under applied-ack that blocks
// (on_sync_timeout = "block"): reads, which wait for the standby to hold
// what they saw, are served all the same; the standby has none of the
// commits the full disk keeps out of the log, and all of them once the
// volume grows.
func TestFullDisk(t *testing.T) {
	for _, level := range []string{"fsync-log", "mmap-log"} {
		t.Run(level, func(t *testing.T) { fullDisk(t, level, false) })
	}
	t.Run("fsync-log/applied-ack", func(t *testing.T) { fullDisk(t, "fsync-log", true) })
}

func fullDisk(t *testing.T, level string, withStandby bool) {
	disk := filepath.Join(t.TempDir(), "disk")
	mountTmpfs(t, disk, 100<<20)
	args := []string{"-data-dir", disk, "-durability", level, "-log-channels", filepath.Join(disk, "ch0")}
	var standby pb.DatabaseServiceClient
	if withStandby {
		sb := start(t, "-node", "b", "-role", "standby", "-durability", level, "-peer", "a=127.0.0.1:1")
		standby, _ = sb.client()
		args = append(args, "-node", "a", "-sync-mode", "applied-ack", "-on-sync-timeout", "block", "-peer", "b="+sb.addr)
	}
	p := start(t, args...)
	db, conn := p.client()
	admin := pb.NewAdminServiceClient(conn)
	c := testCtx(t)
	createBlob(t, db)

	// Four writers insert rows until the disk refuses them. A commit
	// that made it into memory but not into the log is not acknowledged
	// either: it gets RESOURCE_EXHAUSTED at once, not at its deadline,
	// with the NOT_DURABLE detail.
	type refusal struct {
		id  int64
		err error
	}
	var (
		mu       sync.Mutex
		acked    []int64
		refusals []refusal
	)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := int64(w); ; id += 4 {
				err := insertBlob(db, id, 20*time.Second)
				mu.Lock()
				if err == nil {
					acked = append(acked, id)
				} else {
					refusals = append(refusals, refusal{id, err})
				}
				n := len(refusals)
				mu.Unlock()
				if n > 0 || id > 100_000 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(refusals) == 0 {
		t.Fatalf("%d writes of %d bytes fit on a 100 MiB disk", len(acked), blobBytes)
	}
	var inMemory []int64 // in memory, and durable once there is space
	for _, r := range refusals {
		if status.Code(r.err) != codes.ResourceExhausted || !strings.Contains(r.err.Error(), "disk is full") {
			t.Fatalf("a write on a full disk: %v, want RESOURCE_EXHAUSTED saying the disk is full", r.err)
		}
		got, err := getBlob(db, r.id)
		notDurable := hasLSNReason(r.err, pb.ReasonNotDurable)
		if notDurable != strings.Contains(r.err.Error(), "is in memory") {
			t.Fatalf("row %d: NOT_DURABLE detail %v for %v", r.id, notDurable, r.err)
		}
		switch {
		case notDurable && (status.Code(err) != codes.ResourceExhausted || !hasLSNReason(err, pb.ReasonSeenNotDurable)):
			t.Fatalf("a read of row %d, written by a commit that is not durable: found %v, %v; want RESOURCE_EXHAUSTED with SEEN_NOT_DURABLE", r.id, got.GetFound(), err)
		case !notDurable && (err != nil || got.GetFound()):
			t.Fatalf("a read of row %d, refused: found %v, %v", r.id, got.GetFound(), err)
		}
		if notDurable {
			inMemory = append(inMemory, r.id)
		}
		if standby != nil {
			if got, err := getBlob(standby, r.id); err != nil || got.GetFound() {
				t.Fatalf("row %d, refused on the primary's full disk, is on the standby (%v), or reads there fail: %v", r.id, got.GetFound(), err)
			}
		}
	}
	t.Logf("%d writes acknowledged before the disk was full; %d of the %d refused were in memory", len(acked), len(inMemory), len(refusals))

	// Full: refused and invisible, reads served, no image.
	const refused = -1
	if err := insertBlob(db, refused, 5*time.Second); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a write on the full disk: %v, want RESOURCE_EXHAUSTED", err)
	}
	if got, err := getBlob(db, refused); err != nil || got.GetFound() {
		t.Fatalf("the refused write is visible (%v), or reads fail: %v", got.GetFound(), err)
	}
	checkBlobs(t, db, acked[:min(len(acked), 50)])
	if _, err := admin.Checkpoint(c, &pb.CheckpointRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a checkpoint on the full disk: %v, want RESOURCE_EXHAUSTED", err)
	}
	if left, err := filepath.Glob(filepath.Join(disk, "checkpoint", "*")); err != nil || len(left) != 0 {
		t.Fatalf("the failed checkpoint left %v on the disk (%v)", left, err)
	}
	if _, err := admin.Status(c, &pb.StatusRequest{}); err != nil {
		t.Fatalf("status on the full disk: %v", err)
	}

	// Room again: writes are taken.
	growTmpfs(t, disk, 300<<20)
	const again = -2
	insertOnceRoom(t, db, again)
	acked = append(acked, again)
	if standby != nil { // applied-ack: the standby holds all the primary acknowledged
		checkBlobs(t, standby, acked[len(acked)-min(len(acked), 50):])
		checkBlobs(t, standby, inMemory)
	}

	p.kill()
	p = start(t, args...)
	db, _ = p.client()
	checkBlobs(t, db, acked)
	checkBlobs(t, db, inMemory) // written once there was space, before the later write was acknowledged
}

// TestStartOnFullDisk: a node killed with its disk full starts again on
// it (SPEC 4: a full disk refuses commits, and the node serves reads),
// though its log has no room for the segment a start begins: it serves
// reads of all it acknowledged and refuses writes with
// RESOURCE_EXHAUSTED, as its status says; once space is freed it takes
// them, and they survive the next kill -9.
func TestStartOnFullDisk(t *testing.T) {
	for _, level := range []string{"fsync-log", "mmap-log"} {
		t.Run(level, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk")
			mountTmpfs(t, disk, 160<<20) // two 64 MiB segments, once the filler is gone
			args := []string{"-data-dir", disk, "-durability", level, "-log-channels", filepath.Join(disk, "ch0")}
			p := start(t, args...)
			db, _ := p.client()
			createBlob(t, db)
			var acked []int64
			for id := range int64(20) {
				if err := insertBlob(db, id, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				acked = append(acked, id)
			}
			filler := filepath.Join(disk, "filler")
			fillDisk(t, filler)
			p.kill()

			p = start(t, args...)
			db, conn := p.client()
			admin := pb.NewAdminServiceClient(conn)
			checkBlobs(t, db, acked)
			if st, err := admin.Status(testCtx(t), &pb.StatusRequest{}); err != nil || !strings.Contains(st.GetWritesRefused(), "disk is full") {
				t.Fatalf("status on the full disk: writes refused %q: %v", st.GetWritesRefused(), err)
			}
			const later = -1
			if err := insertBlob(db, later, 10*time.Second); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "disk is full") {
				t.Fatalf("a write on the full disk: %v, want RESOURCE_EXHAUSTED saying the disk is full", err)
			}
			if got, err := getBlob(db, later); err != nil || got.GetFound() {
				t.Fatalf("the refused write is visible (%v), or reads fail: %v", got.GetFound(), err)
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			insertOnceRoom(t, db, later)
			acked = append(acked, later)
			if st, err := admin.Status(testCtx(t), &pb.StatusRequest{}); err != nil || st.GetWritesRefused() != "" {
				t.Fatalf("status once space is freed: writes refused %q: %v", st.GetWritesRefused(), err)
			}
			p.kill()
			p = start(t, args...)
			db, _ = p.client()
			checkBlobs(t, db, acked)
		})
	}
}

// insertOnceRoom inserts row id on a node whose disk had no room: it
// finds some when it tries again (every 200 ms).
func insertOnceRoom(t *testing.T, db pb.DatabaseServiceClient, id int64) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := insertBlob(db, id, 5*time.Second)
		if err == nil {
			return
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("once the disk has room: %v", err)
		}
	}
}

// fillDisk writes file name until its file system has no space left.
func fillDisk(t *testing.T, name string) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for size := len(chunk); size > 0; {
		if _, err := f.Write(chunk[:size]); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("fill %s: %v", name, err)
			}
			size /= 2
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
}

// hasLSNReason says whether err carries an ErrorInfo of reason with an
// LSN.
func hasLSNReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain &&
			info.GetReason() == reason && info.GetMetadata()[pb.MetadataLSN] != "" {
			return true
		}
	}
	return false
}

// insertBlob inserts row id with its blob, with a deadline of timeout.
func insertBlob(db pb.DatabaseServiceClient, id int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := db.Insert(ctx, &pb.InsertRequest{Table: "blob", Row: &pb.Row{Values: []*pb.Value{vInt(id),
		{Kind: &pb.Value_Bytes{Bytes: blob(id)}}}}})
	return err
}

// blob returns row id's bytes: random, and the same each time.
func blob(id int64) []byte {
	b := make([]byte, blobBytes)
	r := rand.NewChaCha8([32]byte{byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24), byte(id >> 63)})
	_, _ = r.Read(b) // ChaCha8.Read never fails
	return b
}

// checkBlobs checks that each of ids is there with its blob.
func checkBlobs(t *testing.T, db pb.DatabaseServiceClient, ids []int64) {
	t.Helper()
	for _, id := range ids {
		r, err := getBlob(db, id)
		if err != nil {
			t.Fatalf("read acknowledged row %d: %v", id, err)
		}
		if !r.GetFound() || string(r.GetRow().GetValues()[1].GetBytes()) != string(blob(id)) {
			t.Fatalf("acknowledged row %d: found %v, with other bytes than it was written with", id, r.GetFound())
		}
	}
}

// getBlob reads row id, with a deadline of 10 s: a read on a full disk
// answers at once.
func getBlob(db pb.DatabaseServiceClient, id int64) (*pb.GetResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return db.Get(ctx, &pb.GetRequest{Table: "blob", Key: []*pb.Value{vInt(id)}})
}

// mountTmpfs mounts a tmpfs of size bytes at dir, which it creates, until
// the end of the test; it skips the test where it may not mount.
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := unix.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("cannot mount a tmpfs to fill (it needs root or CAP_SYS_ADMIN): %v", err)
		}
		t.Fatalf("mount a tmpfs at %s: %v", dir, err)
	}
	// After the nodes are killed: their cleanups are registered later,
	// so they run first. A mount still busy is detached, not left behind.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("detach %s: %v", dir, err)
			}
		}
	})
}

// growTmpfs gives the tmpfs at dir a new size.
func growTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("grow the tmpfs at %s: %v", dir, err)
	}
}

// createBlob creates table blob (id, b: bytes up to blobBytes), which
// insertBlob fills.
func createBlob(t *testing.T, db pb.DatabaseServiceClient) {
	t.Helper()
	if _, err := db.CreateTable(testCtx(t), &pb.CreateTableRequest{Table: &pb.Table{
		Name: "blob",
		Columns: []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "b", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: blobBytes}},
		PrimaryKey: []string{"id"},
	}}); err != nil {
		t.Fatal(err)
	}
}
