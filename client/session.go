package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Session is a Session stream to one node, for clients that send many
// requests: Start sends a message of requests without waiting, so many can
// be in flight, and replies come back in order. It is safe for concurrent
// use. A Session is bound to the node it opened on and is not retried
// elsewhere; when it fails, open another.
type Session struct {
	stream interface {
		Send(*pb.SessionRequest) error
		Recv() (*pb.SessionResponse, error)
		CloseSend() error
	}
	cancel   context.CancelFunc
	recvDone chan struct{}

	sendMu sync.Mutex // orders Send with the queue of waiters

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
}

// Wait returns the message's replies, one per request, in order. A reply
// with a non-zero Code is that request's error (ReplyError turns it into
// one); the others are unaffected.
func (p *Pending) Wait() ([]*pb.Reply, error) {
	<-p.done
	return p.replies, p.err
}

// OpenSession opens a Session stream on the current node. ctx bounds the
// whole stream.
func (c *Client) OpenSession(ctx context.Context) (*Session, error) {
	conn, addr, err := c.conn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := pb.NewDatabaseServiceClient(conn).Session(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: open a session on %s: %w", addr, err)
	}
	s := &Session{stream: stream, cancel: cancel, recvDone: make(chan struct{})}
	go s.receive()
	return s, nil
}

// receive hands each reply message to the oldest waiter.
func (s *Session) receive() {
	defer close(s.recvDone)
	for {
		m, err := s.stream.Recv()
		s.mu.Lock()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("client: the session ended")
			}
			s.err = err
			for _, p := range s.waiting {
				p.err = err
				close(p.done)
			}
			s.waiting = nil
			s.mu.Unlock()
			return
		}
		if len(s.waiting) == 0 {
			s.err = errors.New("client: the node sent a reply nobody asked for")
			s.mu.Unlock()
			s.cancel()
			continue // Recv fails next, after the cancel
		}
		p := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		if len(m.GetReplies()) != p.n {
			p.err = fmt.Errorf("client: %d replies to %d requests", len(m.GetReplies()), p.n)
		}
		p.replies = m.GetReplies()
		close(p.done)
	}
}

// Start sends reqs as one message and returns at once.
func (s *Session) Start(reqs []*pb.Request) *Pending {
	p := &Pending{n: len(reqs), done: make(chan struct{})}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.err != nil {
		p.err = s.err
		s.mu.Unlock()
		close(p.done)
		return p
	}
	s.waiting = append(s.waiting, p)
	s.mu.Unlock()
	if err := s.stream.Send(&pb.SessionRequest{Requests: reqs}); err != nil {
		// The receiver fails every waiter, this one included, once the
		// stream's error reaches Recv.
		s.cancel()
	}
	return p
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
	return status.Error(codes.Code(r.GetCode()), r.GetMessage())
}

// one sends a single request and returns its reply or error.
func (s *Session) one(req *pb.Request) (*pb.Reply, error) {
	replies, err := s.Do(req)
	if err != nil {
		return nil, err
	}
	return replies[0], ReplyError(replies[0])
}

// Get sends one Get on the session.
func (s *Session) Get(_ context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	r, err := s.one(&pb.Request{Op: &pb.Request_Get{Get: req}})
	return r.GetGet(), err
}

// Commit sends one Commit on the session.
func (s *Session) Commit(_ context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	r, err := s.one(&pb.Request{Op: &pb.Request_Commit{Commit: req}})
	return r.GetCommit(), err
}

// Close ends the stream: it waits for the replies still due, then returns.
// Transactions begun on the session and still open are rolled back by the
// node.
func (s *Session) Close() error {
	s.sendMu.Lock()
	err := s.stream.CloseSend()
	s.sendMu.Unlock()
	<-s.recvDone
	s.cancel()
	return err
}
