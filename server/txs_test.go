package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// stuckStandbys is a syncWaiter whose standbys never answer: a commit
// waits for them until its call ends (on_sync_timeout = block). Each
// wait is announced on waiting.
type stuckStandbys struct {
	noStandbys
	waiting chan struct{}
}

func (s stuckStandbys) syncHolds(uint64, replica.Mode) bool { return false }

func (s stuckStandbys) waitSync(ctx context.Context, _ uint64, _ replica.Mode) (bool, error) {
	s.waiting <- struct{}{}
	<-ctx.Done()
	return false, ctx.Err()
}

// TestBusyTransactionHonorsTheDeadline: a request on an interactive
// transaction whose Commit waits for its standbys gives up when its own
// call ends, with the call's code: DEADLINE_EXCEEDED, CANCELED. It used
// to wait for the commit, past its deadline, for as long as the commit's
// call lasted.
func TestBusyTransactionHonorsTheDeadline(t *testing.T) {
	_, s := memFSService(t, vfs.NewMemFS())
	stuck := stuckStandbys{waiting: make(chan struct{})}
	s.sync = stuck
	c := ctx(t)
	b, err := s.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	id := b.GetTxId()
	if _, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 1), TxId: id}); err != nil {
		t.Fatal(err)
	}
	commitCtx, endCommit := context.WithCancel(c)
	defer endCommit()
	committed := make(chan error, 1)
	go func() {
		_, err := s.Commit(commitCtx, &pb.CommitRequest{TxId: id})
		committed <- err
	}()
	<-stuck.waiting // the commit holds the transaction

	expired, cancelExpired := context.WithTimeout(c, 20*time.Millisecond)
	defer cancelExpired()
	canceled, cancel := context.WithCancel(c)
	cancel()
	calls := []struct {
		name string
		code codes.Code
		call func() error
	}{
		{"get past its deadline", codes.DeadlineExceeded, func() error {
			_, err := s.Get(expired, &pb.GetRequest{Table: "acct", Key: key(vI(1)), TxId: id})
			return err
		}},
		{"canceled update", codes.Canceled, func() error {
			_, err := s.Update(canceled, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(2)}}, TxId: id})
			return err
		}},
		{"canceled rollback", codes.Canceled, func() error {
			_, err := s.Rollback(canceled, &pb.RollbackRequest{TxId: id})
			return err
		}},
		{"canceled commit", codes.Canceled, func() error {
			_, err := s.Commit(canceled, &pb.CommitRequest{TxId: id})
			return err
		}},
	}
	for _, tc := range calls {
		done := make(chan error, 1)
		go func() { done <- tc.call() }()
		select {
		case err := <-done:
			wantCode(t, err, tc.code, "busy")
		case <-time.After(10 * time.Second): // a failure detector, not a wait
			t.Fatalf("%s: still waiting for the blocked commit", tc.name)
		}
	}
	endCommit()
	wantCode(t, <-committed, codes.Canceled, "unconfirmed")
	if s.txs.lookup(id) != nil {
		t.Fatal("the transaction is still open after its commit")
	}
}
