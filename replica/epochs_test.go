package replica

import (
	"slices"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

// h builds a history from (epoch, start, incarnation) triples.
func h(triples ...uint64) []EpochStart {
	var out []EpochStart
	for i := 0; i < len(triples); i += 3 {
		out = append(out, EpochStart{Epoch: triples[i], Start: triples[i+1], Incarnation: triples[i+2]})
	}
	return out
}

func TestDiverged(t *testing.T) {
	cases := []struct {
		mine, theirs []EpochStart
		last         uint64
		at           uint64 // 0: no divergence
	}{
		{h(0, 1, 0), h(0, 1, 0), 100, 0},
		{h(0, 1, 0), h(0, 1, 0, 1, 101, 7), 100, 0},                   // promoted right after our last
		{h(0, 1, 0), h(0, 1, 0, 1, 51, 7), 100, 51},                   // we hold 51..100 of epoch 0
		{h(0, 1, 0), h(0, 1, 0, 1, 51, 7, 2, 80, 9), 100, 51},         // two promotions since
		{h(0, 1, 0), h(0, 1, 0, 1, 60, 7, 2, 120, 9), 100, 60},        // the second is past our last
		{h(0, 1, 0, 1, 51, 7), h(0, 1, 0, 1, 51, 7, 2, 90, 9), 89, 0}, // same lineage, behind
		{h(0, 1, 0, 1, 51, 7), h(0, 1, 0, 2, 51, 9), 60, 51},          // another node's epoch
		{h(0, 1, 0, 1, 51, 7), h(0, 1, 0, 2, 51, 9), 50, 0},           // but nothing of it held
		{h(0, 1, 0, 3, 40, 5), h(0, 1, 0, 2, 30, 6, 4, 45, 8), 50, 30},
		{h(0, 1, 0), h(0, 1, 0, 0, 41, 5), 60, 41}, // the primary restarted at 41: same epoch, new incarnation
		{h(0, 1, 0, 0, 41, 5), h(0, 1, 0, 0, 41, 5), 60, 0},
		{h(0, 1, 0, 0, 41, 5), h(0, 1, 0, 0, 41, 6), 60, 41},
		{h(0, 1, 0), h(0, 1, 3), 10, 1}, // a primary that restarted from nothing
	}
	for i, c := range cases {
		at, ok := Diverged(c.mine, c.theirs, 0, c.last)
		if ok != (c.at != 0) || at != c.at {
			t.Errorf("case %d: diverged at %d (%v), want %d", i, at, ok, c.at)
		}
	}
}

// epochsAndStarts drops the random incarnations.
func epochsAndStarts(hist []EpochStart) []EpochStart {
	out := slices.Clone(hist)
	for i := range out {
		out[i].Incarnation = 0
	}
	return out
}

// keptEpochs opens a new history kept in /d of a new MemFS.
func keptEpochs(t *testing.T) (*vfs.MemFS, *Epochs) {
	t.Helper()
	fs := vfs.NewMemFS()
	for _, err := range []error{fs.MkdirAll("/d"), fs.SyncDir("/")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	e, err := OpenEpochs(fs, "/d")
	if err != nil {
		t.Fatal(err)
	}
	return fs, e
}

// TestEpochsKept: a history promoted, restarted and adopted is kept in
// the data directory and read back, and a damaged one is refused.
func TestEpochsKept(t *testing.T) {
	fs, e := keptEpochs(t)
	if e.Current() != 0 {
		t.Fatalf("a new history at %d", e.Current())
	}
	if ep, err := e.Promote(10); err != nil || ep != 1 {
		t.Fatalf("promote: %d %v", ep, err)
	}
	if err := e.Adopt(h(0, 1, 0)); err == nil {
		t.Fatal("adopted a history ending at an older epoch")
	}
	// A restart keeps the epoch with a new incarnation; one behind the
	// last stretch's start drops that stretch.
	if ep, err := e.Restart(20); err != nil || ep != 1 || !slices.Equal(epochsAndStarts(e.History()), h(0, 1, 0, 1, 10, 0, 1, 20, 0)) {
		t.Fatalf("restart: %d %v %v", ep, e.History(), err)
	}
	if ep, err := e.Promote(5); err != nil || ep != 2 || !slices.Equal(epochsAndStarts(e.History()), h(0, 1, 0, 2, 5, 0)) {
		t.Fatalf("promote behind: %d %v %v", ep, e.History(), err)
	}
	if ep, err := e.Restart(1); err != nil || ep != 2 || len(e.History()) != 1 {
		t.Fatalf("restart from nothing: %d %v %v", ep, e.History(), err)
	}
	want := h(0, 1, 0, 1, 10, 7, 5, 20, 9)
	if err := e.Adopt(want); err != nil {
		t.Fatal(err)
	}
	fs = fs.Crash(nil)
	again, err := OpenEpochs(fs, "/d")
	if err != nil || !slices.Equal(again.History(), want) {
		t.Fatalf("read back after a crash: %v %v", again.History(), err)
	}
	// The adopted history marks the node as following another primary's
	// log, until it begins a stretch of its own.
	if !again.Follows() {
		t.Fatal("an adopted history read back does not say the node follows")
	}
	if _, err := again.Restart(30); err != nil {
		t.Fatal(err)
	}
	if own, err := OpenEpochs(fs, "/d"); err != nil || own.Follows() {
		t.Fatalf("after a stretch of its own the node still follows: %v", err)
	}
	for _, bad := range []string{"", "0 2 0\n", "0 1\n", "0 1 0\n1 9\n", "0 1 0\n0 5 0\n", "0 1 0\n2 5 1\n1 9 2\n", "0 1 0\nx 5 1\n", "0 1 0\n1 5 zz\n"} {
		if _, _, _, _, err := parseEpochs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestEpochsSeenAndTrusted: an epoch heard of from another node is kept,
// so a promotion here goes past it; a save cut short leaves a temporary
// file that does not stop the next one; records taken on trust (from an
// image) do not count as diverged.
func TestEpochsSeenAndTrusted(t *testing.T) {
	fs, e := keptEpochs(t)
	if err := e.Observe(4); err != nil {
		t.Fatal(err)
	}
	fs = fs.Crash(nil)
	f, err := fs.Create("/d/EPOCHS.tmp") // as a crash in the middle of a save leaves it
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = OpenEpochs(fs, "/d")
	if err != nil {
		t.Fatal(err)
	}
	if ep, err := e.Promote(7); err != nil || ep != 5 {
		t.Fatalf("a promotion after hearing of epoch 4: epoch %d, %v", ep, err)
	}

	fresh, err := OpenEpochs(nil, "")
	if err != nil || !fresh.Fresh() {
		t.Fatalf("a history kept nowhere: %v", err)
	}
	fresh.Trust(30)
	theirs := h(0, 1, 9, 0, 20, 11)
	if at, ok := Diverged(fresh.History(), theirs, fresh.Known(), 30); ok {
		t.Fatalf("records taken on trust diverge at %d", at)
	}
	if at, ok := Diverged(fresh.History(), theirs, 0, 30); !ok || at != 1 {
		t.Fatalf("without trust: %d %v", at, ok)
	}
	if err := fresh.Adopt(theirs); err != nil || fresh.Known() != 0 || fresh.Fresh() {
		t.Fatalf("adopt: %v, known %d", err, fresh.Known())
	}
}

// TestEpochsAt: a record's epoch is that of the stretch it belongs to.
func TestEpochsAt(t *testing.T) {
	e, err := OpenEpochs(vfs.NewMemFS(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Adopt(h(0, 1, 0, 2, 10, 7, 2, 15, 9, 5, 20, 3)); err != nil {
		t.Fatal(err)
	}
	for lsn, want := range map[uint64]uint64{1: 0, 9: 0, 10: 2, 14: 2, 15: 2, 19: 2, 20: 5, 1000: 5} {
		if got := e.At(lsn); got != want {
			t.Errorf("At(%d) = %d, want %d", lsn, got, want)
		}
	}
	// Records taken on trust (a node that kept no history) are of epoch
	// 0, the first stretch's, and a promotion's records of the new one.
	e, err = OpenEpochs(vfs.NewMemFS(), "")
	if err != nil {
		t.Fatal(err)
	}
	e.Trust(50)
	if ep, err := e.Promote(51); err != nil || ep != 1 {
		t.Fatalf("promote: epoch %d, %v", ep, err)
	}
	if e.At(50) != 0 || e.At(51) != 1 {
		t.Fatalf("after Trust(50) and Promote(51): At(50) = %d, At(51) = %d; want 0 and 1", e.At(50), e.At(51))
	}
}
