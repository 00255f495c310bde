package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/mem"
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
// out of range or an unknown table is refused with a clear code. Too
// many buckets is past a fixed limit, RESOURCE_EXHAUSTED (SPEC 11), not
// a request that breaks a rule of its own.
func TestTableDigestBadInput(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(3)
	for _, tc := range []struct {
		req  *pb.TableDigestRequest
		code codes.Code
		says string
	}{
		{&pb.TableDigestRequest{Table: "acct"}, codes.InvalidArgument, "buckets 0"},
		{&pb.TableDigestRequest{Table: "acct", Buckets: pb.MaxDigestBuckets + 1}, codes.ResourceExhausted, fmt.Sprintf("buckets %d: from 1 to %d", pb.MaxDigestBuckets+1, pb.MaxDigestBuckets)},
		{&pb.TableDigestRequest{Table: "acct", Buckets: 4, List: []uint32{4}}, codes.InvalidArgument, "bucket 4 of 4"},
		{&pb.TableDigestRequest{Table: "nope", Buckets: 4}, codes.NotFound, "nope"},
	} {
		_, err := n.admin.TableDigest(ctx(t), tc.req)
		wantCode(t, err, tc.code, tc.says)
	}
	// A call canceled while it waits for an LSN ends with its own code
	// (asked of the handler itself: a client sees CANCELED whatever the
	// node says); it was DEADLINE_EXCEEDED for any end of the wait.
	canceled, cancel := context.WithCancel(ctx(t))
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := (&adminService{s: n.srv}).TableDigest(canceled, &pb.TableDigestRequest{Table: "acct", Buckets: 4, MinLsn: 1 << 40})
	wantCode(t, err, codes.Canceled, "not yet")
	// A deadline that passes while it waits gets the node's answer, a
	// margin before it, not the client's bare "context deadline exceeded".
	short, cancel := context.WithTimeout(ctx(t), 200*time.Millisecond)
	defer cancel()
	_, err = n.admin.TableDigest(short, &pb.TableDigestRequest{Table: "acct", Buckets: 4, MinLsn: 1 << 40})
	wantCode(t, err, codes.DeadlineExceeded, "not yet")
	d, err := n.admin.TableDigest(ctx(t), &pb.TableDigestRequest{Table: "acct", Buckets: 4, List: []uint32{0, 1, 2, 3}})
	if err != nil || len(d.GetRows()) != 3 {
		t.Fatalf("a digest listing every bucket: %v rows, %v", len(d.GetRows()), err)
	}
}

// TestTableDigestListingPastTheLimit: a digest whose listed rows would
// pass max_message_bytes is refused while the node scans, with
// RESOURCE_EXHAUSTED and the TOO_LARGE detail (fewer buckets would go
// in), rather than built whole in memory and then refused by gRPC on
// its way out; fewer buckets are listed.
func TestTableDigestListingPastTheLimit(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.MaxMessageBytes = 64 << 10 })
	if _, err := n.db.CreateTable(ctx(t), &pb.CreateTableRequest{Table: accountsTable()}); err != nil {
		t.Fatal(err)
	}
	const rows = 4000
	for from := 1; from <= rows; from += 1000 {
		req := &pb.CommitRequest{}
		for id := from; id < from+1000; id++ {
			req.Operations = append(req.Operations, &pb.Operation{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(int64(id), 1)}}})
		}
		if _, err := n.db.Commit(ctx(t), req); err != nil {
			t.Fatal(err)
		}
	}
	_, err := n.admin.TableDigest(ctx(t), &pb.TableDigestRequest{Table: "acct", Buckets: 4, List: []uint32{0, 1, 2, 3}})
	wantCode(t, err, codes.ResourceExhausted, "max_message_bytes", "fewer buckets")
	if !slices.ContainsFunc(status.Convert(err).Details(), func(d any) bool {
		info, ok := d.(*errdetails.ErrorInfo)
		return ok && info.GetDomain() == pb.ErrorDomain && info.GetReason() == pb.ReasonTooLarge
	}) {
		t.Fatalf("%v: no TOO_LARGE detail", err)
	}
	d, err := n.admin.TableDigest(ctx(t), &pb.TableDigestRequest{Table: "acct", Buckets: 8, List: []uint32{5}})
	if err != nil || len(d.GetRows()) == 0 || uint64(len(d.GetRows())) != d.GetBuckets()[5].GetRows() {
		t.Fatalf("a digest listing one bucket of 8: %d rows, %v", len(d.GetRows()), err)
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

// repairKey encodes a primary key as TableDigest lists it (RowDigest.key)
// and RepairRows takes it.
func repairKey(t *testing.T, vs ...*pb.Value) []byte {
	t.Helper()
	k, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Row{Values: vs})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// lastRedo is a mem.CommitLog that keeps the last record, encoded.
type lastRedo struct {
	lsn  uint64
	body []byte
}

func (l *lastRedo) Commit(r *mem.Redo) (uint64, error) {
	l.lsn++
	l.body = r.AppendBinary(l.body[:0])
	return l.lsn, nil
}

// corrupt changes n's rows of table behind its log's back, as a bug or a
// memory fault would; tests only. change runs, after setup, on a scratch
// database with the same table, and its record is applied to n's
// database at n's last LSN (as an image loads): n's LSN and log stay
// what they were.
func (n *node) corrupt(table string, setup, change func(*mem.Tx, *mem.Table) error) {
	n.t.Helper()
	tb, err := n.srv.db.Table(table)
	if err != nil {
		n.t.Fatal(err)
	}
	rec := &lastRedo{}
	scratch := mem.Open(mem.Options{Log: rec})
	st, err := scratch.CreateTable(tb.Def())
	if err != nil {
		n.t.Fatal(err)
	}
	if st.ID() != tb.ID() {
		n.t.Fatalf("table %s has id %d on the scratch database, %d on the node", table, st.ID(), tb.ID())
	}
	for _, fn := range []func(*mem.Tx, *mem.Table) error{setup, change} {
		tx := scratch.Begin()
		if err := fn(tx, st); err != nil {
			tx.Rollback()
			n.t.Fatal(err)
		}
		if _, err := tx.Commit(); err != nil {
			n.t.Fatal(err)
		}
	}
	r, err := mem.DecodeRedo(rec.body)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.srv.db.Apply(n.srv.db.LastLSN(), r); err != nil {
		n.t.Fatal(err)
	}
}

// acctValues is acctRow for the engine.
func acctValues(id, bal int64) []mem.Value {
	return []mem.Value{mem.Int64(id), mem.String(fmt.Sprintf("n%d", id)), mem.String(fmt.Sprintf("r%d", id%3)), mem.Int64(bal), mem.Null()}
}

// startShipping starts a standby b and a primary a that ships to it,
// with accounts accounts, which the standby has applied.
func startShipping(t *testing.T, accounts int) (primary, standby *node) {
	t.Helper()
	standby = startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	primary = startNode(t, func(c *conf.Config) {
		c.Node = "a"
		c.Peers = []conf.Peer{{Name: "b", Addr: standby.addr}}
	})
	primary.withAccounts(accounts)
	if err := standby.srv.store.WaitApplied(ctx(t), primary.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	return primary, standby
}

// TestRepairRows: a standby whose rows differ from its primary's while
// its log is the primary's (a row with other values, one missing, one
// the primary has not) holds exactly the primary's rows once it has
// applied the record RepairRows commits on the primary, for the keys the
// nodes' digests list; the primary's rows do not change. A standby
// refuses RepairRows as it refuses writes, naming its primary.
func TestRepairRows(t *testing.T) {
	primary, standby := startShipping(t, 5)
	want := fmt.Sprint(primary.scanAll("acct", 0, false))
	standby.corrupt("acct", func(tx *mem.Tx, acct *mem.Table) error {
		return tx.Insert(acct, acctValues(2, 100))
	}, func(tx *mem.Tx, acct *mem.Table) error {
		if err := tx.Upsert(acct, acctValues(3, 7)); err != nil {
			return err
		}
		if err := tx.Insert(acct, acctValues(99, 1)); err != nil {
			return err
		}
		return tx.Delete(acct, []mem.Value{mem.Int64(2)})
	})
	_, found2 := standby.get(2)
	r3, _ := standby.get(3)
	_, found99 := standby.get(99)
	if found2 || balance(r3) != 7 || !found99 {
		t.Fatalf("the standby does not differ as it should: row 2 %v, row 3 %v, row 99 %v", found2, r3, found99)
	}

	var keys [][]byte
	seen := map[string]bool{}
	for _, n := range []*node{primary, standby} {
		d, err := n.admin.TableDigest(ctx(t), &pb.TableDigestRequest{Table: "acct", Buckets: 1, List: []uint32{0}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range d.GetRows() {
			if !seen[string(r.GetKey())] {
				seen[string(r.GetKey())] = true
				keys = append(keys, r.GetKey())
			}
		}
	}
	last := primary.srv.db.LastLSN()
	resp, err := primary.admin.RepairRows(ctx(t), &pb.RepairRowsRequest{Table: "acct", Keys: keys, SyncMode: pb.SyncMode_SYNC_MODE_APPLIED_ACK})
	if err != nil || resp.GetLsn() != last+1 || resp.GetRowsPut() != 5 || resp.GetRowsDeleted() != 1 || resp.GetDegraded() {
		t.Fatalf("RepairRows of %d keys after LSN %d: %v, %v; want LSN %d, 5 put, 1 deleted", len(keys), last, resp, err, last+1)
	}
	if got := fmt.Sprint(primary.scanAll("acct", 0, false)); got != want {
		t.Fatalf("the primary's rows changed:\n%s\nwant\n%s", got, want)
	}
	if got := fmt.Sprint(standby.scanAll("acct", 0, false)); got != want {
		t.Fatalf("the standby's rows after the repair:\n%s\nwant\n%s", got, want)
	}
	for name, want := range map[string]bool{"n2": true, "n99": false} {
		r, err := standby.db.Get(ctx(t), &pb.GetRequest{Table: "acct", Index: "by_name", Key: key(vS(name))})
		if err != nil || r.GetFound() != want {
			t.Fatalf("the standby's unique index after the repair: %s found %v, %v; want %v", name, r.GetFound(), err, want)
		}
	}

	before := standby.fingerprint()
	_, err = standby.admin.RepairRows(ctx(t), &pb.RepairRowsRequest{Table: "acct", Keys: keys})
	wantCode(t, err, codes.FailedPrecondition, "standby", primary.addr)
	if named := namedPrimary(err); named != primary.addr {
		t.Fatalf("the standby's refusal names primary %q in its %s detail, want %q", named, pb.ReasonNotPrimary, primary.addr)
	}
	if after := standby.fingerprint(); after != before {
		t.Fatalf("a refused RepairRows changed the standby:\n%s\n%s", before, after)
	}
}

// namedPrimary returns the primary a NOT_PRIMARY error's detail names.
func namedPrimary(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == pb.ReasonNotPrimary {
			return info.GetMetadata()[pb.MetadataPrimary]
		}
	}
	return ""
}

// TestPeersReloadToNone: a primary whose peers are all removed stops
// shipping, as one started without peers, so its commits no longer wait
// for a standby (under applied-ack and block they would wait forever);
// a peer added again is shipped to, and commits wait for it again.
func TestPeersReloadToNone(t *testing.T) {
	// A standby's file may ask to wait for standbys it does not name: a
	// promotion makes it a primary that way.
	n := startNode(t, func(c *conf.Config) {
		c.Node, c.Role, c.Durability = "a", conf.RoleStandby, "no-log"
		c.SyncMode, c.SyncQuorum, c.OnSyncTimeout = conf.SyncAppliedAck, 1, "block"
		c.Peers = []conf.Peer{{Name: "b", Addr: "127.0.0.1:1"}}
	})
	if err := n.srv.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); n.srv.shipper() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the promoted node does not ship")
		}
	}
	create := func(name string, within time.Duration) error {
		c, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, err := n.db.CreateTable(c, &pb.CreateTableRequest{Table: &pb.Table{Name: name, Columns: []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}}, PrimaryKey: []string{"id"}}})
		return err
	}
	// The reply says the commit is made here, before the client's own
	// deadline would end the call with nothing but the code.
	if err := create("t1", 200*time.Millisecond); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "is local (no-log) but unconfirmed") {
		t.Fatalf("a commit whose standby is away, under block: %v", err)
	} else if lsn, ok := lsnReason(err, pb.ReasonUnconfirmed); !ok || lsn != n.srv.DB().LastLSN() {
		t.Fatalf("the unconfirmed commit's error names LSN %d (%v) in an UNCONFIRMED detail, want %d: %v", lsn, ok, n.srv.DB().LastLSN(), err)
	}
	none := *n.srv.cfg
	none.Peers = nil
	if changed, added, removed, err := n.srv.SetPeers(&none); err != nil || !changed || added != nil || !slices.Equal(removed, []string{"b"}) || n.srv.shipper() != nil {
		t.Fatalf("SetPeers to none: changed %v, added %q, removed %q, shipping %v: %v", changed, added, removed, n.srv.shipper() != nil, err)
	}
	if err := create("t2", 5*time.Second); err != nil {
		t.Fatalf("a commit on a primary without peers: %v", err)
	}
	if changed, added, _, err := n.srv.SetPeers(n.srv.cfg); err != nil || !changed || !slices.Equal(added, []string{"b"}) || n.srv.shipper() == nil {
		t.Fatalf("SetPeers back to b: changed %v, added %q: %v", changed, added, err)
	}
	if err := create("t3", 200*time.Millisecond); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "unconfirmed") {
		t.Fatalf("a commit once b is a peer again: %v", err)
	}
}

// TestStandbyRefusesEveryWrite: a standby refuses every kind of write,
// through every API, with FAILED_PRECONDITION naming its primary (in the
// message and the NOT_PRIMARY detail), and none changes it (SPEC 6).
// That holds for a write that would fail on the standby's own data too
// (a row it lacks, a key it holds, a condition that fails there): it used
// to get NOT_FOUND, ALREADY_EXISTS or committed=false, the standby's
// answer rather than the primary's, and the client library, which
// follows only NOT_PRIMARY, stayed on the standby. A batch of reads is
// still answered.
func TestStandbyRefusesEveryWrite(t *testing.T) {
	primary, standby := startShipping(t, 3)
	before := standby.fingerprint()
	db := standby.db
	other := accountsTable()
	other.Name = "other"
	insert := &pb.InsertRequest{Table: "acct", Row: acctRow(10, 1)}
	update := &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(5)}}}
	upsert := &pb.UpsertRequest{Table: "acct", Row: acctRow(1, 9)}
	del := &pb.DeleteRequest{Table: "acct", Key: key(vI(2))}
	for name, write := range map[string]func(c context.Context) error{
		"CreateTable": func(c context.Context) error {
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: other})
			return err
		},
		"DropTable": func(c context.Context) error {
			_, err := db.DropTable(c, &pb.DropTableRequest{Table: "acct"})
			return err
		},
		"CreateIndex": func(c context.Context) error {
			_, err := db.CreateIndex(c, &pb.CreateIndexRequest{Table: "acct", Index: &pb.Index{Name: "by_bal", Columns: []string{"bal"}}})
			return err
		},
		"DropIndex": func(c context.Context) error {
			_, err := db.DropIndex(c, &pb.DropIndexRequest{Table: "acct", Index: "by_name"})
			return err
		},
		"Insert": func(c context.Context) error { _, err := db.Insert(c, insert); return err },
		"Update": func(c context.Context) error { _, err := db.Update(c, update); return err },
		"Upsert": func(c context.Context) error { _, err := db.Upsert(c, upsert); return err },
		"Delete": func(c context.Context) error { _, err := db.Delete(c, del); return err },
		"Commit": func(c context.Context) error {
			_, err := db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{
				{Op: &pb.Operation_Update{Update: update}}, {Op: &pb.Operation_Insert{Insert: insert}},
			}})
			return err
		},
		"Begin, then Commit": func(c context.Context) error {
			b, err := db.Begin(c, &pb.BeginRequest{})
			if err != nil {
				return err
			}
			defer func() { _, _ = db.Rollback(c, &pb.RollbackRequest{TxId: b.GetTxId()}) }() // gone already, if refused
			if _, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(11, 1), TxId: b.GetTxId()}); err != nil {
				return err
			}
			_, err = db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()})
			return err
		},
		"Session": func(c context.Context) error {
			r, err := sessionReply(c, db, &pb.Request{Id: 1, Op: &pb.Request_Upsert{Upsert: upsert}})
			if err != nil {
				return err
			}
			return statusOf(r)
		},
		"CreateTable of a table it holds": func(c context.Context) error {
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: accountsTable()})
			return err
		},
		"DropTable of a table it lacks": func(c context.Context) error {
			_, err := db.DropTable(c, &pb.DropTableRequest{Table: "nosuch"})
			return err
		},
		"CreateIndex of an index it holds": func(c context.Context) error {
			_, err := db.CreateIndex(c, &pb.CreateIndexRequest{Table: "acct", Index: &pb.Index{Name: "by_name", Columns: []string{"name"}}})
			return err
		},
		"DropIndex of an index it lacks": func(c context.Context) error {
			_, err := db.DropIndex(c, &pb.DropIndexRequest{Table: "acct", Index: "nosuch"})
			return err
		},
		"Insert of a key it holds": func(c context.Context) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1)})
			return err
		},
		"Update of a row it lacks": func(c context.Context) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(99)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(5)}}})
			return err
		},
		"Delete of a row it lacks": func(c context.Context) error {
			_, err := db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(99))})
			return err
		},
		"Commit whose condition fails on it": func(c context.Context) error {
			r, err := db.Commit(c, &pb.CommitRequest{
				Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_NOT_EXISTS}},
				Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1)}}}},
			})
			if err == nil {
				err = fmt.Errorf("answered committed=%v, failed_condition=%d", r.GetCommitted(), r.GetFailedCondition())
			}
			return err
		},
		"Begin, then an Update of a row it lacks": func(c context.Context) error {
			b, err := db.Begin(c, &pb.BeginRequest{})
			if err != nil {
				return err
			}
			defer func() { _, _ = db.Rollback(c, &pb.RollbackRequest{TxId: b.GetTxId()}) }()
			_, err = db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(99)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(5)}}, TxId: b.GetTxId()})
			return err
		},
		"Session Insert of a key it holds": func(c context.Context) error {
			r, err := sessionReply(c, db, &pb.Request{Id: 1, Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1)}}})
			if err != nil {
				return err
			}
			return statusOf(r)
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := write(ctx(t))
			wantCode(t, err, codes.FailedPrecondition, "standby", primary.addr)
			if named := namedPrimary(err); named != primary.addr {
				t.Fatalf("the refusal names primary %q in its %s detail, want %q", named, pb.ReasonNotPrimary, primary.addr)
			}
		})
	}
	reads, err := db.Commit(ctx(t), &pb.CommitRequest{
		Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS}},
		Operations: []*pb.Operation{{Op: &pb.Operation_Get{Get: &pb.GetRequest{Table: "acct", Key: key(vI(2))}}}},
	})
	if err != nil || !reads.GetCommitted() || !reads.GetResults()[0].GetFound() {
		t.Fatalf("a batch of reads on the standby: %v, %v", reads, err)
	}
	if after := standby.fingerprint(); after != before {
		t.Fatalf("refused writes changed the standby:\n%s\nbefore:\n%s", after, before)
	}
}

// TestNoRetentionStillShips: a primary with a log, peers and
// log_retention_bytes 0 keeps no log for its standbys, but still starts
// and ships: it keeps the tail of the log in memory for them (it used to
// stop at start: "the store keeps no ring of records to ship").
func TestNoRetentionStillShips(t *testing.T) {
	standby := startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	primary := startNode(t, func(c *conf.Config) {
		c.Node, c.Durability, c.LogRetentionBytes = "a", conf.DurabilityMmapLog, 0
		c.Peers = []conf.Peer{{Name: "b", Addr: standby.addr}}
	})
	primary.withAccounts(3)
	if err := standby.srv.store.WaitApplied(ctx(t), primary.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(standby.scanAll("acct", 0, false)), fmt.Sprint(primary.scanAll("acct", 0, false)); got != want {
		t.Fatalf("the standby holds\n%s\nthe primary\n%s", got, want)
	}
}

// TestVanishedCallerIsDropped: a caller that vanishes without a word (a
// link that silently drops what the node sends) has its connection
// closed once the node's keepalive pings go unanswered, so its streams
// end: here a Session's transaction is rolled back long before
// tx_idle_timeout. A sender of log lost so would likewise keep a standby
// from following another sender of its epoch.
func TestVanishedCallerIsDropped(t *testing.T) {
	saved := serverKeepalive
	serverKeepalive = keepalive.ServerParameters{Time: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}
	n := startNode(t, func(c *conf.Config) { c.TxIdleTimeout = time.Hour })
	serverKeepalive = saved
	proxy := faultproxy.New(t, n.addr)
	conn, err := grpc.NewClient(proxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // it fails once the node closed it
	s, err := pb.NewDatabaseServiceClient(conn).Session(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pb.SessionRequest{Requests: []*pb.Request{{Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || m.GetReplies()[0].GetBegin().GetTxId() == 0 {
		t.Fatalf("begin on the session: %v %v", m, err)
	}
	if open := n.srv.txs.open(); open != 1 {
		t.Fatalf("%d transactions open, want the session's", open)
	}
	proxy.Stall(true)
	defer proxy.Stall(false)
	for start := time.Now(); n.srv.txs.open() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second { // a failure detector, not a wait
			t.Fatal("the session of a caller that stopped answering is still open")
		}
	}
}

// TestScanResumeAheadOfStandby: a Scan page whose resume key is of a
// table newer than the one a standby holds under the name (the primary
// dropped and created it again, and answered the previous page, and the
// standby has not applied that yet) is refused with UNAVAILABLE, for the
// client to read it from another node, and not FAILED_PRECONDITION,
// which would tell it the table was created again since its key.
func TestScanResumeAheadOfStandby(t *testing.T) {
	_, standby := startShipping(t, 5)
	c := ctx(t)
	st, err := standby.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	page, err := st.Recv()
	if err != nil || page.GetResumeTableId() == 0 {
		t.Fatalf("first page on the standby: %v, %v", page, err)
	}
	_, err = recvAll(standby.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2, After: page.GetResumeKey(), AfterTableId: page.GetResumeTableId() + 1}))
	wantCode(t, toStatus(err), codes.Unavailable, `"acct"`, "has not applied", "primary")
	if !hasReason(err, pb.ReasonRefused) {
		t.Fatalf("%v: no %s detail", err, pb.ReasonRefused)
	}
	rows, err := recvAll(standby.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2, After: page.GetResumeKey(), AfterTableId: page.GetResumeTableId()}))
	if err != nil || len(rows) != 2 {
		t.Fatalf("the next page with the table's own id: %d rows, %v", len(rows), err)
	}
	// A standby that applied the old table's drop but not the new one's
	// creation holds no table of the name: the page is refused alike. It
	// was NOT_FOUND, though the table is there on the primary.
	_, err = recvAll(standby.db.Scan(c, &pb.ScanRequest{Table: "acct2", Limit: 2, After: page.GetResumeKey(), AfterTableId: page.GetResumeTableId() + 1}))
	wantCode(t, toStatus(err), codes.Unavailable, `"acct2"`, "has not applied")
	// A table it created, and dropped since: gone, NOT_FOUND.
	_, err = recvAll(standby.db.Scan(c, &pb.ScanRequest{Table: "acct2", Limit: 2, After: page.GetResumeKey(), AfterTableId: page.GetResumeTableId()}))
	wantCode(t, toStatus(err), codes.NotFound, `"acct2"`)
}

// TestScanResumeOfTableNeverCreated: a primary asked to resume a Scan in
// a table of an id it never gave out (a failover, or a crash, lost the
// creation the previous page was read from) says so, rather than that
// the table was dropped and created again.
func TestScanResumeOfTableNeverCreated(t *testing.T) {
	primary, _ := startShipping(t, 5)
	c := ctx(t)
	page, err := recvAll(primary.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2}))
	if err != nil || len(page) != 2 {
		t.Fatalf("first page: %d rows, %v", len(page), err)
	}
	tb, err := primary.srv.db.Table("acct")
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvAll(primary.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2, After: key(page[1].GetValues()[0]), AfterTableId: tb.ID() + 100}))
	wantCode(t, toStatus(err), codes.FailedPrecondition, `"acct"`, "never created", "start the scan anew")
	if !hasReason(err, pb.ReasonTableRecreated) {
		t.Fatalf("%v: no %s detail", err, pb.ReasonTableRecreated)
	}
}

// TestRepairRowsTableRecreated: RepairRows finds its table in its
// transaction, so a table dropped and created again under its name
// after the keys were checked is the one whose rows are logged again
// (the standby applied the drop and the creation too). It was found
// before the transaction, and the old one, gone, was answered NOT_FOUND
// though the name held a table.
func TestRepairRowsTableRecreated(t *testing.T) {
	primary, standby := startShipping(t, 5)
	c := ctx(t)
	var keys [][]byte
	for id := int64(1); id <= 5; id++ {
		keys = append(keys, repairKey(t, vI(id)))
	}
	testHookRepair = func() {
		testHookRepair = nil
		if _, err := primary.db.DropTable(c, &pb.DropTableRequest{Table: "acct"}); err != nil {
			t.Error(err)
		}
		if _, err := primary.db.CreateTable(c, &pb.CreateTableRequest{Table: accountsTable()}); err != nil {
			t.Error(err)
		}
		for id := int64(1); id <= 3; id++ {
			if _, err := primary.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 200)}); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { testHookRepair = nil })
	resp, err := primary.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: keys, SyncMode: pb.SyncMode_SYNC_MODE_APPLIED_ACK})
	if err != nil || resp.GetRowsPut() != 3 || resp.GetRowsDeleted() != 2 {
		t.Fatalf("RepairRows of the table created again: %v, %v; want 3 put, 2 deleted", resp, err)
	}
	want := fmt.Sprint(primary.scanAll("acct", 0, false))
	if got := fmt.Sprint(standby.scanAll("acct", 0, false)); got != want {
		t.Fatalf("the standby's rows after the repair:\n%s\nwant\n%s", got, want)
	}
}
