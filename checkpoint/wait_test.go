package checkpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/logging/vfs"
)

// TestRunWaitsOnlyUntilItsContextEnds: a Run that comes while another
// checkpoint is under way waits for it only as long as its context
// lasts (an mmdbd checkpoint interrupted or past its deadline, a fetch
// given up): it then returns the context's error at once, and counts no
// failed checkpoint, since none ran. Before, it waited for the running
// checkpoint whatever its context, then began one of its own only to
// fail it, which the metrics counted as a failed checkpoint.
func TestRunWaitsOnlyUntilItsContextEnds(t *testing.T) {
	c := whileCheckpointing(t, "a Run", func(ctx context.Context, c *checkpoint.Checkpointer) error {
		_, err := c.Run(ctx)
		return err
	})
	if st := c.Stats(); st.Written != 1 || st.Failed != 0 {
		t.Fatalf("after one checkpoint and one Run that gave up waiting: %+v, want 1 written, 0 failed", st)
	}
}

// whileCheckpointing runs call, with a context that ends in 100 ms, while
// a checkpoint of a new node is under way, and fails t unless call
// returns that context's error without waiting for the checkpoint; it
// returns the Checkpointer once the checkpoint has ended.
func whileCheckpointing(t *testing.T, what string, call func(ctx context.Context, c *checkpoint.Checkpointer) error) *checkpoint.Checkpointer {
	t.Helper()
	n := openNode(t, vfs.NewMemFS())
	b := banktest.Setup(t, n.store.DB(), n.wait)
	banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
	c, gate, first := stalled(context.Background(), n)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- call(ctx, c) }()
	select {
	case err := <-second:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s whose context ended while a checkpoint ran: %v, want its context's error", what, err)
		}
	case <-time.After(10 * time.Second):
		close(gate.open)
		<-first
		<-second
		t.Fatalf("%s whose context ended waited on for the running checkpoint", what)
	}
	close(gate.open)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCancelledCheckpointIsNoFailure: a checkpoint whose context ends
// while it writes its image (its caller gave up; Freeze or Stop ended the
// background one) counts as cancelled, not failed: operators alert on
// failed checkpoints.
func TestCancelledCheckpointIsNoFailure(t *testing.T) {
	n := openNode(t, vfs.NewMemFS())
	fillTable(t, n.store.DB())
	ctx, cancel := context.WithCancel(context.Background())
	c, gate, done := stalled(ctx, n) // mid-image
	cancel()
	close(gate.open)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a checkpoint cancelled mid-image: %v, want its context's error", err)
	}
	if st := c.Stats(); st.Cancelled != 1 || st.Failed != 0 || st.Written != 0 {
		t.Fatalf("after a cancelled checkpoint: %+v, want 1 cancelled, none failed", st)
	}
}

// TestFindWaitsOnlyUntilItsContextEnds: a transfer resuming on an image
// the shelf no longer keeps looks for it in the slots (Find), which a
// running checkpoint may be replacing: it waits for that checkpoint only
// as long as its context lasts. Before, it waited for the whole
// checkpoint, minutes on a large database, whatever its caller's
// deadline.
func TestFindWaitsOnlyUntilItsContextEnds(t *testing.T) {
	whileCheckpointing(t, "a Find", func(ctx context.Context, c *checkpoint.Checkpointer) error {
		_, err := c.Find(ctx, checkpoint.ImageID{LSN: 1})
		return err
	})
}
