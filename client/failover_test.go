package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/internal/grpctest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestTxFollowsThePrimary: a client whose first address is a standby
// (the usual state after a failover, or a pair listed standby-first) must
// still commit interactive transactions: the write's NOT_PRIMARY names the
// primary and nothing committed, so Tx can follow it and run fn again.
func TestTxFollowsThePrimary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, aAddr, _, bAddr := pair(t)
	setup := newClient(t, aAddr)
	if _, err := setup.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, bAddr, aAddr) // standby first
	for i := 0; i < 3; i++ {
		_, err := c.Tx(ctx, func(tx *Tx) error {
			return tx.Insert("counters", Uint64(uint64(i)), String("x"+string(rune('a'+i))), Int64(1), Null())
		})
		if err != nil {
			t.Fatalf("Tx %d with the standby listed first: %v (client at %s, primary %s)", i, err, c.Addr(), aAddr)
		}
	}
}

// TestOpenSessionMovesOn: a client whose first address is down must still
// open sessions on the node that is up ("when it fails, open another").
func TestOpenSessionMovesOn(t *testing.T) {
	ctx := testCtx(t)
	live := serve(t, nil)
	c := newClient(t, grpctest.DeadAddr(t), live)
	for i := 0; i < 3; i++ {
		s, err := c.OpenSession(ctx)
		if err != nil {
			t.Logf("OpenSession %d: %v (client at %s)", i, err, c.Addr())
			continue
		}
		_, err = s.Do(&pb.Request{Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}})
		s.Close()
		if err == nil {
			return
		}
		t.Logf("session %d: %v (client at %s)", i, err, c.Addr())
	}
	t.Fatalf("no session reached the live node %s; the client stays at %s", live, c.Addr())
}

// TestTxRollsBackOnDeadline: a Tx whose context ends inside fn must not
// leave its transaction open on the node until tx_idle_timeout.
func TestTxRollsBackOnDeadline(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, serve(t, func(c *conf.Config) { c.MaxOpenTransactions = 2; c.TxIdleTimeout = time.Minute }))
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := c.Tx(short, func(tx *Tx) error {
			if _, _, err := tx.Get("counters", Uint64(1)); err != nil {
				return err
			}
			<-short.Done() // a slow caller: its deadline passes inside fn
			return short.Err()
		})
		cancel()
		if err == nil {
			t.Fatal("the Tx should fail with its context")
		}
	}
	if _, err := c.Tx(ctx, func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("a Tx after three that hit their deadline: %v", err)
	}
}

// TestSessionKeepsErrorDetails: "each request runs as the unary call of
// the same name would", so a write on a standby's session must carry the
// NOT_PRIMARY detail naming the primary, as the unary call's error does
// (and likewise NOT_DURABLE, SEEN_NOT_DURABLE, TOO_LARGE).
func TestSessionKeepsErrorDetails(t *testing.T) {
	ctx := testCtx(t)
	_, aAddr, _, bAddr := pair(t)
	if _, err := newClient(t, aAddr).CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, bAddr)
	ins := &pb.InsertRequest{Table: "counters", Row: &pb.Row{Values: []*pb.Value{Uint64(1), String("x"), Int64(1), Null()}}}
	_, uerr := pb.NewDatabaseServiceClient(mustConn(t, c)).Insert(ctx, ins)
	if p, ok := primaryIn(uerr); !ok || p != aAddr {
		t.Fatalf("unary: %v", uerr)
	}
	s, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	replies, err := s.Do(&pb.Request{Op: &pb.Request_Insert{Insert: ins}})
	if err != nil {
		t.Fatal(err)
	}
	serr := ReplyError(replies[0])
	if p, ok := primaryIn(serr); !ok || p != aAddr {
		t.Fatalf("the session's reply lost the NOT_PRIMARY detail the unary call has: %v", serr)
	}
}

func mustConn(t *testing.T, c *Client) *grpc.ClientConn {
	conn, _, err := c.conn()
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestWriteCutAfterItLeft: a batch whose reply is lost after it
// committed (the connection is cut with the reply held back) is not run
// again: a second run would fail its own condition and report
// Committed=false ("nothing was written") although its row is there. The
// caller gets UNAVAILABLE wrapping ErrUnknownOutcome instead.
func TestWriteCutAfterItLeft(t *testing.T) {
	ctx := testCtx(t)
	addr, direct, px, c := behindProxy(t, ctx, nil, counters)
	req := &pb.CommitRequest{
		Conditions: []*pb.Condition{{Table: "counters", Key: []*pb.Value{Uint64(7)}, Expect: pb.Condition_EXPECT_NOT_EXISTS}},
		Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "counters",
			Row: &pb.Row{Values: []*pb.Value{Uint64(7), String("seven"), Int64(7), Null()}}}}}},
	}
	px.Stall(true)
	type result struct {
		r   *pb.CommitResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.Commit(ctx, req)
		done <- result{r, err}
	}()
	for {
		if _, found, err := direct.Get(ctx, "counters", Uint64(7)); err != nil {
			t.Fatal(err)
		} else if found {
			break
		}
		time.Sleep(time.Millisecond)
	}
	px.Cut() // the reply of the batch that committed is lost
	px.Stall(false)
	res := <-done
	switch {
	case res.err == nil && !res.r.GetCommitted():
		t.Fatalf("Commit says Committed=false (failed condition %d, \"nothing was written\") but its row is there: the client ran again a batch that had committed", res.r.GetFailedCondition())
	case !errors.Is(res.err, ErrUnknownOutcome) || status.Code(res.err) != codes.Unavailable:
		t.Fatalf("a batch cut after it left: %v %v, want UNAVAILABLE wrapping ErrUnknownOutcome", res.r, res.err)
	}
	// The client still works, and a write that never leaves it (a dead
	// node first) runs again on the next.
	if _, err := c.Insert(ctx, "counters", Uint64(8), String("eight"), Int64(8), Null()); err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, grpctest.DeadAddr(t), addr)
	if _, err := c2.Insert(ctx, "counters", Uint64(9), String("nine"), Int64(9), Null()); err != nil {
		t.Fatalf("an insert that never reached the dead node: %v", err)
	}
}

// refusing answers every write, and every Begin, UNAVAILABLE itself, with
// the REFUSED mark, as a node whose log failed refuses a write and
// changes nothing; it counts the Begins.
type refusing struct {
	pb.UnimplementedDatabaseServiceServer
	begins atomic.Int64
}

func (*refusing) Insert(context.Context, *pb.InsertRequest) (*pb.InsertResponse, error) {
	return nil, refusal("the redo log failed")
}

func (r *refusing) Begin(context.Context, *pb.BeginRequest) (*pb.BeginResponse, error) {
	r.begins.Add(1)
	return nil, refusal("shutting down")
}

// refusal is a node's UNAVAILABLE: it refused the request and did
// nothing of it.
func refusal(msg string) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonRefused})
	if err != nil {
		return err
	}
	return st.Err()
}

// serveRefusing serves a refusing node and returns it and its address.
func serveRefusing(t *testing.T) (*refusing, string) {
	t.Helper()
	r := &refusing{}
	return r, serveFake(t, r)
}

// serveFake serves srv, a fake node, on loopback until the test ends and
// returns its address.
func serveFake(t *testing.T, srv pb.DatabaseServiceServer) string {
	t.Helper()
	addr, _ := serveStoppable(t, srv)
	return addr
}

// TestWriteRefusedUnavailable: a write the node itself answered
// UNAVAILABLE (it changed nothing) runs again on the next node, though
// it left the client.
func TestWriteRefusedUnavailable(t *testing.T) {
	ctx := testCtx(t)
	live := serve(t, nil)
	if _, err := newClient(t, live).CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	_, refuser := serveRefusing(t)
	c := newClient(t, refuser, live)
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null()); err != nil {
		t.Fatalf("an insert the first node refused: %v", err)
	}
	if c.Addr() != live {
		t.Fatalf("client at %s, want %s", c.Addr(), live)
	}
}

// lostNode stands for a proxy (or load balancer) in front of a node,
// which forwarded each write and then lost the node: it answers a plain
// UNAVAILABLE, without the node's REFUSED mark, whether or not the node
// committed. It counts the writes that commit by themselves (those
// outside a transaction, and Commits); it begins transactions and takes
// their writes.
type lostNode struct {
	pb.UnimplementedDatabaseServiceServer
	writes atomic.Int64
}

func (l *lostNode) lost() error {
	l.writes.Add(1)
	return status.Error(codes.Unavailable, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
}

func (l *lostNode) Insert(_ context.Context, r *pb.InsertRequest) (*pb.InsertResponse, error) {
	if r.GetTxId() != 0 {
		return &pb.InsertResponse{}, nil
	}
	return nil, l.lost()
}

func (*lostNode) Begin(context.Context, *pb.BeginRequest) (*pb.BeginResponse, error) {
	return &pb.BeginResponse{TxId: 1}, nil
}

func (l *lostNode) Commit(context.Context, *pb.CommitRequest) (*pb.CommitResponse, error) {
	return nil, l.lost()
}

func (*lostNode) Rollback(context.Context, *pb.RollbackRequest) (*pb.RollbackResponse, error) {
	return &pb.RollbackResponse{}, nil
}

// TestWriteProxyUnavailable: a write answered UNAVAILABLE without the
// node's REFUSED mark after it left the client, as a proxy that
// forwarded it and then lost the node answers, may have committed: its
// error wraps ErrUnknownOutcome, and it is not run again on the next
// node, whether a unary write or a transaction's commit (Tx does not run
// fn again).
//
// Before, any UNAVAILABLE that came with a status (not a cut
// connection) was taken for the node's refusal, and the write ran again
// on the next node: twice, if the node behind the proxy had committed it.
func TestWriteProxyUnavailable(t *testing.T) {
	ctx := testCtx(t)
	live := serve(t, nil)
	direct := newClient(t, live)
	if _, err := direct.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	lost := &lostNode{}
	c := newClient(t, serveFake(t, lost), live)
	_, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null())
	if !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.Unavailable {
		t.Fatalf("an insert a proxy answered UNAVAILABLE: %v, want UNAVAILABLE wrapping ErrUnknownOutcome", err)
	}
	runs := 0
	_, err = c.Tx(ctx, func(tx *Tx) error {
		runs++
		return tx.Insert("counters", Uint64(2), String("y"), Int64(1), Null())
	})
	if !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.Unavailable || runs != 1 {
		t.Fatalf("a transaction whose commit a proxy answered UNAVAILABLE: %v after %d runs, want UNAVAILABLE wrapping ErrUnknownOutcome after 1", err, runs)
	}
	if n := lost.writes.Load(); n != 2 {
		t.Fatalf("the proxy saw %d writes, want 2", n)
	}
	for _, id := range []uint64{1, 2} {
		if _, found, err := direct.Get(ctx, "counters", Uint64(id)); err != nil || found {
			t.Fatalf("row %d on the next node (%v %v): the write ran again there", id, found, err)
		}
	}
}

// endingSessions ends each Session stream with err once it has received
// a message, which it does not run.
type endingSessions struct {
	pb.UnimplementedDatabaseServiceServer
	err error
}

func (e *endingSessions) Session(stream grpc.BidiStreamingServer[pb.SessionRequest, pb.SessionResponse]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return e.err
}

// TestSessionEndRefused: a write on a Session whose stream the node
// ended with its refusal (the REFUSED mark of a node shutting down,
// which runs none of the messages it has not answered) fails with that
// UNAVAILABLE, not wrapping ErrUnknownOutcome: it may be sent again on
// another session. A stream that a proxy ended with a plain UNAVAILABLE
// leaves the write's outcome unknown.
//
// Before, every stream that failed under a sent write made its outcome
// unknown, the node's own refusal too.
func TestSessionEndRefused(t *testing.T) {
	ctx := testCtx(t)
	insert := &pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(1), String("x"), Int64(1), Null()}}}}}
	for _, end := range []struct {
		err     error
		unknown bool
	}{
		{refusal("the server is shutting down"), false},
		{status.Error(codes.Unavailable, "upstream reset"), true},
	} {
		s, err := newClient(t, serveFake(t, &endingSessions{err: end.err})).OpenSession(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Start([]*pb.Request{insert}).Wait()
		if status.Code(err) != codes.Unavailable || errors.Is(err, ErrUnknownOutcome) != end.unknown {
			t.Errorf("a write on a session ended with %v: %v, want UNAVAILABLE, wrapping ErrUnknownOutcome: %v", end.err, err, end.unknown)
		}
		_ = s.Close() // it failed
	}
}

// TestTxBeginGivesUpOnce: a Tx whose Begin fails UNAVAILABLE everywhere
// makes MaxAttempts attempts in all, not MaxAttempts of its own times
// MaxAttempts of Begin's.
func TestTxBeginGivesUpOnce(t *testing.T) {
	r, addr := serveRefusing(t)
	c, err := New(Options{Addrs: []string{addr}, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := c.Tx(testCtx(t), func(*Tx) error { return nil }); status.Code(err) != codes.Unavailable {
		t.Fatalf("a Tx on a node that refuses Begin: %v", err)
	}
	if n := r.begins.Load(); n != 4 {
		t.Fatalf("%d Begins for MaxAttempts 4", n)
	}
}

// TestReadsGoBackToThePrimary: reads that moved on to the standby while
// the primary was out of reach go back to the primary, which the
// standby's answers name, once MaxBackoff has passed since they left it:
// for Get, Scan and DescribeTable. Before, they stayed on the standby,
// which may lag, until a write's redirect. A client that knows only the
// standby keeps reading from it, and so does one whose primary is down.
func TestReadsGoBackToThePrimary(t *testing.T) {
	ctx := testCtx(t)
	primary, aAddr, _, bAddr := pair(t)
	const hold = 300 * time.Millisecond
	c, err := New(Options{Addrs: []string{aAddr, bAddr}, MinBackoff: time.Millisecond, MaxBackoff: hold})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Insert(ctx, "counters", Uint64(1), String("x"), Int64(1), Null()); err != nil {
		t.Fatal(err) // applied-ack: on the standby too
	}
	reads := map[string]func() error{
		"get": func() error {
			_, found, err := c.Get(ctx, "counters", Uint64(1))
			if err == nil && !found {
				err = errors.New("row 1 not found")
			}
			return err
		},
		"scan": func() error {
			rows, err := c.Scan(ctx, &pb.ScanRequest{Table: "counters"})
			if err == nil && len(rows) != 1 {
				err = errors.New("the scan found no row")
			}
			return err
		},
		"describe": func() error {
			_, err := c.DescribeTable(ctx, "counters")
			return err
		},
	}
	for name, read := range reads {
		c.moveOn(aAddr, true) // as a read's UNAVAILABLE from the primary does
		left := time.Now()
		if err := read(); err != nil {
			t.Fatalf("%s on the standby: %v", name, err)
		}
		if got := c.Addr(); got != bAddr && time.Since(left) < hold {
			t.Fatalf("%s: reads went to %s within MaxBackoff of leaving the primary; want the standby %s", name, got, bAddr)
		}
		for c.Addr() != aAddr {
			if time.Since(left) > 10*time.Second {
				t.Fatalf("%s: reads still go to %s, 10s after the primary %s was left", name, c.Addr(), aAddr)
			}
			time.Sleep(hold / 10)
			if err := read(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}

	only := newClient(t, bAddr)
	for i := 0; i < 3; i++ {
		if err := reads["get"](); err != nil {
			t.Fatal(err)
		}
		if _, _, err := only.Get(ctx, "counters", Uint64(1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // past newClient's MaxBackoff
	}
	if got := only.Addr(); got != bAddr {
		t.Fatalf("a client given only the standby reads from %s", got)
	}

	if err := primary.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 3*hold; time.Sleep(hold / 10) {
		if err := reads["get"](); err != nil {
			t.Fatalf("a read with the primary down: %v", err)
		}
		if got := c.Addr(); got != bAddr {
			t.Fatalf("with the primary down, reads went back to %s", got)
		}
	}
}

// TestWriteDeadlineAfterItLeft: a batch whose deadline passes after it
// left the client, its reply held back, may have committed (here it
// did): its DEADLINE_EXCEEDED wraps ErrUnknownOutcome, as a cut
// connection's UNAVAILABLE does, so that the caller can tell it from a
// deadline that passed before the write left (a node never reached),
// which changed nothing and wraps no ErrUnknownOutcome. So does the
// commit of an interactive transaction.
//
// Found in review: only UNAVAILABLE was checked; a deadline's error was
// the same whether the write had left or not.
func TestWriteDeadlineAfterItLeft(t *testing.T) {
	ctx := testCtx(t)
	addr, direct, px, c := behindProxy(t, ctx, nil, counters)
	insert := func(id uint64) *pb.CommitRequest {
		return &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "counters",
			Row: &pb.Row{Values: []*pb.Value{Uint64(id), String(fmt.Sprint("n", id)), Int64(1), Null()}}}}}}}
	}
	px.Stall(true) // replies are held back; requests still reach the node
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := c.Commit(short, insert(1))
	cancel()
	if !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a batch whose deadline passed after it left: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	if _, found, err := direct.Get(ctx, "counters", Uint64(1)); err != nil || !found {
		t.Fatalf("the batch did not commit (%v %v): the test shows nothing", found, err)
	}
	px.Stall(false)

	// An interactive transaction's commit.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Insert("counters", Uint64(2), String("n2"), Int64(1), Null()); err != nil {
		t.Fatal(err)
	}
	px.Stall(true)
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = tx.WithContext(short).Commit()
	cancel()
	if !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a transaction's commit whose deadline passed after it left: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	px.Stall(false)

	// A node that never answers the connection: the write never left.
	silent := faultproxy.New(t, addr)
	silent.Stall(true)
	c2 := newClient(t, silent.Addr())
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = c2.Commit(short, insert(3))
	cancel()
	if status.Code(err) != codes.DeadlineExceeded || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a batch whose deadline passed before it left: %v, want DEADLINE_EXCEEDED without ErrUnknownOutcome", err)
	}
	silent.Stall(false)
}

// hung is a node that begins transactions and then answers nothing
// more, as a node that stopped (a long pause, a link gone silent): its
// calls end only with their deadline.
type hung struct {
	pb.UnimplementedDatabaseServiceServer
}

func (*hung) Begin(context.Context, *pb.BeginRequest) (*pb.BeginResponse, error) {
	return &pb.BeginResponse{TxId: 1}, nil
}

func (*hung) Get(ctx context.Context, _ *pb.GetRequest) (*pb.GetResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (*hung) Rollback(ctx context.Context, _ *pb.RollbackRequest) (*pb.RollbackResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestTxReturnsByItsDeadline: a Tx on a node that stopped answering
// returns by its context's deadline ("the context's deadline bounds
// everything"), though the rollback it sends (TestTxRollsBackOnDeadline)
// gets no answer: whether fn fails with the deadline, or fails on its
// own with time left.
//
// Found in review: Tx waited for the rollback, for up to rollbackTimeout
// (1s) past the caller's deadline.
func TestTxReturnsByItsDeadline(t *testing.T) {
	c := newClient(t, serveFake(t, &hung{}))
	const budget = 100 * time.Millisecond
	mine := errors.New("fn gives up")
	for name, fn := range map[string]func(tx *Tx) error{
		"deadline in fn": func(tx *Tx) error {
			_, _, err := tx.Get("counters", Uint64(1))
			return err
		},
		"fn fails": func(*Tx) error { return mine },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		start := time.Now()
		_, err := c.Tx(ctx, fn)
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Fatalf("%s: the Tx succeeded", name)
		}
		if took > budget+rollbackTimeout/2 {
			t.Errorf("%s: the Tx returned %v after it began, with a deadline of %v (%v)", name, took, budget, err)
		}
	}
}

// TestSessionWriteCutAfterItLeft: on a Session, a write whose stream is
// cut after it left (here after it committed), or whose wait's context
// ends first, gets an error wrapping ErrUnknownOutcome, as a unary
// write's does (TestWriteCutAfterItLeft); a message of reads does not.
//
// Found in review: the session failed its waiters with the stream's
// plain UNAVAILABLE, the error of a write the node refused, which a
// caller may send again: here that would insert the row twice (or fail
// ALREADY_EXISTS on its own first run).
func TestSessionWriteCutAfterItLeft(t *testing.T) {
	ctx := testCtx(t)
	_, direct, px, c := behindProxy(t, ctx, nil, counters)
	open := func() *Session {
		s, err := c.OpenSession(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() }) // it fails with the cut
		if _, err := s.Get(ctx, &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(0)}}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	insert := func(id uint64) *pb.Request {
		return &pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters",
			Row: &pb.Row{Values: []*pb.Value{Uint64(id), String(fmt.Sprint("n", id)), Int64(1), Null()}}}}}
	}
	get := &pb.Request{Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(1)}}}}

	s := open()
	px.Stall(true)
	write := s.Start([]*pb.Request{get, insert(1)})
	read := s.Start([]*pb.Request{get})
	for {
		if _, found, err := direct.Get(ctx, "counters", Uint64(1)); err != nil {
			t.Fatal(err)
		} else if found {
			break
		}
		time.Sleep(time.Millisecond)
	}
	px.Cut()
	px.Stall(false)
	if _, err := write.Wait(); !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.Unavailable {
		t.Fatalf("a session's write cut after it committed: %v, want UNAVAILABLE wrapping ErrUnknownOutcome", err)
	}
	if _, err := read.Wait(); err == nil || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a session's read cut: %v, want the stream's error without ErrUnknownOutcome", err)
	}

	s = open()
	px.Stall(true)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := s.Commit(short, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: insert(2).GetInsert()}}}})
	cancel()
	if !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a session's commit whose wait ended: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = s.Get(short, get.GetGet())
	cancel()
	if status.Code(err) != codes.DeadlineExceeded || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a session's read whose wait ended: %v, want DEADLINE_EXCEEDED without ErrUnknownOutcome", err)
	}
	px.Stall(false)
}

// TestBeginCutAfterItLeft: a Begin whose reply is lost after the node
// opened its transaction (the connection is cut with the reply held
// back) gets that transaction when it runs again, and opens no other:
// with max_open_transactions 1, the transaction commits and leaves the
// slot free. Before, the client ran the Begin again as a read, on the
// next node (here a live one that begins transactions) or, on the same
// node, into RESOURCE_EXHAUSTED, and the first transaction held the slot
// until tx_idle_timeout.
func TestBeginCutAfterItLeft(t *testing.T) {
	ctx := testCtx(t)
	_, direct, px, c := behindProxy(t, ctx, func(c *conf.Config) { c.MaxOpenTransactions = 1; c.TxIdleTimeout = time.Minute }, counters, serveFake(t, &txStandby{}))
	open := func() uint32 {
		t.Helper()
		st, err := direct.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.GetOpenTransactions()
	}
	px.Stall(true)
	type result struct {
		tx  *Tx
		err error
	}
	done := make(chan result, 1)
	go func() {
		tx, err := c.Begin(ctx)
		done <- result{tx, err}
	}()
	for open() == 0 {
		time.Sleep(time.Millisecond)
	}
	px.Cut() // the reply naming the transaction is lost
	px.Stall(false)
	res := <-done
	if res.err != nil {
		t.Fatalf("a Begin cut after it left: %v", res.err)
	}
	if res.tx.addr != px.Addr() {
		t.Fatalf("the Begin ran again on %s, leaving the transaction it opened on %s", res.tx.addr, px.Addr())
	}
	if err := res.tx.Insert("counters", Uint64(1), String("one"), Int64(1), Null()); err != nil {
		t.Fatalf("the transaction the lost reply named: %v", err)
	}
	if _, err := res.tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := open(); n != 0 {
		t.Fatalf("after the commit, %d transactions are open on the node", n)
	}
}

// behindProxy serves a node (edit adjusts its config) holding table def,
// and returns its address, a client of it, direct, and a client that
// reaches it through a fault proxy, px, then the addresses more,
// connected.
func behindProxy(t *testing.T, ctx context.Context, edit func(*conf.Config), def *pb.Table, more ...string) (addr string, direct *Client, px *faultproxy.Proxy, c *Client) {
	t.Helper()
	addr = serve(t, edit)
	direct = newClient(t, addr)
	if _, err := direct.CreateTable(ctx, def); err != nil {
		t.Fatal(err)
	}
	px = faultproxy.New(t, addr)
	c = newClient(t, append([]string{px.Addr()}, more...)...)
	if _, _, err := c.Get(ctx, def.GetName(), Uint64(0)); err != nil { // connect
		t.Fatal(err)
	}
	return addr, direct, px, c
}
