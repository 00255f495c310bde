package replica_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/replica"
)

// TestReadOnFullDisk: under applied-ack (blocking), a read waits for the
// standbys to hold what it may have seen, but not for the commits that a
// full disk keeps out of the primary's log, which reach no standby until
// space is freed. A read that began to wait before the disk was found
// full stops waiting for them then and returns once the standby holds
// the commits before them; a commit's wait on a held commit still waits.
// Once space is freed the held commit reaches the standby.
func TestReadOnFullDisk(t *testing.T) {
	fs := vfs.NewMemFS()
	primary := newPrimary(t, durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: []string{"/a/log"}, SegmentSize: 8 << 10})
	t.Cleanup(func() { fs.SetSpace(0) }) // before the primary's Close, which runs after
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}, Mode: replica.AppliedAck, Quorum: 1, Block: true})
	db := primary.DB()
	blob, err := db.CreateTable(mem.TableDef{Name: "blob", Columns: []mem.ColumnDef{
		{Name: "id", Type: mem.TypeInt64}, {Name: "b", Type: mem.TypeBytes, MaxLen: 16 << 10},
	}, PrimaryKey: []string{"id"}})
	if err != nil {
		t.Fatal(err)
	}
	insert := func(id int64, n int) uint64 {
		t.Helper()
		b := make([]byte, n)
		_, _ = rand.NewChaCha8([32]byte{byte(id)}).Read(b) // random, so that compression does not shrink it; never fails
		tx := db.Begin()
		if err := tx.Insert(blob, []mem.Value{mem.Int64(id), mem.Bytes(b)}); err != nil {
			t.Fatal(err)
		}
		lsn, err := tx.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := insert(1, 10)
	if err := primary.Wait(ctx, first, durability.FsyncLog); err != nil {
		t.Fatal(err)
	}
	if _, err := snd.Wait(ctx, first, -1); err != nil {
		t.Fatal(err)
	}

	fs.SetSpace(1)               // no room for another segment
	fs.SetSyncDelay(time.Second) // small's sync is under way while a read begins to wait on big
	small := insert(2, 10)       // fits in the segment
	// Written (not yet synced) before big comes, so that the two do not
	// share a block, which would not fit either.
	if err := primary.Wait(ctx, small, durability.MmapLog); err != nil {
		t.Fatal(err)
	}
	big := insert(3, 10<<10) // needs a segment of its own, which the disk has no room for
	if held, _ := primary.Held(); held != 0 {
		t.Logf("the disk was found full (holding LSN %d) before the read began to wait", held)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := snd.WaitRead(rctx, big); err != nil {
		t.Fatalf("a read that saw LSN %d, which the full disk holds back: %v", big, err)
	}
	if held, _ := primary.Held(); held != big {
		t.Fatalf("the full disk holds back LSN %d, want %d", held, big)
	}
	if got := sb.store.DB().LastLSN(); got != small {
		t.Fatalf("the read returned with the standby at LSN %d, want %d (all the log could ship)", got, small)
	}
	cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer ccancel()
	if _, err := snd.Wait(cctx, big, -1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a commit's wait on the held LSN %d: %v, want it to wait", big, err)
	}

	fs.SetSyncDelay(0)
	fs.SetSpace(0)
	if _, err := snd.Wait(ctx, big, -1); err != nil {
		t.Fatalf("once space is freed: %v", err)
	}
	if held, _ := primary.Held(); held != 0 {
		t.Fatalf("with space again, the log holds back LSN %d", held)
	}
	sameData(t, primary, sb.store)
}
