package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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

// TestBeginKey: a Begin sent again with its key (pb.HeaderBeginKey), as
// a client does when it lost the first reply, gets the transaction the
// first opened while that is open, not another that would hold a slot
// of max_open_transactions until tx_idle_timeout; once it ended, the key
// opens a new one, and the node forgets it. Begins without a key each
// open their own; a key sent twice, empty or too long is refused.
func TestBeginKey(t *testing.T) {
	_, s := memFSService(t, vfs.NewMemFS())
	begin := func(kv ...string) (uint64, error) {
		t.Helper()
		r, err := s.Begin(metadata.NewIncomingContext(ctx(t), metadata.Pairs(kv...)), &pb.BeginRequest{})
		return r.GetTxId(), err
	}
	first, err := begin(pb.HeaderBeginKey, "k1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := begin(pb.HeaderBeginKey, "k1")
	if err != nil || again != first || s.txs.open() != 1 {
		t.Fatalf("the Begin sent again: transaction %d (%v), the first %d, %d open", again, err, first, s.txs.open())
	}
	if _, err := s.Rollback(ctx(t), &pb.RollbackRequest{TxId: first}); err != nil {
		t.Fatal(err)
	}
	next, err := begin(pb.HeaderBeginKey, "k1")
	if err != nil || next == first {
		t.Fatalf("the key of a transaction that ended: transaction %d (%v), the ended %d", next, err, first)
	}
	a, errA := begin()
	b, errB := begin()
	if errA != nil || errB != nil || a == b {
		t.Fatalf("two Begins without a key: %d (%v), %d (%v)", a, errA, b, errB)
	}
	for _, id := range []uint64{next, a, b} {
		if _, err := s.Rollback(ctx(t), &pb.RollbackRequest{TxId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if s.txs.open() != 0 || len(s.txs.keys) != 0 {
		t.Fatalf("all ended: %d open, %d keys kept", s.txs.open(), len(s.txs.keys))
	}
	// Sent twice or empty breaks the header's own rule; too long is past
	// a fixed limit (SPEC 11).
	for _, tc := range []struct {
		kv   []string
		code codes.Code
	}{
		{[]string{pb.HeaderBeginKey, "k2", pb.HeaderBeginKey, "k3"}, codes.InvalidArgument},
		{[]string{pb.HeaderBeginKey, ""}, codes.InvalidArgument},
		{[]string{pb.HeaderBeginKey, strings.Repeat("k", pb.MaxBeginKeyBytes+1)}, codes.ResourceExhausted},
	} {
		if _, err := begin(tc.kv...); status.Code(err) != tc.code {
			t.Errorf("Begin with %q: %v, want %v", tc.kv, err, tc.code)
		}
	}
}
