package replica

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAckWakesOnlyHeldCommits: an acknowledgement wakes the commits it
// holds and leaves the others asleep, in their place (with many commits
// waiting, waking them all at each one cost a goroutine switch and a
// pass of Wait per commit per acknowledgement); a commit whose context
// ends stops waiting and is forgotten; Close wakes every one.
func TestAckWakesOnlyHeldCommits(t *testing.T) {
	l := &link{peer: Peer{Name: "b"}}
	s := &Sender{opts: SenderOptions{Node: "a", Mode: AppliedAck, Quorum: 1, Timeout: time.Hour}, links: []*link{l}, cancel: func() {}}
	waiting := func(n int) []*ackWaiter {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			s.mu.Lock()
			ws := append([]*ackWaiter(nil), s.waiters...)
			s.mu.Unlock()
			if len(ws) == n {
				return ws
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d commits waiting, want %d", len(ws), n)
			}
		}
	}
	type result struct {
		lsn uint64
		err error
	}
	done := make(chan result, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, lsn := range []uint64{10, 1000} {
		go func() {
			_, err := s.Wait(context.Background(), lsn, -1)
			done <- result{lsn, err}
		}()
	}
	go func() {
		_, err := s.Wait(ctx, 2000, ReceivedAck)
		done <- result{2000, err}
	}()
	ws := waiting(3)

	s.mu.Lock()
	l.received, l.applied = 1500, 10
	s.ackedLocked()
	s.mu.Unlock()
	if r := <-done; r.lsn != 10 || r.err != nil {
		t.Fatalf("the acknowledgement of LSN 10 returned the commit at %d (%v)", r.lsn, r.err)
	}
	for _, w := range waiting(2) {
		if w.lsn == 10 || !contains(ws, w) {
			t.Fatalf("a commit at LSN %d was woken by an acknowledgement that does not hold it", w.lsn)
		}
	}

	cancel()
	if r := <-done; r.lsn != 2000 || !errors.Is(r.err, ErrUnconfirmed) {
		t.Fatalf("the commit whose context ended: LSN %d, %v", r.lsn, r.err)
	}
	waiting(1)
	s.Close()
	if r := <-done; r.lsn != 1000 || !errors.Is(r.err, ErrUnconfirmed) {
		t.Fatalf("Close: LSN %d, %v", r.lsn, r.err)
	}
}

func contains(ws []*ackWaiter, w *ackWaiter) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}
