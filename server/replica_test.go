package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/faultproxy"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestSyncModePerRequest: a request may ask for a sync mode other than
// the node's. On an async primary, a write asking for applied-ack is on
// the standby when it returns; an interactive transaction takes its mode
// from Begin or Commit. Asking for a mode that waits on a node without
// standbys, or on a request that cannot carry one, is refused, changing
// nothing.
func TestSyncModePerRequest(t *testing.T) {
	standby := startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	proxy := faultproxy.New(t, standby.addr)
	primary := startNode(t, func(c *conf.Config) {
		c.Node, c.SyncTimeout = "a", 300*time.Millisecond
		c.Peers = []conf.Peer{{Name: "b", Addr: proxy.Addr()}}
	})
	primary.withAccounts(1)
	applied := pb.SyncMode_SYNC_MODE_APPLIED_ACK
	for i := int64(2); i < 50; i++ {
		if _, err := primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(i, 1), SyncMode: applied}); err != nil {
			t.Fatal(err)
		}
		if _, found := standby.get(i); !found {
			t.Fatalf("row %d is not on the standby when its applied-ack insert returns", i)
		}
	}
	b, err := primary.db.Begin(ctx(t), &pb.BeginRequest{SyncMode: applied})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(100, 1), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.db.Commit(ctx(t), &pb.CommitRequest{TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	if _, found := standby.get(100); !found {
		t.Fatal("an interactive transaction begun with applied-ack is not on the standby when it commits")
	}
	// With the standby's answers held back, an async write returns at
	// once; one asking for applied-ack waits sync_timeout and degrades.
	proxy.Stall(true)
	start := time.Now()
	if r, err := primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(101, 1)}); err != nil || r.GetDegraded() || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("an async insert: %v %v after %s", r, err, time.Since(start))
	}
	start = time.Now()
	if r, err := primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(102, 1), SyncMode: applied}); err != nil || !r.GetDegraded() || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("an applied-ack insert without answers: %v %v after %s", r, err, time.Since(start))
	}
	proxy.Stall(false)

	// Refusals, on the primary and on a node without peers.
	alone := startNode(t, nil)
	alone.withAccounts(1)
	before := alone.fingerprint()
	_, err = alone.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(7, 1), SyncMode: pb.SyncMode_SYNC_MODE_RECEIVED_ACK})
	wantCode(t, err, codes.FailedPrecondition, "received-ack", "no peers")
	_, err = alone.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(7, 1), SyncMode: 9})
	wantCode(t, err, codes.InvalidArgument, "sync_mode 9")
	_, err = alone.db.Commit(ctx(t), &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(7, 1), SyncMode: applied}}}}})
	wantCode(t, err, codes.InvalidArgument, "operation 0", "sync_mode")
	if after := alone.fingerprint(); after != before {
		t.Fatalf("a refused request changed the node:\n%s\n%s", before, after)
	}
	b, err = primary.db.Begin(ctx(t), &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(8, 1), TxId: b.GetTxId(), SyncMode: applied})
	wantCode(t, err, codes.InvalidArgument, "tx_id")
}

// TestTableDigestBadInput: a digest with no buckets, too many, a bucket
// out of range or an unknown table is refused with a clear code.
func TestTableDigestBadInput(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(3)
	for _, tc := range []struct {
		req  *pb.TableDigestRequest
		code codes.Code
		says string
	}{
		{&pb.TableDigestRequest{Table: "acct"}, codes.InvalidArgument, "buckets 0"},
		{&pb.TableDigestRequest{Table: "acct", Buckets: 1 << 20}, codes.InvalidArgument, "buckets"},
		{&pb.TableDigestRequest{Table: "acct", Buckets: 4, List: []uint32{4}}, codes.InvalidArgument, "bucket 4 of 4"},
		{&pb.TableDigestRequest{Table: "nope", Buckets: 4}, codes.NotFound, "nope"},
	} {
		_, err := n.admin.TableDigest(ctx(t), tc.req)
		wantCode(t, err, tc.code, tc.says)
	}
	d, err := n.admin.TableDigest(ctx(t), &pb.TableDigestRequest{Table: "acct", Buckets: 4, List: []uint32{0, 1, 2, 3}})
	if err != nil || len(d.GetRows()) != 3 {
		t.Fatalf("a digest listing every bucket: %v rows, %v", len(d.GetRows()), err)
	}
}

// TestStandbyBecomesPropagator: a standby switched to propagator (as on
// SIGHUP) starts relaying the log it follows to its other peers, never
// back to the primary; switched back to standby it stops, and the
// standby behind it gets no more.
func TestStandbyBecomesPropagator(t *testing.T) {
	c := startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "c", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "b", Addr: "127.0.0.1:1"}}
	})
	b := startNode(t, func(c2 *conf.Config) {
		c2.Node, c2.Role = "b", conf.RoleStandby
		c2.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "c", Addr: c.addr}}
	})
	a := startNode(t, func(c3 *conf.Config) {
		c3.Node = "a"
		c3.Peers = []conf.Peer{{Name: "b", Addr: b.addr}}
	})
	a.withAccounts(10)
	has := func(n *node, id int64) bool {
		r, err := n.db.Get(ctx(t), &pb.GetRequest{Table: "acct", Key: key(vI(id))})
		return err == nil && r.GetFound()
	}
	arrives := func(n *node, id int64) bool {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if has(n, id) {
				return true
			}
		}
		return false
	}
	if !arrives(b, 9) {
		t.Fatal("the standby did not get the primary's rows")
	}
	time.Sleep(200 * time.Millisecond)
	if has(c, 9) {
		t.Fatal("a standby relayed the log")
	}
	if err := b.srv.SetRole(conf.RolePropagator); err != nil {
		t.Fatal(err)
	}
	if !arrives(c, 9) {
		t.Fatal("the propagator did not relay the log it follows")
	}
	st, err := b.admin.Status(ctx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetRole() != conf.RolePropagator || len(st.GetStandbys()) != 1 || st.GetStandbys()[0].GetName() != "c" {
		t.Fatalf("the propagator's status: %v", st)
	}
	if err := b.srv.SetRole(conf.RoleStandby); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(100, 1), SyncMode: pb.SyncMode_SYNC_MODE_APPLIED_ACK}); err != nil {
		t.Fatal(err)
	}
	if !arrives(b, 100) {
		t.Fatal("the standby stopped following")
	}
	time.Sleep(200 * time.Millisecond)
	if has(c, 100) {
		t.Fatal("a propagator switched back to standby still relays")
	}
}
