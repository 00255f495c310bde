package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/metricstest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// startPair starts a standby b and a primary a that ships to it, both
// real mmdbd processes at durability level with the arguments both, the
// primary at sync mode.
func startPair(t testing.TB, level, mode string, both ...string) (primary, standby *proc) {
	t.Helper()
	// The standby checks the sender's name; it never dials a's address.
	standby = start(t, append([]string{"-node", "b", "-role", "standby", "-durability", level, "-peer", "a=127.0.0.1:1"}, both...)...)
	primary = start(t, append([]string{"-node", "a", "-durability", level, "-sync-mode", mode, "-peer", "b=" + standby.addr}, both...)...)
	return primary, standby
}

// createBank makes the crash tests' tables on a node.
func createBank(t *testing.T, db pb.DatabaseServiceClient) {
	t.Helper()
	c := testCtx(t)
	for _, def := range []*pb.Table{
		{Name: "acct", Columns: []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}, {Name: "bal", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
			PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED},
		{Name: "mark", Columns: []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
			PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED},
	} {
		if _, err := db.CreateTable(c, &pb.CreateTableRequest{Table: def}); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < crashAccounts; i++ {
		if _, err := db.Insert(c, &pb.InsertRequest{Table: "acct", Row: &pb.Row{Values: []*pb.Value{vInt(i), vInt(crashBalance)}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// sameRows fails unless two nodes hold the same rows in the bank's
// tables.
func sameRows(t *testing.T, x, y pb.DatabaseServiceClient) {
	t.Helper()
	for _, table := range []string{"acct", "mark"} {
		if rx, ry := scanTable(t, x, table), scanTable(t, y, table); fmt.Sprint(rx) != fmt.Sprint(ry) {
			t.Fatalf("table %s: %d rows on one node, %d on the other", table, len(rx), len(ry))
		}
	}
}

// streaming waits, up to within, until the primary admin reports its
// (only) standby streaming and caught up, and returns the LSN; standby's
// output goes with a failure.
func streaming(t *testing.T, admin pb.AdminServiceClient, within time.Duration, standby *proc) uint64 {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if sb := st.GetStandbys()[0]; sb.GetState() == "streaming" && sb.GetAppliedLsn() == st.GetLastLsn() {
			return st.GetLastLsn()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby is not streaming and caught up: %v at LSN %d\n%s", st.GetStandbys(), st.GetLastLsn(), standby.output())
		}
	}
}

// settled waits until a node's applied LSN stops moving and returns it.
func settled(t *testing.T, p *proc) uint64 {
	t.Helper()
	_, conn := p.client()
	return settledAt(t, pb.NewAdminServiceClient(conn), p.addr)
}

// settledAt is settled for the node at addr that admin calls.
func settledAt(t *testing.T, admin pb.AdminServiceClient, addr string) uint64 {
	t.Helper()
	last, same := uint64(0), 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetAppliedLsn() == last {
			if same++; same == 5 {
				return last
			}
			continue
		}
		last, same = st.GetAppliedLsn(), 0
	}
	t.Fatalf("the applied LSN of %s did not settle", addr)
	return 0
}

// TestReplicationSurvivesPrimaryKill9: 32 writers commit on a primary
// that ships to a standby, and the primary is killed with SIGKILL under
// them. With applied-ack every acknowledged commit is on the standby at
// once; with received-ack once the standby has applied what it holds (the
// standby stays up). Either way the balances add up there (no partial
// transaction), and the standby refuses writes, naming the primary.
func TestReplicationSurvivesPrimaryKill9(t *testing.T) {
	for _, mode := range []string{"applied-ack", "received-ack"} {
		t.Run(mode, func(t *testing.T) {
			primary, standby := startPair(t, "fsync-log", mode)
			pdb, _ := primary.client()
			createBank(t, pdb)
			acked := map[int64]bool{}
			n := writeUntilKilled(t, primary, pdb, 0, acked)
			if n == 0 {
				t.Fatal("nothing was acknowledged before the kill")
			}
			sdb, _ := standby.client()
			if mode == "received-ack" {
				settled(t, standby)
			}
			checkBank(t, sdb, acked)
			t.Logf("%d commits acknowledged; all on the standby", n)
			if strings.Contains(primary.output(), "link to the standby broke") {
				t.Fatalf("the link broke before the kill:\n%s", primary.output())
			}

			_, err := sdb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-1)}}})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "a at "+primary.addr) {
				t.Fatalf("a write on the standby: %v", err)
			}
		})
	}
}

// TestReplicationStatus: a primary reports its standby streaming and
// caught up, and the standby names its primary.
func TestReplicationStatus(t *testing.T) {
	primary, standby := startPair(t, "no-log", "applied-ack")
	pdb, _ := primary.client()
	createBank(t, pdb)
	var st struct {
		Role     string `json:"role"`
		LastLSN  uint64 `json:"last_lsn"`
		Primary  string `json:"primary"`
		Standbys []struct {
			Name       string `json:"name"`
			State      string `json:"state"`
			AppliedLSN uint64 `json:"applied_lsn"`
			LagRecords uint64 `json:"lag_records"`
		} `json:"standbys"`
	}
	out, errOut, code := runTool(t, "status", "-json", "-addr", primary.addr)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Standbys) != 1 || st.Standbys[0].Name != "b" || st.Standbys[0].State != "streaming" ||
		st.Standbys[0].AppliedLSN != st.LastLSN || st.Standbys[0].LagRecords != 0 {
		t.Fatalf("the primary's status: %s", out)
	}
	// Every field SPEC 10 names is there, zero or not.
	var fields map[string]any
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatal(err)
	}
	has := func(where string, m any, keys ...string) {
		t.Helper()
		obj, _ := m.(map[string]any)
		for _, k := range keys {
			if _, ok := obj[k]; !ok {
				t.Errorf("status -json: %s has no %q: %s", where, k, out)
			}
		}
	}
	has("the top level", fields, "role", "epoch", "durability", "sync_mode", "last_lsn", "durable_lsn", "applied_lsn", "checkpoint_lsn", "standbys", "tables")
	for _, list := range []struct {
		key  string
		keys []string
	}{
		{"standbys", []string{"name", "addr", "state", "received_lsn", "applied_lsn", "lag_records", "lag_ms"}},
		{"tables", []string{"name", "rows", "bytes"}},
	} {
		items, _ := fields[list.key].([]any)
		if len(items) == 0 {
			t.Fatalf("status -json: no %s: %s", list.key, out)
		}
		has(list.key+"[0]", items[0], list.keys...)
	}
	out, errOut, code = runTool(t, "status", "-json", "-addr", standby.addr)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	st.Primary = ""
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Role != "standby" || st.Primary != "a at "+primary.addr || st.LastLSN == 0 {
		t.Fatalf("the standby's status: %s", out)
	}
	// A clean stop of the standby does not wait for its link to end.
	start := time.Now()
	if err := standby.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := standby.wait(); code != 0 || time.Since(start) > 10*time.Second {
		t.Fatalf("the standby stopped with %d after %s:\n%s", code, time.Since(start), standby.output())
	}
}

// TestFailover: the primary a is killed with SIGKILL under 32 writers
// at applied-ack; `mmdbd promote` makes the standby b the primary, which
// takes writes within a second and holds every commit a acknowledged.
// When a comes back (configured as primary still), it learns of b's newer
// epoch and steps down, and it refuses b's log if its own has a tail b
// never had, saying where they diverged; b goes on taking writes.
//
// The old primary's lone run ends with SIGKILL (no image past the cut:
// it cuts its log) or with SIGTERM (the clean shutdown's image holds the
// tail and no image is below it: it is imaged again instead).
func TestFailover(t *testing.T) {
	for _, stop := range []string{"kill", "term"} {
		t.Run(stop, func(t *testing.T) { failover(t, stop) })
	}
}

func failover(t *testing.T, stop string) {
	aAddr, bDir := grpctest.DeadAddr(t), t.TempDir()
	b := start(t, "-node", "b", "-role", "standby", "-durability", "fsync-log", "-data-dir", bDir, "-peer", "a="+aAddr)
	aDir := t.TempDir()
	aArgs := []string{"-node", "a", "-listen", aAddr, "-durability", "fsync-log", "-data-dir", aDir, "-sync-mode", "applied-ack", "-peer", "b=" + b.addr}
	a := start(t, aArgs...)
	adb, _ := a.client()
	createBank(t, adb)
	acked := map[int64]bool{}
	if n := writeUntilKilled(t, a, adb, 0, acked); n == 0 {
		t.Fatal("nothing was acknowledged before the kill")
	}

	begin := time.Now()
	out, errOut, code := runTool(t, "promote", "-addr", b.addr)
	if code != 0 || !strings.Contains(out, "epoch 1 starts at LSN") {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}
	bdb, bconn := b.client()
	if _, err := bdb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-1)}}}); err != nil {
		t.Fatalf("the first write on the promoted standby: %v", err)
	}
	t.Logf("promote to first accepted write: %s", time.Since(begin))
	checkBank(t, bdb, acked)
	// An image of b now names the new epoch (SPEC 5).
	out, errOut, code = runTool(t, "image", "fetch", "-from", b.addr, "-out", filepath.Join(t.TempDir(), "b.mmdb"), "-quiet")
	if code != 0 || !strings.Contains(out, ", epoch 1: ") {
		t.Fatalf("image fetch from the promoted standby: exit %d\n%s%s", code, out, errOut)
	}

	// Before it meets b again, the old primary takes commits of its own
	// (started without peers), so its log surely holds records b never
	// had; it dies without a checkpoint. Then it comes back as it was
	// configured.
	a = start(t, "-node", "a", "-listen", aAddr, "-durability", "fsync-log", "-data-dir", aDir)
	alone, _ := a.client()
	for i := range int64(5) {
		if _, err := alone.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-100 - i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if stop == "kill" {
		a.kill()
	} else {
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := a.wait(); code != 0 {
			t.Fatalf("the lone old primary stopped with %d", code)
		}
	}
	a = start(t, aArgs...)
	admin := pb.NewAdminServiceClient(bconn)
	_, aconn := a.client()
	aAdmin := pb.NewAdminServiceClient(aconn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The node may be restarting itself (re-executing) to be imaged
		// again once it has stepped down: its address refuses until then.
		st, err := aAdmin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatal(err)
		}
		if st.GetRole() == "standby" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old primary did not step down:\n%s", a.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It then follows the new primary: when its log has records the new
	// one never had (written on a before the kill, not shipped), it sets
	// them aside in a file, restarts itself to cut them from its log, and
	// catches up.
	t.Logf("the old primary follows the new one, caught up at LSN %d", streaming(t, admin, time.Until(deadline), a))
	files, err := filepath.Glob(filepath.Join(aDir, "diverged-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	{
		if len(files) != 1 {
			t.Fatalf("the diverged records were set aside in %v:\n%s", files, a.output())
		}
		tail, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(tail)), "\n")
		var first struct {
			LSN uint64 `json:"lsn"`
			Ops []struct {
				Op    string `json:"op"`
				Table string `json:"table"`
			} `json:"ops"`
		}
		if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.LSN == 0 || len(first.Ops) == 0 || first.Ops[0].Table == "" {
			t.Fatalf("the set-aside records %s: %v %+v", files[0], err, first)
		}
		// Each of the marks the old primary took alone is in the file,
		// as a row of table mark.
		marks := map[string]bool{}
		for _, line := range lines {
			var rec struct {
				Ops []struct {
					Op     string          `json:"op"`
					Table  string          `json:"table"`
					Values json.RawMessage `json:"values"`
				} `json:"ops"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("a set-aside record %q: %v", line, err)
			}
			for _, op := range rec.Ops {
				if op.Table == "mark" {
					marks[strings.ReplaceAll(string(op.Values), " ", "")] = true
				}
			}
		}
		for i := range int64(5) {
			want := fmt.Sprintf(`{"values":[{"int64":"%d"}]}`, -100-i)
			if !marks[want] {
				t.Fatalf("mark %d, taken alone by the old primary, is not among the set-aside rows %v", -100-i, marks)
			}
		}
		if imaged := strings.Contains(a.output(), "replacing this node's database"); imaged != (stop == "term") {
			t.Fatalf("after SIG%s, imaged again: %v\n%s", strings.ToUpper(stop), imaged, a.output())
		}
		t.Logf("%d diverged records set aside in %s, from LSN %d", len(lines), filepath.Base(files[0]), first.LSN)
	}
	// Both hold the same rows.
	adb2, _ := a.client()
	sameRows(t, bdb, adb2)
	if bst, err := admin.Status(testCtx(t), &pb.StatusRequest{}); err != nil || bst.GetRole() != "primary" || bst.GetEpoch() != 1 {
		t.Fatalf("the new primary: %v %v", bst, err)
	}
	if _, err := bdb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-2)}}}); err != nil {
		t.Fatalf("a write on the new primary after the old one came back: %v", err)
	}
}

// TestPromoteFencesLivePrimary: a standby promoted while its primary is
// alive but cut off (stopped with SIGSTOP, as a hung or partitioned
// machine) fences it through the epoch (SPEC 8). Under applied-ack the
// old primary acknowledges no commit once it runs again: it learns of
// the newer epoch from its standby, steps down, then follows the new
// primary, setting aside what it took alone; both end with the same
// rows.
func TestPromoteFencesLivePrimary(t *testing.T) {
	aAddr, bAddr := grpctest.DeadAddr(t), grpctest.DeadAddr(t)
	b := start(t, "-node", "b", "-role", "standby", "-listen", bAddr, "-durability", "mmap-log", "-peer", "a="+aAddr)
	a := start(t, "-node", "a", "-listen", aAddr, "-durability", "mmap-log", "-sync-mode", "applied-ack", "-on-sync-timeout", "block", "-peer", "b="+bAddr)
	adb, aconn := a.client()
	createBank(t, adb)
	insert := func(db pb.DatabaseServiceClient, v int64, within time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		_, err := db.Insert(ctx, &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(v)}}})
		return err
	}
	for i := range int64(10) {
		if err := insert(adb, i, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = a.cmd.Process.Signal(syscall.SIGCONT) // the test failed while a was stopped: let it run, to be stopped by the cleanup like the others
		}
	}()
	if out, errOut, code := runTool(t, "promote", "-addr", b.addr); code != 0 || !strings.Contains(out, "epoch 1 starts at LSN") {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}
	bdb, bconn := b.client()
	for i := range int64(10) { // acknowledged under applied-ack, so on b
		if r, err := bdb.Get(testCtx(t), &pb.GetRequest{Table: "mark", Key: []*pb.Value{vInt(i)}}); err != nil || !r.GetFound() {
			t.Fatalf("mark %d, acknowledged by the old primary, is not on the promoted standby: %v", i, err)
		}
	}
	for i := range int64(5) {
		if err := insert(bdb, 100+i, 10*time.Second); err != nil {
			t.Fatalf("a write on the promoted standby: %v", err)
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false

	// The old primary runs again: none of its commits is acknowledged,
	// while it learns it is fenced and after (it may restart itself
	// meanwhile, to cut what it took alone from its log).
	aAdmin := pb.NewAdminServiceClient(aconn)
	refused := map[codes.Code]int{}
	for i, deadline := int64(0), time.Now().Add(20*time.Second); ; i++ {
		err := insert(adb, -1000-i, 300*time.Millisecond)
		if err == nil {
			t.Fatalf("the fenced old primary acknowledged mark %d:\n%s", -1000-i, a.output())
		}
		refused[status.Code(err)]++
		st, err := aAdmin.Status(testCtx(t), &pb.StatusRequest{})
		if err == nil && st.GetRole() == "standby" && st.GetEpoch() >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old primary did not step down: %v %v\n%s", st, err, a.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the old primary refused commits while it learnt it was fenced: %v", refused)
	if err := insert(adb, -1, 5*time.Second); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a write on the old primary once it stepped down: %v", err)
	}
	// b ships to a, which sets aside what it took alone and catches up.
	streaming(t, pb.NewAdminServiceClient(bconn), 30*time.Second, a)
	adb2, _ := a.client()
	sameRows(t, bdb, adb2)
	for i := range int64(5) {
		if r, err := adb2.Get(testCtx(t), &pb.GetRequest{Table: "mark", Key: []*pb.Value{vInt(100 + i)}}); err != nil || !r.GetFound() {
			t.Fatalf("mark %d, written on the new primary, is not on the old one: %v", 100+i, err)
		}
	}
}

// TestRoleSwitches: SIGHUP takes the role the config file names now;
// `mmdbd demote` and `mmdbd promote` switch it too, each promotion
// starting a new epoch.
func TestRoleSwitches(t *testing.T) {
	dir := t.TempDir()
	write := func(role string) string {
		return writeConfig(t, dir, "b", fmt.Sprintf("role = %q\n", role), "a", "127.0.0.1:1")
	}
	path := write("standby")
	p := start(t, "-config", path)
	_, conn := p.client()
	admin := pb.NewAdminServiceClient(conn)
	role := func() (string, uint64) {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetRole(), st.GetEpoch()
	}
	if r, e := role(); r != "standby" || e != 0 {
		t.Fatalf("started as %s at epoch %d", r, e)
	}
	write("primary")
	hup(t, p)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if r, e := role(); r == "primary" && e == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not promote:\n%s", p.output())
		}
	}
	db, _ := p.client()
	createBank(t, db)
	if out, errOut, code := runTool(t, "demote", "-addr", p.addr); code != 0 || !strings.Contains(out, "is a standby now") {
		t.Fatalf("demote: %d %s %s", code, out, errOut)
	}
	_, err := db.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(1)}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a write after demote: %v", err)
	}
	if out, errOut, code := runTool(t, "promote", "-addr", p.addr); code != 0 || !strings.Contains(out, "epoch 2 starts at LSN") {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}
	if _, err := db.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(1)}}}); err != nil {
		t.Fatalf("a write after promote: %v", err)
	}
}

// TestSyncReload: SIGHUP takes the sync settings the config file names
// now, without a restart. A primary whose standby is away takes
// applied-ack with on_sync_timeout = block, and its commits block; back
// to async, a commit that was blocked returns at once, and the next ones
// do not wait.
func TestSyncReload(t *testing.T) {
	dir, peer := t.TempDir(), grpctest.DeadAddr(t)
	write := func(mode string) string {
		return writeConfig(t, dir, "a", fmt.Sprintf("role = \"primary\"\nsync_mode = %q\non_sync_timeout = \"block\"\n", mode), "b", peer)
	}
	path := write("async")
	a := start(t, "-config", path)
	db, conn := a.client()
	admin := pb.NewAdminServiceClient(conn)
	createBank(t, db)
	mode := func() string {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetSyncMode()
	}
	insert := func(ctx context.Context, v int64) error {
		_, err := db.Insert(ctx, &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(v)}}})
		return err
	}

	write("applied-ack")
	hup(t, a)
	for deadline := time.Now().Add(10 * time.Second); mode() != "applied-ack"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not take applied-ack:\n%s", a.output())
		}
	}
	if out, errOut, code := runTool(t, "status", "-addr", a.addr); code != 0 || !strings.Contains(out, " 1 of any standby\n") ||
		!strings.Contains(out, " 2s, then block\n") {
		t.Fatalf("status after SIGHUP: exit %d\n%s%s", code, out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := insert(ctx, 1); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "is local (no-log) but unconfirmed: its standbys did not answer before the deadline") {
		t.Fatalf("a commit under applied-ack with the standby away: %v", err)
	}
	blocked := make(chan error, 1)
	go func() { blocked <- insert(testCtx(t), 2) }()
	select {
	case err := <-blocked:
		t.Fatalf("a commit under applied-ack with the standby away returned: %v", err)
	case <-time.After(200 * time.Millisecond):
	}

	write("async")
	hup(t, a)
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("the blocked commit, once the node is async: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the blocked commit still waits after SIGHUP took async:\n%s", a.output())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := insert(ctx, 3); err != nil {
		t.Fatalf("a commit once the node is async: %v", err)
	}
	if m := mode(); m != "async" || !strings.Contains(a.output(), "SIGHUP: took the sync settings") {
		t.Fatalf("after SIGHUP the node's sync mode is %s:\n%s", m, a.output())
	}
}

// TestSIGHUPWhileStarting: a SIGHUP that comes while a node starts (a
// diskless node waiting for its bootstrap_from node's image, which may
// take minutes) does not end it, as SIGHUP's default action did; the node
// reads its file again once it serves.
func TestSIGHUPWhileStarting(t *testing.T) {
	aAddr := grpctest.DeadAddr(t)
	d, serving := spawn(t, "-node", "d", "-role", "standby", "-data-dir", "", "-durability", "no-log", "-bootstrap-from", aAddr, "-peer", "a="+aAddr)
	logged(t, d, "the image transfer broke; resuming")
	hup(t, d)
	a := start(t, "-node", "a", "-listen", aAddr)
	adb, _ := a.client()
	createBank(t, adb)
	d.await(serving)
	logged(t, d, "SIGHUP: the configured role is unchanged")
	ddb, _ := d.client()
	sameRows(t, adb, ddb)
}

// writeConfig writes node's config file in dir: its name, the HCL lines
// of extra, and a peer block for each name and address in peers (name,
// address, ...). It returns the file's path.
func writeConfig(t *testing.T, dir, node, extra string, peers ...string) string {
	t.Helper()
	cfg := fmt.Sprintf("node = %q\n%s", node, extra)
	for i := 0; i < len(peers); i += 2 {
		cfg += fmt.Sprintf("peer %q {\n  addr = %q\n}\n", peers[i], peers[i+1])
	}
	path := filepath.Join(dir, node+".hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// hup sends a node SIGHUP: it reads its config file again.
func hup(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// logged waits until a node's output holds text.
func logged(t *testing.T, p *proc, text string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.output(), text); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not log %q:\n%s", text, p.output())
		}
	}
}

// TestPeersReload: SIGHUP takes the peers the config file names now. A
// primary ships to a standby added to its file, whose acknowledgements
// count at once for the sync settings of the same file; it ships no more
// to a standby removed, which stays where it was. A standby whose file no
// longer names its primary refuses its log until the file names it
// again. A node with a log that started without peers ships to the
// first it is given.
func TestPeersReload(t *testing.T) {
	dir := t.TempDir()
	write := func(node, extra string, peers ...string) string {
		return writeConfig(t, dir, node, "durability = \"mmap-log\"\n"+extra, peers...)
	}
	b := start(t, "-node", "b", "-role", "standby", "-durability", "mmap-log", "-peer", "a=127.0.0.1:1")
	standby := "role = \"standby\"\n"
	c := start(t, "-config", write("c", standby, "a", "127.0.0.1:1"))
	a := start(t, "-config", write("a", "", "b", b.addr))
	adb, aconn := a.client()
	admin := pb.NewAdminServiceClient(aconn)
	createBank(t, adb)
	streaming(t, admin, 20*time.Second, b)
	standbys := func() string {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, sb := range st.GetStandbys() {
			state := sb.GetState()
			if sb.GetAppliedLsn() == st.GetLastLsn() {
				state += ", caught up"
			}
			out = append(out, sb.GetName()+" "+state)
		}
		return strings.Join(out, "; ")
	}
	until := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); standbys() != want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("standbys %q, want %q:\n%s", standbys(), want, a.output())
			}
		}
	}
	insert := func(v int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := adb.Insert(ctx, &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(v)}}}); err != nil {
			t.Fatalf("insert %d: %v\n%s", v, err, a.output())
		}
	}

	// c is added, and is the standby commits wait for.
	syncC := "sync_mode = \"applied-ack\"\nsync_standbys = [\"c\"]\non_sync_timeout = \"block\"\n"
	write("a", syncC, "b", b.addr, "c", c.addr)
	hup(t, a)
	logged(t, a, "SIGHUP: took the peers")
	logged(t, a, "SIGHUP: took the sync settings")
	insert(1)
	cdb, _ := c.client()
	if rows := scanTable(t, cdb, "mark"); len(rows) != 1 {
		t.Fatalf("c holds %d marks once an applied-ack commit it answers for returned", len(rows))
	}
	until("b streaming, caught up; c streaming, caught up")

	// b is removed: not shipped to, and it stays where it was.
	write("a", syncC, "c", c.addr)
	hup(t, a)
	logged(t, a, "ships-no-more-to=b")
	until("c streaming, caught up")
	at := settled(t, b)
	insert(2)
	insert(3)
	if got := settled(t, b); got != at {
		t.Fatalf("b went from LSN %d to %d once it was no peer of a", at, got)
	}
	sameRows(t, adb, cdb)

	// c takes log from b only: a's link to it ends and is refused.
	write("c", standby, "b", b.addr)
	hup(t, c)
	logged(t, c, "SIGHUP: took the peers")
	until("c refused, caught up")
	write("c", standby, "a", "127.0.0.1:1")
	hup(t, c)
	until("c streaming, caught up")
	insert(4)
	sameRows(t, adb, cdb)

	// A file c cannot take (a sync mode that waits for standbys, and no
	// peers to wait for) changes nothing: c keeps a as its peer. It used
	// to take the peers, then refuse the sync settings, and so refuse
	// a's log.
	write("c", standby+"sync_mode = \"received-ack\"\n")
	hup(t, c)
	logged(t, c, "the node cannot take it; nothing changed")
	if strings.Count(c.output(), "SIGHUP: took the peers") != 2 {
		t.Fatalf("c took the peers of a file it refused:\n%s", c.output())
	}
	insert(5)
	until("c streaming, caught up")
	sameRows(t, adb, cdb)

	// A node with a log that started without peers ships from its
	// first: a new standby catches up on what it committed before from
	// its log files, then follows what it commits after.
	d := start(t, "-config", write("d", ""))
	ddb, dconn := d.client()
	createBank(t, ddb)
	e := start(t, "-node", "e", "-role", "standby", "-durability", "mmap-log", "-peer", "d="+d.addr)
	write("d", "", "e", e.addr)
	hup(t, d)
	logged(t, d, "ships-to-new=e")
	for v := int64(10); v < 20; v++ {
		if _, err := ddb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(v)}}}); err != nil {
			t.Fatal(err)
		}
	}
	streaming(t, pb.NewAdminServiceClient(dconn), 20*time.Second, e)
	settled(t, e)
	edb, _ := e.client()
	sameRows(t, ddb, edb)
	if rows := scanTable(t, edb, "mark"); len(rows) != 10 {
		t.Fatalf("e holds %d marks, want 10", len(rows))
	}
}

// TestStandbyRestart: a standby killed with SIGKILL while its primary
// takes writes (which go on while it is down) comes back on its data
// dir, resumes from what it had applied, and catches up with every
// commit; twice.
func TestStandbyRestart(t *testing.T) {
	bAddr, bDir := grpctest.DeadAddr(t), t.TempDir()
	bArgs := []string{"-node", "b", "-role", "standby", "-listen", bAddr, "-durability", "fsync-log", "-data-dir", bDir, "-peer", "a=127.0.0.1:1"}
	b := start(t, bArgs...)
	a := start(t, "-node", "a", "-durability", "fsync-log", "-peer", "b="+bAddr)
	adb, aconn := a.client()
	createBank(t, adb)
	acked := newAcks()
	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		wg := writers(ctx, adb, round, 8, false, acked.add)
		acked.waitFor(t, acked.count()+200)
		b.kill()
		acked.waitFor(t, acked.count()+200) // while the standby is down
		cancel()
		wg.Wait()
		b = start(t, bArgs...)
		st, err := pb.NewAdminServiceClient(aconn).Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); settled(t, b) < st.GetLastLsn(); {
			if time.Now().After(deadline) {
				t.Fatalf("the standby did not catch up to LSN %d:\n%s", st.GetLastLsn(), b.output())
			}
		}
		bdb, _ := b.client()
		checkBank(t, bdb, acked.snapshot())
		t.Logf("round %d: %d commits, all on the restarted standby", round, acked.count())
	}
}

// TestRestartedPrimaryThatLostItsLog: a no-log primary killed with
// SIGKILL comes back empty (SPEC 4), and its new commits reuse the LSNs
// its standby already holds. Its new start is a new incarnation of its
// epoch, so the standby refuses its log, saying where the two diverged,
// and keeps the data it had instead of silently mixing the two.
func TestRestartedPrimaryThatLostItsLog(t *testing.T) {
	b := start(t, "-node", "b", "-role", "standby", "-peer", "a=127.0.0.1:1")
	aAddr := grpctest.DeadAddr(t)
	aArgs := []string{"-node", "a", "-listen", aAddr, "-sync-mode", "applied-ack", "-peer", "b=" + b.addr}
	a := start(t, aArgs...)
	adb, _ := a.client()
	createBank(t, adb)
	bdb, _ := b.client()
	before := scanTable(t, bdb, "acct")
	a.kill()
	a = start(t, aArgs...)
	adb, aconn := a.client()
	createBank(t, adb) // new records at the LSNs the standby holds
	admin := pb.NewAdminServiceClient(aconn)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if sb := st.GetStandbys()[0]; sb.GetState() == "refused" && strings.Contains(sb.GetReason(), "diverged") {
			t.Logf("the standby refuses: %s", sb.GetReason())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted primary's standby: %v\n%s", st.GetStandbys(), b.output())
		}
	}
	if after := scanTable(t, bdb, "acct"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the standby's accounts changed:\n%v\n%v", before, after)
	}
}

// TestBootstrappedStandbyFollows: a diskless standby loads its first
// image from the primary (bootstrap_from), then follows the primary's log
// from the image's LSN, through commits made before and after it joined.
func TestBootstrappedStandbyFollows(t *testing.T) {
	bAddr := grpctest.DeadAddr(t)
	a := start(t, "-node", "a", "-durability", "fsync-log", "-sync-mode", "applied-ack", "-peer", "b="+bAddr)
	adb, _ := a.client()
	createBank(t, adb) // the standby is not there: these degrade
	b := start(t, "-node", "b", "-role", "standby", "-listen", bAddr, "-data-dir", "", "-durability", "no-log",
		"-bootstrap-from", a.addr, "-peer", "a=127.0.0.1:1")
	// Commits degrade until the standby has caught up; then they wait
	// for it again.
	acked := map[int64]bool{}
	r := rand.New(rand.NewPCG(3, 3))
	for i, deadline := int64(0), time.Now().Add(20*time.Second); len(acked) < 100; i++ {
		ok, err := transfer(testCtx(t), adb, r, 5<<40|i)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			acked[5<<40|i] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits confirmed by the bootstrapped standby:\n%s\n%s", len(acked), a.output(), b.output())
		}
	}
	bdb, _ := b.client()
	settled(t, b)
	checkBank(t, bdb, acked)
	sameRows(t, adb, bdb)
}

// TestStandbyTooFarBehindIsReimaged: a standby away while its primary
// committed more than it keeps for standbys is told so when it comes
// back: it reloads from an image of the primary's on its own
// (restarting itself), then follows the log and ends with the primary's
// rows. A no-log primary keeps the records of its ring; one with a log
// keeps, besides, its log since the last image and log_retention_bytes
// more, and releases the rest at a checkpoint.
func TestStandbyTooFarBehindIsReimaged(t *testing.T) {
	for _, level := range []string{"no-log", "mmap-log"} {
		t.Run(level, func(t *testing.T) {
			bAddr, bDir := grpctest.DeadAddr(t), t.TempDir()
			bArgs := []string{"-node", "b", "-role", "standby", "-listen", bAddr, "-durability", "fsync-log", "-data-dir", bDir, "-peer", "a=127.0.0.1:1"}
			b := start(t, bArgs...)
			a := start(t, "-node", "a", "-durability", level, "-log-retention-bytes", "65536", "-peer", "b="+bAddr)
			adb, aconn := a.client()
			createBank(t, adb)
			settled(t, b)
			b.kill()
			acked := map[int64]bool{}
			r := rand.New(rand.NewPCG(4, 4))
			for i := range int64(1500) { // far more than 64 KiB of records
				if ok, err := transfer(testCtx(t), adb, r, 6<<40|i); err != nil {
					t.Fatal(err)
				} else if ok {
					acked[6<<40|i] = true
				}
			}
			if level != "no-log" {
				// Past the first segments (4 MiB, then 64 MiB), which a
				// checkpoint releases once the older of the two images
				// holds them.
				fillBlobs(t, adb, 70000)
				for i := range int64(2) {
					if out, errOut, code := runTool(t, "checkpoint", "-addr", a.addr); code != 0 {
						t.Fatalf("checkpoint: %d %s %s", code, out, errOut)
					}
					if ok, err := transfer(testCtx(t), adb, r, 7<<40|i); err != nil {
						t.Fatal(err)
					} else if ok {
						acked[7<<40|i] = true
					}
				}
				if !regexp.MustCompile(`released-segments=[1-9]`).MatchString(a.output()) {
					t.Fatalf("the checkpoints released no log:\n%s", a.output())
				}
			}
			b = start(t, bArgs...)
			admin := pb.NewAdminServiceClient(aconn)
			streaming(t, admin, 60*time.Second, b)
			if !strings.Contains(b.output(), "replacing this node's database with an image") {
				t.Fatalf("the standby was not imaged again:\n%s", b.output())
			}
			bdb, _ := b.client()
			checkBank(t, bdb, acked)
			if x, y := tableSums(t, adb), tableSums(t, bdb); x != y {
				t.Fatalf("the primary holds %s, the standby %s", x, y)
			}
		})
	}
}

// TestAudit: mmdbd audit finds a standby the same as its primary while
// commits flow, and with -repair repairs nothing; between two nodes that
// differ it lists the keys that do (a row only on one side, a row with
// other values) and exits with 1.
func TestAudit(t *testing.T) {
	primary, standby := startPair(t, "no-log", "async")
	pdb, _ := primary.client()
	createBank(t, pdb)
	ctx, cancel := context.WithCancel(context.Background())
	wg := writers(ctx, pdb, 0, 4, true, func(int64) {})
	out, errOut, code := runTool(t, "audit", "-primary", primary.addr, "-standby", standby.addr)
	if code != 0 || strings.Count(out, "the same") != 2 {
		t.Fatalf("audit of a pair: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runTool(t, "audit", "-primary", primary.addr, "-standby", standby.addr, "-repair")
	cancel()
	wg.Wait()
	if code != 0 || strings.Count(out, "the same") != 2 || strings.Contains(out, "repaired") {
		t.Fatalf("audit -repair of a pair that agrees: %d\n%s%s", code, out, errOut)
	}

	x, y := start(t), start(t)
	xdb, _ := x.client()
	ydb, _ := y.client()
	createBank(t, xdb)
	createBank(t, ydb)
	c := testCtx(t)
	mark := func(db pb.DatabaseServiceClient, id int64) {
		if _, err := db.Insert(c, &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(id)}}}); err != nil {
			t.Fatal(err)
		}
	}
	mark(xdb, 1)
	if _, err := ydb.Update(c, &pb.UpdateRequest{Table: "acct", Key: []*pb.Value{vInt(3)}, Set: []*pb.ColumnValue{{Column: "bal", Value: vInt(7)}}}); err != nil {
		t.Fatal(err)
	}
	mark(ydb, 2)
	out, errOut, code = runTool(t, "audit", "-primary", x.addr, "-standby", y.addr, "-rounds", "1")
	for _, want := range []string{`"3"`, "the rows differ", "only on the primary", "only on the standby", "acct: 1 rows differ", "mark: 2 rows differ"} {
		if !strings.Contains(out, want) {
			t.Fatalf("audit of two nodes that differ misses %q: %d\n%s%s", want, code, out, errOut)
		}
	}
	if code != 1 {
		t.Fatalf("audit of two nodes that differ exits with %d", code)
	}
}

// TestPropagatorChain: primary p ships only to propagator r, which
// relays to standbys s1 and s2. Under applied-ack with a quorum of 3 (r
// and both standbys, whose acknowledgements come back through r) every
// acknowledged commit is on s1 and s2 when it returns; p's status shows
// them behind r, and they name p when they refuse a write. Killed with
// SIGKILL and restarted, r takes up relaying again, and the standbys
// catch up with what p committed meanwhile (degraded).
func TestPropagatorChain(t *testing.T) {
	s1 := start(t, "-node", "s1", "-role", "standby", "-durability", "mmap-log", "-peer", "r=127.0.0.1:1")
	s2 := start(t, "-node", "s2", "-role", "standby", "-peer", "r=127.0.0.1:1")
	rAddr, rDir := grpctest.DeadAddr(t), t.TempDir()
	rArgs := []string{"-node", "r", "-role", "propagator", "-listen", rAddr, "-data-dir", rDir, "-durability", "fsync-log",
		"-peer", "p=127.0.0.1:1", "-peer", "s1=" + s1.addr, "-peer", "s2=" + s2.addr}
	r := start(t, rArgs...)
	p := start(t, "-node", "p", "-durability", "fsync-log", "-sync-mode", "applied-ack", "-sync-quorum", "3", "-sync-timeout", "1s", "-peer", "r="+rAddr)
	pdb, pconn := p.client()
	createBank(t, pdb)
	s1db, _ := s1.client()
	s2db, _ := s2.client()

	acked := newAcks()
	ctx, cancel := context.WithCancel(context.Background())
	wg := writers(ctx, pdb, 0, 32, true, acked.add)
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	if acked.count() == 0 {
		t.Fatalf("nothing was acknowledged:\n%s", p.output())
	}
	checkBank(t, s1db, acked.snapshot()) // at once: applied-ack
	checkBank(t, s2db, acked.snapshot())
	t.Logf("%d commits acknowledged, all on both standbys behind the propagator", acked.count())

	admin := pb.NewAdminServiceClient(pconn)
	chain := func(within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); ; time.Sleep(20 * time.Millisecond) {
			st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			ok := len(st.GetStandbys()) == 3 && !st.GetDegraded()
			for _, sb := range st.GetStandbys() {
				via := map[string]string{"r": "", "s1": "r", "s2": "r"}[sb.GetName()]
				ok = ok && sb.GetVia() == via && sb.GetState() == "streaming" && sb.GetAppliedLsn() == st.GetLastLsn()
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the primary does not see the chain streaming: %v at LSN %d\n%s", st.GetStandbys(), st.GetLastLsn(), r.output())
			}
		}
	}
	chain(10 * time.Second)
	out, errOut, code := runTool(t, "status", "-addr", rAddr)
	if code != 0 || !strings.Contains(out, "propagator") || !strings.Contains(out, "s1") || !strings.Contains(out, "s2") {
		t.Fatalf("the propagator's status: %d\n%s%s", code, out, errOut)
	}
	_, err := s2db.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-1)}}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "p at "+p.addr) {
		t.Fatalf("a write on a standby behind the propagator: %v", err)
	}

	// The propagator dies under the writers: commits degrade; once it is
	// back the standbys catch up and commits wait for all three again.
	ctx, cancel = context.WithCancel(context.Background())
	wg = writers(ctx, pdb, 1, 8, false, acked.add)
	time.Sleep(300 * time.Millisecond)
	r.kill()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetDegraded() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commits without the propagator are not degraded: %v", st)
		}
	}
	r = start(t, rArgs...)
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	chain(30 * time.Second)
	checkBank(t, s1db, acked.snapshot())
	checkBank(t, s2db, acked.snapshot())
	if out, errOut, code := runTool(t, "audit", "-primary", p.addr, "-standby", s2.addr); code != 0 {
		t.Fatalf("audit of a standby behind the propagator: %d\n%s%s", code, out, errOut)
	}

	// The primary dies and the propagator is promoted: it ships to the
	// standbys itself, at the new epoch.
	p.kill()
	if out, errOut, code := runTool(t, "promote", "-addr", rAddr); code != 0 {
		t.Fatalf("promote the propagator: %d\n%s%s", code, out, errOut)
	}
	rdb, _ := r.client()
	if _, err := rdb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-2)}}}); err != nil {
		t.Fatalf("a write on the promoted propagator: %v\n%s", err, r.output())
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		rows := scanTable(t, s1db, "mark")
		if len(rows) > 0 && rows[0].GetValues()[0].GetInt64() == -2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby does not follow the promoted propagator:\n%s\n%s", r.output(), s1.output())
		}
	}
}

// TestAuditRepair: a standby started from a backup image (mmdbd image
// fetch) of a node that is not its primary, at the primary's LSN, follows
// the primary with rows that differ: an operator's mistake the
// replication layer cannot see, as the LSNs agree, the file carries no
// epoch history (a version 2 image, from before images carried one: its
// records are taken on trust; a version 3 file carries the node's
// history, and the standby would refuse the primary's log), and only the
// rows differ. mmdbd audit lists the rows;
// audit -repair has the primary log its rows of those keys again, which
// the standby applies from the log, and finds the standby the same; a
// second audit finds nothing to repair.
func TestAuditRepair(t *testing.T) {
	bAddr := grpctest.DeadAddr(t)
	a := start(t, "-node", "a", "-peer", "b="+bAddr)
	adb, aconn := a.client()
	q := start(t, "-node", "q")
	qdb, qconn := q.client()
	c := testCtx(t)
	mark := func(db pb.DatabaseServiceClient, id int64) {
		if _, err := db.Insert(c, &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(id)}}}); err != nil {
			t.Fatal(err)
		}
	}
	createBank(t, adb)
	mark(adb, 1)
	mark(adb, 3)
	createBank(t, qdb)
	if _, err := qdb.Update(c, &pb.UpdateRequest{Table: "acct", Key: []*pb.Value{vInt(3)}, Set: []*pb.ColumnValue{{Column: "bal", Value: vInt(7)}}}); err != nil {
		t.Fatal(err)
	}
	mark(qdb, 2)
	admin := pb.NewAdminServiceClient(aconn)
	as, err := admin.Status(c, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	qs, err := pb.NewAdminServiceClient(qconn).Status(c, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if as.GetLastLsn() != qs.GetLastLsn() {
		t.Fatalf("the primary is at LSN %d, the other node at %d", as.GetLastLsn(), qs.GetLastLsn())
	}
	backup := filepath.Join(t.TempDir(), "q.mmdb")
	if out, errOut, code := runTool(t, "image", "fetch", "-from", q.addr, "-out", backup, "-quiet"); code != 0 {
		t.Fatalf("image fetch: %d\n%s%s", code, out, errOut)
	}
	b := start(t, "-node", "b", "-role", "standby", "-listen", bAddr, "-data-dir", "", "-durability", "no-log", "-from-image", historyless(t, backup), "-peer", "a=127.0.0.1:1")
	streaming(t, admin, 30*time.Second, b)
	mark(adb, 4) // the standby follows the primary's log
	settled(t, b)

	out, errOut, code := runTool(t, "audit", "-primary", a.addr, "-standby", b.addr)
	for _, want := range []string{"acct: 1 rows differ", "mark: 3 rows differ", `"3"`, "the rows differ", "only on the primary", "only on the standby"} {
		if !strings.Contains(out, want) {
			t.Fatalf("audit of a standby that differs misses %q: %d\n%s%s", want, code, out, errOut)
		}
	}
	if code != 1 {
		t.Fatalf("audit of a standby that differs exits with %d", code)
	}
	out, errOut, code = runTool(t, "audit", "-primary", a.addr, "-standby", b.addr, "-repair")
	for _, want := range []string{"acct: repaired 1 rows from the primary (1 put, 0 deleted", "mark: repaired 3 rows from the primary (2 put, 1 deleted"} {
		if !strings.Contains(out, want) {
			t.Fatalf("audit -repair misses %q: %d\n%s%s", want, code, out, errOut)
		}
	}
	if code != 0 || strings.Count(out, "the same") != 2 || strings.Contains(out, "still differs") {
		t.Fatalf("audit -repair: %d\n%s%s", code, out, errOut)
	}
	t.Logf("audit -repair:\n%s", out)
	out, errOut, code = runTool(t, "audit", "-primary", a.addr, "-standby", b.addr)
	if code != 0 || strings.Count(out, "the same") != 2 {
		t.Fatalf("audit after the repair: %d\n%s%s", code, out, errOut)
	}
	bdb, _ := b.client()
	sameRows(t, adb, bdb)
}

// TestSyncStandbys: with sync_standbys = ["b", "z"] and a quorum of 1, a
// commit at applied-ack waits for standby b alone (z is no peer, and the
// node warns of it). While b is down the commits degrade although
// standby c streams and acknowledges them, and the status lists c
// outside the quorum.
func TestSyncStandbys(t *testing.T) {
	b := start(t, "-node", "b", "-role", "standby", "-peer", "a=127.0.0.1:1")
	c := start(t, "-node", "c", "-role", "standby", "-peer", "a=127.0.0.1:1")
	// z is no peer: it never answers, and the node warns about it.
	a := start(t, "-node", "a", "-sync-mode", "applied-ack", "-sync-timeout", "2s", "-sync-standbys", "b,z", "-metrics-addr", "127.0.0.1:0",
		"-peer", "b="+b.addr, "-peer", "c="+c.addr)
	adb, conn := a.client()
	admin := pb.NewAdminServiceClient(conn)
	createBank(t, adb)
	mark := int64(0)
	commit := func() (degraded bool) {
		t.Helper()
		mark++
		resp, err := adb.Commit(testCtx(t), &pb.CommitRequest{Operations: []*pb.Operation{
			{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(mark)}}}}}}})
		if err != nil || !resp.GetCommitted() {
			t.Fatalf("commit of mark %d: %v, %v", mark, resp, err)
		}
		return resp.GetDegraded()
	}
	// until reports the standbys once ok accepts the primary's status.
	until := func(what string, ok func(st *pb.StatusResponse, sb map[string]*pb.StandbyStatus) bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			st, err := admin.Status(testCtx(t), &pb.StatusRequest{})
			if err != nil {
				t.Fatal(err)
			}
			sb := map[string]*pb.StandbyStatus{}
			for _, s := range st.GetStandbys() {
				sb[s.GetName()] = s
			}
			if ok(st, sb) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, st)
			}
		}
	}
	caughtUp := func(st *pb.StatusResponse, s *pb.StandbyStatus) bool {
		return s.GetState() == "streaming" && s.GetAppliedLsn() == st.GetLastLsn()
	}
	until("b and c stream", func(st *pb.StatusResponse, sb map[string]*pb.StandbyStatus) bool {
		return len(sb) == 2 && caughtUp(st, sb["b"]) && caughtUp(st, sb["c"])
	})
	// Commits made while b connected may have degraded; one made now
	// ends the degradation and the next waits for b again.
	for deadline := time.Now().Add(15 * time.Second); commit(); {
		if time.Now().After(deadline) {
			t.Fatalf("commits with b streaming stay degraded:\n%s", a.output())
		}
	}
	if !strings.Contains(a.output(), "sync_standbys names a node that is no peer") || !strings.Contains(a.output(), "standby=z") {
		t.Fatalf("no warning that z is no peer:\n%s", a.output())
	}
	out, errOut, code := runTool(t, "status", "-addr", a.addr)
	if code != 0 || !strings.Contains(out, "c (outside the quorum)") || strings.Contains(out, "b (outside the quorum)") {
		t.Fatalf("the primary's status: %d\n%s%s", code, out, errOut)
	}
	m := metricstest.Scrape(t, a.metricsAddr())
	inB, okB := m.Value("mmdb_replication_in_quorum", "standby", "b")
	inC, okC := m.Value("mmdb_replication_in_quorum", "standby", "c")
	if !okB || !okC || inB != 1 || inC != 0 {
		t.Fatalf("mmdb_replication_in_quorum: b %v (%v), c %v (%v); want 1 and 0", inB, okB, inC, okC)
	}

	b.kill()
	if !commit() {
		t.Fatal("a commit with b down was not degraded: c's acknowledgement completed the quorum")
	}
	until("c applies what the degraded commits wrote", func(st *pb.StatusResponse, sb map[string]*pb.StandbyStatus) bool {
		return st.GetDegraded() && caughtUp(st, sb["c"])
	})
	if !commit() {
		t.Fatal("a commit with b down and c caught up was not degraded")
	}
	// The status sizes what b has not applied: every record is more than
	// a few bytes.
	var b0 *pb.StandbyStatus
	until("b lags, c does not", func(st *pb.StatusResponse, sb map[string]*pb.StandbyStatus) bool {
		b0 = sb["b"]
		return b0 != nil && caughtUp(st, sb["c"])
	})
	if b0.GetLagRecords() == 0 || b0.GetLagBytes() < 8*b0.GetLagRecords() {
		t.Fatalf("b lags by %d records, %d bytes", b0.GetLagRecords(), b0.GetLagBytes())
	}
	out, errOut, code = runTool(t, "status", "-addr", a.addr, "-json")
	type standbyJSON struct {
		Name     string `json:"name"`
		LagBytes uint64 `json:"lag_bytes"`
	}
	var js struct {
		Standbys []standbyJSON `json:"standbys"`
	}
	if err := json.Unmarshal([]byte(out), &js); code != 0 || err != nil {
		t.Fatalf("status -json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if i := slices.IndexFunc(js.Standbys, func(sb standbyJSON) bool { return sb.Name == "b" }); i < 0 || js.Standbys[i].LagBytes != b0.GetLagBytes() {
		t.Fatalf("status -json for b (%d bytes in the status):\n%s", b0.GetLagBytes(), out)
	}
	m = metricstest.Scrape(t, a.metricsAddr())
	if lag, ok := m.Value("mmdb_replication_lag_bytes", "standby", "b"); !ok || lag < float64(b0.GetLagBytes()) {
		t.Fatalf("mmdb_replication_lag_bytes for b: %v (%v); the status said %d", lag, ok, b0.GetLagBytes())
	}
}

// historyless writes the image at path again as a version 2 image, which
// carries no epoch history, and returns the new file's path.
func historyless(t *testing.T, path string) string {
	t.Helper()
	in, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := image.NewReader(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	h.Version = 2
	var out bytes.Buffer
	w, err := image.NewWriter(&out, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err := f.Payload(nil)
		if err == nil && f.Kind == image.FrameTable {
			err = w.Table(f.Table, p)
		} else if err == nil {
			err = f.Rows(p, func(row []byte) error { return w.Row(f.Table, row) })
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	v2 := path + ".v2"
	if err := os.WriteFile(v2, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return v2
}
