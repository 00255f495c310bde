package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestWriteUnconfirmedByTheNode: a primary whose standby is away, under
// sync_mode applied-ack and on_sync_timeout block, makes a commit in
// memory and answers DEADLINE_EXCEEDED "local but unconfirmed" a margin
// before the client's deadline (SPEC 6). The write is made: its error
// must wrap ErrUnknownOutcome, as one whose context ended while it
// waited does, not be the plain DEADLINE_EXCEEDED that the package doc
// says changed nothing, which a caller sends again.
//
// Found in review: the node's answer came before the client's own
// deadline, so the client counted it as the node's answer and returned
// it plain.
func TestWriteUnconfirmedByTheNode(t *testing.T) {
	ctx := testCtx(t)
	addr := blockedPrimary(t)
	c := newClient(t, addr)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := c.CreateTable(short, counters)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a create the node made but its standby did not confirm: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	// (Reads wait for the standbys to hold what they see: ask the status.)
	if st, err := c.Status(ctx); err != nil || st.GetLastLsn() != 1 {
		t.Fatalf("the create was not made (last LSN %d, %v): the test shows nothing", st.GetLastLsn(), err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Insert(short, "counters", Uint64(1), String("x"), Int64(1), Null())
	cancel()
	if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("an insert the node made but its standby did not confirm: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	// An interactive transaction's commit.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Insert("counters", Uint64(2), String("y"), Int64(1), Null()); err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = tx.WithContext(short).Commit()
	cancel()
	if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a transaction's commit the node made but its standby did not confirm: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
}

// TestSessionWriteUnconfirmedByTheNode: on a Session whose stream has a
// deadline, the node answers a commit it made but its standbys did not
// confirm with a reply of code DEADLINE_EXCEEDED, a margin before the
// deadline; Session.Commit's error must wrap ErrUnknownOutcome, as a
// unary write's does (TestWriteUnconfirmedByTheNode).
//
// Found in review: Session.Commit returned the reply's plain
// DEADLINE_EXCEEDED, which says the write changed nothing.
func TestSessionWriteUnconfirmedByTheNode(t *testing.T) {
	ctx := testCtx(t)
	addr := blockedPrimary(t)
	c := newClient(t, addr)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := c.CreateTable(short, counters) // made, unconfirmed
	cancel()
	if !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("create: %v", err)
	}
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	s, err := c.OpenSession(short)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	_, err = s.Commit(ctx, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(1), String("x"), Int64(1), Null()}}}}}}})
	if status.Code(err) != codes.DeadlineExceeded || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a session's commit the node made but its standby did not confirm: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	if st, err := c.Status(ctx); err != nil || st.GetLastLsn() != 2 {
		t.Fatalf("the commit was not made (last LSN %d, %v): the test shows nothing", st.GetLastLsn(), err)
	}
}

// TestSessionCommitAfterItsContextEnded: Session.Commit (and Get) with a
// context that has already ended sends nothing and fails with the
// context's plain code, as a unary write whose context ended before it
// left does: the write changed nothing.
//
// Found in review: the request was sent all the same and the node
// committed it, while the caller, told only that the outcome was
// unknown, had given up on it.
func TestSessionCommitAfterItsContextEnded(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, serve(t, nil))
	if _, err := c.CreateTable(ctx, counters); err != nil {
		t.Fatal(err)
	}
	s, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Commit(ended, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(1), String("x"), Int64(1), Null()}}}}}}})
	if status.Code(err) != codes.Canceled || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a session's commit whose context had ended: %v, want CANCELED without ErrUnknownOutcome", err)
	}
	// The session still works, and the row is not there.
	if r, err := s.Get(ctx, &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(1)}}); err != nil || r.GetFound() {
		t.Fatalf("the commit sent after its context ended was made (found %v, %v)", r.GetFound(), err)
	}
}

// txBlockingGets is a primary that begins transactions and whose reads
// hang until their call ends.
type txBlockingGets struct{ blockingGets }

func (*txBlockingGets) Begin(context.Context, *pb.BeginRequest) (*pb.BeginResponse, error) {
	return &pb.BeginResponse{TxId: 1}, nil
}

// TestForgottenConnectionFailsTxUnavailable: a transaction from Begin on
// a learned node, when another call finds that node down, forgets it and
// closes its connection, fails with UNAVAILABLE, as a Session does
// (TestForgottenConnectionEndsSessionsUnavailable), for its caller to
// begin another; not with the CANCELED of the closed connection, which
// tells a caller that did not cancel that it did.
//
// Found in review: the transaction's calls but Commit returned that
// CANCELED, and the package doc said a Session did too.
func TestForgottenConnectionFailsTxUnavailable(t *testing.T) {
	ctx := testCtx(t)
	primary := &txBlockingGets{blockingGets{entered: make(chan struct{}, 1)}}
	c, pAddr, _ := learnedPrimary(t, ctx, primary)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := tx.Get("counters", Uint64(1))
		done <- err
	}()
	<-primary.entered
	c.moveOn(pAddr, true) // as another call that found it down
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Fatalf("a transaction's read on the connection closed under it: %v, want UNAVAILABLE", err)
	}
	if err := tx.Insert("counters", Uint64(2)); status.Code(err) != codes.Unavailable {
		t.Fatalf("a transaction's write on the connection closed: %v, want UNAVAILABLE", err)
	}
	if _, err := tx.Scan(&pb.ScanRequest{Table: "counters"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a transaction's scan on the connection closed: %v, want UNAVAILABLE", err)
	}
}

// notDurable is a node whose disk is full: it makes each Insert in
// memory and answers it RESOURCE_EXHAUSTED with the NOT_DURABLE detail
// (pb.ReasonNotDurable), and each Commit INTERNAL with it (a log that
// failed).
type notDurable struct {
	pb.UnimplementedDatabaseServiceServer
}

func notDurableErr(code codes.Code) error {
	st, err := status.New(code, "the commit at LSN 7 is in memory but not fsync-log").
		WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonNotDurable, Metadata: map[string]string{pb.MetadataLSN: "7"}})
	if err != nil {
		return err
	}
	return st.Err()
}

func (*notDurable) Insert(context.Context, *pb.InsertRequest) (*pb.InsertResponse, error) {
	return nil, notDurableErr(codes.ResourceExhausted)
}

func (*notDurable) Commit(context.Context, *pb.CommitRequest) (*pb.CommitResponse, error) {
	return nil, notDurableErr(codes.Internal)
}

// unshipped is a node that makes each Update and answers it as one that
// stopped shipping its log while the commit waited for its standbys:
// FAILED_PRECONDITION with the UNCONFIRMED detail.
type unshipped struct {
	pb.UnimplementedDatabaseServiceServer
}

func (*unshipped) Update(context.Context, *pb.UpdateRequest) (*pb.UpdateResponse, error) {
	st, err := status.New(codes.FailedPrecondition, "the commit at LSN 7 is local (no-log) but unconfirmed: the node stopped shipping its log").
		WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonUnconfirmed, Metadata: map[string]string{pb.MetadataLSN: "7"}})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

// TestWriteUnconfirmedNotShipped: a commit the node made whose standbys
// could not confirm it because the node stopped shipping its log (a
// demotion, its peers removed) is FAILED_PRECONDITION, which alone says
// nothing changed: the UNCONFIRMED detail makes its error wrap
// ErrUnknownOutcome.
func TestWriteUnconfirmedNotShipped(t *testing.T) {
	c := newClient(t, serveFake(t, &unshipped{}))
	_, err := c.Update(testCtx(t), "counters", []*pb.Value{Uint64(1)})
	if status.Code(err) != codes.FailedPrecondition || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("an update made but unconfirmed: %v, want FAILED_PRECONDITION wrapping ErrUnknownOutcome", err)
	}
}

// TestWriteNotDurable: a write the node made in memory but whose redo
// record its log keeps out (a full disk: RESOURCE_EXHAUSTED, or a failed
// log: INTERNAL, with the NOT_DURABLE detail) "could apply twice if run
// again" (pb.ReasonNotDurable): its error wraps ErrUnknownOutcome, the
// client's one sign that a write may have committed, keeping its code.
//
// Found in review: it came back as a plain RESOURCE_EXHAUSTED, which
// SPEC 11 says changed nothing, so a caller would send it again once
// space was freed.
func TestWriteNotDurable(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, serveFake(t, &notDurable{}))
	_, err := c.Insert(ctx, "counters", Uint64(1))
	if status.Code(err) != codes.ResourceExhausted || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("an insert made but not durable: %v, want RESOURCE_EXHAUSTED wrapping ErrUnknownOutcome", err)
	}
	_, err = c.Commit(ctx, &pb.CommitRequest{})
	if status.Code(err) != codes.Internal || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("a batch made but not durable: %v, want INTERNAL wrapping ErrUnknownOutcome", err)
	}
}

// blockedPrimary starts a no-log primary whose commits wait, under
// on_sync_timeout = "block", for a standby that is never there, and
// returns its address.
func blockedPrimary(t *testing.T) string {
	t.Helper()
	return serve(t, func(c *conf.Config) {
		c.Node, c.Durability = "a", "no-log"
		c.SyncMode, c.SyncQuorum, c.OnSyncTimeout = conf.SyncAppliedAck, 1, "block"
		c.Peers = []conf.Peer{{Name: "b", Addr: "127.0.0.1:1"}}
	})
}
