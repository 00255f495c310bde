package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Session is a Session stream to one node, for clients that send many
// requests: Start sends a message of requests without waiting, so many can
// be in flight, and replies come back in order. It is safe for concurrent
// use. A Session is bound to the node it opened on and is not retried
// elsewhere; when it fails, open another. A message with a write (a
// Commit, or an Insert, Update, Upsert or Delete outside a transaction)
// that was sent and then lost its replies, because the stream failed
// (other than with the node's refusal, the REFUSED detail of a node
// shutting down, which ran none of the messages it did not answer) or
// the wait's context ended, may have committed: its error wraps
// ErrUnknownOutcome, as a unary write's does. So may a write whose reply
// has the code DEADLINE_EXCEEDED or CANCELED (the node made the commit
// but could not confirm it in time), or the NOT_DURABLE detail;
// Session.Commit's error then wraps ErrUnknownOutcome. Close waits for
// the replies still due for 5 seconds at the most, CloseContext until its
// context ends; then they fail so too, and the stream is cancelled.
type Session struct {
	stream interface {
		Send(*pb.SessionRequest) error
		Recv() (*pb.SessionResponse, error)
		CloseSend() error
	}
	cancel    context.CancelFunc
	recvDone  chan struct{}
	closeWait time.Duration             // Close's bound: closeTimeout
	follow    func(primary string) bool // the Client's
	// closedUnder turns the CANCELED of a stream whose connection the
	// Client closed under it (it forgot the node, found down) into
	// UNAVAILABLE (Client.closedUnder).
	closedUnder func(error) error

	// sendSem, a semaphore of one, orders Send with the queue of
	// waiters; a send waits for it only while its context lasts.
	sendSem chan struct{}
	closed  bool // CloseSend was called; guarded by sendSem

	mu      sync.Mutex
	waiting []*Pending // in send order
	err     error      // why the stream ended
}

// Pending is a sent message awaiting its replies.
type Pending struct {
	n       int
	done    chan struct{}
	replies []*pb.Reply
	err     error
	// writes says the message holds a request that commits by itself
	// (commits); unsent that it never left (Send failed).
	writes bool
	unsent atomic.Bool
}

// lost returns err, the reason p's replies did not all come, wrapped in
// ErrUnknownOutcome when p holds a write that may have run: one that
// left, on a stream that did not end with the node's refusal (refused:
// the node ends a stream so only between messages, those it has not
// answered not run).
func (p *Pending) lost(err error) error {
	if p.writes && !p.unsent.Load() && !refused(err) {
		return &unknownOutcome{err}
	}
	return err
}

// commits says whether reqs hold a request that may commit by itself: a
// Commit, or a write outside an interactive transaction (one inside is
// undone with its transaction unless that commits).
func commits(reqs []*pb.Request) bool {
	for _, r := range reqs {
		var w interface{ GetTxId() uint64 } // a write
		switch op := r.GetOp().(type) {
		case *pb.Request_Commit:
			return true
		case *pb.Request_Insert:
			w = op.Insert
		case *pb.Request_Update:
			w = op.Update
		case *pb.Request_Upsert:
			w = op.Upsert
		case *pb.Request_Delete:
			w = op.Delete
		}
		if w != nil && w.GetTxId() == 0 {
			return true
		}
	}
	return false
}

// Wait returns the message's replies, one per request, in order. A reply
// with a non-zero Code is that request's error (ReplyError turns it into
// one); the others are unaffected.
func (p *Pending) Wait() ([]*pb.Reply, error) {
	<-p.done
	return p.replies, p.err
}

// WaitContext is Wait that gives up when ctx ends. The requests may still
// run on the node; their replies are then dropped, and the error of a
// message with a write wraps ErrUnknownOutcome.
func (p *Pending) WaitContext(ctx context.Context) ([]*pb.Reply, error) {
	select {
	case <-p.done:
		return p.replies, p.err
	case <-ctx.Done():
		return nil, p.lost(status.FromContextError(ctx.Err()).Err())
	}
}

// OpenSession opens a Session stream on the current node, moving on
// after UNAVAILABLE as other calls do. ctx bounds the whole stream. A
// reply that names the primary (a write refused by a standby) points the
// Client's later calls, and sessions, at it.
func (c *Client) OpenSession(ctx context.Context) (*Session, error) {
	ctx, cancel := context.WithCancel(ctx)
	var stream pb.DatabaseService_SessionClient
	var on *grpc.ClientConn
	err := c.call(ctx, read, func(ctx context.Context, conn *grpc.ClientConn, addr string) error {
		var err error
		if stream, err = pb.NewDatabaseServiceClient(conn).Session(ctx); err != nil {
			return fmt.Errorf("client: open a session on %s: %w", addr, err)
		}
		on = conn
		return nil
	})
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Session{stream: stream, cancel: cancel, recvDone: make(chan struct{}), sendSem: make(chan struct{}, 1), closeWait: closeTimeout, follow: c.follow,
		closedUnder: func(err error) error { return c.closedUnder(ctx, on, err) }}
	go s.receive()
	return s, nil
}

// receive hands each reply message to the oldest waiter.
func (s *Session) receive() {
	defer close(s.recvDone)
	for {
		m, err := s.stream.Recv()
		for _, r := range m.GetReplies() {
			if r.GetCode() == uint32(codes.FailedPrecondition) {
				if primary, _ := primaryIn(ReplyError(r)); primary != "" {
					s.follow(primary) // not to a node found down (Client.follow)
				}
			}
		}
		s.mu.Lock()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("client: the session ended")
			}
			if s.err == nil { // else deliver failed it, and cancelled it
				s.err = s.closedUnder(err)
			}
			for _, p := range s.waiting {
				p.err = p.lost(s.err)
				close(p.done)
			}
			s.waiting = nil
			s.mu.Unlock()
			return
		}
		if err := s.deliver(m.GetReplies()); err != nil {
			s.err = err
			s.mu.Unlock()
			s.cancel()
			continue // Recv fails next, after the cancel, and fails the waiters
		}
		s.mu.Unlock()
	}
}

// deliver hands replies to the waiters in send order; the replies to one
// message may come in several responses. The caller holds s.mu.
func (s *Session) deliver(replies []*pb.Reply) error {
	for len(replies) > 0 {
		if len(s.waiting) == 0 {
			return fmt.Errorf("client: the node sent %d replies nobody asked for", len(replies))
		}
		p := s.waiting[0]
		take := min(p.n-len(p.replies), len(replies))
		p.replies = append(p.replies, replies[:take]...)
		replies = replies[take:]
		if len(p.replies) == p.n {
			s.waiting = s.waiting[1:]
			close(p.done)
		}
	}
	return nil
}

// Start sends reqs as one message and returns at once, unless the
// node's flow control holds the message up (a node that reads no more of
// the stream), or holds up one sent before: StartContext bounds that.
func (s *Session) Start(reqs []*pb.Request) *Pending {
	return s.StartContext(context.Background(), reqs)
}

// StartContext is Start that waits to send only while ctx lasts. A
// message that waited its turn behind another held up until ctx ended is
// not sent: it fails with ctx's DEADLINE_EXCEEDED or CANCELED, and the
// session goes on. One whose ctx ends while its own Send is under way
// (the node's flow control holds it up, or, rarely, the deadline falls
// just then) cancels the stream, which cannot take back half a message:
// the session fails, and its messages without replies fail as on a
// failed stream (Session), this one's error too, which for a write may
// wrap ErrUnknownOutcome though it did not leave.
func (s *Session) StartContext(ctx context.Context, reqs []*pb.Request) *Pending {
	p := &Pending{n: len(reqs), done: make(chan struct{}), writes: commits(reqs)}
	fail := func(err error) *Pending {
		p.err = err
		close(p.done)
		return p
	}
	if len(reqs) == 0 {
		return fail(nil)
	}
	taken := false
	select {
	case s.sendSem <- struct{}{}:
		taken = true
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		// Ended before its turn, or as it came (select picks either):
		// not sent, and no cancel of the stream for a Send not begun.
		if taken {
			<-s.sendSem
		}
		p.unsent.Store(true)
		return fail(status.FromContextError(err).Err())
	}
	defer func() { <-s.sendSem }()
	s.mu.Lock()
	err := s.err
	if err == nil && s.closed {
		err = errors.New("client: the session is closed")
	}
	if err != nil {
		s.mu.Unlock()
		return fail(err)
	}
	s.waiting = append(s.waiting, p)
	s.mu.Unlock()
	var sendMu sync.Mutex
	sending := true
	stop := context.AfterFunc(ctx, func() {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sending {
			s.stalled(ctx.Err())
		}
	})
	err = s.stream.Send(&pb.SessionRequest{Requests: reqs})
	sendMu.Lock()
	sending = false
	sendMu.Unlock()
	stop()
	if err != nil {
		// The message did not leave: its error is the stream's, not an
		// unknown outcome (unless the receiver failed it first).
		p.unsent.Store(true)
		if !errors.Is(err, io.EOF) {
			// The receiver fails every waiter, this one included, once the
			// stream's error reaches Recv. io.EOF means the node ended the
			// stream: Recv then reports why, which the cancel would hide.
			s.cancel()
		}
	}
	return p
}

// stalled cancels the stream whose Send was held up until cause ended
// its context: the messages waiting fail with cause's code.
func (s *Session) stalled(cause error) {
	s.cancelWith(status.Errorf(status.FromContextError(cause).Code(), "client: a message on the session could not be sent before its context ended (the node reads no more of the stream); the session is cancelled: %v", cause))
}

// cancelWith cancels the stream with err for its error, unless it has
// ended already (ok false), and returns how many messages were waiting.
func (s *Session) cancelWith(err error) (waiting int, ok bool) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return 0, false
	}
	waiting, s.err = len(s.waiting), err
	s.mu.Unlock()
	s.cancel()
	return waiting, true
}

// Do sends reqs and waits for their replies.
func (s *Session) Do(reqs ...*pb.Request) ([]*pb.Reply, error) {
	return s.Start(reqs).Wait()
}

// ReplyError returns a reply's error as a gRPC status error, or nil.
func ReplyError(r *pb.Reply) error {
	if r.GetCode() == 0 {
		return nil
	}
	return status.FromProto(&spb.Status{Code: int32(r.GetCode()), Message: r.GetMessage(), Details: r.GetDetails()}).Err()
}

// one sends a single request and returns its reply or error, waiting
// until ctx ends at the most; with ctx already ended it sends nothing,
// as a unary call does. A write's reply of DEADLINE_EXCEEDED or
// CANCELED, or with the NOT_DURABLE detail, wraps ErrUnknownOutcome:
// the node may have made the commit and not confirmed it (unconfirmed).
func (s *Session) one(ctx context.Context, req *pb.Request) (*pb.Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	reqs := []*pb.Request{req}
	replies, err := s.StartContext(ctx, reqs).WaitContext(ctx)
	if err != nil {
		return nil, err
	}
	err = ReplyError(replies[0])
	if err != nil && unconfirmed(err) && commits(reqs) {
		err = &unknownOutcome{err}
	}
	return replies[0], err
}

// Get sends one Get on the session.
func (s *Session) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	r, err := s.one(ctx, &pb.Request{Op: &pb.Request_Get{Get: req}})
	return r.GetGet(), err
}

// Commit sends one Commit on the session and waits for its reply until
// ctx ends; with ctx already ended it sends nothing and returns ctx's
// DEADLINE_EXCEEDED or CANCELED: the commit changed nothing.
func (s *Session) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	r, err := s.one(ctx, &pb.Request{Op: &pb.Request_Commit{Commit: req}})
	return r.GetCommit(), err
}

// closeTimeout bounds how long Close waits for the node to answer the
// messages still due and end the stream.
const closeTimeout = 5 * time.Second

// Close is CloseContext bounded by 5 seconds: against a node that hangs,
// or a link that stalls, it gives up waiting then and cancels the stream.
func (s *Session) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.closeWait)
	defer cancel()
	return s.CloseContext(ctx)
}

// CloseContext ends the stream: it sends no more, waits for the replies
// still due and for the node to end the stream (it then has rolled back
// the transactions begun on the session and still open), and returns.
// When ctx ends first, as against a node that hangs, it cancels the
// stream: messages still without their replies fail with ctx's
// DEADLINE_EXCEEDED or CANCELED, wrapping ErrUnknownOutcome for those
// with a write, which the node may have made; the node rolls back the
// open transactions when it sees the cancel. CloseContext then returns
// an error with ctx's code saying so. Either way, once it returns, every message started
// on the session has its replies or its error, and the session holds no
// goroutine. Calls started after it fail at once; it may be called
// again, and concurrently with them.
func (s *Session) CloseContext(ctx context.Context) error {
	// A Send that the node's flow control holds up keeps sendSem: wait
	// for it only until ctx ends, whose cancel frees it.
	sent := make(chan error, 1)
	go func() { sent <- s.closeSend() }()
	var err error
	select {
	case err = <-sent:
		select {
		case <-s.recvDone:
		case <-ctx.Done():
			err = errors.Join(s.abandon(ctx.Err()), err)
		}
	case <-ctx.Done():
		err = s.abandon(ctx.Err())
		err = errors.Join(err, <-sent)
	}
	s.cancel()
	<-s.recvDone // soon, after the cancel: the waiters have their errors
	return err
}

// closeSend half-closes the stream, once.
func (s *Session) closeSend() error {
	s.sendSem <- struct{}{}
	defer func() { <-s.sendSem }()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.stream.CloseSend()
}

// abandon cancels the stream whose end Close waited for until cause: the
// messages still waiting fail with cause's code (Pending.lost), not the
// CANCELED of the cancel, which would say their caller cancelled them.
// It returns the error of the Close that gave up, or nil when the stream
// had failed already (receive ends it, and fails the waiters, itself).
func (s *Session) abandon(cause error) error {
	code := status.FromContextError(cause).Code()
	n, ok := s.cancelWith(status.Errorf(code, "client: the session was closed before the node answered: %v", cause))
	if !ok {
		return nil
	}
	return status.Errorf(code, "client: close the session: the node did not end it in time (%d messages unanswered); cancelled it: %v", n, cause)
}
