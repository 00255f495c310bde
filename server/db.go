package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// maxAutoRetries bounds how often a transaction the server runs on its own
// (a single write, a batch) is retried after a serialization conflict
// before ABORTED goes back to the client.
const maxAutoRetries = 16

// dbService implements DatabaseService over one mem.DB.
type dbService struct {
	pb.UnimplementedDatabaseServiceServer
	db          *mem.DB
	store       *durability.Store
	sync        syncWaiter
	txs         *txTable
	cv          converter
	maxScanRows int
	maxMsgBytes int
	quit        <-chan struct{} // closed when shutdown begins
	metrics     *metrics        // counts commits; nil without metrics_addr
}

// syncWaiter waits for a commit's standbys (Server.waitSync), or for
// those of what a read saw (Server.waitRead, after dbService.waitRead's
// wait for the log), says whether a commit's wait would return at once
// (Server.syncHolds), and whether a sync mode that waits can be met at
// all.
type syncWaiter interface {
	waitSync(ctx context.Context, lsn uint64, mode replica.Mode) (degraded bool, err error)
	waitRead(ctx context.Context, seen uint64) error
	syncHolds(lsn uint64, mode replica.Mode) bool
	canSync() error
}

// commitWait is what a commit waits for: its durability level, then its
// sync mode (negative: the node's).
type commitWait struct {
	level durability.Level
	mode  replica.Mode
}

// waitFields are a request's durability and sync_mode.
type waitFields interface {
	GetDurability() pb.Durability
	GetSyncMode() pb.SyncMode
}

// noWait is the waitFields of a request that commits nothing.
type noWait struct{}

func (noWait) GetDurability() pb.Durability { return pb.Durability_DURABILITY_UNSPECIFIED }
func (noWait) GetSyncMode() pb.SyncMode     { return pb.SyncMode_SYNC_MODE_UNSPECIFIED }

// unset says whether a request leaves both at the node's.
func unset(f waitFields) bool {
	return f.GetDurability() == pb.Durability_DURABILITY_UNSPECIFIED && f.GetSyncMode() == pb.SyncMode_SYNC_MODE_UNSPECIFIED
}

// wants returns what a request asks its commit to wait for, checked
// against what the node can do; def is what unspecified fields keep.
func (s *dbService) wants(f waitFields, def commitWait) (commitWait, error) {
	w := def
	if f.GetDurability() != pb.Durability_DURABILITY_UNSPECIFIED {
		var err error
		if w.level, err = s.level(f.GetDurability()); err != nil {
			return w, err
		}
	}
	switch m := f.GetSyncMode(); m {
	case pb.SyncMode_SYNC_MODE_UNSPECIFIED:
		return w, nil
	case pb.SyncMode_SYNC_MODE_ASYNC:
		w.mode = replica.Async
	case pb.SyncMode_SYNC_MODE_RECEIVED_ACK:
		w.mode = replica.ReceivedAck
	case pb.SyncMode_SYNC_MODE_APPLIED_ACK:
		w.mode = replica.AppliedAck
	default:
		return w, errorf(codes.InvalidArgument, "sync_mode %d is not one of the SyncMode values", m)
	}
	if w.mode > replica.Async {
		if err := s.sync.canSync(); err != nil {
			return w, errorf(codes.FailedPrecondition, "sync_mode %s: %v", w.mode, err)
		}
	}
	return w, nil
}

// nodeWait is what a commit waits for when the request leaves it to the
// node.
func (s *dbService) nodeWait() commitWait { return commitWait{level: s.store.Level(), mode: -1} }

// run runs fn in the interactive transaction txID, or, when txID is zero,
// in a transaction of its own that it commits, retrying conflicts, and
// waits until the commit meets the durability and sync mode req asks for.
// It returns the commit's LSN (zero inside an interactive transaction),
// whether the sync mode degraded, and fn's, the commit's or the wait's
// error, for the caller to turn into a status.
func (s *dbService) run(ctx context.Context, txID uint64, req waitFields, fn func(tx *mem.Tx) error) (lsn uint64, degraded bool, err error) {
	if txID != 0 {
		if !unset(req) {
			return 0, false, errorf(codes.InvalidArgument, "durability %s or sync_mode %s with tx_id %d: an interactive transaction takes them from Begin or Commit", req.GetDurability(), req.GetSyncMode(), txID)
		}
		return 0, false, s.txs.use(ctx, txID, fn)
	}
	w, err := s.wants(req, s.nodeWait())
	if err != nil {
		return 0, false, err
	}
	start := s.metrics.started()
	for attempt := 0; ; attempt++ {
		tx := s.db.Begin()
		if err := fn(tx); err != nil {
			// A failure that rests on reads no one instant saw together
			// (a batch's second condition read after a commit that changed
			// its first) is no answer: run it again, as a conflict.
			seen := tx.Seen()
			if verr := tx.RollbackChecked(); verr != nil {
				if errors.Is(verr, mem.ErrConflict) && attempt < maxAutoRetries && ctx.Err() == nil {
					continue
				}
				err = verr
			}
			return 0, false, s.failedRead(ctx, seen, err)
		}
		writes, seen := tx.Writes(), tx.Seen()
		lsn, err := tx.Commit()
		if errors.Is(err, mem.ErrConflict) && attempt < maxAutoRetries && ctx.Err() == nil {
			continue
		}
		// A write to a table whose unique index the node, a standby
		// promoted since, is building from its primary's log waits for
		// the build.
		if errors.Is(err, mem.ErrBuilding) && attempt < maxAutoRetries && await(ctx, s.db.Building()) {
			continue
		}
		degraded, err = s.committed(ctx, lsn, seen, w, err)
		s.metrics.commitEnded(start, writes, lsn, degraded, err)
		return lsn, degraded, err
	}
}

// await waits until ready (nil: at once) is closed, or a margin before
// ctx's deadline (replyBefore); it reports whether ready was closed.
func await(ctx context.Context, ready <-chan struct{}) bool {
	if ready == nil {
		return true
	}
	ctx, cancel := replyBefore(ctx)
	defer cancel()
	select {
	case <-ready:
		return true
	case <-ctx.Done():
		return false
	}
}

// write runs a write as run does, unless the node is a standby: it is
// refused at once, with NOT_PRIMARY naming the primary (SPEC 6), not run
// on the standby's data, where it could fail another way (a row the
// standby has not applied yet, a key it still holds) and keep the client
// from the primary.
func (s *dbService) write(ctx context.Context, txID uint64, req waitFields, fn func(tx *mem.Tx) error) (lsn uint64, degraded bool, err error) {
	if err := s.store.Writable(); err != nil {
		if txID == 0 {
			s.metrics.commitEnded(time.Time{}, 1, 0, false, err) // a refused commit
		}
		return 0, false, err
	}
	return s.run(ctx, txID, req, fn)
}

// level returns the durability level a request asks for, checked against
// what the node allows.
func (s *dbService) level(dur pb.Durability) (durability.Level, error) {
	var level durability.Level
	switch dur {
	case pb.Durability_DURABILITY_UNSPECIFIED:
		return s.store.Level(), nil
	case pb.Durability_DURABILITY_NO_LOG:
		level = durability.NoLog
	case pb.Durability_DURABILITY_MMAP_LOG:
		level = durability.MmapLog
	case pb.Durability_DURABILITY_FSYNC_LOG:
		level = durability.FsyncLog
	default:
		return 0, errorf(codes.InvalidArgument, "durability %d is not one of the Durability values", dur)
	}
	if err := s.store.Check(level); err != nil {
		return 0, errorf(codes.FailedPrecondition, "%s", strings.TrimPrefix(err.Error(), "durability: "))
	}
	return level, nil
}

// durable waits until the commit at lsn meets w's level, then until the
// standbys answer as its sync mode asks; degraded says they did not in
// time and the node went on without them. A commit that does not meet
// either is installed in memory all the same: the error says so, and it
// comes a margin before the call's deadline (replyBefore), so that it
// reaches the client before the client's own timer ends the call with
// nothing but "deadline exceeded". Most commits wait for nothing (no-log,
// async, an mmap-log record already copied): they return at once, as
// things stand when they look, without the margin's context and timer. A
// transaction that wrote nothing (lsn zero) waits instead for what it
// read, up to the commit at seen (waitRead).
func (s *dbService) durable(ctx context.Context, lsn, seen uint64, w commitWait) (degraded bool, err error) {
	if lsn == 0 {
		return false, s.waitRead(ctx, seen)
	}
	if s.store.Meets(lsn, w.level) && s.sync.syncHolds(lsn, w.mode) {
		return false, nil
	}
	ctx, cancel := replyBefore(ctx)
	defer cancel()
	level := w.level
	err = s.store.Wait(ctx, lsn, level)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return false, withLSNReason(status.FromContextError(ctx.Err()).Code(), pb.ReasonUnconfirmed, lsn,
			fmt.Sprintf("the commit at LSN %d is in memory but not yet %s: %v", lsn, level, ctx.Err()))
	default:
		return false, notDurable(lsn, level, err)
	}
	degraded, err = s.sync.waitSync(ctx, lsn, w.mode)
	if err != nil {
		// Not UNAVAILABLE: the client library would run the commit
		// again elsewhere, and it is already made here.
		code, why := codes.FailedPrecondition, "the node stopped shipping its log"
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			code, why = codes.DeadlineExceeded, "its standbys did not answer before the deadline"
		case errors.Is(err, context.Canceled):
			code, why = codes.Canceled, "the call was canceled before its standbys answered"
		}
		return false, withLSNReason(code, pb.ReasonUnconfirmed, lsn, fmt.Sprintf("the commit at LSN %d is local (%s) but unconfirmed: %s: %v", lsn, level, why, err))
	}
	return degraded, nil
}

// committed finishes a commit whose Commit returned lsn and err, of a
// transaction that had read up to seen: it waits as durable does, or,
// when the commit failed on what it found (a unique key taken, a table
// dropped: mem.SeenLSN), as failedRead does.
func (s *dbService) committed(ctx context.Context, lsn, seen uint64, w commitWait, err error) (degraded bool, _ error) {
	switch {
	case err == nil:
		return s.durable(ctx, lsn, seen, w)
	case mem.SeenLSN(err) != 0:
		return false, s.failedRead(ctx, max(seen, mem.SeenLSN(err)), err)
	}
	return false, err
}

// replyBefore returns ctx with its deadline, if it has one, brought
// forward by the time a reply needs to reach the client: an eighth of
// the time left, at least 2 ms and at most 50 ms.
func replyBefore(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return ctx, func() {}
	}
	margin := min(max(time.Until(d)/8, 2*time.Millisecond), 50*time.Millisecond)
	return context.WithDeadline(ctx, d.Add(-margin))
}

// failedRead returns err, the failure of a request that read the
// database up to the commit at seen (a missing row, a duplicate key, a
// condition that does not hold), once what it saw is durable and on the
// standbys (waitRead): the failure tells the client about the database
// as much as a read does.
func (s *dbService) failedRead(ctx context.Context, seen uint64, err error) error {
	if werr := s.waitRead(ctx, seen); werr != nil {
		return werr
	}
	return err
}

// waitRead returns once a read's answer depends on no commit a crash or
// a failover could take back (what SPEC 3 promises of acknowledged
// commits, held for answers too): the commits up to seen, the newest whose effects it
// read (mem.Tx.Seen), must meet the node's durability level, and then
// be held by the standbys as the node's sync mode asks (Server.waitRead).
// A read of rows no recent commit touched waits for nothing. On a
// standby it waits for nothing: what it applied is on its primary, and
// its answer names the primary (pb.HeaderPrimary) for the client to go
// back to. A read that saw a commit the log cannot write (a full disk)
// fails with RESOURCE_EXHAUSTED and the SEEN_NOT_DURABLE detail naming
// that commit.
func (s *dbService) waitRead(ctx context.Context, seen uint64) error {
	if _, primary, standby := s.store.Standby(); standby {
		namePrimary(ctx, primary)
	} else if level := s.store.Level(); !s.store.Meets(seen, level) {
		if err := s.waitReadDurable(ctx, seen, level); err != nil {
			return err
		}
	}
	return s.sync.waitRead(ctx, seen)
}

// namePrimary adds the header naming the primary, if one is known, to
// the answer of the call ctx belongs to. The header is a hint: a call
// that already sent its header (a session's) goes without it.
func namePrimary(ctx context.Context, primary string) {
	if primary != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(pb.HeaderPrimary, primary))
	}
}

// waitReadDurable waits until the commit at seen meets level, giving up a
// margin before ctx's deadline (replyBefore).
func (s *dbService) waitReadDurable(ctx context.Context, seen uint64, level durability.Level) error {
	ctx, cancel := replyBefore(ctx)
	defer cancel()
	err := s.store.Wait(ctx, seen, level)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.Errorf(status.FromContextError(ctx.Err()).Code(), "a read saw the commit at LSN %d, which was not yet %s when the call ended: %v", seen, level, err)
	case errors.Is(err, logging.ErrFull):
		return withLSNReason(codes.ResourceExhausted, pb.ReasonSeenNotDurable, seen, fmt.Sprintf("the disk is full: a read saw the commit at LSN %d, which is in memory but not %s; read again once space is freed: %v", seen, level, err))
	}
	return errorf(codes.Unavailable, "the redo log failed: a read saw the commit at LSN %d, which is in memory but not %s: %v", seen, level, err)
}

// index returns the ordinal of a table's index by name; empty is the
// primary key. An index that the node, a standby, is building for its
// primary's CreateIndex is waited for, until a margin before ctx's
// deadline (replyBefore), and then looked up again: the schema may have
// changed once the build let it.
func index(ctx context.Context, t *mem.Table, name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	ix, err := t.Index(name)
	if err != nil {
		return 0, err
	}
	if ready := t.IndexReady(ix); ready != nil {
		if !await(ctx, ready) {
			if errors.Is(ctx.Err(), context.Canceled) {
				return 0, status.FromContextError(ctx.Err()).Err()
			}
			return 0, errorf(codes.Unavailable, "table %q index %q is still being built on this node, which applied its primary's CreateIndex: read again later, or from the primary", t.Name(), name)
		}
		return t.Index(name)
	}
	return ix, nil
}

// ddl runs a schema change and answers as a write does: once its LSN
// meets the node's durability and sync mode. A change the engine refuses
// is answered as a failed read is (failedRead), once the commits its
// refusal may tell of are durable and on the standbys: the schema
// changes (a table or index there or not), or, for two rows that share
// the key of a new unique index, any commit so far. invalid, a fault of
// the request found before the change runs, tells of nothing: it is
// answered at once, after a standby's refusal.
func (s *dbService) ddl(ctx context.Context, invalid error, change func() (uint64, error)) (lsn uint64, degraded bool, err error) {
	if err := s.store.Writable(); err != nil {
		return 0, false, toStatus(err)
	}
	if invalid != nil {
		return 0, false, toStatus(invalid)
	}
	if lsn, err = change(); err != nil {
		seen := s.db.SchemaLSN()
		if errors.Is(err, mem.ErrNotUnique) {
			seen = max(s.db.LastLSN(), mem.SeenLSN(err))
		}
		return 0, false, toStatus(s.failedRead(ctx, seen, err))
	}
	degraded, err = s.durable(ctx, lsn, 0, s.nodeWait())
	return lsn, degraded, toStatus(err)
}

func (s *dbService) CreateTable(ctx context.Context, req *pb.CreateTableRequest) (*pb.CreateTableResponse, error) {
	def, invalid := pbmem.TableDef(req.GetTable())
	lsn, degraded, err := s.ddl(ctx, invalid, func() (uint64, error) {
		t, err := s.db.CreateTableContext(ctx, def)
		if err != nil {
			return 0, err
		}
		return t.CreatedLSN(), nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.CreateTableResponse{Lsn: lsn, Degraded: degraded}, nil
}

func (s *dbService) DropTable(ctx context.Context, req *pb.DropTableRequest) (*pb.DropTableResponse, error) {
	lsn, degraded, err := s.ddl(ctx, nil, func() (uint64, error) { return s.db.DropTableContext(ctx, req.GetTable()) })
	if err != nil {
		return nil, err
	}
	return &pb.DropTableResponse{Lsn: lsn, Degraded: degraded}, nil
}

// CreateIndex builds the index while commits go on (mem.DB.CreateIndex);
// the call's end (a deadline, a cancel) stops the build.
func (s *dbService) CreateIndex(ctx context.Context, req *pb.CreateIndexRequest) (*pb.CreateIndexResponse, error) {
	def, invalid := pbmem.IndexDef(req.GetTable(), req.GetIndex())
	lsn, degraded, err := s.ddl(ctx, invalid, func() (uint64, error) { return s.db.CreateIndex(ctx, req.GetTable(), def) })
	if err != nil {
		return nil, err
	}
	return &pb.CreateIndexResponse{Lsn: lsn, Degraded: degraded}, nil
}

func (s *dbService) DropIndex(ctx context.Context, req *pb.DropIndexRequest) (*pb.DropIndexResponse, error) {
	lsn, degraded, err := s.ddl(ctx, nil, func() (uint64, error) { return s.db.DropIndexContext(ctx, req.GetTable(), req.GetIndex()) })
	if err != nil {
		return nil, err
	}
	return &pb.DropIndexResponse{Lsn: lsn, Degraded: degraded}, nil
}

// ListTables answers once the schema it shows is durable (catalogRead).
// Its row and byte counts are statistics of the moment, not a read of
// the rows: they wait for nothing.
func (s *dbService) ListTables(ctx context.Context, _ *pb.ListTablesRequest) (*pb.ListTablesResponse, error) {
	resp := &pb.ListTablesResponse{}
	for _, st := range s.db.Stats() {
		resp.Tables = append(resp.Tables, pbmem.TableStatus(st))
	}
	if err := s.catalogRead(ctx, nil); err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func (s *dbService) DescribeTable(ctx context.Context, req *pb.DescribeTableRequest) (*pb.DescribeTableResponse, error) {
	t, err := s.db.Table(req.GetTable())
	if err = s.catalogRead(ctx, err); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DescribeTableResponse{Table: pbmem.Table(t.Def())}, nil
}

// catalogRead returns err, the outcome of a look at the catalog (a
// table's definition, or that there is no such table), once the schema
// changes it saw are durable and on the standbys, as a read's rows are
// (waitRead).
func (s *dbService) catalogRead(ctx context.Context, err error) error {
	return s.failedRead(ctx, s.db.SchemaLSN(), err)
}

func (s *dbService) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	resp := &pb.GetResponse{}
	o := &pb.Operation{Op: &pb.Operation_Get{Get: req}}
	if _, _, err := s.run(ctx, req.GetTxId(), noWait{}, func(tx *mem.Tx) error { return s.apply(ctx, tx, o, resp) }); err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

func (s *dbService) Insert(ctx context.Context, req *pb.InsertRequest) (*pb.InsertResponse, error) {
	o := &pb.Operation{Op: &pb.Operation_Insert{Insert: req}}
	lsn, degraded, err := s.write(ctx, req.GetTxId(), req, func(tx *mem.Tx) error { return s.apply(ctx, tx, o, nil) })
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.InsertResponse{Lsn: lsn, Degraded: degraded}, nil
}

func (s *dbService) Upsert(ctx context.Context, req *pb.UpsertRequest) (*pb.UpsertResponse, error) {
	o := &pb.Operation{Op: &pb.Operation_Upsert{Upsert: req}}
	lsn, degraded, err := s.write(ctx, req.GetTxId(), req, func(tx *mem.Tx) error { return s.apply(ctx, tx, o, nil) })
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.UpsertResponse{Lsn: lsn, Degraded: degraded}, nil
}

func (s *dbService) Update(ctx context.Context, req *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	o := &pb.Operation{Op: &pb.Operation_Update{Update: req}}
	lsn, degraded, err := s.write(ctx, req.GetTxId(), req, func(tx *mem.Tx) error { return s.apply(ctx, tx, o, nil) })
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.UpdateResponse{Lsn: lsn, Degraded: degraded}, nil
}

func (s *dbService) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	o := &pb.Operation{Op: &pb.Operation_Delete{Delete: req}}
	lsn, degraded, err := s.write(ctx, req.GetTxId(), req, func(tx *mem.Tx) error { return s.apply(ctx, tx, o, nil) })
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteResponse{Lsn: lsn, Degraded: degraded}, nil
}

// op is an operation whose request parseOp checked and resolved against
// the schema, ready to run in a transaction (op.run).
type op struct {
	kind opKind
	t    *mem.Table
	// get: the name of the index it reads, looked up again when it runs
	// (DropIndex moves the ordinals)
	index string
	key   []mem.Value       // get, update, delete
	row   []mem.Value       // insert, upsert
	set   []mem.ColumnValue // update
}

type opKind uint8

const (
	opGet opKind = iota
	opInsert
	opUpsert
	opUpdate
	opDelete
)

// parseOp checks an operation's request and resolves its table, index
// and columns, and converts its values. What it finds wrong is the
// request's mistake, whatever the rows hold; what the engine finds when
// the operation runs (a row or key that does not fit the table, a
// missing or duplicate row) is not looked for here. It finds the table
// in tx (mem.Tx.Table), so that a table found absent is among what the
// transaction's commit checks.
func (s *dbService) parseOp(ctx context.Context, tx *mem.Tx, o *pb.Operation) (op, error) {
	switch o := o.GetOp().(type) {
	case *pb.Operation_Get:
		t, key, err := s.tableKey(tx, o.Get.GetTable(), o.Get.GetKey())
		if err != nil {
			return op{}, err
		}
		_, err = index(ctx, t, o.Get.GetIndex())
		return op{kind: opGet, t: t, index: o.Get.GetIndex(), key: key}, err
	case *pb.Operation_Insert:
		return s.parsePut(tx, opInsert, o.Insert.GetTable(), o.Insert.GetRow())
	case *pb.Operation_Upsert:
		return s.parsePut(tx, opUpsert, o.Upsert.GetTable(), o.Upsert.GetRow())
	case *pb.Operation_Update:
		return s.parseUpdate(tx, o.Update)
	case *pb.Operation_Delete:
		t, key, err := s.tableKey(tx, o.Delete.GetTable(), o.Delete.GetKey())
		return op{kind: opDelete, t: t, key: key}, err
	}
	return op{}, errorf(codes.InvalidArgument, "the operation is empty; set one of get, insert, update, upsert, delete")
}

// apply parses o (parseOp) and runs it in tx; a get's answer goes to res.
func (s *dbService) apply(ctx context.Context, tx *mem.Tx, o *pb.Operation, res *pb.GetResponse) error {
	p, err := s.parseOp(ctx, tx, o)
	if err != nil {
		return err
	}
	return p.run(tx, res)
}

// run runs the operation in tx; a get's answer goes to res.
func (o *op) run(tx *mem.Tx, res *pb.GetResponse) error {
	switch o.kind {
	case opGet:
		rec, found, err := tx.GetByName(o.t, o.index, o.key)
		if err != nil {
			return err
		}
		res.Found, res.Row = found, nil
		if found {
			res.Row = pbmem.Row(rec)
		}
		return nil
	case opInsert:
		return tx.Insert(o.t, o.row)
	case opUpsert:
		return tx.Upsert(o.t, o.row)
	case opUpdate:
		return tx.Update(o.t, o.key, o.set)
	default:
		return tx.Delete(o.t, o.key)
	}
}

// parsePut parses an insert or an upsert of row into table.
func (s *dbService) parsePut(tx *mem.Tx, kind opKind, table string, row *pb.Row) (op, error) {
	t, err := tx.Table(table)
	if err != nil {
		return op{}, err
	}
	if row == nil {
		return op{}, errorf(codes.InvalidArgument, "table %q: the row is missing", table)
	}
	vals, err := s.cv.values(nil, row.GetValues(), "row")
	if err != nil {
		return op{}, fmt.Errorf("table %q: %w", table, err)
	}
	return op{kind: kind, t: t, row: vals}, nil
}

// tableKey resolves a request's table in tx and converts its key.
func (s *dbService) tableKey(tx *mem.Tx, table string, key []*pb.Value) (*mem.Table, []mem.Value, error) {
	t, err := tx.Table(table)
	if err != nil {
		return nil, nil, err
	}
	vals, err := s.cv.values(nil, key, "key")
	if err != nil {
		return nil, nil, fmt.Errorf("table %q: %w", t.Name(), err)
	}
	return t, vals, nil
}

// parseUpdate parses an update.
func (s *dbService) parseUpdate(tx *mem.Tx, req *pb.UpdateRequest) (op, error) {
	t, key, err := s.tableKey(tx, req.GetTable(), req.GetKey())
	if err != nil {
		return op{}, err
	}
	if len(req.GetSet()) == 0 {
		return op{}, errorf(codes.InvalidArgument, "table %q: set names no column to change", t.Name())
	}
	set, err := s.columnValues(t, req.GetSet(), "set")
	if err != nil {
		return op{}, err
	}
	for i, a := range set {
		for _, b := range set[:i] {
			if a.Column == b.Column {
				return op{}, errorf(codes.InvalidArgument, "table %q: set names column %q twice", t.Name(), req.GetSet()[i].GetColumn())
			}
		}
	}
	return op{kind: opUpdate, t: t, key: key, set: set}, nil
}

// columnValues resolves named column values to ordinals.
func (s *dbService) columnValues(t *mem.Table, cvs []*pb.ColumnValue, what string) ([]mem.ColumnValue, error) {
	out := make([]mem.ColumnValue, len(cvs))
	for i, cv := range cvs {
		c, err := t.Column(cv.GetColumn())
		if err != nil {
			return nil, err
		}
		v, err := s.cv.value(cv.GetValue())
		if err != nil {
			return nil, fmt.Errorf("table %q: %s column %q: %w", t.Name(), what, cv.GetColumn(), err)
		}
		out[i] = mem.ColumnValue{Column: c, Value: v}
	}
	return out, nil
}

func (s *dbService) Begin(ctx context.Context, req *pb.BeginRequest) (*pb.BeginResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var key string
	switch keys := md.Get(pb.HeaderBeginKey); {
	case len(keys) > 1 || len(keys) == 1 && keys[0] == "":
		return nil, errorf(codes.InvalidArgument, "the header %s is sent at most once, 1 to %d bytes", pb.HeaderBeginKey, pb.MaxBeginKeyBytes)
	case len(keys) == 1 && len(keys[0]) > pb.MaxBeginKeyBytes:
		// A fixed limit, not a rule of the request's own (SPEC 11).
		return nil, errorf(codes.ResourceExhausted, "the header %s: %d bytes, more than the limit of %d", pb.HeaderBeginKey, len(keys[0]), pb.MaxBeginKeyBytes)
	case len(keys) == 1:
		key = keys[0]
	}
	return s.begin(req, key)
}

// begin starts a transaction, with key (pb.HeaderBeginKey) if not
// empty. A Session's Begin has none: its transactions end with it.
func (s *dbService) begin(req *pb.BeginRequest, key string) (*pb.BeginResponse, error) {
	w, err := s.wants(req, s.nodeWait())
	if err != nil {
		return nil, err
	}
	id, err := s.txs.begin(w, key)
	if err != nil {
		return nil, err
	}
	return &pb.BeginResponse{TxId: id, IdleTimeout: durationpb.New(s.txs.idle)}, nil
}

func (s *dbService) Rollback(ctx context.Context, req *pb.RollbackRequest) (*pb.RollbackResponse, error) {
	if req.GetTxId() == 0 {
		return nil, errorf(codes.InvalidArgument, "tx_id is unset; name the transaction Begin returned")
	}
	if err := s.txs.end(ctx, req.GetTxId(), nil, func(*openTx) error { return nil }); err != nil {
		return nil, err
	}
	return &pb.RollbackResponse{}, nil
}

// replySlack is room kept in a reply for what is not results.
const replySlack = 1 << 10

// errConditionFailed ends a batch whose condition does not hold.
var errConditionFailed = errors.New("a condition failed")

func (s *dbService) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	if hasWrites(req) {
		if err := s.store.Writable(); err != nil {
			s.metrics.commitEnded(time.Time{}, 1, 0, false, err) // as write does
			return nil, toStatus(err)
		}
	}
	start := s.metrics.started()
	resp := &pb.CommitResponse{}
	var err error
	if id := req.GetTxId(); id != 0 {
		var w commitWait
		var b *batch
		err = s.txs.end(ctx, id, func(ot *openTx) (err error) {
			// A malformed request leaves the transaction open.
			if w, err = s.wants(req, ot.wait); err != nil {
				return err
			}
			b, err = s.prepare(ctx, ot.tx, req)
			return err
		}, func(ot *openTx) error {
			if err := s.batch(ot.tx, b, resp); err != nil {
				seen := ot.tx.Seen()
				if verr := ot.tx.RollbackChecked(); verr != nil {
					err = verr // ABORTED: what it read changed (run does so)
				}
				return s.failedRead(ctx, seen, err)
			}
			writes, seen := ot.tx.Writes(), ot.tx.Seen()
			resp.Lsn, err = ot.tx.Commit()
			resp.Degraded, err = s.committed(ctx, resp.Lsn, seen, w, err)
			s.metrics.commitEnded(start, writes, resp.Lsn, resp.Degraded, err)
			return err
		})
	} else {
		resp.Lsn, resp.Degraded, err = s.run(ctx, 0, req, func(tx *mem.Tx) error {
			b, err := s.prepare(ctx, tx, req)
			if err != nil {
				return err
			}
			return s.batch(tx, b, resp)
		})
	}
	if errors.Is(err, errConditionFailed) {
		resp.Results = nil
		return resp, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	resp.Committed = true
	return resp, nil
}

// batch is a Commit request checked and resolved against the schema
// (prepare), ready to run in a transaction (dbService.batch).
type batch struct {
	conds []condition
	ops   []op
}

// prepare checks a Commit request, all of it, before any of it runs:
// its operations' fields only the batch may set, each condition
// (parseCondition) and each operation (parseOp), finding their tables
// in tx. An interactive transaction whose Commit it refuses stays open,
// as the proto says: a table it found absent is then among what the
// transaction's commit checks.
func (s *dbService) prepare(ctx context.Context, tx *mem.Tx, req *pb.CommitRequest) (*batch, error) {
	b := &batch{conds: make([]condition, len(req.GetConditions())), ops: make([]op, len(req.GetOperations()))}
	for i, o := range req.GetOperations() {
		txID, w := opFields(o)
		if txID != 0 {
			return nil, errorf(codes.InvalidArgument, "operation %d: tx_id must be zero inside a batch; the batch's own tx_id names the transaction", i)
		}
		if !unset(w) {
			return nil, errorf(codes.InvalidArgument, "operation %d: durability and sync_mode must be unspecified inside a batch; the batch's own apply", i)
		}
	}
	for i, c := range req.GetConditions() {
		var err error
		if b.conds[i], err = s.parseCondition(tx, c); err != nil {
			return nil, fmt.Errorf("condition %d: %w", i, err)
		}
	}
	for i, o := range req.GetOperations() {
		var err error
		if b.ops[i], err = s.parseOp(ctx, tx, o); err != nil {
			return nil, fmt.Errorf("operation %d: %w", i, err)
		}
	}
	return b, nil
}

// batch checks a batch's conditions and runs its operations in tx. With
// an interactive transaction, any error here rolls it back, as the proto
// says.
func (s *dbService) batch(tx *mem.Tx, b *batch, resp *pb.CommitResponse) error {
	resp.Results = resp.Results[:0]
	for i := range b.conds {
		ok, err := b.conds[i].holds(tx)
		if err != nil {
			return fmt.Errorf("condition %d: %w", i, err)
		}
		if !ok {
			resp.FailedCondition = uint32(i)
			return errConditionFailed
		}
	}
	size := 0 // of the results so far, encoded
	for i := range b.ops {
		res := &pb.GetResponse{}
		err := b.ops[i].run(tx, res)
		// Fail before the commit rather than commit and then fail to
		// send the reply.
		if err == nil && b.ops[i].kind == opGet {
			if size += res.SizeVT() + 8; size > s.maxMsgBytes-replySlack {
				err = errorf(codes.ResourceExhausted, "the results reach max_message_bytes (%d); split the batch", s.maxMsgBytes)
			}
		}
		if err != nil {
			return fmt.Errorf("operation %d: %w", i, err)
		}
		resp.Results = append(resp.Results, res)
	}
	return nil
}

// hasWrites says whether a batch has an operation that writes.
func hasWrites(req *pb.CommitRequest) bool {
	for _, o := range req.GetOperations() {
		switch o.GetOp().(type) {
		case *pb.Operation_Get, nil: // nil: the batch says it is empty
		default:
			return true
		}
	}
	return false
}

// opFields returns the tx_id and durability an operation of a batch
// carries; both must be unset.
func opFields(o *pb.Operation) (uint64, waitFields) {
	switch o := o.GetOp().(type) {
	case *pb.Operation_Get:
		return o.Get.GetTxId(), noWait{}
	case *pb.Operation_Insert:
		return o.Insert.GetTxId(), o.Insert
	case *pb.Operation_Upsert:
		return o.Upsert.GetTxId(), o.Upsert
	case *pb.Operation_Update:
		return o.Update.GetTxId(), o.Update
	case *pb.Operation_Delete:
		return o.Delete.GetTxId(), o.Delete
	}
	return 0, noWait{}
}

// condition is a batch's condition whose request parseCondition checked
// and resolved against the schema, ready to be checked in a transaction
// (holds).
type condition struct {
	t      *mem.Table
	key    []mem.Value
	want   []mem.ColumnValue // with exists: the values the row must hold
	exists bool              // EXPECT_EXISTS; else EXPECT_NOT_EXISTS
}

// parseCondition checks a condition's request: its table and columns, its
// values, which must be ones a row can hold (a value no row can hold is
// a mistake, not a condition that fails), and its expect.
func (s *dbService) parseCondition(tx *mem.Tx, c *pb.Condition) (condition, error) {
	t, key, err := s.tableKey(tx, c.GetTable(), c.GetKey())
	if err != nil {
		return condition{}, err
	}
	want, err := s.columnValues(t, c.GetEquals(), "equals")
	if err != nil {
		return condition{}, err
	}
	for _, w := range want {
		if err := t.CheckValue(w.Column, w.Value); err != nil {
			return condition{}, fmt.Errorf("equals: %w", err)
		}
	}
	switch c.GetExpect() {
	case pb.Condition_EXPECT_EXISTS:
		return condition{t: t, key: key, want: want, exists: true}, nil
	case pb.Condition_EXPECT_NOT_EXISTS:
		if len(want) != 0 {
			return condition{}, errorf(codes.InvalidArgument, "equals needs EXPECT_EXISTS")
		}
		return condition{t: t, key: key}, nil
	default:
		return condition{}, errorf(codes.InvalidArgument, "expect is %s; say EXPECT_EXISTS or EXPECT_NOT_EXISTS", c.GetExpect())
	}
}

// holds checks the condition in tx.
func (c *condition) holds(tx *mem.Tx) (bool, error) {
	rec, found, err := tx.Get(c.t, c.key)
	switch {
	case err != nil:
		return false, err
	case !c.exists:
		return !found, nil
	case !found:
		return false, nil
	}
	for _, w := range c.want {
		if !rec.Value(w.Column).Equal(w.Value) {
			return false, nil
		}
	}
	return true, nil
}
