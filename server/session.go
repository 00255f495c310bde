package server

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// received is one result of a Session stream's Recv.
type received struct {
	msg *pb.SessionRequest
	err error
}

// Session answers the requests of a stream in order. A reader goroutine
// receives ahead while requests run, so a pipelining client keeps the
// server busy; replies go back one SessionResponse per SessionRequest.
// Transactions begun on the stream and still open when it ends are rolled
// back. At shutdown the stream finishes the message in hand and ends with
// UNAVAILABLE.
func (s *dbService) Session(stream grpc.BidiStreamingServer[pb.SessionRequest, pb.SessionResponse]) error {
	ctx := stream.Context()
	in := make(chan received, 16)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case in <- received{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	owned := newSessionTxs()
	defer func() {
		for id := range owned.ids {
			// The stream's context has ended: wait for a request on the
			// transaction from elsewhere for as long as it takes.
			_ = s.txs.end(context.Background(), id, nil, func(*openTx) error { return nil }) // already ended is fine
		}
	}()
	for {
		var r received
		select {
		case r = <-in:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.quit:
			return errorf(codes.Unavailable, "the server is shutting down; reconnect to another node or retry later")
		}
		if r.err != nil {
			if errors.Is(r.err, io.EOF) || status.Code(r.err) == codes.Canceled {
				return nil
			}
			return r.err
		}
		if err := s.answer(ctx, stream, r.msg.GetRequests(), owned); err != nil {
			return err
		}
	}
}

// answer runs a message's requests and sends their replies, in one
// SessionResponse or, when they would pass half of max_message_bytes, in
// several. On a stream with a deadline, the requests stop waiting a
// margin before it (replyBefore), once for the message: their replies go
// out together, after the last. Once the stream ends (the client
// canceled it, or its deadline passed) the requests left are not run:
// no one would learn what they did.
func (s *dbService) answer(streamCtx context.Context, stream grpc.BidiStreamingServer[pb.SessionRequest, pb.SessionResponse], reqs []*pb.Request, owned *sessionTxs) error {
	ctx, cancel := replyBefore(streamCtx)
	defer cancel()
	resp := &pb.SessionResponse{Replies: make([]*pb.Reply, 0, len(reqs))}
	size := 0
	for i, req := range reqs {
		if err := streamCtx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		reply := s.handle(ctx, req, owned)
		n := reply.SizeVT() + 8
		// A reply fits a message on its own (a row is at most 32 KiB and a
		// batch's results stop short of the limit); send what is pending
		// first if this one would take the message past half the limit.
		if len(resp.Replies) > 0 && size+n > s.maxMsgBytes/2 {
			if err := stream.Send(resp); err != nil {
				return err
			}
			resp, size = &pb.SessionResponse{Replies: make([]*pb.Reply, 0, len(reqs)-i)}, 0
		}
		resp.Replies = append(resp.Replies, reply)
		size += n
	}
	return stream.Send(resp)
}

// sessionTxs are the transactions a session began, which it rolls back
// when it ends. Those that ended another way (a unary Commit or
// Rollback, the idle timeout) are dropped as the set grows, so that it
// stays within twice what the session holds open (at least
// minSessionPrune), however long the session lives.
type sessionTxs struct {
	ids   map[uint64]struct{}
	prune int // the size at which add drops the ended ones
}

const minSessionPrune = 64

func newSessionTxs() *sessionTxs {
	return &sessionTxs{ids: map[uint64]struct{}{}, prune: minSessionPrune}
}

// add records the transaction id, begun on the session.
func (o *sessionTxs) add(tt *txTable, id uint64) {
	if len(o.ids) >= o.prune {
		for old := range o.ids {
			if tt.lookup(old) == nil {
				delete(o.ids, old)
			}
		}
		o.prune = max(minSessionPrune, 2*len(o.ids))
	}
	o.ids[id] = struct{}{}
}

// ended forgets the transaction id once a Commit or Rollback sent on the
// session ended it; one refused as malformed, or by a standby, is still
// open, and the session's end rolls it back.
func (o *sessionTxs) ended(tt *txTable, id uint64) {
	if tt.lookup(id) == nil {
		delete(o.ids, id)
	}
}

// handle runs one Session request through the unary handlers.
func (s *dbService) handle(ctx context.Context, req *pb.Request, owned *sessionTxs) *pb.Reply {
	reply := &pb.Reply{Id: req.GetId()}
	var err error
	switch o := req.GetOp().(type) {
	case *pb.Request_Get:
		var res *pb.GetResponse
		if res, err = s.Get(ctx, o.Get); err == nil {
			reply.Result = &pb.Reply_Get{Get: res}
		}
	case *pb.Request_Insert:
		var res *pb.InsertResponse
		if res, err = s.Insert(ctx, o.Insert); err == nil {
			reply.Result = &pb.Reply_Insert{Insert: res}
		}
	case *pb.Request_Update:
		var res *pb.UpdateResponse
		if res, err = s.Update(ctx, o.Update); err == nil {
			reply.Result = &pb.Reply_Update{Update: res}
		}
	case *pb.Request_Upsert:
		var res *pb.UpsertResponse
		if res, err = s.Upsert(ctx, o.Upsert); err == nil {
			reply.Result = &pb.Reply_Upsert{Upsert: res}
		}
	case *pb.Request_Delete:
		var res *pb.DeleteResponse
		if res, err = s.Delete(ctx, o.Delete); err == nil {
			reply.Result = &pb.Reply_Delete{Delete: res}
		}
	case *pb.Request_Commit:
		var res *pb.CommitResponse
		if res, err = s.Commit(ctx, o.Commit); err == nil {
			reply.Result = &pb.Reply_Commit{Commit: res}
		}
		owned.ended(s.txs, o.Commit.GetTxId())
	case *pb.Request_Begin:
		var res *pb.BeginResponse
		if res, err = s.begin(o.Begin, ""); err == nil {
			reply.Result = &pb.Reply_Begin{Begin: res}
			owned.add(s.txs, res.TxId)
		}
	case *pb.Request_Rollback:
		var res *pb.RollbackResponse
		if res, err = s.Rollback(ctx, o.Rollback); err == nil {
			reply.Result = &pb.Reply_Rollback{Rollback: res}
		}
		owned.ended(s.txs, o.Rollback.GetTxId())
	default:
		err = errorf(codes.InvalidArgument, "the request is empty; set one of get, insert, update, upsert, delete, commit, begin, rollback")
	}
	if err != nil {
		st := status.Convert(err)
		reply.Code, reply.Message, reply.Details = uint32(st.Code()), st.Message(), st.Proto().GetDetails()
	}
	return reply
}
