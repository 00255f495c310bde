package server

import (
	"path/filepath"
	"time"

	"testing"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/grpctest"
)

// TestSteppedDownAtItsOwnEpochStaysAStandby: a primary that steps down
// for another primary of its own epoch with a higher incarnation (two
// nodes promoted at once; Receiver's admit calls StepDown) and stops
// before it follows that primary (a crash between the step-down and the
// link's Adopt) comes back, with its unchanged config file, as a
// standby. It came back as a primary of that epoch, with a new random
// incarnation that beat the winner's half the time: the winner then
// stepped down and set its acknowledged commits aside.
func TestSteppedDownAtItsOwnEpochStaysAStandby(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *conf.Config) { c.Node, c.DataDir = "a", dir }
	a := startNode(t, cfg)
	a.withAccounts(3)
	epoch := a.srv.epochs.Current()
	if err := a.srv.stepDown(epoch, "b"); err != nil {
		t.Fatal(err)
	}
	if a.srv.Role() == conf.RolePrimary {
		t.Fatal("a did not step down")
	}
	a.stop()
	a = startNode(t, cfg)
	if role := a.srv.Role(); role == conf.RolePrimary {
		t.Fatalf("a stepped down for a primary at its epoch %d, and restarted as a primary of it (epoch %d)", epoch, a.srv.epochs.Current())
	}
	// Promoted, it goes past that epoch.
	if err := a.srv.SetRole(conf.RolePrimary); err != nil {
		t.Fatal(err)
	}
	if got := a.srv.epochs.Current(); got <= epoch {
		t.Fatalf("promoted to epoch %d, not past %d", got, epoch)
	}
}

// TestSteppedDownThenRestartedSetsItsTailAside: as
// TestConcurrentPrimarySetsItsTailAside, but the loser stops after it
// stepped down and before its link set its tail aside (a crash, or an
// operator's restart after the set-aside failed). Restarted, it must still
// take the records of the stretch it led for a former primary's tail, and
// set them aside: it took them for a tail its primary had lost (the stretch
// it led was kept only in memory), kept them and refused the winner's log
// for good.
func TestSteppedDownThenRestartedSetsItsTailAside(t *testing.T) {
	pair := startSamePrimaries(t)
	loser, winner := pair.loser, pair.winner
	ln, wn := loser.srv.cfg.Node, winner.srv.cfg.Node
	// What the loser's Receiver does when the winner's hello comes.
	if err := loser.srv.stepDown(winner.srv.epochs.Current(), wn); err != nil {
		t.Fatal(err)
	}
	loser.stop()
	loser = startNode(t, pair.config(ln, pair.addr[wn]))
	if loser.srv.Role() == conf.RolePrimary {
		t.Fatal("the loser restarted as a primary")
	}
	cfg := *winner.srv.cfg
	cfg.Peers = []conf.Peer{{Name: ln, Addr: pair.addr[ln]}}
	if _, _, _, err := winner.srv.SetPeers(&cfg); err != nil {
		t.Fatal(err)
	}
	select {
	case why := <-loser.srv.Restarts():
		t.Logf("the loser restarts to %s", why)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s (incarnation %x, role %s) did not set its tail aside to follow %s (incarnation %x)", ln,
			loser.srv.epochs.Last().Incarnation, loser.srv.Role(), wn, winner.srv.epochs.Last().Incarnation)
	}
	files, err := filepath.Glob(filepath.Join(pair.dir[ln], "diverged-*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("the set-aside files: %v, %v", files, err)
	}
}

// TestDivergedTailOfANewerPrimaryAfterALostTail: a standby that holds
// records its primary lost in a restart (same epoch: it keeps them and
// refuses, diverged with older false) and then meets a primary of a newer
// epoch whose log parts from its own at the same LSN (another standby
// promoted) must set those records aside and catch up with it. It
// returned at once, as for a divergence it had handled already, and
// refused the new primary's log until it was restarted.
func TestDivergedTailOfANewerPrimaryAfterALostTail(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, func(c *conf.Config) { c.Node, c.DataDir = "a", dir })
	a.withAccounts(3)
	last := a.srv.db.LastLSN()
	a.stop()
	a = startNode(t, func(c *conf.Config) { c.Node, c.Role, c.DataDir = "a", conf.RoleStandby, dir })
	at := last - 1
	a.srv.diverged(at, last, "p", grpctest.DeadAddr(t), false) // its primary p restarted without them
	select {
	case why := <-a.srv.Restarts():
		t.Fatalf("a restarts to %s for records of its primary's own epoch", why)
	default:
	}
	a.srv.diverged(at, last, "q", grpctest.DeadAddr(t), true) // q, promoted at a newer epoch, never had them
	select {
	case why := <-a.srv.Restarts():
		t.Logf("a restarts to %s", why)
	case <-time.After(10 * time.Second):
		t.Fatal("a did not set aside the records a primary of a newer epoch never had")
	}
	if files, err := filepath.Glob(filepath.Join(dir, "diverged-*")); err != nil || len(files) != 1 {
		t.Fatalf("the set-aside files: %v, %v", files, err)
	}
}
