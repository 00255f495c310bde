package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Bad input, for every RPC: each malformed request gets the code SPEC
// section 11 names and a message naming what is wrong, and changes nothing.

// fingerprint is everything a client can see of the database.
func (n *node) fingerprint() string {
	n.t.Helper()
	c := ctx(n.t)
	st, err := n.admin.Status(c, &pb.StatusRequest{})
	if err != nil {
		n.t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lsn %d open %d\n", st.GetLastLsn(), st.GetOpenTransactions())
	l, err := n.db.ListTables(c, &pb.ListTablesRequest{})
	if err != nil {
		n.t.Fatal(err)
	}
	for _, t := range l.GetTables() {
		d, err := n.db.DescribeTable(c, &pb.DescribeTableRequest{Table: t.GetName()})
		if err != nil {
			n.t.Fatal(err)
		}
		fmt.Fprintf(&b, "%v\n", d.GetTable())
		for _, r := range n.scanAll(t.GetName(), 0, false) {
			fmt.Fprintf(&b, "%v\n", r)
		}
	}
	return b.String()
}

func TestBadInput(t *testing.T) {
	n := startNode(t, func(c *conf.Config) { c.MaxScanRows = 100; c.MaxValueBytes = 40 })
	n.withAccounts(3)
	c := ctx(t)
	open, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tx := open.GetTxId()
	setBal := func(v *pb.Value) []*pb.ColumnValue { return []*pb.ColumnValue{{Column: "bal", Value: v}} }
	noKind := &pb.Value{}
	farFuture := &pb.Value{Kind: &pb.Value_Timestamp{Timestamp: timestamppb.New(maxTimestamp.AddDate(1, 0, 0))}}
	str := func(n int) *pb.Value { return vS(strings.Repeat("x", n)) }
	// createT2 creates accountsTable renamed t2, as edit changes it.
	createT2 := func(edit func(tb *pb.Table)) func(context.Context, pb.DatabaseServiceClient) error {
		return func(c context.Context, db pb.DatabaseServiceClient) error {
			tb := accountsTable()
			tb.Name = "t2"
			edit(tb)
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tb})
			return err
		}
	}
	// int64Columns appends n int64 columns c0, c1, ... to tb.
	int64Columns := func(tb *pb.Table, n int) {
		for i := range n {
			tb.Columns = append(tb.Columns, &pb.Column{Name: fmt.Sprintf("c%d", i), Type: pb.ColumnType_COLUMN_TYPE_INT64})
		}
	}
	cases := []struct {
		name  string
		call  func(context.Context, pb.DatabaseServiceClient) error
		code  codes.Code
		frags []string
	}{
		{"create nil table", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.CreateTable(c, &pb.CreateTableRequest{})
			return err
		}, codes.InvalidArgument, []string{"missing"}},
		{"create existing", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: accountsTable()})
			return err
		}, codes.AlreadyExists, []string{`"acct"`}},
		{"create unknown type", func(c context.Context, db pb.DatabaseServiceClient) error {
			tb := accountsTable()
			tb.Name, tb.Columns[3].Type = "t2", 99
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tb})
			return err
		}, codes.InvalidArgument, []string{`"t2"`, `"bal"`, "type"}},
		{"create string without length", func(c context.Context, db pb.DatabaseServiceClient) error {
			tb := accountsTable()
			tb.Name, tb.Columns[1].MaxLength = "t2", 0
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tb})
			return err
		}, codes.InvalidArgument, []string{`"t2"`, `"name"`}},
		{"create key on unknown column", func(c context.Context, db pb.DatabaseServiceClient) error {
			tb := accountsTable()
			tb.Name, tb.PrimaryKey = "t2", []string{"nope"}
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tb})
			return err
		}, codes.InvalidArgument, []string{`"t2"`, `"nope"`}},
		{"create unknown index kind", func(c context.Context, db pb.DatabaseServiceClient) error {
			tb := accountsTable()
			tb.Name, tb.Indexes[0].Kind = "t2", 9
			_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tb})
			return err
		}, codes.InvalidArgument, []string{`"t2"`, `"by_name"`, "kind"}},
		// The engine's own limits are RESOURCE_EXHAUSTED (SPEC 11); a
		// definition that breaks a rule of its own is INVALID_ARGUMENT.
		{"create without columns", createT2(func(tb *pb.Table) { tb.Columns = nil }), codes.InvalidArgument, []string{`"t2"`, "0 columns"}},
		{"create past the most columns", createT2(func(tb *pb.Table) { int64Columns(tb, mem.MaxColumns) }),
			codes.ResourceExhausted, []string{`"t2"`, fmt.Sprint(mem.MaxColumns + 5), fmt.Sprint(mem.MaxColumns)}},
		{"create a primary key past the most key columns", createT2(func(tb *pb.Table) {
			int64Columns(tb, mem.MaxKeyColumns+1)
			tb.PrimaryKey = nil
			for _, c := range tb.Columns[5:] {
				tb.PrimaryKey = append(tb.PrimaryKey, c.Name)
			}
		}), codes.ResourceExhausted, []string{`"t2"`, fmt.Sprint(mem.MaxKeyColumns + 1), fmt.Sprint(mem.MaxKeyColumns)}},
		{"create a column longer than a row", createT2(func(tb *pb.Table) { tb.Columns[4].MaxLength = mem.MaxRowSize + 1 }),
			codes.ResourceExhausted, []string{`"t2"`, `"note"`, fmt.Sprint(mem.MaxRowSize)}},
		{"create a row that may pass the row size", createT2(func(tb *pb.Table) { tb.Columns[4].MaxLength = mem.MaxRowSize - 10 }),
			codes.ResourceExhausted, []string{`"t2"`, fmt.Sprint(mem.MaxRowSize)}},
		{"create with a name too long", createT2(func(tb *pb.Table) { tb.Name = strings.Repeat("t", mem.MaxNameLen+1) }),
			codes.ResourceExhausted, []string{"table name", fmt.Sprint(mem.MaxNameLen)}},
		{"create with a column name too long", createT2(func(tb *pb.Table) { tb.Columns[4].Name = strings.Repeat("c", mem.MaxNameLen+1) }),
			codes.ResourceExhausted, []string{`"t2"`, "column name", fmt.Sprint(mem.MaxNameLen)}},
		{"create with a bad column name", createT2(func(tb *pb.Table) { tb.Columns[4].Name = "no-te" }), codes.InvalidArgument, []string{`"t2"`, `"no-te"`}},
		{"drop unknown", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.DropTable(c, &pb.DropTableRequest{Table: "nope"})
			return err
		}, codes.NotFound, []string{`"nope"`}},
		{"describe unknown", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.DescribeTable(c, &pb.DescribeTableRequest{Table: "nope"})
			return err
		}, codes.NotFound, []string{`"nope"`}},
		{"get unknown table", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "nope", Key: key(vI(1))})
			return err
		}, codes.NotFound, []string{`"nope"`}},
		{"get unknown index", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct", Index: "nope", Key: key(vI(1))})
			return err
		}, codes.NotFound, []string{`"acct"`, `"nope"`}},
		{"get wrong key type", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vS("1"))})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"id"`}},
		{"get value without kind", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct", Key: key(noKind)})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key value 0", "no kind"}},
		{"get short key", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct"})
			return err
		}, codes.InvalidArgument, []string{`"acct"`}},
		{"get by non-unique index", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct", Index: "by_region", Key: key(vS("r1"))})
			return err
		}, codes.InvalidArgument, []string{`"by_region"`}},
		{"get unknown transaction", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1)), TxId: tx + 1})
			return err
		}, codes.NotFound, []string{"not open"}},
		{"insert nil row", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct"})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "row"}},
		{"insert short row", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9))})
			return err
		}, codes.InvalidArgument, []string{`"acct"`}},
		{"insert null into not null", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n9"), vS("r"), vNull(), vNull())})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"bal"`, "NULL"}},
		{"insert too long for the column", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), str(17), vS("r"), vI(1), vNull())})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"name"`, "16"}},
		{"insert past max_value_bytes", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n9"), vS("r"), vI(1), &pb.Value{Kind: &pb.Value_Bytes{Bytes: make([]byte, 41)}})})
			return err
		}, codes.ResourceExhausted, []string{`"acct"`, "max_value_bytes (40)"}},
		{"insert string not UTF-8", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n\xff"), vS("r"), vI(1), vNull())})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "row value 1", "UTF-8"}},
		{"insert timestamp out of range", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n9"), vS("r"), farFuture, vNull())})
			return err
		}, codes.InvalidArgument, []string{"timestamp", "range"}},
		{"insert duplicate key", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1)})
			return err
		}, codes.AlreadyExists, []string{`"acct"`}},
		{"insert duplicate unique name", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n1"), vS("r"), vI(1), vNull())})
			return err
		}, codes.AlreadyExists, []string{`"acct"`, `"by_name"`}},
		{"update missing row", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(99)), Set: setBal(vI(1))})
			return err
		}, codes.NotFound, []string{`"acct"`}},
		{"update unknown column", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "nope", Value: vI(1)}}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"nope"`}},
		{"update wrong type", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: setBal(vS("x"))})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"bal"`}},
		{"update primary key", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "id", Value: vI(5)}}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"id"`}},
		{"update value without kind", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: setBal(noKind)})
			return err
		}, codes.InvalidArgument, []string{`"bal"`, "no kind"}},
		{"upsert wrong type", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Upsert(c, &pb.UpsertRequest{Table: "acct", Row: row(vI(1), vI(2), vS("r"), vI(1), vNull())})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"name"`}},
		{"delete missing row", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Delete(c, &pb.DeleteRequest{Table: "acct", Key: key(vI(99))})
			return err
		}, codes.NotFound, []string{`"acct"`}},
		{"delete unknown table", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Delete(c, &pb.DeleteRequest{Table: "nope", Key: key(vI(1))})
			return err
		}, codes.NotFound, []string{`"nope"`}},
		{"scan unknown index", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := recvAll(db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "nope"}))
			return err
		}, codes.NotFound, []string{`"acct"`, `"nope"`}},
		{"scan past max_scan_rows", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := recvAll(db.Scan(c, &pb.ScanRequest{Table: "acct", Limit: 101}))
			return err
		}, codes.ResourceExhausted, []string{`"acct"`, "max_scan_rows (100)"}},
		{"scan wrong prefix type", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := recvAll(db.Scan(c, &pb.ScanRequest{Table: "acct", Index: "by_region", Prefix: key(vI(1))}))
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"region"`}},
		{"scan after of the wrong length", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := recvAll(db.Scan(c, &pb.ScanRequest{Table: "acct", After: key(vI(1), vI(2))}))
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "after"}},
		{"commit op with its own tx_id", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(1)), TxId: tx}}}}})
			return err
		}, codes.InvalidArgument, []string{"operation 0", "tx_id"}},
		{"commit empty op", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(1))}}}, {}}})
			return err
		}, codes.InvalidArgument, []string{"operation 1", "empty"}},
		{"commit condition without expect", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1))}}, Operations: []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "acct", Key: key(vI(1))}}}}})
			return err
		}, codes.InvalidArgument, []string{"condition 0", "expect"}},
		{"commit condition on unknown column", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS, Equals: []*pb.ColumnValue{{Column: "nope", Value: vI(1)}}}}})
			return err
		}, codes.InvalidArgument, []string{"condition 0", `"nope"`}},
		{"commit condition value of the wrong type", func(c context.Context, db pb.DatabaseServiceClient) error {
			// Before, a value no row can hold made the condition fail
			// (committed=false), which a compare-and-set loop retries for ever.
			_, err := db.Commit(c, &pb.CommitRequest{Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS,
				Equals: []*pb.ColumnValue{{Column: "bal", Value: &pb.Value{Kind: &pb.Value_Uint64{Uint64: 100}}}}}}})
			return err
		}, codes.InvalidArgument, []string{"condition 0", `"bal"`}},
		{"commit condition NULL on a NOT NULL column", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS,
				Equals: []*pb.ColumnValue{{Column: "bal", Value: &pb.Value{}}}}}})
			return err
		}, codes.InvalidArgument, []string{"condition 0", `"bal"`}},
		{"commit unknown transaction", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{TxId: tx + 1})
			return err
		}, codes.NotFound, []string{"not open"}},
		{"update setting nothing", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1))})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "no column"}},
		{"update setting a column twice", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(1)}, {Column: "bal", Value: vI(2)}}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, `"bal" twice`}},
		{"rollback without tx_id", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Rollback(c, &pb.RollbackRequest{})
			return err
		}, codes.InvalidArgument, []string{"tx_id"}},
		{"commit condition with an unknown expect", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Commit(c, &pb.CommitRequest{Conditions: []*pb.Condition{{Table: "acct", Key: key(vI(1)), Expect: 7}}})
			return err
		}, codes.InvalidArgument, []string{"condition 0", "expect is 7"}},
		{"rollback unknown transaction", func(c context.Context, db pb.DatabaseServiceClient) error {
			_, err := db.Rollback(c, &pb.RollbackRequest{TxId: tx + 1})
			return err
		}, codes.NotFound, []string{"not open"}},
		{"message past max_message_bytes", func(c context.Context, db pb.DatabaseServiceClient) error {
			big := &pb.Value{Kind: &pb.Value_Bytes{Bytes: make([]byte, 5<<20)}}
			_, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(9), vS("n9"), vS("r"), vI(1), big)})
			return err
		}, codes.ResourceExhausted, []string{"larger than max"}},
		{"repair no keys", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct"})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "0 keys", "from 1 to"}},
		{"repair too many keys", func(c context.Context, _ pb.DatabaseServiceClient) error {
			keys := make([][]byte, pb.MaxRepairKeys+1)
			for i := range keys {
				keys[i] = repairKey(t, vI(int64(i)))
			}
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: keys})
			return err
		}, codes.ResourceExhausted, []string{`"acct"`, fmt.Sprintf("%d keys", pb.MaxRepairKeys+1)}},
		{"repair unknown table", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "nope", Keys: [][]byte{repairKey(t, vI(1))}})
			return err
		}, codes.NotFound, []string{`"nope"`}},
		{"repair malformed key", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1)), {0xff, 0xff}}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 1", "not a Row"}},
		{"repair key of the wrong type", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1)), repairKey(t, vS("2"))}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 1"}},
		{"repair key of the wrong length", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1), vI(2))}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 0", "1 columns, got 2"}},
		{"repair key value without kind", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, noKind)}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 0", "no kind"}},
		{"repair repeated key", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1)), repairKey(t, vI(2)), repairKey(t, vI(1))}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 2 repeats key 0"}},
		{"repair key repeated in another encoding", func(c context.Context, _ pb.DatabaseServiceClient) error {
			other := protowire.AppendVarint(protowire.AppendTag(repairKey(t, vI(1)), 99, protowire.VarintType), 1) // an unknown field
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1)), other}})
			return err
		}, codes.InvalidArgument, []string{`"acct"`, "key 1 repeats key 0"}},
		{"repair bad sync_mode", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1))}, SyncMode: 9})
			return err
		}, codes.InvalidArgument, []string{"sync_mode 9"}},
		{"repair waiting for standbys it has not", func(c context.Context, _ pb.DatabaseServiceClient) error {
			_, err := n.admin.RepairRows(c, &pb.RepairRowsRequest{Table: "acct", Keys: [][]byte{repairKey(t, vI(1))}, SyncMode: pb.SyncMode_SYNC_MODE_APPLIED_ACK})
			return err
		}, codes.FailedPrecondition, []string{"applied-ack", "no peers"}},
		{"session empty request", func(c context.Context, db pb.DatabaseServiceClient) error {
			r, err := sessionReply(c, db, &pb.Request{Id: 7})
			if err != nil {
				return err
			}
			if r.GetId() != 7 {
				return fmt.Errorf("reply id %d", r.GetId())
			}
			return statusOf(r)
		}, codes.InvalidArgument, []string{"empty"}},
	}
	want := n.fingerprint()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(c, n.db)
			wantCode(t, err, tc.code, tc.frags...)
			if got := n.fingerprint(); got != want {
				t.Fatalf("the request changed the database:\n%s\nwant\n%s", got, want)
			}
		})
	}
	// The open transaction survived all of it, and a failed statement in it
	// left it usable.
	if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1), TxId: tx}); err == nil {
		t.Fatal("duplicate insert in a transaction succeeded")
	}
	if _, err := n.db.Commit(c, &pb.CommitRequest{TxId: tx}); err != nil {
		t.Fatal(err)
	}
}

// statusOf turns a Session reply's code and message back into an error.
// sessionReply sends req alone on a new Session and returns its reply.
func sessionReply(c context.Context, db pb.DatabaseServiceClient, req *pb.Request) (*pb.Reply, error) {
	s, err := db.Session(c)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&pb.SessionRequest{Requests: []*pb.Request{req}}); err != nil {
		return nil, err
	}
	m, err := s.Recv()
	if err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	if len(m.GetReplies()) != 1 {
		return nil, fmt.Errorf("%d replies to one request", len(m.GetReplies()))
	}
	return m.GetReplies()[0], nil
}

func statusOf(r *pb.Reply) error {
	if r.GetCode() == 0 {
		return nil
	}
	return status.FromProto(&spb.Status{Code: int32(r.GetCode()), Message: r.GetMessage(), Details: r.GetDetails()}).Err()
}
