package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// scanBatchRows is the most rows one ScanResponse carries; a batch also
// ends when its rows' encoded size passes a quarter of max_message_bytes.
const scanBatchRows = 256

// scanQuery is a checked ScanRequest. What depends on the index's
// definition (whether it is unique, its key columns: a page's after and
// resume key) is left to the scan, which finds it in the schema it reads:
// found here, in the scan's first attempt, it may be that of an index
// dropped and created again over other columns before a later one. So is
// the table, found again by its name in each attempt of the transaction.
type scanQuery struct {
	table string
	spec  mem.ScanSpec
	limit int
	// tableID is the id of the table the scan read, its reply's
	// resume_table_id.
	tableID uint32
}

// testHookScan, when set by a test, runs between a Scan's checks of its
// request and the scan.
var testHookScan func()

// Scan checks its request in its transaction, whose table lookups are
// among what the transaction's commit checks (mem.Tx.Table), and a failed
// check waits as a failed read does (run).
func (s *dbService) Scan(req *pb.ScanRequest, stream grpc.ServerStreamingServer[pb.ScanResponse]) error {
	var q *scanQuery
	var rows []mem.Record
	_, _, err := s.run(stream.Context(), req.GetTxId(), noWait{}, func(tx *mem.Tx) error {
		if q == nil {
			var err error
			if q, err = s.scanQuery(stream.Context(), tx, req); err != nil {
				return err
			}
			if testHookScan != nil {
				testHookScan()
			}
		}
		rows = rows[:0]
		// The table as it is now, not as the checks found it: one dropped
		// and created again since (or since an attempt that conflicted
		// with the drop) is read as it is, as a page after the drop is,
		// rather than answered NOT_FOUND while it is there. A lookup that
		// finds none waits as a failed read (run): the transaction's Seen
		// holds the schema's LSN.
		t, err := tx.Table(q.table)
		if err != nil {
			return err
		}
		if err := s.resumable(t, req.GetAfterTableId()); err != nil {
			return err
		}
		// The index by its name in the table as it is now: one a standby
		// applied the CreateIndex of since the checks (the table, or the
		// index, dropped and created again meanwhile) is waited for as
		// the checks wait, not refused at once.
		if q.spec.IndexName != "" {
			if _, err := index(stream.Context(), t, q.spec.IndexName); err != nil {
				return err
			}
		}
		q.tableID = t.ID()
		return tx.Scan(t, q.spec, func(r mem.Record) bool {
			rows = append(rows, r)
			return len(rows) <= q.limit
		})
	})
	if err != nil {
		if errors.Is(err, mem.ErrNoTable) {
			if err := s.unapplied(req.GetTable(), req.GetAfterTableId()); err != nil {
				return err
			}
		}
		return toStatus(err)
	}
	return s.sendRows(stream, q, rows)
}

func (s *dbService) scanQuery(ctx context.Context, tx *mem.Tx, req *pb.ScanRequest) (*scanQuery, error) {
	t, err := tx.Table(req.GetTable())
	if err != nil {
		return nil, err
	}
	q := &scanQuery{table: t.Name(), limit: int(req.GetLimit())}
	if q.limit == 0 {
		q.limit = s.maxScanRows
	}
	if q.limit > s.maxScanRows {
		return nil, errorf(codes.ResourceExhausted, "table %q: limit %d exceeds max_scan_rows (%d); page with after and resume_key", t.Name(), q.limit, s.maxScanRows)
	}
	ix, err := index(ctx, t, req.GetIndex())
	if err != nil {
		return nil, err
	}
	q.spec = mem.ScanSpec{Index: ix, IndexName: req.GetIndex(), UpperInclusive: req.GetUpperInclusive(), Reverse: req.GetReverse(), Limit: q.limit + 1}
	if q.spec.Prefix, err = s.cv.values(nil, req.GetPrefix(), "prefix"); err != nil {
		return nil, err
	}
	if q.spec.Lower, err = s.cv.values(nil, req.GetLower(), "lower"); err != nil {
		return nil, err
	}
	if q.spec.Upper, err = s.cv.values(nil, req.GetUpper(), "upper"); err != nil {
		return nil, err
	}
	if len(req.GetAfter()) > 0 {
		if q.spec.After, err = s.cv.values(nil, req.GetAfter(), "after"); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// sendRows streams rows in batches; the last message says whether the
// range held more than the limit.
func (s *dbService) sendRows(stream grpc.ServerStreamingServer[pb.ScanResponse], q *scanQuery, rows []mem.Record) error {
	more := len(rows) > q.limit
	if more {
		rows = rows[:q.limit]
	}
	msg := &pb.ScanResponse{}
	size := 0
	for i, r := range rows {
		msg.Rows = append(msg.Rows, pbmem.Row(r))
		size += len(r.Encoded()) + 2*r.NumColumns()
		if i == len(rows)-1 {
			break
		}
		if len(msg.Rows) >= scanBatchRows || size >= s.maxMsgBytes/4 {
			if err := stream.Send(msg); err != nil {
				return err
			}
			msg, size = &pb.ScanResponse{}, 0
		}
	}
	msg.More = more
	if more && len(rows) > 0 {
		// The key in the schema the scan read (mem.Record.Key).
		key, unique, err := rows[len(rows)-1].Key(q.spec.IndexName)
		if err != nil {
			return toStatus(err)
		}
		if unique {
			msg.ResumeKey = make([]*pb.Value, len(key))
			for i, v := range key {
				msg.ResumeKey[i] = pbmem.Value(v)
			}
			msg.ResumeTableId = q.tableID
		}
	}
	return stream.Send(msg)
}

// resumable checks that t, the table named so now, is the table a Scan
// page's resume key came from: id, the request's after_table_id (zero
// checks nothing). Table ids are not used again, so another id means the
// table that had the name was dropped, and the key, read from it, would
// page a table it never was of as though it went on (even one over the
// same key columns, which the key fits).
func (s *dbService) resumable(t *mem.Table, id uint32) error {
	if id == 0 || id == t.ID() {
		return nil
	}
	if err := s.unapplied(t.Name(), id); err != nil {
		return err
	}
	if !s.db.Created(id) {
		return withReason(codes.FailedPrecondition, pb.ReasonTableRecreated, fmt.Sprintf("table %q: the scan's resume key is of a table with id %d, which this node never created (its creation was lost, in a failover or a crash that lost commits), and the table now is id %d; start the scan anew (without after)", t.Name(), id, t.ID()), nil)
	}
	return withReason(codes.FailedPrecondition, pb.ReasonTableRecreated, fmt.Sprintf("table %q was dropped and created again since the scan's previous page: its resume key is of the table with id %d, and the table now is id %d; start the scan anew (without after)", t.Name(), id, t.ID()), nil)
}

// unapplied refuses, on a standby, a Scan page whose resume key is of a
// table (id, after_table_id) whose creation the standby has not applied
// yet: the node that answered the previous page was ahead of it (the
// primary, which dropped and created the table again), and the client
// reads the page from a node that is not, whether the standby holds the
// name's older table or, having applied its drop, none.
func (s *dbService) unapplied(table string, id uint32) error {
	if _, _, standby := s.store.Standby(); !standby || id == 0 || s.db.Created(id) {
		return nil
	}
	return errorf(codes.Unavailable, "table %q: the scan's resume key is of the table created with id %d, whose creation this standby has not applied yet: read the page from the primary, or again once the standby caught up", table, id)
}
