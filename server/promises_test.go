package server

import (
	"testing"

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
