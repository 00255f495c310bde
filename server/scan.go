package server

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// scanBatchRows is the most rows one ScanResponse carries; a batch also
// ends when its rows' encoded size passes a quarter of max_message_bytes.
const scanBatchRows = 256

// scanQuery is a checked ScanRequest.
type scanQuery struct {
	t       *mem.Table
	spec    mem.ScanSpec
	keyCols []int // the scanned index's key columns
	unique  bool
	after   []mem.Value // forward paging: the key of the row to skip
	limit   int
}

func (s *dbService) Scan(req *pb.ScanRequest, stream grpc.ServerStreamingServer[pb.ScanResponse]) error {
	q, err := s.scanQuery(stream.Context(), req)
	if err != nil {
		return toStatus(s.catalogRead(stream.Context(), err))
	}
	var rows []mem.Record
	_, _, err = s.run(stream.Context(), req.GetTxId(), noWait{}, func(tx *mem.Tx) error {
		rows = rows[:0]
		return tx.Scan(q.t, q.spec, func(r mem.Record) bool {
			if len(rows) == 0 && q.after != nil && q.keyEquals(r, q.after) {
				return true
			}
			rows = append(rows, r)
			return len(rows) <= q.limit
		})
	})
	if err != nil {
		return toStatus(err)
	}
	return s.sendRows(stream, q, rows)
}

func (s *dbService) scanQuery(ctx context.Context, req *pb.ScanRequest) (*scanQuery, error) {
	t, err := s.db.Table(req.GetTable())
	if err != nil {
		return nil, err
	}
	q := &scanQuery{t: t, limit: int(req.GetLimit())}
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
	if q.keyCols, q.unique, err = indexColumns(t, ix, req.GetIndex()); err != nil {
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
		if err := s.resume(q, req); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// resume narrows a scan to the rows past req.After, a key the previous page
// ended on. Keys of the primary and unique indexes name one row each, so a
// forward scan starts at the key and skips its row, and a reverse one ends
// just before it.
func (s *dbService) resume(q *scanQuery, req *pb.ScanRequest) error {
	name := q.t.Name()
	if !q.unique {
		return errorf(codes.InvalidArgument, "table %q: after needs the primary key or a unique index; index %q is not unique, so narrow the range instead", name, req.GetIndex())
	}
	after, err := s.cv.values(nil, req.GetAfter(), "after")
	if err != nil {
		return err
	}
	p := len(q.spec.Prefix)
	if len(after) != len(q.keyCols) {
		return errorf(codes.InvalidArgument, "table %q: after has %d values; the index key has %d", name, len(after), len(q.keyCols))
	}
	in, err := q.t.InRange(q.spec, after)
	if err != nil {
		return err
	}
	if !in {
		return errorf(codes.InvalidArgument, "table %q: after is outside the scan's prefix and bounds; pass the resume_key of the same scan", name)
	}
	// after lies in the range, so it is a tighter bound than the one it
	// replaces.
	if q.spec.Reverse {
		q.spec.Upper, q.spec.UpperInclusive = after[p:], false
		return nil
	}
	q.spec.Lower = after[p:]
	q.after = after
	q.spec.Limit++
	return nil
}

// indexColumns returns the key columns of index ix, and whether its keys
// are unique.
func indexColumns(t *mem.Table, ix int, name string) ([]int, bool, error) {
	def := t.Def()
	names, unique := def.PrimaryKey, true
	if ix != 0 {
		i := slices.IndexFunc(def.Indexes, func(d mem.IndexDef) bool { return d.Name == name })
		if i < 0 {
			return nil, false, errorf(codes.NotFound, "table %q has no index %q", t.Name(), name)
		}
		names, unique = def.Indexes[i].Columns, def.Indexes[i].Unique
	}
	cols := make([]int, len(names))
	for i, n := range names {
		c, err := t.Column(n)
		if err != nil {
			return nil, false, err
		}
		cols[i] = c
	}
	return cols, unique, nil
}

func (q *scanQuery) keyEquals(r mem.Record, key []mem.Value) bool {
	for i, c := range q.keyCols {
		if !r.Value(c).Equal(key[i]) {
			return false
		}
	}
	return true
}

func (q *scanQuery) keyOf(r mem.Record) []*pb.Value {
	key := make([]*pb.Value, len(q.keyCols))
	for i, c := range q.keyCols {
		key[i] = pbmem.Value(r.Value(c))
	}
	return key
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
	if more && q.unique && len(rows) > 0 {
		msg.ResumeKey = q.keyOf(rows[len(rows)-1])
	}
	return stream.Send(msg)
}
