package server

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/grpctest"
)

// TestConcurrentPrimarySetsItsTailAside: two standbys promoted while
// they cannot reach each other are both primaries of the same epoch;
// once they can, the one of the lower incarnation steps down for the
// other. What it committed as a primary is a former primary's tail,
// which the other never had: it sets it aside in a file, marks its log
// to be cut and asks to restart, to catch up with the other (SPEC 6).
//
// Found in review: the step-down's link found the log diverged at the
// loser's own epoch, which the receiver calls a tail the sender lost in a
// restart (older false, as only an older epoch counted as a former
// primary's): the loser kept its records, logged that its primary had
// lost them, and refused the winner's log at every retry.
func TestConcurrentPrimarySetsItsTailAside(t *testing.T) {
	pair := startSamePrimaries(t)
	loser, winner := pair.loser, pair.winner
	// They reach each other now.
	for _, n := range []*node{loser, winner} {
		cfg := *n.srv.cfg
		peer := otherOf[cfg.Node]
		cfg.Peers = []conf.Peer{{Name: peer, Addr: pair.addr[peer]}}
		if _, _, _, err := n.srv.SetPeers(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case why := <-loser.srv.Restarts():
		t.Logf("the loser restarts to %s", why)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s (incarnation %x, role %s) did not set its tail aside to follow %s (incarnation %x)", loser.srv.cfg.Node,
			loser.srv.epochs.Last().Incarnation, loser.srv.Role(), winner.srv.cfg.Node, winner.srv.epochs.Last().Incarnation)
	}
	if loser.srv.Role() == conf.RolePrimary || winner.srv.Role() != conf.RolePrimary {
		t.Fatalf("loser %s, winner %s", loser.srv.Role(), winner.srv.Role())
	}
	files, err := filepath.Glob(filepath.Join(loser.srv.cfg.DataDir, "diverged-*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("the set-aside files: %v, %v", files, err)
	}
	if _, err := readTruncate(loser.srv.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
}

// samePrimaries are nodes b and c, each promoted to primary while it
// reached no peer, so into one epoch with other incarnations (two
// promoted at once), each with 3 accounts; loser has the lower
// incarnation.
type samePrimaries struct {
	loser, winner *node
	addr, dir     map[string]string // each node's listen address and data dir
}

// otherOf names the other node of samePrimaries.
var otherOf = map[string]string{"b": "c", "c": "b"}

func startSamePrimaries(t *testing.T) samePrimaries {
	t.Helper()
	nowhere := grpctest.DeadAddr(t)
	p := samePrimaries{addr: map[string]string{"b": grpctest.DeadAddr(t), "c": grpctest.DeadAddr(t)}, dir: map[string]string{"b": t.TempDir(), "c": t.TempDir()}}
	b, c := startNode(t, p.config("b", nowhere)), startNode(t, p.config("c", nowhere))
	for _, n := range []*node{b, c} {
		if err := n.srv.SetRole(conf.RolePrimary); err != nil {
			t.Fatal(err)
		}
		n.withAccounts(3)
	}
	if eb, ec := b.srv.epochs.Last(), c.srv.epochs.Last(); eb.Epoch != ec.Epoch || eb.Incarnation == ec.Incarnation {
		t.Fatalf("b at %+v, c at %+v: not two primaries of one epoch", eb, ec)
	}
	p.loser, p.winner = b, c
	if b.srv.epochs.Last().Incarnation > c.srv.epochs.Last().Incarnation {
		p.loser, p.winner = c, b
	}
	return p
}

// config is the edit that starts node name of the pair, at mmap-log as
// a standby, its peer the other node at peerAddr.
func (p samePrimaries) config(name, peerAddr string) func(c *conf.Config) {
	return func(c *conf.Config) {
		c.Node, c.Role, c.Listen, c.Durability, c.DataDir = name, conf.RoleStandby, p.addr[name], conf.DurabilityMmapLog, p.dir[name]
		c.Peers = []conf.Peer{{Name: otherOf[name], Addr: peerAddr}}
	}
}
