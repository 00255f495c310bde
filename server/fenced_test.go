package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// TestFencedPrimaryStaysFencedAfterRestart: a is the primary, b its
// standby. b is promoted (epoch 1) and ships to a, which steps down and
// follows b. a's host then restarts with its unchanged config file (role
// primary). It comes back as a standby: as a primary of b's epoch (a new
// incarnation of it) it would make two primaries of epoch 1, and either
// could step down for the other.
func TestFencedPrimaryStaysFencedAfterRestart(t *testing.T) {
	addrA, addrB := grpctest.DeadAddr(t), grpctest.DeadAddr(t)
	dirA := t.TempDir()
	cfgA := func(c *conf.Config) {
		c.Node, c.Listen, c.DataDir = "a", addrA, dirA
		c.Peers = []conf.Peer{{Name: "b", Addr: addrB}}
	}
	b := startNode(t, func(c *conf.Config) {
		c.Node, c.Role, c.Listen = "b", conf.RoleStandby, addrB
		c.Peers = []conf.Peer{{Name: "a", Addr: addrA}}
	})
	a := startNode(t, cfgA)
	a.withAccounts(10)
	if err := b.srv.store.WaitApplied(ctx(t), a.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); a.srv.Role() == conf.RolePrimary || a.srv.epochs.Current() != b.srv.epochs.Current(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a did not step down and follow b: role %s epoch %d", a.srv.Role(), a.srv.epochs.Current())
		}
	}
	if _, err := b.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(100, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.store.WaitApplied(ctx(t), b.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	a.stop()
	a = startNode(t, cfgA) // the host came back with the old config file
	if role := a.srv.Role(); role == conf.RolePrimary {
		_, err := a.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(200, 1)})
		t.Fatalf("the fenced former primary restarted as a primary at epoch %d (b is at %d); a write on it: %v", a.srv.epochs.Current(), b.srv.epochs.Current(), err)
	}
	// It follows b again, and b stays the primary.
	if _, err := b.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(101, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.store.WaitApplied(ctx(t), b.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	// Promoted, it is the primary of a newer epoch.
	if err := a.srv.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	if a.srv.epochs.Current() <= b.srv.epochs.Current() || a.srv.epochs.Follows() {
		t.Fatalf("promoted: epoch %d (b at %d), follows %v", a.srv.epochs.Current(), b.srv.epochs.Current(), a.srv.epochs.Follows())
	}
}

// TestReimagedNodeStaysAStandby: a node re-imaged from its primary (the
// REIMAGE mark a diverged former primary gets) whose config file says
// primary starts as a standby: it took the image's history as the
// primary's it follows, and a start as a primary would make a second one
// of that primary's epoch.
func TestReimagedNodeStaysAStandby(t *testing.T) {
	addrA, addrB := grpctest.DeadAddr(t), grpctest.DeadAddr(t)
	b := startNode(t, func(c *conf.Config) {
		c.Node, c.Role, c.Listen = "b", conf.RoleStandby, addrB
		c.Peers = []conf.Peer{{Name: "a", Addr: addrA}}
	})
	if err := b.srv.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	b.withAccounts(5)
	if _, err := b.srv.ckpt.Run(ctx(t)); err != nil {
		t.Fatal(err)
	}
	dirA := t.TempDir()
	if err := os.WriteFile(filepath.Join(dirA, reimageFile), []byte(addrB+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, func(c *conf.Config) {
		c.Node, c.Listen, c.DataDir = "a", addrA, dirA
		c.Peers = []conf.Peer{{Name: "b", Addr: addrB}}
	})
	if role := a.srv.Role(); role == conf.RolePrimary || !a.srv.epochs.Follows() {
		t.Fatalf("the re-imaged node started as %s at epoch %d (follows %v); its primary is at epoch %d", role, a.srv.epochs.Current(), a.srv.epochs.Follows(), b.srv.epochs.Current())
	}
	if _, err := b.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(100, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.store.WaitApplied(ctx(t), b.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
}

// TestPromoteWhileRestarting: a node restarting itself (to cut its log
// or load an image) refuses a promotion with FAILED_PRECONDITION, which
// says to try again once it is back; it was INTERNAL, as if the node
// were broken.
func TestPromoteWhileRestarting(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	n.srv.markMu.Lock()
	n.srv.restarting = true
	n.srv.markMu.Unlock()
	_, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{})
	wantCode(t, err, codes.FailedPrecondition, "restarting", "once it is back")
	if role := n.srv.Role(); role != conf.RoleStandby {
		t.Fatalf("the refused promotion left the node a %s", role)
	}
}

// TestFailedPromotionLeavesAStandby: a promotion whose Sender cannot be
// made fails and leaves the node as it was: a standby refusing writes,
// at its epoch, in memory and in its data directory. It used to keep
// the new epoch first, leaving a standby at an epoch no primary had. A
// promotion after it starts the next epoch.
func TestFailedPromotionLeavesAStandby(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, func(c *conf.Config) {
		c.Node, c.Role, c.DataDir = "b", conf.RoleStandby, dir
		c.Peers = []conf.Peer{{Name: "a", Addr: grpctest.DeadAddr(t)}}
	})
	epochs := func() []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "EPOCHS"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return b
	}
	hist, kept := n.srv.epochs.History(), epochs()
	newSender = func(*durability.Store, replica.SenderOptions) (*replica.Sender, error) {
		return nil, errors.New("no sender today")
	}
	t.Cleanup(func() { newSender = replica.NewSender })
	_, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{})
	wantCode(t, err, codes.Internal, "no sender today")
	if role := n.srv.Role(); role != conf.RoleStandby {
		t.Fatalf("the failed promotion left the node a %s", role)
	}
	if got := n.srv.epochs.History(); !slices.Equal(got, hist) {
		t.Fatalf("the failed promotion changed the epoch history from %v to %v", hist, got)
	}
	if got := epochs(); string(got) != string(kept) {
		t.Fatalf("the failed promotion changed the kept epoch history from %q to %q", kept, got)
	}
	_, err = n.db.CreateTable(ctx(t), &pb.CreateTableRequest{Table: accountsTable()})
	wantCode(t, err, codes.FailedPrecondition)

	newSender = replica.NewSender
	p, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1].Epoch; p.GetEpoch() != last+1 || n.srv.Role() != conf.RolePrimary {
		t.Fatalf("promoted after the failure: epoch %d (was %d), role %s", p.GetEpoch(), last, n.srv.Role())
	}
}

// TestPromotionDuringDivergedImageWrite: while a standby writes an image
// of its database to set a diverged tail aside, a promotion is refused at
// once with FAILED_PRECONDITION, as the node is about to restart to cut
// its log; it used to wait for the whole image write, which held the
// lock of the node's marks. Once the image is written, the node is marked
// for its restart, and a promotion is refused as during one.
func TestPromotionDuringDivergedImageWrite(t *testing.T) {
	n := startNode(t, nil) // no-log: the tail is set aside as an image
	n.withAccounts(3)
	if err := n.srv.SetRole(conf.RoleStandby); err != nil {
		t.Fatal(err)
	}
	writing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	writeImage = func(ctx context.Context, fs vfs.FS, path string, db *mem.DB, epochs checkpoint.Epochs) (checkpoint.Image, error) {
		close(writing)
		<-release
		return checkpoint.WriteImage(ctx, fs, path, db, epochs)
	}
	t.Cleanup(func() {
		free()
		writeImage = checkpoint.WriteImage
	})
	last := n.srv.db.LastLSN()
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.srv.diverged(last-1, last, "a", "127.0.0.1:1", true)
	}()
	<-writing
	promoted := make(chan error, 1)
	go func() {
		_, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{})
		promoted <- err
	}()
	select {
	case err := <-promoted:
		wantCode(t, err, codes.FailedPrecondition, "setting aside", "once it is back")
	case <-time.After(10 * time.Second): // a failure detector, not a wait
		t.Fatal("the promotion waits for the diverged image to be written")
	}
	free()
	<-done
	dir := n.srv.cfg.DataDir
	if images, err := filepath.Glob(filepath.Join(dir, "diverged-*.image")); err != nil || len(images) != 1 {
		t.Fatalf("the diverged images in the data dir: %v %v", images, err)
	}
	if _, err := os.Stat(filepath.Join(dir, reimageFile)); err != nil {
		t.Fatalf("the node is not marked to be imaged again: %v", err)
	}
	_, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{})
	wantCode(t, err, codes.FailedPrecondition, "restarting")
	if role := n.srv.Role(); role != conf.RoleStandby {
		t.Fatalf("the refused promotions left the node a %s", role)
	}
}

// TestPromotionThawsCheckpoints: a standby whose diverged tail could not
// be set aside has its checkpoints frozen (for the log cut that never
// came); promoted, it writes checkpoints again, in the background
// (checkpoint_interval) and on demand.
func TestPromotionThawsCheckpoints(t *testing.T) {
	n := frozenBySetAside(t)
	// mmdbd checkpoint is told why, as a state of the node, not an
	// internal error.
	_, err := n.admin.Checkpoint(ctx(t), &pb.CheckpointRequest{})
	wantCode(t, err, codes.FailedPrecondition, "restart")
	if _, err := n.admin.Promote(ctx(t), &pb.PromoteRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(4, 100)}); err != nil {
		t.Fatal(err)
	}
	last := n.srv.db.LastLSN()
	waitFor(t, "no background checkpoint after the promotion", func() bool { return n.srv.ckpt.LSN() == last })
	if _, err := n.srv.ckpt.Run(ctx(t)); err != nil {
		t.Fatalf("a checkpoint on demand on the promoted node: %v", err)
	}
}

// frozenBySetAside returns a standby whose diverged tail could not be set
// aside, so its checkpoints are frozen.
func frozenBySetAside(t *testing.T) *node {
	t.Helper()
	// no-log: the tail is set aside as an image, which fails here
	n := startNode(t, func(c *conf.Config) { c.CheckpointInterval = 20 * time.Millisecond })
	n.withAccounts(3)
	if err := n.srv.SetRole(conf.RoleStandby); err != nil {
		t.Fatal(err)
	}
	writeImage = func(context.Context, vfs.FS, string, *mem.DB, checkpoint.Epochs) (checkpoint.Image, error) {
		return checkpoint.Image{}, errors.New("injected: the disk is full")
	}
	t.Cleanup(func() { writeImage = checkpoint.WriteImage })
	last := n.srv.db.LastLSN()
	n.srv.diverged(last-1, last, "a", "127.0.0.1:1", true)
	if _, err := n.srv.ckpt.Run(ctx(t)); !errors.Is(err, checkpoint.ErrFrozen) {
		t.Fatalf("checkpoints after a failed set-aside: %v, want them frozen", err)
	}
	return n
}

// TestShutdownWhileFrozen: a clean shutdown of a node whose checkpoints
// are frozen (diverged records it could not set aside) writes no image
// and is no failure: it used to return the checkpoint's ErrFrozen, and
// mmdbd exited non-zero.
func TestShutdownWhileFrozen(t *testing.T) {
	n := frozenBySetAside(t)
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(c); err != nil {
		t.Fatalf("shutdown with checkpoints frozen: %v", err)
	}
	if err := <-n.done; err != nil {
		t.Fatal(err)
	}
	if err := n.conn.Close(); err != nil {
		t.Fatal(err)
	}
	n.srv = nil
}

// TestReimageStoppedMidway: a start that replaces the node's database
// with a fetched image marks REIMAGE "replacing" before it removes the
// node's images and log. A later start that finds that mark and cannot
// fetch the image refuses, naming the source, rather than start with
// the empty database the first left; one that can fetch it finishes the
// replacement. A start that fails to fetch before any removal starts
// with what the node has.
func TestReimageStoppedMidway(t *testing.T) {
	src := startNode(t, nil)
	src.withAccounts(3)
	// A node that serves no image: fetches from it fail at once.
	bare, _ := grpctest.Serve(t, func(*grpc.Server) {})

	cfg := conf.DefaultConfig()
	cfg.DataDir = t.TempDir()
	sec, err := newSecurity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logger := hclog.NewNullLogger()
	mark := filepath.Join(cfg.DataDir, reimageFile)
	setMark := func(content string) {
		t.Helper()
		if err := os.WriteFile(mark, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The replacement stops when the log cannot be removed: a file where
	// the log directory should be.
	logDir := cfg.LogDirs()[0]
	if err := os.WriteFile(logDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	setMark(src.addr + "\n")
	if err := reimage(cfg, sec, logger); err == nil {
		t.Fatal("the replacement went on past a log it could not remove")
	}
	if b, err := os.ReadFile(mark); err != nil || string(b) != src.addr+"\n"+replacingMark+"\n" {
		t.Fatalf("REIMAGE after a replacement stopped mid-way: %q %v", b, err)
	}
	if err := os.Remove(logDir); err != nil {
		t.Fatal(err)
	}

	setMark(bare + "\n" + replacingMark + "\n")
	err = reimage(cfg, sec, logger)
	if err == nil || !strings.Contains(err.Error(), "stopped while replacing") || !strings.Contains(err.Error(), bare) {
		t.Fatalf("a start with nothing left and no image to fetch: %v", err)
	}
	setMark(bare + "\n")
	if err := reimage(cfg, sec, logger); err != nil {
		t.Fatalf("a failed fetch before any removal: %v", err)
	}
	setMark(src.addr + "\n" + replacingMark + "\n")
	if err := reimage(cfg, sec, logger); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mark); !os.IsNotExist(err) {
		t.Fatalf("REIMAGE left after the replacement: %v", err)
	}
	if images, err := filepath.Glob(filepath.Join(checkpoint.Dir(cfg.DataDir), "*")); err != nil || len(images) != 1 {
		t.Fatalf("the checkpoint dir after the replacement: %q %v", images, err)
	}
}
