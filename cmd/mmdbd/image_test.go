package main

import (
	"bytes"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/mmdb/mmdb/conf"
)

// fetchSummaryRE finds the numbers of image fetch's summary: "image at
// LSN 3, epoch 1: FILE, 2 rows, 207 bytes; fetched 207 bytes in 5ms
// (0 MB/s), resumed 0 times".
var fetchSummaryRE = regexp.MustCompile(`(LSN|epoch) (\d+)|(\d+) (rows|bytes)|(fetched) (\d+) bytes|(resumed) (\d+) times`)

// imageFetchSummary runs image fetch and returns its summary's numbers,
// by name: LSN, epoch, rows, bytes, fetched and resumed.
func imageFetchSummary(t *testing.T, from, out string) map[string]uint64 {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"image", "fetch", "-from", from, "-out", out, "-quiet"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("image fetch -from %s -out %s: exit %d\n%s%s", from, out, code, &stdout, &stderr)
	}
	nums := map[string]uint64{}
	for _, m := range fetchSummaryRE.FindAllStringSubmatch(stdout.String(), -1) {
		name, num := m[1]+m[4]+m[5]+m[7], m[2]+m[3]+m[6]+m[8]
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		nums[name] = n
	}
	t.Logf("image fetch -from %s: %s", from, &stdout)
	return nums
}

// TestImageFetchSummaryIsTruthful: image fetch's summary tells the
// image's epoch, the bytes this run fetched (the rate is of those) and
// how often it resumed, counting a part left by an earlier run: for a
// fresh fetch, for one that resumes a part, and for one whose part was
// whole already while the node no longer has that image (the epoch then
// comes from the file's header).
func TestImageFetchSummaryIsTruthful(t *testing.T) {
	// A node at epoch 1, so that an epoch left at zero shows: a standby
	// promoted.
	a := startNode(t, func(c *conf.Config) { c.DataDir, c.Role = t.TempDir(), conf.RoleStandby })
	if code := run([]string{"promote", "-addr", a}, nil, io.Discard, io.Discard); code != 0 {
		t.Fatalf("promote: exit %d", code)
	}
	if out, code := shellRun(t, a, `create table kv (k int64, v string(100), primary key (k) ordered)
insert kv 1 "one"
insert kv 2 "two"`); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	dir := t.TempDir()
	first := filepath.Join(dir, "first.mmdb")
	whole := imageFetchSummary(t, a, first)
	if whole["epoch"] != 1 || whole["rows"] != 2 || whole["fetched"] != whole["bytes"] || whole["resumed"] != 0 {
		t.Fatalf("a fresh fetch of an image at epoch 1 with 2 rows: %v", whole)
	}
	img, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(img)) != whole["bytes"] {
		t.Fatalf("the image has %d bytes; the summary says %d", len(img), whole["bytes"])
	}

	// A part holding 40% of the image: the rest is fetched.
	second := filepath.Join(dir, "second.mmdb")
	held := len(img) * 2 / 5
	if err := os.WriteFile(second+".part", img[:held], 0o644); err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(whole)
	want["fetched"], want["resumed"] = uint64(len(img)-held), 1
	if got := imageFetchSummary(t, a, second); !maps.Equal(got, want) {
		t.Errorf("a fetch that resumed a part: %v, want %v", got, want)
	}

	// A whole part of an image another node never had: nothing is
	// fetched, and the epoch is the image's.
	b := startNode(t, nil)
	if out, code := shellRun(t, b, `create table other (k int64, primary key (k))
insert other 1`); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	third := filepath.Join(dir, "third.mmdb")
	if err := os.WriteFile(third+".part", img, 0o644); err != nil {
		t.Fatal(err)
	}
	want["fetched"], want["resumed"] = 0, 1
	if got := imageFetchSummary(t, b, third); !maps.Equal(got, want) {
		t.Errorf("a whole part the node no longer has: %v, want %v", got, want)
	}
}
