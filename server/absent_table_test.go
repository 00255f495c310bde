package server

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestTxTableAbsentThenCreated: an interactive transaction that was told
// a table does not exist (NOT_FOUND, by a scan, a get, an insert or a
// batch its Commit refused) and then reads the rows of the table created
// under that name since saw the table absent and then present, which no
// serial order gives: its commit answers ABORTED.
func TestTxTableAbsentThenCreated(t *testing.T) {
	n := startNode(t, nil)
	c := ctx(t)
	absent := map[string]func(id uint64, table string) error{
		"scan": func(id uint64, table string) error {
			_, err := recvAll(n.db.Scan(c, &pb.ScanRequest{Table: table, TxId: id}))
			return err
		},
		"get": func(id uint64, table string) error {
			_, err := n.db.Get(c, &pb.GetRequest{Table: table, Key: key(vI(1)), TxId: id})
			return err
		},
		"insert": func(id uint64, table string) error {
			_, err := n.db.Insert(c, &pb.InsertRequest{Table: table, Row: acctRow(9, 9), TxId: id})
			return err
		},
		"batch": func(id uint64, table string) error {
			_, err := n.db.Commit(c, &pb.CommitRequest{TxId: id, Operations: []*pb.Operation{
				{Op: &pb.Operation_Get{Get: &pb.GetRequest{Table: table, Key: key(vI(1))}}},
			}})
			return err
		},
	}
	for how, find := range absent {
		t.Run(how, func(t *testing.T) {
			b, err := n.db.Begin(c, &pb.BeginRequest{})
			if err != nil {
				t.Fatal(err)
			}
			id := b.GetTxId()
			table := "late_" + how
			if err := find(id, table); status.Code(err) != codes.NotFound {
				t.Fatalf("%s of a missing table: %v, want NOT_FOUND", how, err)
			}
			def := accountsTable()
			def.Name = table
			if _, err := n.db.CreateTable(c, &pb.CreateTableRequest{Table: def}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.db.Insert(c, &pb.InsertRequest{Table: table, Row: acctRow(1, 1)}); err != nil {
				t.Fatal(err)
			}
			rows, err := recvAll(n.db.Scan(c, &pb.ScanRequest{Table: table, TxId: id}))
			if err != nil || len(rows) != 1 {
				t.Fatalf("scan of the table created since: %d rows, %v", len(rows), err)
			}
			if _, err := n.db.Commit(c, &pb.CommitRequest{TxId: id}); status.Code(err) != codes.Aborted {
				t.Fatalf("commit of a transaction that found table %s absent, then with rows: %v, want ABORTED", table, err)
			}
		})
	}
}
