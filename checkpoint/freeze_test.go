package checkpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// TestFreezeThawClose: Freeze stops checkpoints, Run included; Thaw
// starts them again, the background loop included; after Close, neither
// Start nor Thaw starts the loop again (a promotion that comes while the
// node shuts down), though Run still writes an image.
func TestFreezeThawClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	db := mem.Open(mem.Options{})
	b := banktest.Setup(t, db, func(uint64) error { return nil })
	c := checkpoint.New(db, nil, checkpoint.Slots{}, checkpoint.Options{FS: vfs.NewMemFS(), Dir: ckptDir, Interval: 5 * time.Millisecond})
	c.Start()
	c.Freeze()
	if _, err := c.Run(context.Background()); !errors.Is(err, checkpoint.ErrFrozen) {
		t.Fatalf("Run after Freeze: %v, want ErrFrozen", err)
	}
	if !c.Thaw() || c.Thaw() {
		t.Fatal("Thaw does not report whether the checkpoints were frozen")
	}
	lsn, err := b.Transfer(db, 1, 2, 1, "after the thaw")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); c.LSN() != lsn; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no background checkpoint after Thaw")
		}
	}
	c.Close()
	c.Freeze()
	c.Thaw()
	c.Start()
	// goleak: no loop runs now.
	if _, err := b.Transfer(db, 1, 2, 1, "after the close"); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Run(context.Background()); err != nil || res.Image.LSN != db.LastLSN() {
		t.Fatalf("Run after Close: %+v, %v", res, err)
	}
}

// TestThawDoesNotWaitForACheckpoint: Thaw on a Checkpointer that is not
// frozen (a promotion, which thaws in case a log cut never got under
// way) returns at once, though a checkpoint is under way; Freeze still
// waits for it. Before, Thaw waited for the running checkpoint, and
// with it the promotion, holding the node's role lock for as long as a
// whole image took to write.
func TestThawDoesNotWaitForACheckpoint(t *testing.T) {
	n := openNode(t, vfs.NewMemFS())
	b := banktest.Setup(t, n.store.DB(), n.wait)
	banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
	c, gate, ran := stalled(context.Background(), n)
	thawed := make(chan bool, 1)
	go func() { thawed <- c.Thaw() }()
	select {
	case was := <-thawed:
		if was {
			t.Error("Thaw says the checkpoints were frozen; they were not")
		}
	case <-time.After(10 * time.Second):
		close(gate.open)
		<-ran
		<-thawed
		t.Fatal("Thaw waited for the running checkpoint")
	}
	frozen := make(chan struct{})
	go func() {
		c.Freeze()
		close(frozen)
	}()
	select {
	case <-frozen:
		t.Fatal("Freeze returned while a checkpoint was under way")
	case <-time.After(100 * time.Millisecond):
	}
	close(gate.open)
	<-frozen
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(context.Background()); !errors.Is(err, checkpoint.ErrFrozen) {
		t.Fatalf("Run after Freeze: %v, want ErrFrozen", err)
	}
}
