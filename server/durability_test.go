package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/durability"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// TestFsyncLogSurvivesRestart: what an fsync-log node acknowledged, by
// single writes, batches, interactive transactions and DDL, is there
// after a restart on the same data directory, LSNs included.
func TestFsyncLogSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	fsync := func(c *conf.Config) { c.DataDir, c.Durability = dir, conf.DurabilityFsyncLog }
	n := startNode(t, fsync)
	n.withAccounts(20)
	c := ctx(t)
	if _, err := n.db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(3)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(7)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(4))}); err != nil {
		t.Fatal(err)
	}
	b, err := n.db.Begin(c, &pb.BeginRequest{Durability: pb.Durability_DURABILITY_FSYNC_LOG})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(100, 1), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	resp, err := n.db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{
		{Op: &pb.Operation_Upsert{Upsert: &pb.UpsertRequest{Table: "acct", Row: acctRow(101, 2)}}},
	}})
	if err != nil || !resp.GetCommitted() {
		t.Fatalf("batch: %v %v", resp, err)
	}
	st, err := n.admin.Status(c, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetDurableLsn() != st.GetLastLsn() || st.GetLastLsn() == 0 {
		t.Fatalf("status: durable LSN %d, last %d: every acknowledged commit is durable", st.GetDurableLsn(), st.GetLastLsn())
	}
	before := n.fingerprint()
	n.stop()

	again := startNode(t, fsync)
	if after := again.fingerprint(); after != before {
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := again.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(102, 3)}); err != nil {
		t.Fatalf("a write after recovery: %v", err)
	}
}

// TestDurabilityRequests: a request may not ask for less than the
// node's durability_floor, nor for a log on a node without one, nor set
// durability where it does not apply; each gets a clear error and
// changes nothing.
func TestDurabilityRequests(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.DurabilityFloor = conf.DurabilityFsyncLog, conf.DurabilityMmapLog
	})
	n.withAccounts(2)
	c := ctx(t)
	b, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	before := n.fingerprint()
	ins := func(id int64, d pb.Durability, tx uint64) *pb.InsertRequest {
		return &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1), Durability: d, TxId: tx}
	}
	_, err = n.db.Insert(c, ins(10, pb.Durability_DURABILITY_NO_LOG, 0))
	wantCode(t, err, codes.FailedPrecondition, "no-log", "durability_floor", "mmap-log")
	_, err = n.db.Begin(c, &pb.BeginRequest{Durability: pb.Durability_DURABILITY_NO_LOG})
	wantCode(t, err, codes.FailedPrecondition, "durability_floor")
	_, err = n.db.Insert(c, ins(11, pb.Durability_DURABILITY_FSYNC_LOG, b.GetTxId()))
	wantCode(t, err, codes.InvalidArgument, "Begin or Commit")
	_, err = n.db.Insert(c, ins(12, 42, 0))
	wantCode(t, err, codes.InvalidArgument, "42")
	_, err = n.db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: ins(13, pb.Durability_DURABILITY_FSYNC_LOG, 0)}}}})
	wantCode(t, err, codes.InvalidArgument, "operation 0", "durability")
	if after := n.fingerprint(); after != before {
		t.Fatalf("refused requests changed the database:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := n.db.Insert(c, ins(14, pb.Durability_DURABILITY_MMAP_LOG, 0)); err != nil {
		t.Fatalf("a level between the floor and the node's: %v", err)
	}

	noLog := startNode(t, nil)
	noLog.withAccounts(1)
	_, err = noLog.db.Insert(c, ins(20, pb.Durability_DURABILITY_FSYNC_LOG, 0))
	wantCode(t, err, codes.FailedPrecondition, "fsync-log", "needs a redo log")
	if _, ok := noLog.get(20); ok {
		t.Fatal("the refused insert is visible")
	}
}

// TestStrongerDurabilityRequest: a request that asks for a level stronger
// than the node's returns once its commit meets it: on an mmap-log node
// that syncs its mappings only when asked, an fsync-log insert is durable
// when it returns, and an insert at the node's level is not (SPEC 4).
func TestStrongerDurabilityRequest(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.MmapSyncInterval = conf.DurabilityMmapLog, 0
	})
	n.withAccounts(1)
	c := ctx(t)
	strong, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(10, 1), Durability: pb.Durability_DURABILITY_FSYNC_LOG})
	if err != nil {
		t.Fatal(err)
	}
	if durable := n.srv.store.DurableLSN(); durable < strong.GetLsn() {
		t.Fatalf("an fsync-log insert returned at LSN %d with the log durable to %d", strong.GetLsn(), durable)
	}
	weak, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(11, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if durable := n.srv.store.DurableLSN(); durable >= weak.GetLsn() {
		t.Fatalf("an mmap-log insert at LSN %d found the log durable to %d: the check above shows nothing", weak.GetLsn(), durable)
	}
}

// TestCommitThatWaitsForNothing: a commit whose level is met and whose
// sync mode asks for nothing (here mmap-log, async, with a deadline), or
// a read that saw such a commit, returns without allocating: the margin
// before the deadline (replyBefore) is only made for a wait.
func TestCommitThatWaitsForNothing(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.Durability = conf.DurabilityMmapLog })
	n.withAccounts(1)
	c := ctx(t)
	if _, ok := c.Deadline(); !ok {
		t.Fatal("the test's context has no deadline: the check below shows nothing")
	}
	r, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(10, 1)})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []commitWait{{durability.NoLog, replica.Async}, {durability.MmapLog, -1}} {
		allocs := testing.AllocsPerRun(100, func() {
			if degraded, err := n.srv.dbs.durable(c, r.GetLsn(), 0, w); degraded || err != nil {
				t.Fatal(degraded, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%+v: durable allocated %.0f times for a commit that waits for nothing", w, allocs)
		}
	}
	// Nor does a read that saw that commit.
	if allocs := testing.AllocsPerRun(100, func() {
		if err := n.srv.dbs.waitRead(c, r.GetLsn()); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("waitRead allocated %.0f times for a read that waits for nothing", allocs)
	}
}

// TestCheckpoints: AdminService.Checkpoint writes an image at the last
// LSN (status reports it) and skips when nothing is new; a clean shutdown
// writes one too, so the restart replays no log; a no-log node with a
// data_dir restarts from its last image; a diskless node has none.
func TestCheckpoints(t *testing.T) {
	for _, level := range []string{conf.DurabilityFsyncLog, conf.DurabilityNoLog} {
		t.Run(level, func(t *testing.T) {
			dir := t.TempDir()
			edit := func(c *conf.Config) { c.DataDir, c.Durability = dir, level }
			n := startNode(t, edit)
			n.withAccounts(50)
			c := ctx(t)
			resp, err := n.admin.Checkpoint(c, &pb.CheckpointRequest{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := n.admin.Status(c, &pb.StatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetSkipped() || resp.GetLsn() != st.GetLastLsn() || st.GetCheckpointLsn() != resp.GetLsn() || resp.GetRows() != 50 {
				t.Fatalf("checkpoint %v; status: last LSN %d, checkpoint LSN %d", resp, st.GetLastLsn(), st.GetCheckpointLsn())
			}
			if again, err := n.admin.Checkpoint(c, &pb.CheckpointRequest{}); err != nil || !again.GetSkipped() || again.GetLsn() != resp.GetLsn() {
				t.Fatalf("a checkpoint with nothing new: %v, %v", again, err)
			}
			if _, err := n.db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(4))}); err != nil {
				t.Fatal(err)
			}
			before := n.fingerprint()
			n.stop()
			again := startNode(t, edit)
			if after := again.fingerprint(); after != before {
				t.Fatalf("after a restart:\n%s\nbefore:\n%s", after, before)
			}
			st, err = again.admin.Status(ctx(t), &pb.StatusRequest{})
			if err != nil || st.GetCheckpointLsn() != st.GetLastLsn() || st.GetCheckpointLsn() <= resp.GetLsn() {
				t.Fatalf("after a clean shutdown: checkpoint LSN %d, last LSN %d (first image at %d): %v", st.GetCheckpointLsn(), st.GetLastLsn(), resp.GetLsn(), err)
			}
			if rec := again.srv.store.Recovery(); rec.Records != 0 {
				t.Fatalf("the restart after a clean shutdown replayed %d records", rec.Records)
			}
		})
	}
	diskless := startNode(t, func(c *conf.Config) { c.DataDir = "" })
	_, err := diskless.admin.Checkpoint(ctx(t), &pb.CheckpointRequest{})
	wantCode(t, err, codes.FailedPrecondition)
}

// TestMissingLogRefused: a node whose data dir says it keeps a log, and
// whose log directories hold no segment (a disk not mounted, a changed
// log_channels), refuses to start rather than start from its image alone
// and lose the commits after it; with its log back it starts with all.
// A no-log node keeps no log, so after one the start needs none; and
// once the operator removes LOGGED the start takes the image alone.
func TestMissingLogRefused(t *testing.T) {
	dir, logDir, elsewhere := t.TempDir(), t.TempDir(), t.TempDir()
	level := func(level, log string) func(c *conf.Config) {
		return func(c *conf.Config) { c.DataDir, c.Durability, c.LogChannels = dir, level, []string{log} }
	}
	refused := func(edit func(c *conf.Config)) {
		t.Helper()
		cfg := conf.DefaultConfig()
		edit(cfg)
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "no log segment is in "+elsewhere) {
			t.Fatalf("a start without the node's log: %v", err)
		}
	}
	n := startNode(t, level(conf.DurabilityFsyncLog, logDir))
	n.withAccounts(3)
	n.stop()
	refused(level(conf.DurabilityFsyncLog, elsewhere))
	refused(level(conf.DurabilityNoLog, elsewhere))

	n = startNode(t, level(conf.DurabilityNoLog, logDir))
	if got := n.scanAll("acct", 0, false); len(got) != 3 {
		t.Fatalf("%d rows once the log is back, want 3", len(got))
	}
	n.stop()
	n = startNode(t, level(conf.DurabilityFsyncLog, elsewhere)) // after no-log, no log is needed
	n.stop()
	refused(level(conf.DurabilityMmapLog, filepath.Join(elsewhere, "none")))
	if err := os.Remove(filepath.Join(dir, loggedFile)); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, level(conf.DurabilityFsyncLog, filepath.Join(elsewhere, "none")))
	if got := n.scanAll("acct", 0, false); len(got) != 3 {
		t.Fatalf("%d rows from the image alone, want 3", len(got))
	}
}
