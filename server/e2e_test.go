package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// End-to-end tests: a real server on a loopback port and a real gRPC
// client, as users run them.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// node is a server under test and a client connected to it.
type node struct {
	t     testing.TB
	srv   *Server
	conn  *grpc.ClientConn
	db    pb.DatabaseServiceClient
	admin pb.AdminServiceClient
	addr  string
	done  chan error
}

// startNode starts a server on 127.0.0.1 with a port the kernel picks, in
// a temporary data directory; edit adjusts the config first. It stops at
// the end of the test.
func startNode(t testing.TB, edit func(c *conf.Config)) *node {
	t.Helper()
	cfg := conf.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	if edit != nil {
		edit(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, srv: srv, addr: lis.Addr().String(), done: make(chan error, 1)}
	go func() { n.done <- srv.Serve(lis) }()
	n.conn, err = grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	n.db = pb.NewDatabaseServiceClient(n.conn)
	n.admin = pb.NewAdminServiceClient(n.conn)
	t.Cleanup(n.stop)
	return n
}

// stop shuts the server down (once) and closes the client.
func (n *node) stop() {
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		n.t.Errorf("shutdown: %v", err)
	}
	if err := <-n.done; err != nil {
		n.t.Errorf("serve: %v", err)
	}
	if err := n.conn.Close(); err != nil {
		n.t.Errorf("close client: %v", err)
	}
	n.srv = nil
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// Value constructors for requests.
func vI(v int64) *pb.Value  { return &pb.Value{Kind: &pb.Value_Int64{Int64: v}} }
func vS(v string) *pb.Value { return &pb.Value{Kind: &pb.Value_String_{String_: v}} }
func vNull() *pb.Value      { return &pb.Value{Kind: &pb.Value_Null{}} }
func row(vs ...*pb.Value) *pb.Row {
	return &pb.Row{Values: vs}
}
func key(vs ...*pb.Value) []*pb.Value { return vs }

// accountsTable is the table most tests use: an ordered primary key, a
// unique hash index on name and a non-unique ordered index on region.
func accountsTable() *pb.Table {
	return &pb.Table{
		Name: "acct",
		Columns: []*pb.Column{
			{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "name", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 16},
			{Name: "region", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 8},
			{Name: "bal", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "note", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: 64, Nullable: true},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED,
		Indexes: []*pb.Index{
			{Name: "by_name", Columns: []string{"name"}, Unique: true, Kind: pb.IndexKind_INDEX_KIND_HASH},
			{Name: "by_region", Columns: []string{"region"}, Kind: pb.IndexKind_INDEX_KIND_ORDERED},
		},
	}
}

func acctRow(id int64, bal int64) *pb.Row {
	return row(vI(id), vS(fmt.Sprintf("n%d", id)), vS(fmt.Sprintf("r%d", id%3)), vI(bal), vNull())
}

// withAccounts creates acct and inserts rows 1..n with balance 100.
func (n *node) withAccounts(rows int) {
	n.t.Helper()
	if _, err := n.db.CreateTable(ctx(n.t), &pb.CreateTableRequest{Table: accountsTable()}); err != nil {
		n.t.Fatal(err)
	}
	for i := 1; i <= rows; i++ {
		if _, err := n.db.Insert(ctx(n.t), &pb.InsertRequest{Table: "acct", Row: acctRow(int64(i), 100)}); err != nil {
			n.t.Fatal(err)
		}
	}
}

// wantCode fails unless err is a status with code and its message holds
// every fragment.
func wantCode(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v (%v), want code %v", st.Code(), err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Fatalf("message %q does not name %q", st.Message(), f)
		}
	}
}

func (n *node) get(id int64) (*pb.Row, bool) {
	n.t.Helper()
	r, err := n.db.Get(ctx(n.t), &pb.GetRequest{Table: "acct", Key: key(vI(id))})
	if err != nil {
		n.t.Fatal(err)
	}
	return r.GetRow(), r.GetFound()
}

func balance(r *pb.Row) int64 { return r.GetValues()[3].GetInt64() }

// scanAll reads a whole table through the primary key, paging with after.
func (n *node) scanAll(table string, pageSize uint32, reverse bool) []*pb.Row {
	return n.scanPages(&pb.ScanRequest{Table: table, Limit: pageSize, Reverse: reverse})
}

// scanPages reads all of req's range, a page of req.Limit rows at a time,
// resuming each page after the last.
func (n *node) scanPages(req *pb.ScanRequest) []*pb.Row {
	n.t.Helper()
	var rows []*pb.Row
	for {
		st, err := n.db.Scan(ctx(n.t), req)
		if err != nil {
			n.t.Fatal(err)
		}
		var last *pb.ScanResponse
		for {
			m, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				n.t.Fatal(err)
			}
			rows = append(rows, m.GetRows()...)
			last = m
		}
		if !last.GetMore() {
			return rows
		}
		req = proto.Clone(req).(*pb.ScanRequest)
		req.After, req.AfterTableId = last.GetResumeKey(), last.GetResumeTableId()
	}
}

func TestHealthAndReflection(t *testing.T) {
	n := startNode(t, nil)
	for _, svc := range []string{"", "mmdb.v1.DatabaseService"} {
		r, err := healthpb.NewHealthClient(n.conn).Check(ctx(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q: %v %v", svc, r, err)
		}
	}
	services := n.srv.grpc.GetServiceInfo()
	for _, want := range []string{"mmdb.v1.DatabaseService", "mmdb.v1.AdminService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if _, ok := services[want]; !ok {
			t.Errorf("service %s is not registered", want)
		}
	}
}

func TestDDL(t *testing.T) {
	n := startNode(t, nil)
	c := ctx(t)
	cr, err := n.db.CreateTable(c, &pb.CreateTableRequest{Table: accountsTable()})
	if err != nil {
		t.Fatal(err)
	}
	if cr.GetLsn() == 0 {
		t.Fatal("CreateTable returned LSN 0")
	}
	d, err := n.db.DescribeTable(c, &pb.DescribeTableRequest{Table: "acct"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(d.GetTable(), accountsTable()) {
		t.Fatalf("described %v\nwant %v", d.GetTable(), accountsTable())
	}
	_, err = n.db.CreateTable(c, &pb.CreateTableRequest{Table: accountsTable()})
	wantCode(t, err, codes.AlreadyExists, `"acct"`)
	l, err := n.db.ListTables(c, &pb.ListTablesRequest{})
	if err != nil || len(l.GetTables()) != 1 || l.GetTables()[0].GetName() != "acct" {
		t.Fatalf("list: %v %v", l, err)
	}
	dr, err := n.db.DropTable(c, &pb.DropTableRequest{Table: "acct"})
	if err != nil {
		t.Fatal(err)
	}
	if dr.GetLsn() != cr.GetLsn()+1 {
		t.Fatalf("drop LSN %d after create LSN %d", dr.GetLsn(), cr.GetLsn())
	}
	_, err = n.db.DescribeTable(c, &pb.DescribeTableRequest{Table: "acct"})
	wantCode(t, err, codes.NotFound, `"acct"`)
}

func TestDML(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(3)
	c := ctx(t)
	r, found := n.get(2)
	if !found || balance(r) != 100 || r.GetValues()[1].GetString_() != "n2" || r.GetValues()[4].GetNull() != 0 {
		t.Fatalf("get 2: %v %v", r, found)
	}
	if _, found := n.get(9); found {
		t.Fatal("row 9 found")
	}
	byName, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Index: "by_name", Key: key(vS("n3"))})
	if err != nil || !byName.GetFound() || byName.GetRow().GetValues()[0].GetInt64() != 3 {
		t.Fatalf("get by name: %v %v", byName, err)
	}
	type lsner interface{ GetLsn() uint64 }
	var lsns []uint64
	for _, write := range []func() (lsner, error){
		func() (lsner, error) {
			return n.db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(2)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(7)}}})
		},
		func() (lsner, error) { return n.db.Upsert(c, &pb.UpsertRequest{Table: "acct", Row: acctRow(4, 40)}) },
		func() (lsner, error) { return n.db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(1))}) },
	} {
		w, err := write()
		if err != nil {
			t.Fatal(err)
		}
		lsns = append(lsns, w.GetLsn())
	}
	for i := 1; i < len(lsns); i++ {
		if lsns[i] != lsns[i-1]+1 {
			t.Fatalf("write LSNs %v are not consecutive", lsns)
		}
	}
	st, err := n.admin.Status(c, &pb.StatusRequest{})
	if err != nil || st.GetLastLsn() != lsns[2] {
		t.Fatalf("status last LSN %d, want %d (%v)", st.GetLastLsn(), lsns[2], err)
	}
	if r, _ := n.get(2); balance(r) != 7 {
		t.Fatalf("row 2 after update: %v", r)
	}
	if _, found := n.get(1); found {
		t.Fatal("row 1 still there after delete")
	}
	if rows := n.scanAll("acct", 0, false); len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
}

func TestBatchCommit(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(2)
	c := ctx(t)
	transfer := &pb.CommitRequest{
		Conditions: []*pb.Condition{
			{Table: "acct", Key: key(vI(2)), Expect: pb.Condition_EXPECT_EXISTS},
			{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS, Equals: []*pb.ColumnValue{{Column: "bal", Value: vI(100)}}},
			{Table: "acct", Key: key(vI(3)), Expect: pb.Condition_EXPECT_NOT_EXISTS},
		},
		Operations: []*pb.Operation{
			{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(60)}}}}},
			{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(3, 40)}}},
			{Op: &pb.Operation_Get{Get: &pb.GetRequest{Table: "acct", Key: key(vI(3))}}},
		},
	}
	r, err := n.db.Commit(c, transfer)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetCommitted() || r.GetLsn() == 0 || len(r.GetResults()) != 3 || balance(r.GetResults()[2].GetRow()) != 40 {
		t.Fatalf("commit: %v", r)
	}
	// The same batch again: row 1 no longer has 100, so nothing is written.
	r, err = n.db.Commit(c, transfer)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetCommitted() || r.GetFailedCondition() != 1 || r.GetLsn() != 0 || len(r.GetResults()) != 0 {
		t.Fatalf("second commit: %v", r)
	}
	// A failing operation rolls the whole batch back.
	before := n.scanAll("acct", 0, false)
	_, err = n.db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{
		{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(2))}}},
		{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1)}}},
	}})
	wantCode(t, err, codes.AlreadyExists, "operation 1")
	if after := n.scanAll("acct", 0, false); !rowsEqual(before, after) {
		t.Fatalf("a failed batch changed the table:\n%v\n%v", before, after)
	}
}

func rowsEqual(a, b []*pb.Row) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestInteractiveTransaction(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(2)
	c := ctx(t)
	b, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := b.GetTxId()
	if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(5, 5), TxId: id}); err != nil {
		t.Fatal(err)
	}
	in, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(5)), TxId: id})
	if err != nil || !in.GetFound() {
		t.Fatalf("the transaction does not see its own insert: %v %v", in, err)
	}
	if _, found := n.get(5); found {
		t.Fatal("an uncommitted insert is visible outside its transaction")
	}
	// A failed operation leaves the transaction usable.
	_, err = n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1), TxId: id})
	wantCode(t, err, codes.AlreadyExists)
	// So does a malformed Commit: it changes nothing (it used to roll the
	// transaction back).
	_, err = n.db.Commit(c, &pb.CommitRequest{TxId: id, Durability: 9})
	wantCode(t, err, codes.InvalidArgument, "durability 9")
	_, err = n.db.Commit(c, &pb.CommitRequest{TxId: id, Operations: []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(1)), TxId: id}}}}})
	wantCode(t, err, codes.InvalidArgument, "operation 0", "tx_id")
	// As does one whose batch is malformed in a condition or an
	// operation, found before the batch runs: these used to roll the
	// transaction back.
	balIs := func(v *pb.Value) []*pb.Condition {
		return []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS, Equals: []*pb.ColumnValue{{Column: "bal", Value: v}}}}
	}
	del := []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(1))}}}}
	for _, bad := range []struct {
		req   *pb.CommitRequest
		frags []string
	}{
		{&pb.CommitRequest{TxId: id, Conditions: balIs(vS("x")), Operations: del}, []string{"condition 0", `"bal"`}},
		{&pb.CommitRequest{TxId: id, Conditions: balIs(&pb.Value{}), Operations: del}, []string{"condition 0", `"bal"`}},
		{&pb.CommitRequest{TxId: id, Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1))}}, Operations: del}, []string{"condition 0", "expect"}},
		{&pb.CommitRequest{TxId: id, Operations: append(del, &pb.Operation{})}, []string{"operation 1", "empty"}},
		{&pb.CommitRequest{TxId: id, Operations: append(del, &pb.Operation{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: "acct", Key: key(vI(2)),
			Set: []*pb.ColumnValue{{Column: "nope", Value: vI(1)}}}}})}, []string{"operation 1", `"nope"`}},
	} {
		_, err = n.db.Commit(c, bad.req)
		wantCode(t, err, codes.InvalidArgument, bad.frags...)
	}
	cr, err := n.db.Commit(c, &pb.CommitRequest{TxId: id})
	if err != nil || !cr.GetCommitted() || cr.GetLsn() == 0 {
		t.Fatalf("commit: %v %v", cr, err)
	}
	if _, found := n.get(5); !found {
		t.Fatal("a committed insert is not visible")
	}
	_, err = n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(5)), TxId: id})
	wantCode(t, err, codes.NotFound, "not open")

	// Rollback leaves no trace.
	b, _ = n.db.Begin(c, &pb.BeginRequest{})
	if _, err := n.db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(1)), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Rollback(c, &pb.RollbackRequest{TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	if _, found := n.get(1); !found {
		t.Fatal("a rolled-back delete took effect")
	}

	// Two transactions that read and write the same row: one aborts.
	t1, _ := n.db.Begin(c, &pb.BeginRequest{})
	t2, _ := n.db.Begin(c, &pb.BeginRequest{})
	for _, tx := range []uint64{t1.GetTxId(), t2.GetTxId()} {
		if _, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(2)), TxId: tx}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(2)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(int64(tx % 1000))}}, TxId: tx}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.db.Commit(c, &pb.CommitRequest{TxId: t1.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	_, err = n.db.Commit(c, &pb.CommitRequest{TxId: t2.GetTxId()})
	wantCode(t, err, codes.Aborted)
	if r, _ := n.get(2); balance(r) != int64(t1.GetTxId()%1000) {
		t.Fatalf("row 2 holds %v, not the first commit's write", r)
	}
	st, _ := n.admin.Status(c, &pb.StatusRequest{})
	if st.GetOpenTransactions() != 0 {
		t.Fatalf("%d transactions still open", st.GetOpenTransactions())
	}
}

func TestIdleTimeoutRollsBack(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.TxIdleTimeout = 50 * time.Millisecond })
	n.withAccounts(1)
	c := ctx(t)
	b, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if b.GetIdleTimeout().AsDuration() != 50*time.Millisecond {
		t.Fatalf("idle timeout %v", b.GetIdleTimeout().AsDuration())
	}
	if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(2, 2), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.srv.txs.open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle transaction was never rolled back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()})
	wantCode(t, err, codes.NotFound, "tx_idle_timeout")
	if _, found := n.get(2); found {
		t.Fatal("the rolled-back transaction's insert is visible")
	}
}

func TestMaxOpenTransactions(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.MaxOpenTransactions = 2 })
	c := ctx(t)
	for i := 0; i < 2; i++ {
		if _, err := n.db.Begin(c, &pb.BeginRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := n.db.Begin(c, &pb.BeginRequest{})
	wantCode(t, err, codes.ResourceExhausted, "max_open_transactions (2)")
}

// TestMaxTxBytes: an interactive transaction that grows past
// max_tx_bytes, by rewriting a row (each version stays in it until
// commit) or by scanning (each row a scan delivered is checked again at
// commit), is rolled back with RESOURCE_EXHAUSTED naming the limit, at
// about the configured size; later requests naming it get NOT_FOUND, and
// nothing it wrote is visible. Before, nothing bounded it.
func TestMaxTxBytes(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.MaxTxBytes = 1 << 20 })
	c := ctx(t)
	table := &pb.Table{Name: "blob", PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED, Columns: []*pb.Column{
		{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "v", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: 20000},
	}}
	if _, err := n.db.CreateTable(c, &pb.CreateTableRequest{Table: table}); err != nil {
		t.Fatal(err)
	}
	for id := range int64(1000) {
		if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "blob", Row: row(vI(id), &pb.Value{Kind: &pb.Value_Bytes{Bytes: []byte("old")}})}); err != nil {
			t.Fatal(err)
		}
	}
	// grow runs op in a new transaction until it fails, and checks that
	// the failure is max_tx_bytes's after between lo and hi runs.
	grow := func(what string, lo, hi int, op func(txID uint64) error) {
		t.Helper()
		b, err := n.db.Begin(c, &pb.BeginRequest{})
		if err != nil {
			t.Fatal(err)
		}
		runs := 0
		for ; err == nil && runs <= hi; runs++ {
			err = op(b.GetTxId())
		}
		wantCode(t, err, codes.ResourceExhausted, "max_tx_bytes (1048576)", "rolled back")
		if runs < lo || runs > hi {
			t.Fatalf("%s: refused after %d runs, want %d-%d", what, runs, lo, hi)
		}
		_, err = n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()})
		wantCode(t, err, codes.NotFound, "not open")
	}
	big := &pb.Value{Kind: &pb.Value_Bytes{Bytes: bytes.Repeat([]byte("x"), 16<<10)}}
	grow("rewrites of a row", 50, 70, func(txID uint64) error { // 1 MiB of 16 KiB versions
		_, err := n.db.Update(c, &pb.UpdateRequest{Table: "blob", Key: []*pb.Value{vI(7)}, Set: []*pb.ColumnValue{{Column: "v", Value: big}}, TxId: txID})
		return err
	})
	got, err := n.db.Get(c, &pb.GetRequest{Table: "blob", Key: []*pb.Value{vI(7)}})
	if err != nil || string(got.GetRow().GetValues()[1].GetBytes()) != "old" {
		t.Fatalf("the row the rolled-back transaction rewrote: %v, %v", got.GetRow(), err)
	}
	grow("scans", 40, 70, func(txID uint64) error { // 1 MiB of 16-byte records of rows seen, 1000 a scan
		st, err := n.db.Scan(c, &pb.ScanRequest{Table: "blob", TxId: txID})
		for err == nil {
			_, err = st.Recv()
		}
		if err == io.EOF {
			return nil
		}
		return err
	})
	if st, err := n.admin.Status(c, &pb.StatusRequest{}); err != nil || st.GetOpenTransactions() != 0 {
		t.Fatalf("open transactions after both were rolled back: %d, %v", st.GetOpenTransactions(), err)
	}
}

func TestScanPaging(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.MaxScanRows = 50 })
	n.withAccounts(230)
	c := ctx(t)
	if _, err := n.srv.DB().CreateIndex(context.Background(), "acct", mem.IndexDef{Name: "by_name_ordered", Columns: []string{"name"}, Unique: true, Kind: mem.Ordered}); err != nil {
		t.Fatal(err)
	}
	for _, reverse := range []bool{false, true} {
		for _, page := range []uint32{1, 7, 50} {
			rows := n.scanAll("acct", page, reverse)
			if len(rows) != 230 {
				t.Fatalf("page %d reverse %v: %d rows", page, reverse, len(rows))
			}
			for i, r := range rows {
				want := int64(i + 1)
				if reverse {
					want = int64(230 - i)
				}
				if got := r.GetValues()[0].GetInt64(); got != want {
					t.Fatalf("page %d reverse %v: row %d has id %d, want %d", page, reverse, i, got, want)
				}
			}
		}
	}
	// A range with a prefix and bounds on the non-unique region index.
	st, err := n.db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "by_region", Prefix: key(vS("r1")), Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.GetRows()) != 50 || !m.GetMore() || len(m.GetResumeKey()) != 0 {
		t.Fatalf("region scan: %d rows, more %v, resume key %v", len(m.GetRows()), m.GetMore(), m.GetResumeKey())
	}
	// Paging a unique secondary index inside bounds, names from n100 to
	// n199 as strings order them, forward and backward.
	for _, reverse := range []bool{false, true} {
		var got []string
		for _, r := range n.scanPages(&pb.ScanRequest{Table: "acct", Index: "by_name_ordered", Lower: key(vS("n100")), Upper: key(vS("n199")),
			UpperInclusive: true, Reverse: reverse, Limit: 7}) {
			got = append(got, r.GetValues()[1].GetString_())
		}
		want := 0
		for i := 1; i <= 230; i++ {
			if name := fmt.Sprintf("n%d", i); name >= "n100" && name <= "n199" {
				want++ // n100-n199, and n11-n19 between them
			}
		}
		if len(got) != want {
			t.Fatalf("reverse %v: %d names in [n100, n199], want %d: %v", reverse, len(got), want, got)
		}
		for i := 1; i < len(got); i++ {
			if (got[i] <= got[i-1]) != reverse {
				t.Fatalf("reverse %v: %q after %q", reverse, got[i], got[i-1])
			}
		}
	}
	// A resume key outside the scan's range is refused, not obeyed.
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "by_name_ordered", Lower: key(vS("n100")), Upper: key(vS("n199")), After: key(vS("n2"))}))
	wantCode(t, err, codes.InvalidArgument, "outside")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Lower: key(vI(10)), After: key(vI(3))}))
	wantCode(t, err, codes.InvalidArgument, "outside")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 51}))
	wantCode(t, err, codes.ResourceExhausted, "max_scan_rows (50)")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "by_region", After: key(vS("r1"))}))
	wantCode(t, err, codes.InvalidArgument, "not unique")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "by_name", Lower: key(vS("n1"))}))
	wantCode(t, err, codes.InvalidArgument, "hash index")
}

// TestScanPagingIndexRecreated: a unique index dropped and created again
// over another column between a Scan's checks of its request and its
// transaction is paged by keys of the index the scan read. The resume key
// was made of the columns of the index as the checks found it (name),
// and the next page, by the index over bal, failed on its type.
func TestScanPagingIndexRecreated(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(0)
	c := ctx(t)
	const rows = 9
	for id := int64(1); id <= rows; id++ { // bal falls as id, and name, rise
		if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1000-id)}); err != nil {
			t.Fatal(err)
		}
	}
	create := func(col string) {
		t.Helper()
		if _, err := n.db.CreateIndex(c, &pb.CreateIndexRequest{Table: "acct", Index: &pb.Index{Name: "u", Columns: []string{col}, Unique: true, Kind: pb.IndexKind_INDEX_KIND_ORDERED}}); err != nil {
			t.Fatal(err)
		}
	}
	create("name")
	recreated := false
	testHookScan = func() {
		if recreated {
			return
		}
		recreated = true
		if _, err := n.db.DropIndex(c, &pb.DropIndexRequest{Table: "acct", Index: "u"}); err != nil {
			t.Error(err)
		}
		create("bal")
	}
	t.Cleanup(func() { testHookScan = nil })
	var got []int64
	for _, r := range n.scanPages(&pb.ScanRequest{Table: "acct", Index: "u", Limit: 2}) {
		got = append(got, r.GetValues()[0].GetInt64())
	}
	want := []int64{9, 8, 7, 6, 5, 4, 3, 2, 1} // by bal
	if !slices.Equal(got, want) {
		t.Fatalf("pages of u, created again over bal during the first: ids %v, want %v", got, want)
	}
}

// TestScanPagingTableRecreated: a table dropped and created again under
// its name while a client pages through it, between a page's checks of
// its request and its transaction, is not read past the old table's key
// as though it went on: the page that passes the resume key with the
// table id its previous page answered (after_table_id) fails with
// FAILED_PRECONDITION and the TABLE_RECREATED detail, and changes
// nothing. Before, it went on in the new table, even one over other
// columns, whose rows the client took for the old table's. A client that
// passes no table id (older than it) is read as before: the table as it
// now is, past the key if the key fits its primary key, and
// INVALID_ARGUMENT saying why if it does not. The page read the table
// the checks had found, by then dropped, and answered NOT_FOUND, though
// the table was there.
func TestScanPagingTableRecreated(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(6) // balance 100
	c := ctx(t)
	recreate := func(def *pb.Table) {
		t.Helper()
		if _, err := n.db.DropTable(c, &pb.DropTableRequest{Table: "acct"}); err != nil {
			t.Error(err)
		}
		if _, err := n.db.CreateTable(c, &pb.CreateTableRequest{Table: def}); err != nil {
			t.Error(err)
		}
		for id := int64(1); id <= 6; id++ {
			if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 200)}); err != nil {
				t.Error(err)
			}
		}
	}
	calls := 0
	testHookScan = func() {
		if calls++; calls == 2 {
			recreate(accountsTable())
		}
	}
	t.Cleanup(func() { testHookScan = nil })
	first, err := n.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	page, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(page.GetRows()) != 2 || !page.GetMore() || page.GetResumeTableId() == 0 {
		t.Fatalf("first page: %d rows, more %v, resume_table_id %d", len(page.GetRows()), page.GetMore(), page.GetResumeTableId())
	}
	next := &pb.ScanRequest{Table: "acct", Limit: 2, After: page.GetResumeKey(), AfterTableId: page.GetResumeTableId()}
	_, err = recvAll(n.db.Scan(c, next))
	wantCode(t, err, codes.FailedPrecondition, `"acct"`, "dropped and created again", "start the scan anew")
	if !hasReason(err, pb.ReasonTableRecreated) {
		t.Fatalf("%v: no %s detail", err, pb.ReasonTableRecreated)
	}
	if r, ok := n.get(1); !ok || balance(r) != 200 {
		t.Fatalf("account 1 after the refused page: %v %v", r, ok)
	}
	// The id of the table as it now is pages it.
	rows, err := recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2}))
	if err != nil || len(rows) != 2 {
		t.Fatalf("a new scan: %d rows, %v", len(rows), err)
	}
	// Without a table id the key is read past in the table as it is.
	old := &pb.ScanRequest{Table: "acct", Limit: 10, After: page.GetResumeKey()}
	rows, err = recvAll(n.db.Scan(c, old))
	if err != nil || len(rows) != 4 || balance(rows[0]) != 200 {
		t.Fatalf("a page without after_table_id: %d rows, %v", len(rows), err)
	}
	// Over other key columns: with the table id the table is what the
	// answer names; without it, the key that does not fit.
	byName := accountsTable()
	byName.PrimaryKey = []string{"name"}
	recreate(byName)
	_, err = recvAll(n.db.Scan(c, next))
	wantCode(t, err, codes.FailedPrecondition, "dropped and created again")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2, After: key(vI(2))}))
	wantCode(t, err, codes.InvalidArgument, "after", `"name"`, "created again")
	_, err = recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 2, After: key(vS("n2"), vI(2))}))
	wantCode(t, err, codes.InvalidArgument, "after has 2 values", "created again")
}

// recvAll reads a scan stream to its end.
func recvAll(st grpc.ServerStreamingClient[pb.ScanResponse], err error) ([]*pb.Row, error) {
	if err != nil {
		return nil, err
	}
	var rows []*pb.Row
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows = append(rows, m.GetRows()...)
	}
}

func TestSessionPipelining(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(10)
	s, err := n.db.Session(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// Send everything before reading any reply.
	const msgs = 200
	for i := 0; i < msgs; i++ {
		var reqs []*pb.Request
		for j := 0; j < 5; j++ {
			id := uint64(i*5 + j)
			var r *pb.Request
			switch j {
			case 0, 1, 2:
				r = &pb.Request{Id: id, Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "acct", Key: key(vI(int64(id%10 + 1)))}}}
			case 3:
				r = &pb.Request{Id: id, Op: &pb.Request_Update{Update: &pb.UpdateRequest{Table: "acct", Key: key(vI(int64(i%10 + 1))), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(int64(i))}}}}}
			case 4:
				r = &pb.Request{Id: id, Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "nope", Key: key(vI(1))}}}
			}
			reqs = append(reqs, r)
		}
		if err := s.Send(&pb.SessionRequest{Requests: reqs}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	next := uint64(0)
	var lastLSN uint64
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.GetReplies() {
			if r.GetId() != next {
				t.Fatalf("reply %d came where %d was due", r.GetId(), next)
			}
			switch next % 5 {
			case 0, 1, 2:
				if r.GetCode() != 0 || !r.GetGet().GetFound() {
					t.Fatalf("get reply %d: %v", next, r)
				}
			case 3:
				if r.GetCode() != 0 || r.GetUpdate().GetLsn() <= lastLSN {
					t.Fatalf("update reply %d: %v (last LSN %d)", next, r, lastLSN)
				}
				lastLSN = r.GetUpdate().GetLsn()
			case 4:
				if codes.Code(r.GetCode()) != codes.NotFound || !strings.Contains(r.GetMessage(), `"nope"`) {
					t.Fatalf("bad-table reply %d: %v", next, r)
				}
			}
			next++
		}
	}
	if next != msgs*5 {
		t.Fatalf("%d replies, want %d", next, msgs*5)
	}
}

// TestSessionRollsBackOpenTransactions: a transaction begun on a session
// and still open when the session ends is rolled back, its writes gone.
func TestSessionRollsBackOpenTransactions(t *testing.T) {
	n := startNode(t, nil)
	n.withAccounts(1)
	c, cancel := context.WithCancel(ctx(t))
	s, err := n.db.Session(c)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(r *pb.Request) *pb.Reply {
		t.Helper()
		if err := s.Send(&pb.SessionRequest{Requests: []*pb.Request{r}}); err != nil {
			t.Fatal(err)
		}
		m, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return m.GetReplies()[0]
	}
	b := exchange(&pb.Request{Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}})
	id := b.GetBegin().GetTxId()
	if w := exchange(&pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(2, 2), TxId: id}}}); w.GetCode() != 0 {
		t.Fatal(w)
	}
	// A malformed Commit leaves the transaction open, and the session
	// still rolls it back at its end (it used to forget it).
	bad := &pb.CommitRequest{TxId: id, Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(3, 3), TxId: id}}}}}
	if w := exchange(&pb.Request{Op: &pb.Request_Commit{Commit: bad}}); codes.Code(w.GetCode()) != codes.InvalidArgument || n.srv.txs.lookup(id) == nil {
		t.Fatalf("a malformed Commit: %v; the transaction open: %v", w, n.srv.txs.lookup(id) != nil)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for n.srv.txs.open() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session's transaction outlived the session")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, found := n.get(2); found {
		t.Fatal("the abandoned transaction's insert is visible")
	}
}

// TestSessionForgetsEndedTransactions: a session keeps the ids of the
// transactions it began, to roll back those still open when it ends; ones
// that ended another way (here a unary Rollback) are dropped as the set
// grows, and the open ones kept. It used to keep every id until the
// stream ended: a long session's memory grew without bound.
func TestSessionForgetsEndedTransactions(t *testing.T) {
	_, s := memFSService(t, vfs.NewMemFS())
	owned := newSessionTxs()
	begin := func() uint64 {
		t.Helper()
		r := s.handle(ctx(t), &pb.Request{Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}}, owned)
		if r.GetCode() != 0 {
			t.Fatal(r.GetMessage())
		}
		return r.GetBegin().GetTxId()
	}
	open := begin()
	for range 1000 {
		if _, err := s.Rollback(ctx(t), &pb.RollbackRequest{TxId: begin()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := owned.ids[open]; !ok || len(owned.ids) > 2*minSessionPrune {
		t.Fatalf("after 1000 transactions ended outside the session, it tracks %d ids (the open one: %v)", len(owned.ids), ok)
	}
}

// TestConcurrentTransfers moves money between accounts from many clients
// at once, in interactive transactions retried on ABORTED, while readers
// check the total in single consistent scans.
func TestConcurrentTransfers(t *testing.T) {
	n := startNode(t, nil)
	const accounts, workers, transfers = 10, 8, 60
	n.withAccounts(accounts)
	c := ctx(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < transfers; i++ {
				from, to := int64((w+i)%accounts+1), int64((w*7+i*3+1)%accounts+1)
				if from == to {
					continue
				}
				if err := transfer(c, n.db, from, to, 1); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var rg sync.WaitGroup
	rg.Add(1)
	go func() {
		defer rg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rows, err := recvAll(n.db.Scan(c, &pb.ScanRequest{Table: "acct"}))
			if err != nil {
				errs <- err
				return
			}
			sum := int64(0)
			for _, r := range rows {
				sum += balance(r)
			}
			if sum != accounts*100 {
				errs <- fmt.Errorf("a scan saw a total of %d, want %d", sum, accounts*100)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// transfer moves amount between two accounts in an interactive
// transaction, retrying it while it aborts.
func transfer(c context.Context, db pb.DatabaseServiceClient, from, to, amount int64) error {
	for {
		err := tryTransfer(c, db, from, to, amount)
		if status.Code(err) != codes.Aborted {
			return err
		}
	}
}

func tryTransfer(c context.Context, db pb.DatabaseServiceClient, from, to, amount int64) error {
	b, err := db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		return err
	}
	id := b.GetTxId()
	for _, step := range []struct{ id, delta int64 }{{from, -amount}, {to, amount}} {
		g, err := db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(step.id)), TxId: id})
		if err != nil {
			return err
		}
		set := []*pb.ColumnValue{{Column: "bal", Value: vI(balance(g.GetRow()) + step.delta)}}
		if _, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(step.id)), Set: set, TxId: id}); err != nil {
			return err
		}
	}
	_, err = db.Commit(c, &pb.CommitRequest{TxId: id})
	return err
}

func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, func(c *conf.Config) { c.DataDir = dir })
	n.withAccounts(1)
	c := ctx(t)
	b, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(2, 2), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	s, err := n.db.Session(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&pb.SessionRequest{Requests: []*pb.Request{{Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "acct", Key: key(vI(1))}}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || m.GetReplies()[0].GetCode() != 0 {
		t.Fatalf("session before shutdown: %v %v", m, err)
	}
	// A second node on the same data directory is refused while the first runs.
	cfg := conf.DefaultConfig()
	cfg.DataDir = dir
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second node on a locked data_dir: %v", err)
	}
	srv := n.srv
	n.stop()
	// The open session ended with UNAVAILABLE, the node's refusal (a
	// client may open another elsewhere), the transaction is rolled
	// back, and the data directory is free again.
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable || !hasReason(err, pb.ReasonRefused) {
		t.Fatalf("session after shutdown: %v, want UNAVAILABLE with the REFUSED mark", err)
	}
	if k := srv.txs.open(); k != 0 {
		t.Fatalf("%d transactions open after shutdown", k)
	}
	srv2, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("the data directory stayed locked: %v", err)
	}
	if err := srv2.Shutdown(c); err != nil {
		t.Fatal(err)
	}
}

// TestPanicIsRecovered: a handler that panics fails its call with
// INTERNAL, and the node goes on serving.
func TestPanicIsRecovered(t *testing.T) {
	cfg := conf.DefaultConfig()
	cfg.DataDir = t.TempDir()
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	desc := grpc.ServiceDesc{
		ServiceName: "test.Panics",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Boom", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(pb.StatusRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			boom := func(context.Context, any) (any, error) { panic("boom") }
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Panics/Boom"}, boom)
		}}},
	}
	srv.grpc.RegisterService(&desc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := ctx(t)
	err = conn.Invoke(c, "/test.Panics/Boom", &pb.StatusRequest{}, &pb.StatusResponse{})
	wantCode(t, err, codes.Internal, "/test.Panics/Boom")
	if _, err := pb.NewAdminServiceClient(conn).Status(c, &pb.StatusRequest{}); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(c); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
