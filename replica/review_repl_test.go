package replica_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// fakeStandby is a standby that answers a Ship call with its state
// (applied LSN zero), takes the batches, and acknowledges only when told
// (ack): what it has received, as received and applied, in one message.
type fakeStandby struct {
	pb.UnimplementedReplicationServiceServer
	addr string

	mu   sync.Mutex
	last uint64          // the last LSN received on the open call
	acks chan chan error // ack asks the call to acknowledge
}

func newFakeStandby(t *testing.T) *fakeStandby {
	t.Helper()
	f := &fakeStandby{acks: make(chan chan error)}
	srv := grpc.NewServer()
	pb.RegisterReplicationServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fakeStandby) Ship(st grpc.BidiStreamingServer[pb.ShipRequest, pb.ShipResponse]) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if err := st.Send(&pb.ShipResponse{Msg: &pb.ShipResponse_State{State: &pb.ShipState{Node: "b", Epoch: m.GetHello().GetEpoch()}}}); err != nil {
		return err
	}
	f.mu.Lock()
	f.last = 0
	f.mu.Unlock()
	errs := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errs <- err
				return
			}
			if b := m.GetBatch(); b != nil && !b.More {
				f.mu.Lock()
				f.last = b.FirstLsn + uint64(b.Count) - 1
				f.mu.Unlock()
			}
		}
	}()
	for {
		select {
		case err := <-errs:
			return err
		case done := <-f.acks:
			lsn := f.received()
			done <- st.Send(&pb.ShipResponse{Msg: &pb.ShipResponse_Ack{Ack: &pb.ShipAck{ReceivedLsn: lsn, AppliedLsn: lsn}}})
		}
	}
}

func (f *fakeStandby) received() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// ack waits until the standby has received lsn, and acknowledges it
// once.
func (f *fakeStandby) ack(t *testing.T, lsn uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); f.received() < lsn; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the standby received LSN %d, not %d", f.received(), lsn)
		}
	}
	done := make(chan error)
	f.acks <- done
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestDegradedResumesOnceCaughtUp: a primary whose standby caught up
// with every record it has (after a slow catch-up, and with no commits
// since) is no longer degraded, and its next commit waits for the
// standby again (SPEC 6: degrade "resumes the sync mode once the standby
// catches up").
//
// Found in review: the quorum reaching the degradation's mark later than
// half a sync_timeout after it was set moved the mark to the last LSN
// (the same LSN, with no commits since) and left the primary degraded;
// with no record left to ship, no acknowledgement came to end it (unless
// the standby happened to send the same one twice), so the next commit
// returned degraded at once without waiting for a standby that held
// everything.
func TestDegradedResumesOnceCaughtUp(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	sb := newFakeStandby(t)
	const timeout = 200 * time.Millisecond
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}, Mode: replica.AppliedAck, Quorum: 1, Timeout: timeout})
	ctx := context.Background()
	bank := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	sb.ack(t, primary.DB().LastLSN())
	lsn, err := bank.Transfer(primary.DB(), 0, 1, 1, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if degraded, err := snd.Wait(ctx, lsn, -1); err != nil || !degraded {
		t.Fatalf("a commit without its standby's answer: degraded %v, %v", degraded, err)
	}
	time.Sleep(timeout) // a slow catch-up: more than half a sync_timeout
	sb.ack(t, lsn)
	for deadline := time.Now().Add(10 * time.Second); snd.Standbys()[0].Applied < lsn; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the standby's acknowledgement did not arrive: %+v", snd.Standbys())
		}
	}
	time.Sleep(timeout) // no commit meanwhile
	if last := primary.DB().LastLSN(); last != lsn {
		t.Fatalf("the primary is at LSN %d, not %d", last, lsn)
	}
	if snd.Degraded() {
		t.Errorf("still degraded with the standby holding every record")
	}
	lsn, err = bank.Transfer(primary.DB(), 0, 1, 1, "t2")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		degraded bool
		err      error
	}
	waited := make(chan result, 1)
	go func() {
		degraded, err := snd.Wait(ctx, lsn, -1)
		waited <- result{degraded, err}
	}()
	sb.ack(t, lsn)
	if r := <-waited; r.err != nil || r.degraded {
		t.Fatalf("a commit with the standby caught up and answering: degraded %v, %v", r.degraded, r.err)
	}
}
