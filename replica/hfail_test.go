package replica

import "testing"

// TestAdoptThatFailsKeepsSeen: a history that cannot be kept (a full
// disk) is not taken, and the node still knows of the newer epoch it
// heard of: it went on refusing senders older than that epoch only
// until an Adopt failed, which forgot it in memory.
func TestAdoptThatFailsKeepsSeen(t *testing.T) {
	fs, e := keptEpochs(t)
	if err := e.Observe(5); err != nil {
		t.Fatal(err)
	}
	fs.SetSpace(1) // no room for the next save
	if err := e.Adopt(h(0, 1, 0, 5, 10, 7)); err == nil {
		t.Fatal("a history adopted on a full disk")
	}
	if e.Seen() != 5 || e.Current() != 0 || e.Follows() {
		t.Fatalf("after a failed Adopt: seen %d, current %d, follows %v; want seen 5, current 0", e.Seen(), e.Current(), e.Follows())
	}
	fs.SetSpace(0)
	if ep, err := e.Promote(10); err != nil || ep != 6 {
		t.Fatalf("a promotion after hearing of epoch 5: epoch %d, %v", ep, err)
	}
}
