package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// testHookRepair, when set by a test, runs between RepairRows's checks
// of its keys and its transaction.
var testHookRepair func()

// RepairRows logs the primary's rows of the keys again, in one
// transaction, for its standbys to apply (see the proto). A standby
// refuses the commit as it refuses any write. The table is found by its
// name in each attempt of the transaction, whose commit checks the
// lookup (mem.Tx.Table), as the other writes find theirs: a table
// dropped and created again since the keys were checked is the one
// relogged, not the old one, gone, refused as NOT_FOUND though the name
// holds a table.
func (a *adminService) RepairRows(ctx context.Context, req *pb.RepairRowsRequest) (*pb.RepairRowsResponse, error) {
	d := a.s.dbs
	keys, err := d.repairKeys(req)
	if err != nil {
		return nil, toStatus(err)
	}
	if testHookRepair != nil {
		testHookRepair()
	}
	resp := &pb.RepairRowsResponse{}
	lsn, degraded, err := d.run(ctx, 0, req, func(tx *mem.Tx) error {
		resp.RowsPut, resp.RowsDeleted = 0, 0 // a retry counts again
		t, err := tx.Table(req.GetTable())
		if err != nil {
			return err
		}
		for i, k := range keys {
			found, err := tx.Relog(t, k)
			if err != nil {
				return fmt.Errorf("key %d: %w", i, err)
			}
			if found {
				resp.RowsPut++
			} else {
				resp.RowsDeleted++
			}
		}
		return nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Lsn, resp.Degraded = lsn, degraded
	a.s.log.Info("logged rows again for standbys to repair", "table", req.GetTable(), "rows-put", resp.RowsPut, "rows-deleted", resp.RowsDeleted, "lsn", lsn)
	return resp, nil
}

// repairKeys decodes a RepairRows request's keys, each a Row of primary
// key values as TableDigest lists them; whether they fit the table's key
// is found in the transaction, which finds the table.
func (s *dbService) repairKeys(req *pb.RepairRowsRequest) ([][]mem.Value, error) {
	n := len(req.GetKeys())
	if n == 0 || n > pb.MaxRepairKeys {
		code := codes.InvalidArgument
		if n > 0 {
			code = codes.ResourceExhausted // a limit
		}
		return nil, errorf(code, "table %q: %d keys; RepairRows takes from 1 to %d", req.GetTable(), n, pb.MaxRepairKeys)
	}
	table := req.GetTable()
	seen := make(map[string]int, n)
	keys := make([][]mem.Value, n)
	for i, k := range req.GetKeys() {
		var row pb.Row
		if err := proto.Unmarshal(k, &row); err != nil {
			return nil, errorf(codes.InvalidArgument, "table %q: key %d is not a Row of primary key values as TableDigest lists them: %v", table, i, err)
		}
		var err error
		if keys[i], err = s.cv.values(nil, row.GetValues(), "key"); err != nil {
			return nil, fmt.Errorf("table %q key %d: %w", table, i, err)
		}
		// The same values, however encoded, are the same key; %#v tells
		// every value of every type apart.
		same := fmt.Sprintf("%#v", keys[i])
		if j, ok := seen[same]; ok {
			return nil, errorf(codes.InvalidArgument, "table %q: key %d repeats key %d", table, i, j)
		}
		seen[same] = i
	}
	return keys, nil
}
