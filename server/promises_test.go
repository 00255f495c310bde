package server

import (
	"testing"
	"time"

	"github.com/mmdb/mmdb/conf"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestInteractiveStrongerDurability: an interactive transaction that
// asks for fsync-log, at Begin or at Commit, on an mmap-log node that
// syncs its mappings only when asked, is durable when its Commit returns;
// one at the node's level is not (SPEC 4). TestStrongerDurabilityRequest
// is the same for single writes.
func TestInteractiveStrongerDurability(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.MmapSyncInterval = conf.DurabilityMmapLog, 0
	})
	n.withAccounts(1)
	c := ctx(t)
	commit := func(id int64, atBegin, atCommit pb.Durability) uint64 {
		t.Helper()
		b, err := n.db.Begin(c, &pb.BeginRequest{Durability: atBegin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1), TxId: b.GetTxId()}); err != nil {
			t.Fatal(err)
		}
		r, err := n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId(), Durability: atCommit})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetLsn()
	}
	fsync, node := pb.Durability_DURABILITY_FSYNC_LOG, pb.Durability_DURABILITY_UNSPECIFIED
	for _, tc := range []struct {
		name              string
		id                int64
		atBegin, atCommit pb.Durability
	}{{"at Begin", 10, fsync, node}, {"at Commit", 11, node, fsync}} {
		if lsn, durable := commit(tc.id, tc.atBegin, tc.atCommit), n.srv.store.DurableLSN(); durable < lsn {
			t.Errorf("fsync-log asked for %s: the commit returned at LSN %d with the log durable to %d", tc.name, lsn, durable)
		}
	}
	if lsn, durable := commit(12, node, node), n.srv.store.DurableLSN(); durable >= lsn {
		t.Fatalf("an mmap-log commit at LSN %d found the log durable to %d: the checks above show nothing", lsn, durable)
	}
}

// waitFor polls cond until it holds, failing the test with what after
// 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// TestMmapSyncIntervalReachesTheLog: on an mmap-log node with a short
// mmap_sync_interval, a commit becomes durable with nothing asking: the
// periodic flush runs (SPEC 4).
func TestMmapSyncIntervalReachesTheLog(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.MmapSyncInterval = conf.DurabilityMmapLog, 20*time.Millisecond
	})
	n.withAccounts(1)
	r, err := n.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(2, 1)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the commit is not durable", func() bool { return n.srv.store.DurableLSN() >= r.GetLsn() })
}
