package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/servertest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// serve starts a real node on a loopback port and returns its address.
func serve(t *testing.T, edit func(*conf.Config)) string {
	_, addr := servertest.Start(t, edit)
	return addr
}

func newClient(t *testing.T, addrs ...string) *Client {
	t.Helper()
	return newClientWith(t, Options{Addrs: addrs, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
}

// newClientWith returns a client of opts, closed when the test ends.
func newClientWith(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

var counters = &pb.Table{
	Name: "counters",
	Columns: []*pb.Column{
		{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_UINT64},
		{Name: "name", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 16},
		{Name: "n", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		{Name: "at", Type: pb.ColumnType_COLUMN_TYPE_TIMESTAMP, Nullable: true},
	},
	PrimaryKey:  []string{"id"},
	PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED,
	Indexes: []*pb.Index{
		{Name: "by_name", Columns: []string{"name"}, Unique: true},
		{Name: "by_n", Columns: []string{"n"}, Kind: pb.IndexKind_INDEX_KIND_ORDERED},
	},
}

func TestOperations(t *testing.T) {
	c := newClient(t, serve(t, func(c *conf.Config) { c.MaxScanRows = 10 }))
	ctx := testCtx(t)
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 1, 2, 3, 4, time.UTC)
	var last uint64
	for i := uint64(1); i <= 35; i++ {
		lsn, err := c.Insert(ctx, "counters", Uint64(i), String(fmt.Sprint("c", i)), Int64(0), Time(at))
		if err != nil {
			t.Fatal(err)
		}
		if lsn <= last {
			t.Fatalf("insert LSN %d after %d", lsn, last)
		}
		last = lsn
	}
	r, found, err := c.GetBy(ctx, "counters", "by_name", String("c7"))
	if err != nil || !found || r.Uint64(0) != 7 || !r.Time(3).Equal(at) || r.IsNull(3) {
		t.Fatalf("get by name: %v %v %v", r, found, err)
	}
	if _, err := c.Update(ctx, "counters", []*pb.Value{Uint64(7)}, Set{"n", Int64(70)}, Set{"at", Null()}); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := c.Get(ctx, "counters", Uint64(7)); r.Int64(2) != 70 || !r.IsNull(3) || !r.Time(3).IsZero() {
		t.Fatalf("after update: %v", r)
	}
	if _, err := c.Upsert(ctx, "counters", Uint64(8), String("c8"), Int64(80), Null()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, "counters", Uint64(9)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, "counters", Uint64(9))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("second delete: %v", err)
	}
	// The whole table, through four pages of max_scan_rows.
	rows, err := c.Scan(ctx, &pb.ScanRequest{Table: "counters"})
	if err != nil || len(rows) != 34 {
		t.Fatalf("scan: %d rows, %v", len(rows), err)
	}
	// A non-unique range past the limit cannot be paged.
	rows, err = c.Scan(ctx, &pb.ScanRequest{Table: "counters", Index: "by_n", Prefix: []*pb.Value{Int64(0)}})
	if !errors.Is(err, ErrMore) || len(rows) != 10 {
		t.Fatalf("non-unique scan: %d rows, %v", len(rows), err)
	}
	res, err := c.Commit(ctx, &pb.CommitRequest{
		Conditions: []*pb.Condition{{Table: "counters", Key: []*pb.Value{Uint64(9)}, Expect: pb.Condition_EXPECT_NOT_EXISTS}},
		Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "counters", Row: &pb.Row{Values: []*pb.Value{Uint64(9), String("c9"), Int64(9), Null()}}}}}},
	})
	if err != nil || !res.GetCommitted() {
		t.Fatalf("commit: %v %v", res, err)
	}
	tables, err := c.ListTables(ctx)
	if err != nil || len(tables) != 1 || tables[0].GetRows() != 35 {
		t.Fatalf("list: %v %v", tables, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.GetLastLsn() != res.GetLsn() {
		t.Fatalf("status: %v %v", st, err)
	}
}

// TestTxRetriesAborts: read-modify-write increments from many goroutines
// conflict; Tx retries them, so none is lost.
func TestTxRetriesAborts(t *testing.T) {
	c := newClient(t, serve(t, nil))
	ctx := testCtx(t)
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(0), Null()); err != nil {
		t.Fatal(err)
	}
	const workers, each = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := c.Tx(ctx, func(tx *Tx) error {
					r, _, err := tx.Get("counters", Uint64(1))
					if err != nil {
						return err
					}
					return tx.Update("counters", []*pb.Value{Uint64(1)}, Set{"n", Int64(r.Int64(2) + 1)})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if r, _, _ := c.Get(ctx, "counters", Uint64(1)); r.Int64(2) != workers*each {
		t.Fatalf("counter %d, want %d", r.Int64(2), workers*each)
	}
	// An error from fn rolls back and comes back as is.
	mine := errors.New("changed my mind")
	_, err := c.Tx(ctx, func(tx *Tx) error {
		if err := tx.Delete("counters", Uint64(1)); err != nil {
			return err
		}
		return mine
	})
	if !errors.Is(err, mine) {
		t.Fatalf("Tx returned %v", err)
	}
	if _, found, _ := c.Get(ctx, "counters", Uint64(1)); !found {
		t.Fatal("the rolled-back delete took effect")
	}
}

// TestMovesOnFromADeadNode: the first address refuses connections; calls
// reach the second.
func TestMovesOnFromADeadNode(t *testing.T) {
	live := serve(t, nil)
	c := newClient(t, grpctest.DeadAddr(t), live)
	if _, err := c.Status(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if c.Addr() != live {
		t.Fatalf("calls go to %s, not the live node %s", c.Addr(), live)
	}
}

// TestDeadlineBoundsRetries: with no node up, a call gives up at its
// deadline.
func TestDeadlineBoundsRetries(t *testing.T) {
	c, err := New(Options{Addrs: []string{grpctest.DeadAddr(t), grpctest.DeadAddr(t)}, MinBackoff: time.Millisecond, MaxAttempts: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Status(ctx)
	if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	if ctx.Err() == nil {
		t.Fatal("the call gave up before its deadline")
	}
}

// standby answers every write as a standby does, naming the primary.
type standby struct {
	pb.UnimplementedDatabaseServiceServer
	primary string
	calls   int
	mu      sync.Mutex
}

func (s *standby) Insert(context.Context, *pb.InsertRequest) (*pb.InsertResponse, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	st, err := status.New(codes.FailedPrecondition, "this node is a standby; the primary is "+s.primary).
		WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonNotPrimary, Metadata: map[string]string{pb.MetadataPrimary: s.primary}})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

// TestFollowsThePrimary: a write sent to a standby goes on to the primary
// its error names, even one the client was not given.
func TestFollowsThePrimary(t *testing.T) {
	primary := serve(t, nil)
	sb := &standby{primary: primary}
	c := newClient(t, serveFake(t, sb))
	ctx := testCtx(t)
	if _, err := c.CreateTable(ctx, counters); status.Code(err) != codes.Unimplemented {
		t.Fatalf("the fake standby should not know CreateTable: %v", err)
	}
	// Point a second client at the primary to create the table.
	if _, err := newClient(t, primary).CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null()); err != nil {
		t.Fatal(err)
	}
	sb.mu.Lock()
	calls := sb.calls
	sb.mu.Unlock()
	if c.Addr() != primary || calls != 1 {
		t.Fatalf("client at %s after %d standby calls; want the primary %s", c.Addr(), calls, primary)
	}
}

// TestSessionPipelines: many goroutines share one session, each keeping
// several messages in flight; every reply reaches its sender, in order.
func TestSessionPipelines(t *testing.T) {
	c := newClient(t, serve(t, nil))
	ctx := testCtx(t)
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const workers, msgs, window = 4, 30, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var inflight []*Pending
			var ids []uint64
			check := func() error {
				replies, err := inflight[0].Wait()
				if err != nil {
					return err
				}
				id := ids[0]
				inflight, ids = inflight[1:], ids[1:]
				if replies[0].GetId() != id || ReplyError(replies[0]) != nil || ReplyError(replies[1]) == nil {
					return fmt.Errorf("replies to message %d: %v", id, replies)
				}
				if got, _ := s.Get(ctx, &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(id)}}); !got.GetFound() {
					return fmt.Errorf("row %d was not inserted", id)
				}
				return nil
			}
			for m := 0; m < msgs; m++ {
				id := uint64(w*1000 + m + 1)
				row := &pb.Row{Values: []*pb.Value{Uint64(id), String(fmt.Sprint(id)), Int64(1), Null()}}
				inflight = append(inflight, s.Start([]*pb.Request{
					{Id: id, Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters", Row: row}}},
					{Id: id, Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters", Row: row}}}, // a duplicate
				}))
				ids = append(ids, id)
				if len(inflight) == window {
					if err := check(); err != nil {
						errs <- err
						return
					}
				}
			}
			for len(inflight) > 0 {
				if err := check(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(&pb.Request{Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}}); err == nil {
		t.Fatal("a closed session took a request")
	}
	tables, err := c.ListTables(ctx)
	if err != nil || tables[0].GetRows() != workers*msgs {
		t.Fatalf("%v rows, want %d (%v)", tables, workers*msgs, err)
	}
}

// TestSessionLargeReplies: replies too big for one message come in
// several, and the session still matches them to their requests.
func TestSessionLargeReplies(t *testing.T) {
	c := newClient(t, serve(t, func(c *conf.Config) { c.MaxMessageBytes = 64 << 10 }))
	ctx := testCtx(t)
	blobs := &pb.Table{
		Name:       "blobs",
		Columns:    []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_UINT64}, {Name: "b", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: 4096}},
		PrimaryKey: []string{"id"},
	}
	if _, err := c.CreateTable(ctx, blobs); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		if _, err := c.Insert(ctx, "blobs", Uint64(i), Bytes(make([]byte, 4000))); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	var reqs []*pb.Request
	for i := uint64(1); i <= 40; i++ {
		reqs = append(reqs, &pb.Request{Id: i, Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "blobs", Key: []*pb.Value{Uint64(i)}}}})
	}
	for round := 0; round < 2; round++ { // the second message follows the first's several responses
		replies, err := s.Do(reqs...)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range replies {
			if r.GetId() != uint64(i+1) || !r.GetGet().GetFound() || len(r.GetGet().GetRow().GetValues()[1].GetBytes()) != 4000 {
				t.Fatalf("reply %d: id %d, %v", i, r.GetId(), ReplyError(r))
			}
		}
	}
	// One batch whose results would not fit fails before it commits.
	ops := []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "blobs", Key: []*pb.Value{Uint64(1)}}}}}
	for _, r := range reqs {
		ops = append(ops, &pb.Operation{Op: &pb.Operation_Get{Get: r.GetGet()}})
	}
	if _, err := c.Commit(ctx, &pb.CommitRequest{Operations: ops}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized batch: %v", err)
	}
	if _, found, _ := c.Get(ctx, "blobs", Uint64(1)); !found {
		t.Fatal("the oversized batch's delete committed")
	}
}

// pair starts a primary a (applied-ack) and its standby b, real nodes,
// and returns them with their addresses.
func pair(t *testing.T) (a *server.Server, aAddr string, b *server.Server, bAddr string) {
	t.Helper()
	b, bAddr = servertest.Start(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	a, aAddr = servertest.Start(t, func(c *conf.Config) {
		c.Node, c.SyncMode = "a", conf.SyncAppliedAck
		c.Peers = []conf.Peer{{Name: "b", Addr: bAddr}}
	})
	return a, aAddr, b, bAddr
}

// TestFollowsAFailover, with real nodes: a client that knows both nodes
// of a pair writes through the standby's redirect (NOT_PRIMARY naming
// the primary's address) to the primary; once the primary is gone and
// the standby promoted, its writes go to the new primary.
func TestFollowsAFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	primary, aAddr, standby, bAddr := pair(t)
	c := newClient(t, bAddr, aAddr)
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null()); err != nil {
		t.Fatal(err)
	}
	if c.Addr() != aAddr {
		t.Fatalf("the client writes to %s, not the primary %s", c.Addr(), aAddr)
	}
	if err := primary.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, "counters", Uint64(2), String("y"), Int64(2), Null()); err != nil {
		t.Fatalf("a write after the failover: %v", err)
	}
	if c.Addr() != bAddr {
		t.Fatalf("the client writes to %s, not the new primary %s", c.Addr(), bAddr)
	}
	if _, found, err := c.Get(ctx, "counters", Uint64(1)); err != nil || !found {
		t.Fatalf("the row written before the failover: %v %v", found, err)
	}
}

// TestCallsAfterClose: a call made after Close fails with ErrClosed and
// dials nothing: a connection made then would never be closed.
func TestCallsAfterClose(t *testing.T) {
	c, err := New(Options{Addrs: []string{serve(t, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := c.ListTables(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTables(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("a call after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Tx(ctx, func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("a transaction after Close: %v, want ErrClosed", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.conns) != 0 {
		t.Fatalf("%d connections made after Close", len(c.conns))
	}
}
