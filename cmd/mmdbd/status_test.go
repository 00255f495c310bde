package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/servertest"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/server"
)

// commitRows commits, in one transaction on srv, rows rows of a table kv
// (created on the first call) with keys from from on, and waits until
// they are durable.
func commitRows(t *testing.T, srv *server.Server, from, rows int64) {
	t.Helper()
	db := srv.DB()
	tbl, err := db.Table("kv")
	if err != nil {
		if tbl, err = db.CreateTable(mem.TableDef{Name: "kv", Columns: []mem.ColumnDef{
			{Name: "k", Type: mem.TypeInt64}, {Name: "v", Type: mem.TypeInt64},
		}, PrimaryKey: []string{"k"}}); err != nil {
			t.Fatal(err)
		}
	}
	tx := db.Begin()
	for k := from; k < from+rows; k++ {
		if err := tx.Insert(tbl, []mem.Value{mem.Int64(k), mem.Int64(k)}); err != nil {
			t.Fatal(err)
		}
	}
	lsn, err := tx.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitDurable(context.Background(), lsn); err != nil {
		t.Fatal(err)
	}
}

// TestStatusText: mmdbd status prints, one line each, the role, epoch,
// durability, sync mode, last, durable and applied LSN and checkpoint
// LSN that status -json gives, and a line per standby with its address,
// state and LSNs (SPEC 10).
func TestStatusText(t *testing.T) {
	_, standbyAddr := servertest.Start(t, func(c *conf.Config) {
		c.Node, c.Role = "b", conf.RoleStandby
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	})
	primary, addr := servertest.Start(t, func(c *conf.Config) {
		c.Node, c.Durability = "a", conf.DurabilityFsyncLog
		c.Peers = []conf.Peer{{Name: "b", Addr: standbyAddr}}
	})
	commitRows(t, primary, 0, 10)
	var stdout, stderr bytes.Buffer
	if err := checkpointCmd([]string{"-addr", addr}, &stdout, &stderr); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, stderr.String())
	}
	commitRows(t, primary, 10, 1) // the last LSN is past the checkpoint's

	// Once the standby has applied everything, nothing changes.
	var st statusJSON
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		stdout.Reset()
		if err := status([]string{"-addr", addr, "-json"}, &stdout, &stderr); err != nil {
			t.Fatalf("status -json: %v\n%s", err, stderr.String())
		}
		if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
			t.Fatalf("status -json printed %q: %v", stdout.String(), err)
		}
		if len(st.Standbys) == 1 && st.Standbys[0].AppliedLSN == st.LastLSN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby did not catch up: %s", stdout.String())
		}
	}
	if st.Role != "primary" || st.Durability != "fsync-log" || st.SyncMode != "async" || st.CheckpointLSN == 0 ||
		st.CheckpointLSN >= st.LastLSN || st.DurableLSN != st.LastLSN || st.Standbys[0].State != "streaming" {
		t.Fatalf("status -json: %s", stdout.String())
	}
	if len(st.Tables) != 1 || st.Tables[0].Rows != 11 || len(st.Tables[0].Indexes) != 1 ||
		st.Tables[0].Indexes[0] != (indexJSON{Name: "primary", Kind: "hash", Entries: 11, Bytes: st.Tables[0].IndexBytes}) {
		t.Fatalf("status -json shows the tables %+v", st.Tables)
	}

	stdout.Reset()
	if err := status([]string{"-addr", addr}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v\n%s", err, stderr.String())
	}
	text := stdout.String()
	sb := st.Standbys[0]
	for _, want := range [][]any{
		{"role", st.Role}, {"epoch", st.Epoch}, {"durability", st.Durability}, {"sync mode", st.SyncMode},
		{"last lsn", st.LastLSN}, {"durable lsn", st.DurableLSN}, {"applied lsn", st.AppliedLSN}, {"checkpoint lsn", st.CheckpointLSN},
		{sb.Name, sb.Addr, sb.State, sb.ReceivedLSN, sb.AppliedLSN},
	} {
		re := "(?m)^"
		for i, v := range want {
			if i > 0 {
				re += ` +`
			}
			re += regexp.QuoteMeta(fmt.Sprint(v))
		}
		if !regexp.MustCompile(re + `( |$)`).MatchString(text) {
			t.Errorf("status does not show %v on a line; it printed:\n%s", want, text)
		}
	}
}

// TestStatusShowsIndexBuild: mmdbd status says which index of a table is
// being built and how far it got.
func TestStatusShowsIndexBuild(t *testing.T) {
	st := statusJSON{Tables: []tableJSON{{Name: "kv", Rows: 100, Indexes: []indexJSON{
		{Name: "primary", Kind: "hash", Entries: 100}, {Name: "by_v", Kind: "ordered", Entries: 42, Building: true},
	}}}}
	var out bytes.Buffer
	if err := printStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^kv +100 .*\n +\(building index by_v: 42 entries\)$`).MatchString(out.String()) {
		t.Fatalf("status printed:\n%s", out.String())
	}
}

// TestStatusShowsWritesRefused: mmdbd status says why a primary refuses
// writes, and says nothing of it while it takes them.
func TestStatusShowsWritesRefused(t *testing.T) {
	for _, why := range []string{"", "the disk is full"} {
		var out bytes.Buffer
		if err := printStatus(&out, statusJSON{Role: "primary", WritesRefused: why}); err != nil {
			t.Fatal(err)
		}
		if shown := strings.Contains(out.String(), "writes refused"); shown != (why != "") ||
			shown && !regexp.MustCompile(`(?m)^writes refused +`+regexp.QuoteMeta(why)+`$`).MatchString(out.String()) {
			t.Fatalf("writes refused %q: status printed:\n%s", why, out.String())
		}
	}
}

// TestTimeoutSaysWhichFlag: an admin command or an audit that runs out of
// time says it gave up after -timeout, so the operator knows what to
// raise; audit takes -timeout (it had a fixed 10 minutes).
func TestTimeoutSaysWhichFlag(t *testing.T) {
	addr := startNode(t, nil)
	for _, args := range [][]string{
		{"status", "-addr", addr, "-timeout", "1ns"},
		{"checkpoint", "-addr", addr, "-timeout", "1ns"},
		{"audit", "-primary", addr, "-standby", addr, "-timeout", "1ns"},
	} {
		var stderr strings.Builder
		if code := run(args, nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "gave up after -timeout 1ns") {
			t.Errorf("%s: exit %d\n%s", args, code, &stderr)
		}
	}
}

// TestStatusShowsSyncTimeoutWhole: a sync_timeout that is no whole
// number of milliseconds is shown as it is, in the text and in -json's
// sync_timeout_ms (which had it cut to whole milliseconds: 1.5 ms as 1).
func TestStatusShowsSyncTimeoutWhole(t *testing.T) {
	st := toStatusJSON(&pb.StatusResponse{SyncTimeout: durationpb.New(1500 * time.Microsecond), OnSyncTimeout: "degrade"})
	if st.SyncTimeoutMs != 1.5 {
		t.Errorf("sync_timeout_ms is %v, want 1.5", st.SyncTimeoutMs)
	}
	var out bytes.Buffer
	if err := printStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^sync timeout +1\.5ms, then degrade$`).MatchString(out.String()) {
		t.Fatalf("status printed:\n%s", out.String())
	}
}
