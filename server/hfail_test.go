package server

import (
	"testing"

	"github.com/mmdb/mmdb/conf"
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
