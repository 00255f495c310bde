package server

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/digest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

func (n *node) digest() digest.Digest {
	n.t.Helper()
	d, err := digest.Of(n.srv.DB())
	if err != nil {
		n.t.Fatal(err)
	}
	return d
}

// sameAs fails unless n holds what want sums up.
func (n *node) sameAs(want digest.Digest, what string) {
	n.t.Helper()
	if got := n.digest(); !got.Equal(want) {
		n.t.Fatalf("%s: %s\nwant %s", what, got, want)
	}
}

// fetchFile saves the image of the node at addr to a file.
func fetchFile(t *testing.T, addr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	err = replica.Fetch(ctx(t), addr, replica.FetchOptions{}, func(st *replica.ImageStream) error {
		_, err := io.Copy(f, st)
		return err
	})
	if cerr := f.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	return path
}

// TestBootstrap: a diskless node loads a node's image at start and then
// holds exactly what the source held at the image's LSN; it serves reads
// and writes, and images of its own. The source, which has a data_dir,
// served a checkpoint it wrote for the purpose.
func TestBootstrap(t *testing.T) {
	src := startNode(t, nil)
	src.withAccounts(300)
	want := src.digest()
	diskless := func(from string) *node {
		return startNode(t, func(c *conf.Config) {
			c.DataDir, c.Durability, c.BootstrapFrom = "", conf.DurabilityNoLog, from
		})
	}
	a := diskless(src.addr)
	a.sameAs(want, "a diskless node bootstrapped from a node with a data_dir")
	a.tookHistory(src, want.LSN)
	if got := src.srv.checkpointLSN(); got != want.LSN {
		t.Fatalf("the source's newest image is at LSN %d, not %d", got, want.LSN)
	}
	b := diskless(a.addr)
	b.sameAs(want, "a diskless node bootstrapped from a diskless node")
	b.tookHistory(a, want.LSN)
	if _, ok := b.get(7); !ok {
		t.Fatal("row 7 is not readable on the bootstrapped node")
	}
	resp, err := b.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(1000, 1)})
	if err != nil || resp.GetLsn() != want.LSN+1 {
		t.Fatalf("the first write after the image: LSN %d, %v; want %d", resp.GetLsn(), err, want.LSN+1)
	}
}

// tookHistory checks that n took the epoch history from's image at lsn
// came with (so that it can tell a later primary's log of another
// lineage), not its records on trust; as a primary, it began a stretch of
// its own after it.
func (n *node) tookHistory(from *node, lsn uint64) {
	n.t.Helper()
	want := from.srv.epochs.Image(lsn)
	got := n.srv.epochs.History()
	if len(want) == 0 || n.srv.epochs.Known() != 0 || len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		n.t.Fatalf("the node's epoch history %v (on trust to LSN %d), not the image's %v", got, n.srv.epochs.Known(), want)
	}
}

// TestBootstrapIntoDataDir: a node with an empty data_dir installs the
// image of bootstrap_from as its first checkpoint and logs from there; a
// restart keeps its own database and does not need the source.
func TestBootstrapIntoDataDir(t *testing.T) {
	src := startNode(t, nil)
	src.withAccounts(200)
	want := src.digest()
	dir := t.TempDir()
	// A first bootstrap that crashed while installing left its temporary
	// file: still no database, so the node bootstraps.
	if err := os.MkdirAll(checkpoint.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(checkpoint.Dir(dir), "image-a.mmdb.tmp"), []byte("half an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	from := src.addr
	edit := func(c *conf.Config) { c.DataDir, c.BootstrapFrom = dir, from }
	n := startNode(t, edit)
	n.sameAs(want, "a node bootstrapped into its data_dir")
	n.tookHistory(src, want.LSN)
	if _, err := n.db.Delete(ctx(t), &pb.DeleteRequest{Table: "acct", Key: key(vI(5))}); err != nil {
		t.Fatal(err)
	}
	mine := n.digest()
	n.stop()
	src.stop()
	again := startNode(t, edit) // the source is gone: not needed
	again.sameAs(mine, "the restart of a bootstrapped node")
}

// TestFromImage: a backup image starts a node (-from-image) with a data
// dir or without, and image restore installs one; neither replaces a
// database a data_dir holds. Each node takes the epoch history the file
// carries, so that a primary whose log parts from the image's is refused
// (replica.Diverged) rather than followed on trust.
func TestFromImage(t *testing.T) {
	src := startNode(t, nil)
	src.withAccounts(100)
	want := src.digest()
	file := fetchFile(t, src.addr)

	diskless := startNode(t, func(c *conf.Config) { c.DataDir, c.Durability, c.FromImage = "", conf.DurabilityNoLog, file })
	diskless.sameAs(want, "a diskless node from an image file")
	diskless.tookHistory(src, want.LSN)

	dir := t.TempDir()
	n := startNode(t, func(c *conf.Config) { c.DataDir, c.FromImage = dir, file })
	n.sameAs(want, "a node from an image file")
	n.tookHistory(src, want.LSN)
	n.stop()
	cfg := conf.DefaultConfig()
	cfg.DataDir, cfg.FromImage = dir, file
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "already holds a database") {
		t.Fatalf("-from-image into a data_dir with a database: %v", err)
	}
	if _, err := Restore(cfg, nil); err == nil || !strings.Contains(err.Error(), "already holds a database") {
		t.Fatalf("restore into a data_dir with a database: %v", err)
	}
	cfg.DataDir = t.TempDir()
	img, err := Restore(cfg, nil)
	if err != nil || img.LSN != want.LSN {
		t.Fatalf("restore: %+v, %v", img, err)
	}
	restored := startNode(t, func(c *conf.Config) { c.DataDir = cfg.DataDir })
	restored.sameAs(want, "a node started on a restored image")
	restored.tookHistory(src, want.LSN)
}

// TestFetchImageOfEmptyNode: a node that has committed nothing has no
// image to serve.
func TestFetchImageOfEmptyNode(t *testing.T) {
	for _, dir := range []bool{true, false} {
		n := startNode(t, func(c *conf.Config) {
			if !dir {
				c.DataDir, c.Durability = "", conf.DurabilityNoLog
			}
		})
		err := replica.Fetch(context.Background(), n.addr, replica.FetchOptions{}, func(*replica.ImageStream) error { return nil })
		wantCode(t, err, codes.FailedPrecondition, "nothing has been committed")
	}
}
