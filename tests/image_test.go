package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/internal/faultproxy"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// fillBlobs creates table blob on a node and fills it with n rows of 1 KB
// that do not compress, and table kv with n small rows.
func fillBlobs(t *testing.T, db pb.DatabaseServiceClient, n int) {
	t.Helper()
	c := testCtx(t)
	for _, tbl := range []*pb.Table{
		{Name: "blob", Columns: []*pb.Column{
			{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "data", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: 1024},
		}, PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED},
		{Name: "kv", Columns: []*pb.Column{
			{Name: "k", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 32},
			{Name: "v", Type: pb.ColumnType_COLUMN_TYPE_INT64},
		}, PrimaryKey: []string{"k"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED},
	} {
		if _, err := db.CreateTable(c, &pb.CreateTableRequest{Table: tbl}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 500 {
		req := &pb.CommitRequest{}
		for j := i; j < min(n, i+500); j++ {
			b := make([]byte, 1000)
			_, _ = rand.Read(b)
			req.Operations = append(req.Operations,
				&pb.Operation{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "blob", Row: &pb.Row{Values: []*pb.Value{vInt(int64(j)), {Kind: &pb.Value_Bytes{Bytes: b}}}}}}},
				&pb.Operation{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "kv", Row: &pb.Row{Values: []*pb.Value{{Kind: &pb.Value_String_{String_: fmt.Sprintf("k%06d", j)}}, vInt(int64(j))}}}}})
		}
		if _, err := db.Commit(c, req); err != nil {
			t.Fatal(err)
		}
	}
}

// tableSums returns, per table, its row count and a sum of a hash of each
// row: equal for two nodes that hold the same rows, wherever they lie.
func tableSums(t *testing.T, db pb.DatabaseServiceClient) string {
	t.Helper()
	tables, err := db.ListTables(testCtx(t), &pb.ListTablesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tbl := range tables.GetTables() {
		rows := scanTable(t, db, tbl.GetName())
		var sum uint64
		for _, r := range rows {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			sum += binary.LittleEndian.Uint64(h[:])
		}
		out = append(out, fmt.Sprintf("%s: %d rows, sum %016x", tbl.GetName(), len(rows), sum))
	}
	return strings.Join(out, "; ")
}

var resumedRE = regexp.MustCompile(`resumed (\d+) times`)

// TestImageStreaming: images over the network between real nodes. A
// diskless node bootstraps through a link cut twice mid-way and holds
// exactly the source's tables; image fetch saves a backup through cuts;
// a fetch interrupted earlier resumes on the same image though the source
// has moved on; the backup starts a node that equals the first.
func TestImageStreaming(t *testing.T) {
	srcDir := t.TempDir()
	src := start(t, "-data-dir", srcDir)
	srcDB, _ := src.client()
	fillBlobs(t, srcDB, 4000)
	want := tableSums(t, srcDB)

	p := faultproxy.New(t, src.addr)
	p.CutAt(1<<20, 3<<20)
	diskless := start(t, "-data-dir", "", "-durability", "no-log", "-bootstrap-from", p.Addr())
	if p.Cuts() != 2 || !strings.Contains(diskless.output(), "the image transfer broke; resuming") {
		t.Fatalf("the bootstrap saw %d cuts; its log:\n%s", p.Cuts(), diskless.output())
	}
	disklessDB, _ := diskless.client()
	if got := tableSums(t, disklessDB); got != want {
		t.Fatalf("the diskless node holds %s\nthe source %s", got, want)
	}

	dir := t.TempDir()
	backup := filepath.Join(dir, "backup.mmdb")
	p.CutAt(p.Down()+(2<<20), p.Down()+(3<<20))
	out, errOut, code := runTool(t, "image", "fetch", "-from", p.Addr(), "-out", backup)
	if m := resumedRE.FindStringSubmatch(out); code != 0 || m == nil || m[1] == "0" {
		t.Fatalf("image fetch through two cuts: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "image", "verify", "-in", backup); code != 0 || !strings.Contains(out, "a whole image") {
		t.Fatalf("image verify: exit %d\n%s%s", code, out, errOut)
	}
	whole, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}

	// A fetch that stopped at 40% (its process killed, say) resumes on
	// the same image, though the source has committed since.
	fillMore(t, srcDB)
	second := filepath.Join(dir, "second.mmdb")
	if err := os.WriteFile(second+".part", whole[:len(whole)*2/5], 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runTool(t, "image", "fetch", "-from", src.addr, "-out", second, "-quiet")
	if code != 0 || !strings.Contains(errOut, "resuming "+second+".part") {
		t.Fatalf("resume a fetch: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := os.ReadFile(second); err != nil || !bytes.Equal(got, whole) {
		t.Fatalf("the resumed fetch differs from the image it resumed (%v)", err)
	}
	if _, err := os.Stat(second + ".part"); !os.IsNotExist(err) {
		t.Fatalf("the partial file is still there: %v", err)
	}

	// And after the source restarted, which emptied the images it kept
	// for transfers and wrote a newer checkpoint on its way down: the
	// older slot still holds the image.
	if err := src.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := src.wait(); code != 0 {
		t.Fatalf("the source's shutdown: exit %d\n%s", code, src.output())
	}
	src = start(t, "-data-dir", srcDir)
	third := filepath.Join(dir, "third.mmdb")
	if err := os.WriteFile(third+".part", whole[:len(whole)*3/5], 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runTool(t, "image", "fetch", "-from", src.addr, "-out", third, "-quiet")
	if code != 0 || !strings.Contains(errOut, "resuming "+third+".part") {
		t.Fatalf("resume a fetch after the source restarted: exit %d\n%s%s", code, out, errOut)
	}
	if got, err := os.ReadFile(third); err != nil || !bytes.Equal(got, whole) {
		t.Fatalf("the fetch resumed after the source restarted differs from the image it resumed (%v)", err)
	}

	restored := start(t, "-from-image", backup)
	restoredDB, _ := restored.client()
	if got := tableSums(t, restoredDB); got != want {
		t.Fatalf("the node started from the backup holds %s\nthe source held %s", got, want)
	}
	if out, errOut, code := runTool(t, "image", "fetch", "-from", src.addr, "-out", backup); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("image fetch over an existing file: exit %d\n%s%s", code, out, errOut)
	}
}

// fillMore commits one more row on a node.
func fillMore(t *testing.T, db pb.DatabaseServiceClient) {
	t.Helper()
	row := &pb.Row{Values: []*pb.Value{{Kind: &pb.Value_String_{String_: "later"}}, vInt(1)}}
	if _, err := db.Insert(testCtx(t), &pb.InsertRequest{Table: "kv", Row: row}); err != nil {
		t.Fatal(err)
	}
}

// TestImageFromBusyStandby: a standby serves a consistent image while
// its primary commits transfers (SPEC 7): a node started from it holds
// every account summing right (no transaction in part) and every marker
// the standby had applied by the time the fetch began, and the image's
// LSN is one the standby reached.
func TestImageFromBusyStandby(t *testing.T) {
	primary, standby := startPair(t, "mmap-log", "applied-ack")
	pdb, _ := primary.client()
	createBank(t, pdb)
	acked := newAcks()
	ctx, cancel := context.WithCancel(context.Background())
	wg := writers(ctx, pdb, 0, 8, false, acked.add)
	defer func() {
		cancel()
		wg.Wait()
	}()
	acked.waitFor(t, 200)
	// Acknowledged under applied-ack: the standby has applied them before
	// the fetch begins.
	before := acked.snapshot()
	img := filepath.Join(t.TempDir(), "standby.mmdb")
	out, errOut, code := runTool(t, "image", "fetch", "-from", standby.addr, "-out", img, "-quiet")
	if code != 0 {
		t.Fatalf("image fetch from the standby: exit %d\n%s%s", code, out, errOut)
	}
	cancel()
	wg.Wait()
	restored := start(t, "-data-dir", "", "-durability", "no-log", "-from-image", img)
	rdb, _ := restored.client()
	checkBank(t, rdb, before)
	t.Logf("the image holds %d marks; %d were acknowledged when the fetch began, %d in all", len(scanTable(t, rdb, "mark")), len(before), acked.count())
}
