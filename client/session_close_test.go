package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// hungSession opens a session on a node that accepts the stream and then
// neither answers nor ends it, nor reads the half-close (a hung process,
// a stalled link): blockingSession, until the client cancels. Close
// gives up after wait.
func hungSession(t *testing.T, wait time.Duration) *Session {
	t.Helper()
	node := &blockingSession{opened: make(chan struct{}, 1)}
	c := newClient(t, serveFake(t, node))
	s, err := c.OpenSession(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	s.closeWait = wait
	<-node.opened
	return s
}

// within runs fn and fails the test if it has not returned after d:
// the hang this file tests for. On failure fn's goroutine ends when the
// test's client closes the connection under it.
func within(t *testing.T, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s has not returned after %v", what, d)
		return nil
	}
}

func insertReq(id uint64) *pb.Request {
	return &pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(id), String("x"), Int64(1), Null()}}}}}
}

func getReq(id uint64) *pb.Request {
	return &pb.Request{Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(id)}}}}
}

// TestSessionCloseAgainstAHungNode: Close of a session whose node never
// answers nor ends the stream returns after its bound, having cancelled
// the stream; the messages in flight get a definite outcome: a write's
// error wraps ErrUnknownOutcome (it reached the node, which may have
// made it), a read's does not. Close may be called again; calls after
// it fail at once.
//
// Before, Close waited for the node to end the stream, forever, and so
// did whatever owned the session.
func TestSessionCloseAgainstAHungNode(t *testing.T) {
	s := hungSession(t, 200*time.Millisecond)
	write := s.Start([]*pb.Request{getReq(1), insertReq(1)})
	read := s.Start([]*pb.Request{getReq(1)})
	err := within(t, 5*time.Second, "Close of a session on a hung node", s.Close)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Close that gave up on a hung node: %v, want DEADLINE_EXCEEDED", err)
	}
	if _, err := write.Wait(); !errors.Is(err, ErrUnknownOutcome) || status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a write in flight when Close gave up: %v, want DEADLINE_EXCEEDED wrapping ErrUnknownOutcome", err)
	}
	if _, err := read.Wait(); status.Code(err) != codes.DeadlineExceeded || errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a read in flight when Close gave up: %v, want DEADLINE_EXCEEDED without ErrUnknownOutcome", err)
	}
	if err := within(t, time.Second, "a second Close", s.Close); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if _, err := s.Do(insertReq(2)); err == nil || errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write started after Close: %v, want an error without ErrUnknownOutcome (it never left)", err)
	}
}

// TestSessionCloseContext: CloseContext gives up when its context ends,
// with the context's code for itself and the messages in flight, even
// with Sends held up by the node's flow control (a hung node reads
// nothing) and while other goroutines start messages and close the
// session too; nothing is left running (TestMain's goleak).
func TestSessionCloseContext(t *testing.T) {
	s := hungSession(t, 200*time.Millisecond)
	write := s.Start([]*pb.Request{insertReq(1)})
	// A message's Send returns once the transport takes it, whatever
	// its size; the next waits for the transport to write it out, past
	// what the node's flow control lets through unread (16 MiB at the
	// most, with BDP growth), so it blocks, holding the send lock.
	big := &pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(3), Bytes(make([]byte, 17<<20))}}}}}
	taken, held := make(chan *Pending, 1), make(chan *Pending, 1)
	go func() {
		taken <- s.Start([]*pb.Request{big})
		held <- s.Start([]*pb.Request{getReq(2)})
	}()
	var bigWrite *Pending
	select {
	case bigWrite = <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("the Start of a message of 17 MiB has not returned after 10s")
	}
	time.Sleep(100 * time.Millisecond) // for the next to block in Send; no harm if not yet
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	starts := make(chan *Pending, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			starts <- s.Start([]*pb.Request{getReq(1)})
		}()
	}
	closed := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		closed <- s.Close() // its bound, longer than the cancel below
	}()
	time.AfterFunc(50*time.Millisecond, cancel)
	err := within(t, 5*time.Second, "CloseContext of a session on a hung node", func() error { return s.CloseContext(ctx) })
	if status.Code(err) != codes.Canceled {
		t.Errorf("CloseContext whose context was cancelled: %v, want CANCELED", err)
	}
	if _, err := write.Wait(); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write in flight when CloseContext gave up: %v, want it to wrap ErrUnknownOutcome", err)
	}
	within(t, 5*time.Second, "Close, Start concurrent with CloseContext", func() error { wg.Wait(); return nil })
	if err := <-closed; err != nil && status.Code(err) != codes.Canceled && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a concurrent Close: %v", err)
	}
	close(starts)
	for p := range starts {
		if _, err := p.Wait(); err == nil || errors.Is(err, ErrUnknownOutcome) {
			t.Errorf("a read started as the session closed: %v, want an error without ErrUnknownOutcome", err)
		}
	}
	if _, err := bigWrite.Wait(); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write partly sent when CloseContext gave up: %v, want it to wrap ErrUnknownOutcome", err)
	}
	err = within(t, 5*time.Second, "a Start held up by flow control", func() error {
		_, err := (<-held).Wait()
		return err
	})
	if err == nil {
		t.Errorf("a read held up by flow control got replies from a node that answers nothing")
	}
}

// heldUpSession is a session on a hung node (hungSession) whose sends
// are held up by the node's flow control: a message of 17 MiB, past what
// it lets through unread, has gone to the transport, and the next Send
// waits for the transport to write it out. It returns the session and
// the big message's Pending.
func heldUpSession(t *testing.T) (*Session, *Pending) {
	t.Helper()
	s := hungSession(t, 200*time.Millisecond)
	big := &pb.Request{Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "counters",
		Row: &pb.Row{Values: []*pb.Value{Uint64(3), Bytes(make([]byte, 17<<20))}}}}}
	var p *Pending
	if err := within(t, 10*time.Second, "the Start of a message of 17 MiB", func() error { p = s.Start([]*pb.Request{big}); return nil }); err != nil {
		t.Fatal(err)
	}
	return s, p
}

// TestSessionSendHeldUpGivesUp: a Get whose Send the node's flow control
// holds up (a node that reads no more of the stream) returns when its
// context ends, with DEADLINE_EXCEEDED; the stream, which cannot take
// back half a message, is cancelled, so the session's other messages
// fail too, a write among them wrapping ErrUnknownOutcome, and a message
// started after fails at once.
//
// Before, the Send ignored the call's context: Get, and Commit, blocked
// until the node read again or the session was closed.
func TestSessionSendHeldUpGivesUp(t *testing.T) {
	s, bigWrite := heldUpSession(t)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// The first Get's Send may still pass (the transport takes a message
	// whatever its size); one behind it is held up.
	var err error
	within(t, 5*time.Second, "Gets on a session held up by flow control", func() error {
		for range 2 {
			if _, err = s.Get(ctx, &pb.GetRequest{Table: "counters", Key: []*pb.Value{Uint64(1)}}); err != nil {
				break
			}
		}
		return nil
	})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a Get held up past its deadline: %v, want DEADLINE_EXCEEDED", err)
	}
	if _, err := waitWithin(t, bigWrite); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("the write sent before, on the cancelled stream: %v, want it to wrap ErrUnknownOutcome", err)
	}
	if _, err := s.Do(getReq(2)); err == nil {
		t.Error("a message started on the cancelled session did not fail")
	}
}

// TestSessionSendWaitingItsTurnGivesUp: a message that waits to be sent
// behind one the node's flow control holds up fails when its context
// ends, without being sent (no ErrUnknownOutcome, though it is a
// write), and the session goes on: the held-up Send still waits.
func TestSessionSendWaitingItsTurnGivesUp(t *testing.T) {
	s, _ := heldUpSession(t)
	defer s.Close()
	blocked := make(chan *Pending, 1)
	go func() { blocked <- s.Start([]*pb.Request{getReq(1)}) }() // no context: it waits in Send
	time.Sleep(100 * time.Millisecond)                           // for it to block in Send; no harm if not yet
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var p *Pending
	within(t, 5*time.Second, "StartContext behind a held-up Send", func() error { p = s.StartContext(ctx, []*pb.Request{insertReq(5)}); return nil })
	if _, err := p.Wait(); status.Code(err) != codes.DeadlineExceeded || errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write that waited its turn past its deadline: %v, want DEADLINE_EXCEEDED without ErrUnknownOutcome", err)
	}
	if err := sessionErr(s); err != nil {
		t.Errorf("the session failed: %v", err)
	}
	select {
	case p := <-blocked:
		t.Errorf("the held-up Start returned: %v", p.err)
	default:
	}
}

// sessionErr returns the error that ended s, if any.
func sessionErr(s *Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// waitWithin waits for p's replies, failing the test if they take 5 s.
func waitWithin(t *testing.T, p *Pending) ([]*pb.Reply, error) {
	t.Helper()
	var replies []*pb.Reply
	err := within(t, 5*time.Second, "the replies of a message", func() error {
		var err error
		replies, err = p.Wait()
		return err
	})
	return replies, err
}

// TestSessionStartEndedContext: a message started with a context that
// has ended is not sent and fails with its code, and the session goes on.
//
// Found in review: with the send's turn free, select took it half the
// time, and the context's AfterFunc then cancelled the stream under a
// Send that was not held up at all.
func TestSessionStartEndedContext(t *testing.T) {
	s := hungSession(t, 200*time.Millisecond)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		p := s.StartContext(ctx, []*pb.Request{insertReq(1)})
		if _, err := waitWithin(t, p); status.Code(err) != codes.Canceled || errors.Is(err, ErrUnknownOutcome) {
			t.Fatalf("a write started with a cancelled context: %v, want CANCELED without ErrUnknownOutcome", err)
		}
	}
	if err := sessionErr(s); err != nil {
		t.Fatalf("the session failed: %v", err)
	}
}
