package client

import (
	"context"
	crand "crypto/rand"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Set assigns a column in Update.
type Set struct {
	Column string
	Value  *pb.Value
}

func sets(s []Set) []*pb.ColumnValue {
	out := make([]*pb.ColumnValue, len(s))
	for i, v := range s {
		out[i] = &pb.ColumnValue{Column: v.Column, Value: v.Value}
	}
	return out
}

// CreateTable creates a table and returns the LSN of the change.
func (c *Client) CreateTable(ctx context.Context, t *pb.Table) (uint64, error) {
	var r *pb.CreateTableResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.CreateTable(ctx, &pb.CreateTableRequest{Table: t})
		return err
	}))
	return r.GetLsn(), err
}

// DropTable drops a table and returns the LSN of the change.
func (c *Client) DropTable(ctx context.Context, name string) (uint64, error) {
	var r *pb.DropTableResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.DropTable(ctx, &pb.DropTableRequest{Table: name})
		return err
	}))
	return r.GetLsn(), err
}

// CreateIndex adds the secondary index ix to a table, built from the
// table's rows, and returns the LSN of the change.
func (c *Client) CreateIndex(ctx context.Context, table string, ix *pb.Index) (uint64, error) {
	var r *pb.CreateIndexResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.CreateIndex(ctx, &pb.CreateIndexRequest{Table: table, Index: ix})
		return err
	}))
	return r.GetLsn(), err
}

// DropIndex removes a table's secondary index and returns the LSN of the
// change.
func (c *Client) DropIndex(ctx context.Context, table, name string) (uint64, error) {
	var r *pb.DropIndexResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.DropIndex(ctx, &pb.DropIndexRequest{Table: table, Index: name})
		return err
	}))
	return r.GetLsn(), err
}

// ListTables lists the tables with their sizes.
func (c *Client) ListTables(ctx context.Context) ([]*pb.TableStatus, error) {
	var r *pb.ListTablesResponse
	err := c.call(ctx, read, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.ListTables(ctx, &pb.ListTablesRequest{})
		return err
	}))
	return r.GetTables(), err
}

// DescribeTable returns a table's definition.
func (c *Client) DescribeTable(ctx context.Context, name string) (*pb.Table, error) {
	var r *pb.DescribeTableResponse
	err := c.call(ctx, read, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.DescribeTable(ctx, &pb.DescribeTableRequest{Table: name})
		return err
	}))
	return r.GetTable(), err
}

// Status returns the current node's status.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	var r *pb.StatusResponse
	err := c.call(ctx, read, func(ctx context.Context, conn *grpc.ClientConn, _ string) (err error) {
		r, err = pb.NewAdminServiceClient(conn).Status(ctx, &pb.StatusRequest{})
		return err
	})
	return r, err
}

// Get reads the row with the given primary key.
func (c *Client) Get(ctx context.Context, table string, key ...*pb.Value) (Row, bool, error) {
	return c.get(ctx, &pb.GetRequest{Table: table, Key: key})
}

// GetBy reads the row with the given key in a unique index.
func (c *Client) GetBy(ctx context.Context, table, index string, key ...*pb.Value) (Row, bool, error) {
	return c.get(ctx, &pb.GetRequest{Table: table, Index: index, Key: key})
}

func (c *Client) get(ctx context.Context, req *pb.GetRequest) (Row, bool, error) {
	var r *pb.GetResponse
	err := c.call(ctx, read, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Get(ctx, req)
		return err
	}))
	return Row(r.GetRow().GetValues()), r.GetFound(), err
}

// Insert adds a row and returns its LSN.
func (c *Client) Insert(ctx context.Context, table string, row ...*pb.Value) (uint64, error) {
	var r *pb.InsertResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Insert(ctx, &pb.InsertRequest{Table: table, Row: &pb.Row{Values: row}})
		return err
	}))
	return r.GetLsn(), err
}

// Upsert inserts or replaces a row and returns its LSN.
func (c *Client) Upsert(ctx context.Context, table string, row ...*pb.Value) (uint64, error) {
	var r *pb.UpsertResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Upsert(ctx, &pb.UpsertRequest{Table: table, Row: &pb.Row{Values: row}})
		return err
	}))
	return r.GetLsn(), err
}

// Update sets columns of the row with the given primary key and returns
// the LSN.
func (c *Client) Update(ctx context.Context, table string, key []*pb.Value, set ...Set) (uint64, error) {
	var r *pb.UpdateResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Update(ctx, &pb.UpdateRequest{Table: table, Key: key, Set: sets(set)})
		return err
	}))
	return r.GetLsn(), err
}

// Delete removes the row with the given primary key and returns the LSN.
func (c *Client) Delete(ctx context.Context, table string, key ...*pb.Value) (uint64, error) {
	var r *pb.DeleteResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Delete(ctx, &pb.DeleteRequest{Table: table, Key: key})
		return err
	}))
	return r.GetLsn(), err
}

// Commit runs an atomic batch. Check the reply's Committed: false means a
// condition failed and nothing was written.
func (c *Client) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	var r *pb.CommitResponse
	err := c.call(ctx, write, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) (err error) {
		r, err = db.Commit(ctx, req)
		return err
	}))
	return r, err
}

// Scan returns the rows of an index range. With req.Limit zero it reads
// the whole range, page by page, following resume keys (on the primary
// key or a unique index; other ranges stop at the server's max_scan_rows
// and return ErrMore). Each page is its own transaction. A table dropped
// and created again under its name between two pages ends the scan with
// FAILED_PRECONDITION (the TABLE_RECREATED detail, pb.ReasonTableRecreated)
// and the rows read so far, of the old table: scan again for the new one.
func (c *Client) Scan(ctx context.Context, req *pb.ScanRequest) ([]Row, error) {
	return c.scan(ctx, req, 0)
}

// ErrMore says a Scan stopped at the server's row limit on a range it
// cannot page through; narrow the range.
var ErrMore = errors.New("client: the range has more rows than max_scan_rows and cannot be paged (not the primary key or a unique index)")

func (c *Client) scan(ctx context.Context, req *pb.ScanRequest, txID uint64) ([]Row, error) {
	req = cloneScan(req)
	req.TxId = txID
	all := req.GetLimit() == 0
	var rows []Row
	for {
		var last *pb.ScanResponse
		var page []Row
		err := c.call(ctx, read, c.db(func(ctx context.Context, db pb.DatabaseServiceClient) error {
			page, last = page[:0], nil
			st, err := db.Scan(ctx, req)
			if err != nil {
				return err
			}
			for {
				m, err := st.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				for _, r := range m.GetRows() {
					page = append(page, Row(r.GetValues()))
				}
				last = m
			}
		}))
		if err != nil {
			return rows, err
		}
		rows = append(rows, page...)
		if !all || !last.GetMore() {
			return rows, nil
		}
		if len(last.GetResumeKey()) == 0 {
			return rows, ErrMore
		}
		req.After, req.AfterTableId = last.GetResumeKey(), last.GetResumeTableId()
	}
}

func cloneScan(r *pb.ScanRequest) *pb.ScanRequest {
	return &pb.ScanRequest{
		Table: r.GetTable(), Index: r.GetIndex(), Prefix: r.GetPrefix(), Lower: r.GetLower(), Upper: r.GetUpper(),
		UpperInclusive: r.GetUpperInclusive(), Reverse: r.GetReverse(), Limit: r.GetLimit(), After: r.GetAfter(),
		AfterTableId: r.GetAfterTableId(),
	}
}

// Tx is an interactive transaction, used by one goroutine. Its calls go
// to the node that began it; they are not retried elsewhere, because the
// transaction lives on that node. A call whose connection a certificate
// failed in the TLS handshake (a node that came back with another) fails
// wrapping ErrCertificate, and the node is passed over as the package doc
// says: the transaction died with its connection.
type Tx struct {
	c    *Client
	conn *grpc.ClientConn
	db   pb.DatabaseServiceClient
	addr string // the node's
	ctx  context.Context
	id   uint64
}

// failed returns err, the error of one of the transaction's calls, as
// UNAVAILABLE when it is the CANCELED of a call whose connection the
// client closed under it, forgetting its node (Client.closedUnder), and
// wrapping ErrCertificate when a certificate failed the connection's
// handshake, its node noted so (Client.certFailed): in both the
// transaction died with its node. The certificate failure is a
// *txCertFailure of tx, by which Tx tells it from one that fn met on
// another connection.
func (tx *Tx) failed(err error) error {
	err = tx.c.closedUnder(tx.ctx, tx.conn, err)
	if !secure.IsCertError(err) || errors.Is(err, ErrCertificate) {
		return err
	}
	failure := certFailure(tx.addr, err)
	tx.c.certFailed(tx.addr, failure)
	return &txCertFailure{tx: tx, err: failure}
}

// txCertFailure is the error of a call of transaction tx whose
// connection a certificate failed (Tx.failed).
type txCertFailure struct {
	tx  *Tx
	err error
}

func (e *txCertFailure) Error() string { return e.err.Error() }
func (e *txCertFailure) Unwrap() error { return e.err }

// ID returns the transaction's id.
func (tx *Tx) ID() uint64 { return tx.id }

// WithContext returns the transaction with its calls bound to ctx
// instead of the context it began with.
func (tx *Tx) WithContext(ctx context.Context) *Tx {
	c := *tx
	c.ctx = ctx
	return &c
}

// Get reads a row by primary key in the transaction.
func (tx *Tx) Get(table string, key ...*pb.Value) (Row, bool, error) {
	r, err := tx.db.Get(tx.ctx, &pb.GetRequest{Table: table, Key: key, TxId: tx.id})
	return Row(r.GetRow().GetValues()), r.GetFound(), tx.failed(err)
}

// GetBy reads a row by a unique index key in the transaction.
func (tx *Tx) GetBy(table, index string, key ...*pb.Value) (Row, bool, error) {
	r, err := tx.db.Get(tx.ctx, &pb.GetRequest{Table: table, Index: index, Key: key, TxId: tx.id})
	return Row(r.GetRow().GetValues()), r.GetFound(), tx.failed(err)
}

// Insert adds a row in the transaction.
func (tx *Tx) Insert(table string, row ...*pb.Value) error {
	_, err := tx.db.Insert(tx.ctx, &pb.InsertRequest{Table: table, Row: &pb.Row{Values: row}, TxId: tx.id})
	return tx.failed(err)
}

// Upsert inserts or replaces a row in the transaction.
func (tx *Tx) Upsert(table string, row ...*pb.Value) error {
	_, err := tx.db.Upsert(tx.ctx, &pb.UpsertRequest{Table: table, Row: &pb.Row{Values: row}, TxId: tx.id})
	return tx.failed(err)
}

// Update sets columns of a row in the transaction.
func (tx *Tx) Update(table string, key []*pb.Value, set ...Set) error {
	_, err := tx.db.Update(tx.ctx, &pb.UpdateRequest{Table: table, Key: key, Set: sets(set), TxId: tx.id})
	return tx.failed(err)
}

// Delete removes a row in the transaction.
func (tx *Tx) Delete(table string, key ...*pb.Value) error {
	_, err := tx.db.Delete(tx.ctx, &pb.DeleteRequest{Table: table, Key: key, TxId: tx.id})
	return tx.failed(err)
}

// Scan reads an index range in the transaction (at most one page of
// req.Limit or max_scan_rows rows).
func (tx *Tx) Scan(req *pb.ScanRequest) ([]Row, error) {
	req = cloneScan(req)
	req.TxId = tx.id
	st, err := tx.db.Scan(tx.ctx, req)
	if err != nil {
		return nil, tx.failed(err)
	}
	var rows []Row
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, tx.failed(err)
		}
		for _, r := range m.GetRows() {
			rows = append(rows, Row(r.GetValues()))
		}
	}
}

// maxTxAttempts bounds how often Tx runs a transaction that keeps
// aborting.
const maxTxAttempts = 100

// Tx runs fn in an interactive transaction and commits it, returning the
// commit's LSN. fn runs again, in a new transaction, when that is sure to
// apply nothing twice:
//   - after ABORTED (a conflict: the transaction left no trace), after a
//     short random wait, at most 100 times;
//   - after NOT_PRIMARY (the node is a standby), on the primary it names;
//   - after UNAVAILABLE, on the next node after a backoff, unless the
//     commit had left the client and the UNAVAILABLE is not the node's
//     refusal (the error then wraps ErrUnknownOutcome; see the package
//     doc);
//   - after a certificate failed the TLS handshake of the connection to
//     the node it ran on (the transaction died with that connection,
//     as with a node found down), at once on another node whose
//     certificate has not failed so, with the same exception; with
//     none, the error wraps ErrCertificate. Not after NOT_PRIMARY naming
//     a node whose certificate failed so (see the package doc).
//
// It stops when the commit succeeds, fails otherwise, or ctx ends, so fn
// must be safe to run more than once. If fn returns an error the
// transaction is rolled back and the error returned.
func (c *Client) Tx(ctx context.Context, fn func(tx *Tx) error) (uint64, error) {
	backoff := c.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		lsn, addr, lost, err := c.tryTx(ctx, fn)
		if err == nil || ctx.Err() != nil || attempt == maxTxAttempts {
			return lsn, err
		}
		wait := time.Duration(0)
		primary, notPrimary := primaryIn(err)
		certErr := c.certFailedAt(primary)
		switch code := status.Code(err); {
		case code == codes.Aborted:
			wait = time.Duration(rand.Int64N(int64(c.opts.MinBackoff) << min(attempt, 6)))
		case lost: // Begin, which moves on by itself, fails with its own
			// The transaction died with its connection: run it again
			// on another node, as after UNAVAILABLE, but at once, as a
			// call does (Client.call).
			if errors.Is(err, ErrUnknownOutcome) || !c.certFailed(addr, err) || attempt >= c.opts.MaxAttempts {
				return lsn, err
			}
			c.log.Warn("a node's certificate failed the TLS handshake; running the transaction on the next", "addr", addr, "error", err)
		case secure.IsCertError(err) || errors.Is(err, ErrCertificate):
			return lsn, err // Begin's, or met by fn elsewhere: not this node's failure, nor one trying again mends
		case certErr != nil:
			return lsn, certErr // the only node that takes the transaction
		case primary != "" && c.follow(primary):
			c.log.Debug("following the primary", "from", addr, "primary", primary)
		case (code == codes.Unavailable || notPrimary) && addr != "" && !errors.Is(err, ErrUnknownOutcome) && attempt < c.opts.MaxAttempts:
			// After Begin (which moved on by itself until it gave up,
			// addr empty): the transaction died with its node.
			c.log.Debug("node unavailable; running the transaction on the next", "addr", addr, "attempt", attempt, "error", err)
			c.moveOn(addr, code == codes.Unavailable)
			wait, backoff = backoff, min(2*backoff, c.opts.MaxBackoff)
		default:
			return lsn, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, err
		}
	}
}

// tryTx runs fn in a transaction on the current node, which it returns.
// lost says a certificate failed the connection of one of the
// transaction's own calls (Tx.failed); fn may return a certificate
// failure it met elsewhere, which says nothing of this node.
func (c *Client) tryTx(ctx context.Context, fn func(tx *Tx) error) (_ uint64, addr string, lost bool, _ error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return 0, "", false, err
	}
	ours := func(err error) bool {
		var f *txCertFailure
		return errors.As(err, &f) && f.tx == tx
	}
	if err := fn(tx); err != nil {
		// The transaction may already be gone (aborted, timed out); a failed
		// rollback adds nothing to fn's error.
		tx.rollbackWithin(ctx)
		err = c.closedUnder(tx.ctx, tx.conn, err)
		return 0, tx.addr, ours(err), err
	}
	lsn, err := tx.Commit()
	if err != nil {
		tx.rollbackWithin(ctx) // a commit that never reached the node leaves it open
	}
	return lsn, tx.addr, ours(err), err
}

// rollbackWithin sends Rollback and waits for it until ctx ends, not
// longer: Tx returns by its caller's deadline. A rollback still under way
// then goes on alone, for at most rollbackTimeout.
func (tx *Tx) rollbackWithin(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tx.Rollback()
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Begin starts an interactive transaction on the current node; ctx is
// used for all of its calls. Prefer Tx, which also retries aborts. The
// node rolls back a transaction left idle past its tx_idle_timeout.
//
// Begin runs again after UNAVAILABLE, as a read does. Every attempt
// carries one random key (pb.HeaderBeginKey), so that a node that opened
// the transaction of an attempt whose reply was lost answers the next
// with it, instead of opening another and leaving the first to hold a
// slot of its max_open_transactions until tx_idle_timeout. An attempt
// cut after it left is therefore sent again to the same node first.
func (c *Client) Begin(ctx context.Context) (*Tx, error) {
	tx := &Tx{c: c, ctx: ctx}
	key := crand.Text()
	err := c.call(ctx, read, func(ctx context.Context, conn *grpc.ClientConn, addr string) error {
		tx.conn, tx.db, tx.addr = conn, pb.NewDatabaseServiceClient(conn), addr
		kctx := metadata.AppendToOutgoingContext(ctx, pb.HeaderBeginKey, key)
		r, err := tx.db.Begin(kctx, &pb.BeginRequest{})
		if tr, ok := ctx.Value(traceKey{}).(*callTrace); ok && ctx.Err() == nil && errors.Is(tr.outcome(err), ErrUnknownOutcome) {
			// The node may have opened it: ask that node again
			// before the call moves on to the next.
			r, err = tx.db.Begin(kctx, &pb.BeginRequest{})
		}
		tx.id = r.GetTxId()
		return err
	})
	if err != nil {
		return nil, err
	}
	return tx, nil
}

// Commit commits the transaction and returns its LSN. ABORTED means it
// conflicted with another and left no trace; run it again. An error
// wrapping ErrUnknownOutcome means the connection failed, a proxy
// between the client and the node answered UNAVAILABLE, or the context
// ended, after the commit left the client and before the node answered:
// it may have committed.
func (tx *Tx) Commit() (uint64, error) {
	ctx, tr := traced(tx.ctx)
	r, err := tx.db.Commit(ctx, &pb.CommitRequest{TxId: tx.id})
	return r.GetLsn(), tr.outcome(tx.failed(err))
}

// rollbackTimeout bounds a Rollback, which runs even after the
// transaction's context ended.
const rollbackTimeout = time.Second

// Rollback discards the transaction. It is sent even when the
// transaction's context has ended (with that context's values, for at
// most rollbackTimeout), so that the node need not wait for its
// tx_idle_timeout.
func (tx *Tx) Rollback() error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(tx.ctx), rollbackTimeout)
	defer cancel()
	_, err := tx.db.Rollback(ctx, &pb.RollbackRequest{TxId: tx.id})
	return err
}
