package tests

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// startPair starts a standby b and a primary a that ships to it, both
// real mmdbd processes at durability level, the primary at sync mode.
func startPair(t *testing.T, level, mode string, extra ...string) (primary, standby *proc) {
	t.Helper()
	// The standby checks the sender's name; it never dials a's address.
	standby = start(t, "-node", "b", "-role", "standby", "-durability", level, "-peer", "a=127.0.0.1:1")
	args := append([]string{"-node", "a", "-durability", level, "-sync-mode", mode, "-peer", "b=" + standby.addr}, extra...)
	primary = start(t, args...)
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

// settled waits until a node's applied LSN stops moving and returns it.
func settled(t *testing.T, p *proc) uint64 {
	t.Helper()
	_, conn := p.client()
	admin := pb.NewAdminServiceClient(conn)
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
	t.Fatalf("the applied LSN of %s did not settle", p.addr)
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
