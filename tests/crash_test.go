package tests

import (
	"context"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

const (
	crashAccounts = 32
	crashBalance  = 1000
)

func vInt(v int64) *pb.Value { return &pb.Value{Kind: &pb.Value_Int64{Int64: v}} }

// TestKill9 runs 32 concurrent writers against a real mmdbd at mmap-log
// and at fsync-log, kills it with SIGKILL in the middle of their traffic,
// and restarts it on the same data directory, several times over: every
// commit a writer saw acknowledged is there after each restart, and the
// balances, which every transfer keeps summing to the same total, still
// do (no transaction is partial).
//
// With checkpoints, images are also written all the time (every 20 ms,
// and back to back on request), so the kills land in the middle of them
// too, and every restart loads the newest image before the log.
func TestKill9(t *testing.T) {
	for _, level := range []string{"mmap-log", "fsync-log"} {
		t.Run(level, func(t *testing.T) { kill9(t, level, false) })
	}
	t.Run("fsync-log with checkpoints", func(t *testing.T) { kill9(t, "fsync-log", true) })
}

func kill9(t *testing.T, level string, checkpoints bool) {
	dir := t.TempDir()
	args := []string{"-data-dir", dir, "-durability", level,
		"-log-channels", filepath.Join(dir, "ch0") + "," + filepath.Join(dir, "ch1")}
	if checkpoints {
		args = append(args, "-checkpoint-interval", "20ms")
	}
	p := start(t, args...)
	db, conn := p.client()
	c := testCtx(t)
	if _, err := db.CreateTable(c, &pb.CreateTableRequest{Table: &pb.Table{
		Name:       "acct",
		Columns:    []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}, {Name: "bal", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
		PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED,
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateTable(c, &pb.CreateTableRequest{Table: &pb.Table{
		Name:       "mark",
		Columns:    []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
		PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED,
	}}); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < crashAccounts; i++ {
		if _, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: &pb.Row{Values: []*pb.Value{vInt(i), vInt(crashBalance)}}}); err != nil {
			t.Fatal(err)
		}
	}
	acked := map[int64]bool{}
	for round := 0; round < 3; round++ {
		stop := make(chan struct{})
		var images sync.WaitGroup
		if checkpoints {
			images.Add(1)
			go func() {
				defer images.Done()
				admin := pb.NewAdminServiceClient(conn)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := admin.Checkpoint(context.Background(), &pb.CheckpointRequest{}); err != nil {
						return // the node is gone
					}
				}
			}()
		}
		n := writeUntilKilled(t, p, db, round, acked)
		close(stop)
		images.Wait()
		t.Logf("round %d: %d commits acknowledged before the kill", round, n)
		if n == 0 {
			t.Fatalf("round %d: nothing was acknowledged before the kill", round)
		}
		p = start(t, args...)
		db, conn = p.client()
		checkBank(t, db, acked)
		if checkpoints {
			st, err := pb.NewAdminServiceClient(conn).Status(testCtx(t), &pb.StatusRequest{})
			if err != nil || st.GetCheckpointLsn() == 0 {
				t.Fatalf("round %d: the restarted node has no image (checkpoint LSN %d): %v", round, st.GetCheckpointLsn(), err)
			}
			t.Logf("round %d: restarted from the image at LSN %d of %d", round, st.GetCheckpointLsn(), st.GetLastLsn())
		}
	}
}

// writeUntilKilled has 32 writers transfer between accounts, each
// transfer with a marker row, and kills the node once they have
// committed a while; it adds the acknowledged markers to acked and
// returns how many this round added.
func writeUntilKilled(t *testing.T, p *proc, db pb.DatabaseServiceClient, round int, acked map[int64]bool) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	added := 0
	wg := writers(ctx, db, round, 32, true, func(mark int64) {
		mu.Lock()
		acked[mark] = true
		added++
		mu.Unlock()
	})
	// Let the writers get going, then kill the node under them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := added
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill()
	wg.Wait()
	return added
}

// writers starts n writers that transfer on db, each transfer with a
// marker row, until ctx ends (or, with stopOnError, until a call fails:
// the node is gone), calling ack with each acknowledged marker; the
// markers of a round start with round.
func writers(ctx context.Context, db pb.DatabaseServiceClient, round, n int, stopOnError bool, ack func(mark int64)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
			for seq := int64(0); ctx.Err() == nil; seq++ {
				mark := int64(round)<<40 | int64(w)<<20 | seq
				ok, err := transfer(ctx, db, r, mark)
				if err != nil && stopOnError {
					return
				}
				if ok {
					ack(mark)
				}
			}
		}()
	}
	return &wg
}

// acks holds the markers of the transfers acknowledged so far, as
// writers report them (add is their ack).
type acks struct {
	mu     sync.Mutex
	marked map[int64]bool
}

func newAcks() *acks { return &acks{marked: map[int64]bool{}} }

func (a *acks) add(mark int64) {
	a.mu.Lock()
	a.marked[mark] = true
	a.mu.Unlock()
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.marked)
}

// snapshot returns the markers acknowledged so far.
func (a *acks) snapshot() map[int64]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.marked)
}

// waitFor waits, up to 20 s, until n transfers are acknowledged.
func (a *acks) waitFor(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); a.count() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d transfers of %d acknowledged in 20 s", a.count(), n)
		}
	}
}

// transfer moves a random amount between two random accounts and inserts
// the marker, in one batch whose conditions check the balances it read;
// ok says whether it committed with everything its node promises (a
// commit that went on without its standbys, degraded, does not count).
func transfer(ctx context.Context, db pb.DatabaseServiceClient, r *rand.Rand, mark int64) (bool, error) {
	a, b := r.Int64N(crashAccounts), r.Int64N(crashAccounts)
	for a == b {
		b = r.Int64N(crashAccounts)
	}
	var bal [2]int64
	for i, id := range []int64{a, b} {
		resp, err := db.Get(ctx, &pb.GetRequest{Table: "acct", Key: []*pb.Value{vInt(id)}})
		if err != nil {
			return false, err
		}
		bal[i] = resp.GetRow().GetValues()[1].GetInt64()
	}
	amount := r.Int64N(50)
	cond := func(id, bal int64) *pb.Condition {
		return &pb.Condition{Table: "acct", Key: []*pb.Value{vInt(id)}, Expect: pb.Condition_EXPECT_EXISTS,
			Equals: []*pb.ColumnValue{{Column: "bal", Value: vInt(bal)}}}
	}
	set := func(id, bal int64) *pb.Operation {
		return &pb.Operation{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: "acct", Key: []*pb.Value{vInt(id)},
			Set: []*pb.ColumnValue{{Column: "bal", Value: vInt(bal)}}}}}
	}
	resp, err := db.Commit(ctx, &pb.CommitRequest{
		Conditions: []*pb.Condition{cond(a, bal[0]), cond(b, bal[1])},
		Operations: []*pb.Operation{set(a, bal[0]-amount), set(b, bal[1]+amount),
			{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(mark)}}}}}},
	})
	if err != nil {
		return false, err
	}
	return resp.GetCommitted() && !resp.GetDegraded(), nil
}

// checkBank checks the restarted node: the balances sum to the total and
// every acknowledged marker is there.
func checkBank(t *testing.T, db pb.DatabaseServiceClient, acked map[int64]bool) {
	t.Helper()
	sum, n := int64(0), 0
	for _, r := range scanTable(t, db, "acct") {
		sum += r.GetValues()[1].GetInt64()
		n++
	}
	if n != crashAccounts || sum != crashAccounts*crashBalance {
		t.Fatalf("after the restart: %d accounts summing to %d, want %d summing to %d", n, sum, crashAccounts, crashAccounts*crashBalance)
	}
	present := map[int64]bool{}
	for _, r := range scanTable(t, db, "mark") {
		present[r.GetValues()[0].GetInt64()] = true
	}
	for mark := range acked {
		if !present[mark] {
			t.Fatalf("after the restart: acknowledged commit %#x is lost (%d acknowledged, %d present)", mark, len(acked), len(present))
		}
	}
}

// scanTable returns every row of a table, page by page.
func scanTable(t *testing.T, db pb.DatabaseServiceClient, table string) []*pb.Row {
	t.Helper()
	var rows []*pb.Row
	var after []*pb.Value
	for {
		stream, err := db.Scan(testCtx(t), &pb.ScanRequest{Table: table, Limit: 5000, After: after})
		if err != nil {
			t.Fatal(err)
		}
		more := false
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("scan %s: %v", table, err)
			}
			rows = append(rows, resp.GetRows()...)
			if resp.GetMore() {
				more, after = true, resp.GetResumeKey()
			}
		}
		if !more {
			return rows
		}
	}
}

// TestCorruptLogRefusesStart: damage inside the log, before its end (a
// flipped byte in a block that later blocks follow), stops the node from
// starting, saying which file and where (SPEC 3); with
// recovery_ignore_corruption it starts with the commits before the damage,
// a prefix of those made.
func TestCorruptLogRefusesStart(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-node", "a", "-durability", "fsync-log", "-data-dir", dir}
	p := start(t, args...)
	db, _ := p.client()
	createBank(t, db)
	const marks = 300
	for i := range int64(marks) {
		if _, err := db.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	p.kill() // no image at shutdown: the log holds the marks
	segs, err := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("the log's segments: %v %v", segs, err)
	}
	seg := segs[0]
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end-- // the segment is preallocated: zeros after what was written
	}
	at := end / 2 // among the marks' blocks, with more after it
	data[at] ^= 0xff
	if err := os.WriteFile(seg, data, 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runTool(t, append([]string{"serve", "-listen", "127.0.0.1:0"}, args...)...)
	if code == 0 || !strings.Contains(errOut, "corrupt") || !strings.Contains(errOut, filepath.Base(seg)) {
		t.Fatalf("a node whose log is damaged before its end: exit %d\n%s%s", code, out, errOut)
	}

	p = start(t, append(args, "-recovery-ignore-corruption")...)
	db, _ = p.client()
	rows := scanTable(t, db, "mark")
	if len(rows) == 0 || len(rows) >= marks {
		t.Fatalf("after the damage in the middle of the marks' log, %d marks of %d", len(rows), marks)
	}
	for i, r := range rows {
		if v := r.GetValues()[0].GetInt64(); v != int64(i) {
			t.Fatalf("the marks kept are not the first %d made: mark %d at %d", len(rows), v, i)
		}
	}
	t.Logf("kept %d marks of %d", len(rows), marks)
}

// TestNoLogKill9: a no-log node with a data dir, killed with SIGKILL
// while it writes an image, restarts from its newest whole image: at its
// LSN, with exactly its rows, and none of the commits made after it
// (SPEC 4).
func TestNoLogKill9(t *testing.T) {
	dir := t.TempDir()
	args := []string{"-data-dir", dir, "-durability", "no-log"}
	p := start(t, args...)
	db, conn := p.client()
	createBank(t, db)
	insert := func(from, to int64) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := db.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(i)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	insert(0, 50)
	img, err := pb.NewAdminServiceClient(conn).Checkpoint(testCtx(t), &pb.CheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	insert(50, 100)
	fillBlobs(t, db, 20000) // 20 MB: the next image takes a while to write
	go func() {
		// The node is killed under it: its error says only that.
		_, _ = pb.NewAdminServiceClient(conn).Checkpoint(context.Background(), &pb.CheckpointRequest{})
	}()
	images := filepath.Join(dir, "checkpoint")
	// Under way, or, when this goroutine did not run while it was
	// written (a loaded machine), already whole: both cases are checked
	// below.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		tmp, _ := filepath.Glob(filepath.Join(images, "*.tmp")) // a Glob error only for a bad pattern
		done, _ := filepath.Glob(filepath.Join(images, "*.mmdb"))
		if len(tmp) > 0 || len(done) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second image was not begun")
		}
	}
	p.kill()
	whole, err := filepath.Glob(filepath.Join(images, "*.mmdb"))
	if err != nil {
		t.Fatal(err)
	}

	p = start(t, args...)
	db, conn = p.client()
	st, err := pb.NewAdminServiceClient(conn).Status(testCtx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rows := scanTable(t, db, "mark")
	// From the first image, unless the second was finished (renamed in
	// place) before the kill.
	want, wantLSN := 50, img.GetLsn()
	if len(whole) == 2 {
		want, wantLSN = 100, st.GetCheckpointLsn()
	}
	if st.GetLastLsn() != st.GetCheckpointLsn() || st.GetLastLsn() < img.GetLsn() || st.GetLastLsn() != wantLSN || len(rows) != want {
		t.Fatalf("restarted at LSN %d (images %q, the first at LSN %d; status's %d) with %d marks, want %d", st.GetLastLsn(), whole, img.GetLsn(), st.GetCheckpointLsn(), len(rows), want)
	}
	for i, r := range rows {
		if v := r.GetValues()[0].GetInt64(); v != int64(i) {
			t.Fatalf("mark %d at %d", v, i)
		}
	}
	t.Logf("restarted from the image at LSN %d with %d marks (%d whole images)", st.GetLastLsn(), len(rows), len(whole))
}
