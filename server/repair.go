package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// RepairRows logs the primary's rows of the keys again, in one
// transaction, for its standbys to apply (see the proto). A standby
// refuses the commit as it refuses any write.
func (a *adminService) RepairRows(ctx context.Context, req *pb.RepairRowsRequest) (*pb.RepairRowsResponse, error) {
	d := a.s.dbs
	t, keys, err := d.repairKeys(req)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.RepairRowsResponse{}
	lsn, degraded, err := d.run(ctx, 0, req, func(tx *mem.Tx) error {
		resp.RowsPut, resp.RowsDeleted = 0, 0 // a retry counts again
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
	a.s.log.Info("logged rows again for standbys to repair", "table", t.Name(), "rows-put", resp.RowsPut, "rows-deleted", resp.RowsDeleted, "lsn", lsn)
	return resp, nil
}

// repairKeys resolves a RepairRows request's table and decodes its keys,
// each a Row of primary key values as TableDigest lists them.
func (s *dbService) repairKeys(req *pb.RepairRowsRequest) (*mem.Table, [][]mem.Value, error) {
	n := len(req.GetKeys())
	if n == 0 || n > pb.MaxRepairKeys {
		code := codes.InvalidArgument
		if n > 0 {
			code = codes.ResourceExhausted // a limit
		}
		return nil, nil, errorf(code, "table %q: %d keys; RepairRows takes from 1 to %d", req.GetTable(), n, pb.MaxRepairKeys)
	}
	t, err := s.db.Table(req.GetTable())
	if err != nil {
		return nil, nil, err
	}
	seen := make(map[string]int, n)
	keys := make([][]mem.Value, n)
	for i, k := range req.GetKeys() {
		var row pb.Row
		if err := proto.Unmarshal(k, &row); err != nil {
			return nil, nil, errorf(codes.InvalidArgument, "table %q: key %d is not a Row of primary key values as TableDigest lists them: %v", t.Name(), i, err)
		}
		if keys[i], err = s.cv.values(nil, row.GetValues(), "key"); err != nil {
			return nil, nil, fmt.Errorf("table %q key %d: %w", t.Name(), i, err)
		}
		// The same values, however encoded, are the same key; %#v tells
		// every value of every type apart.
		same := fmt.Sprintf("%#v", keys[i])
		if j, ok := seen[same]; ok {
			return nil, nil, errorf(codes.InvalidArgument, "table %q: key %d repeats key %d", t.Name(), i, j)
		}
		seen[same] = i
	}
	return t, keys, nil
}
