package replica

import (
	"slices"
	"testing"

	"github.com/mmdb/mmdb/logging/vfs"
)

func TestDiverged(t *testing.T) {
	h := func(pairs ...uint64) []EpochStart {
		var out []EpochStart
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, EpochStart{Epoch: pairs[i], Start: pairs[i+1]})
		}
		return out
	}
	cases := []struct {
		mine, theirs []EpochStart
		last         uint64
		at           uint64 // 0: no divergence
	}{
		{h(0, 1), h(0, 1), 100, 0},
		{h(0, 1), h(0, 1, 1, 101), 100, 0},             // promoted right after our last
		{h(0, 1), h(0, 1, 1, 51), 100, 51},             // we hold 51..100 of epoch 0
		{h(0, 1), h(0, 1, 1, 51, 2, 80), 100, 51},      // two promotions since
		{h(0, 1), h(0, 1, 1, 60, 2, 120), 100, 60},     // the second is past our last
		{h(0, 1, 1, 51), h(0, 1, 1, 51, 2, 90), 89, 0}, // same lineage, behind
		{h(0, 1, 1, 51), h(0, 1, 2, 51), 60, 51},       // another node's epoch 1
		{h(0, 1, 1, 51), h(0, 1, 2, 51), 50, 0},        // but nothing of it held
		{h(0, 1, 3, 40), h(0, 1, 2, 30, 4, 45), 50, 30},
	}
	for i, c := range cases {
		at, ok := Diverged(c.mine, c.theirs, c.last)
		if ok != (c.at != 0) || at != c.at {
			t.Errorf("case %d: diverged at %d (%v), want %d", i, at, ok, c.at)
		}
	}
}

// TestEpochsKept: a history begun and adopted is kept in the data
// directory and read back, and a damaged one is refused.
func TestEpochsKept(t *testing.T) {
	fs := vfs.NewMemFS()
	if err := fs.MkdirAll("/d"); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir("/"); err != nil {
		t.Fatal(err)
	}
	e, err := OpenEpochs(fs, "/d")
	if err != nil || e.Current() != 0 {
		t.Fatalf("a new history: %v at %d", err, e.Current())
	}
	if ep, err := e.Begin(10); err != nil || ep != 1 {
		t.Fatalf("begin: %d %v", ep, err)
	}
	if err := e.Adopt([]EpochStart{{0, 1}}); err == nil {
		t.Fatal("adopted an older history")
	}
	want := []EpochStart{{0, 1}, {1, 10}, {5, 20}}
	if err := e.Adopt(want); err != nil {
		t.Fatal(err)
	}
	again, err := OpenEpochs(fs.Crash(nil), "/d")
	if err != nil || !slices.Equal(again.History(), want) {
		t.Fatalf("read back after a crash: %v %v", again.History(), err)
	}
	for _, bad := range []string{"", "0 2\n", "0 1\n1\n", "0 1\n0 5\n", "0 1\n2 5\n1 9\n", "0 1\nx 5\n"} {
		if _, err := parseEpochs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
