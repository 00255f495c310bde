package tests

import (
	"context"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/metricstest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestMetricsUnderReplicatedLoad scrapes /metrics of a primary and its
// standby (fsync-log, applied-ack) while 8 writers commit transfers, and
// after: SPEC 10's series are there with the values the load gives them
// (commits rising, log bytes, compression, syncs and their groups, the
// standby's lag), then checkpoint duration and size after `mmdbd
// checkpoint`, and memory per table matching the rows.
func TestMetricsUnderReplicatedLoad(t *testing.T) {
	primary, standby := startPair(t, "fsync-log", "applied-ack", "-metrics-addr", "127.0.0.1:0")
	pm, sm := primary.metricsAddr(), standby.metricsAddr()
	pdb, pconn := primary.client()
	createBank(t, pdb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Int64
	wg := writers(ctx, pdb, 0, 8, false, func(int64) { acked.Add(1) })

	check := func(what string, ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf("%s: "+format, append([]any{what}, args...)...)
		}
	}
	value := func(m metricstest.Families, name string, labels ...string) float64 {
		t.Helper()
		v, ok := m.Value(name, labels...)
		if !ok {
			t.Fatalf("no series %s%v", name, labels)
		}
		return v
	}
	var lastCommits, lastApplied float64
	for scrape := range 3 {
		for deadline := time.Now().Add(10 * time.Second); acked.Load() < int64(100*(scrape+1)); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d transfers committed", acked.Load())
			}
		}
		p, s := metricstest.Scrape(t, pm), metricstest.Scrape(t, sm)
		commits := value(p, "mmdb_commits_total", "outcome", "committed")
		check("primary commits", commits > lastCommits, "%v after %v", commits, lastCommits)
		lastCommits = commits
		// The series are read one after another while commits go on: each
		// may count the commits in flight (one per writer) or not.
		latencies := value(p, "mmdb_commit_duration_seconds")
		check("primary latencies", math.Abs(latencies-commits) <= 8, "%v for %v commits", latencies, commits)
		for _, node := range []struct {
			name string
			m    metricstest.Families
		}{{"primary", p}, {"standby", s}} {
			m := node.m
			check(node.name+" log bytes", value(m, "mmdb_log_stored_bytes_total") > 0 && value(m, "mmdb_log_raw_bytes_total") > 0, "none")
			ratio := value(m, "mmdb_log_compression_ratio")
			check(node.name+" compression ratio", ratio > 0.3 && ratio < 20, "%v", ratio)
			syncs := value(m, "mmdb_log_sync_duration_seconds")
			took, _ := m.Sum("mmdb_log_sync_duration_seconds")
			check(node.name+" syncs", syncs > 0 && took > 0 && took/syncs < 1, "%v syncs in %vs", syncs, took)
			groups := value(m, "mmdb_log_group_records")
			grouped, _ := m.Sum("mmdb_log_group_records")
			check(node.name+" groups", math.Abs(groups-syncs) <= 1 && grouped >= groups, "%v groups of %v records; %v syncs", groups, grouped, syncs)
		}
		// applied-ack: an acknowledged commit is applied on the standby,
		// so it trails by the commits in flight at most.
		lagRecords, lagSeconds := value(p, "mmdb_replication_lag_records", "standby", "b"), value(p, "mmdb_replication_lag_seconds", "standby", "b")
		check("lag", lagRecords >= 0 && lagRecords < 1000 && lagSeconds >= 0 && lagSeconds < 5, "%v records, %vs", lagRecords, lagSeconds)
		applied := value(p, "mmdb_replication_applied_lsn", "standby", "b")
		check("applied LSN", applied > lastApplied && applied <= value(p, "mmdb_replication_received_lsn", "standby", "b"), "%v after %v", applied, lastApplied)
		lastApplied = applied
		check("standby state", value(p, "mmdb_replication_standby_state", "standby", "b", "state", "streaming")+
			value(p, "mmdb_replication_standby_state", "standby", "b", "state", "catching-up") == 1, "neither streaming nor catching up")
		check("roles", value(p, "mmdb_role", "role", "primary") == 1 && value(s, "mmdb_role", "role", "standby") == 1, "wrong")
		check("standby LSN", value(s, "mmdb_last_lsn") > 0, "zero")
	}
	cancel()
	wg.Wait()

	// A call the writers gave up may still commit on the primary: once
	// its LSN stops moving, the standby catches up with it.
	settled(t, primary)
	lsn := streaming(t, pb.NewAdminServiceClient(pconn), 10*time.Second, standby)
	out, errOut, code := runTool(t, "checkpoint", "-addr", primary.addr)
	if code != 0 || !strings.Contains(out, "checkpoint at LSN") {
		t.Fatalf("mmdbd checkpoint: %d %s%s", code, out, errOut)
	}
	sdb, _ := standby.client()
	_, err := sdb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-1)}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a write on the standby: %v", err)
	}
	st, err := pb.NewAdminServiceClient(pconn).Status(testCtx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	p, s := metricstest.Scrape(t, pm), metricstest.Scrape(t, sm)
	check("caught up", value(p, "mmdb_replication_lag_records", "standby", "b") == 0 && value(p, "mmdb_replication_lag_seconds", "standby", "b") == 0 &&
		value(p, "mmdb_replication_applied_lsn", "standby", "b") == float64(lsn) && value(p, "mmdb_replication_standby_state", "standby", "b", "state", "streaming") == 1,
		"the standby at LSN %d is not shown caught up and streaming", lsn)
	// Every commit has waited for its sync: the groups hold them all.
	grouped, _ := p.Sum("mmdb_log_group_records")
	check("durable", value(p, "mmdb_durable_lsn") == float64(lsn) && grouped == value(p, "mmdb_log_records_total"),
		"durable LSN %v of %d; %v records in groups of %v logged", value(p, "mmdb_durable_lsn"), lsn, grouped, value(p, "mmdb_log_records_total"))
	check("degraded", value(p, "mmdb_replication_degraded") == 0 && value(p, "mmdb_commits_total", "outcome", "degraded") == 0, "the primary went on without its standby")
	check("checkpoint", value(p, "mmdb_checkpoints_total", "result", "written") == 1 && value(p, "mmdb_checkpoint_last_duration_seconds") > 0 &&
		value(p, "mmdb_checkpoint_image_bytes") > 0 && value(p, "mmdb_checkpoint_lsn") == float64(lsn),
		"%v written, the last in %vs, %v bytes at LSN %v; mmdbd checkpoint wrote LSN %d", value(p, "mmdb_checkpoints_total", "result", "written"),
		value(p, "mmdb_checkpoint_last_duration_seconds"), value(p, "mmdb_checkpoint_image_bytes"), value(p, "mmdb_checkpoint_lsn"), lsn)
	for _, tb := range st.GetTables() {
		for _, m := range []metricstest.Families{p, s} {
			check("table "+tb.GetName(), value(m, "mmdb_table_rows", "table", tb.GetName()) == float64(tb.GetRows()) &&
				value(m, "mmdb_table_heap_bytes", "table", tb.GetName()) > 0 && value(m, "mmdb_table_index_bytes", "table", tb.GetName()) > 0,
				"the series do not match the %d rows", tb.GetRows())
		}
	}
	check("refused", value(s, "mmdb_commits_total", "outcome", "refused") == 1, "the standby's refusal is not counted")
	calls := value(p, "mmdb_grpc_server_handled_total", "grpc_method", "Commit", "grpc_code", "OK") + value(p, "mmdb_grpc_server_handled_total", "grpc_method", "Insert", "grpc_code", "OK")
	check("gRPC", calls >= value(p, "mmdb_commits_total", "outcome", "committed") &&
		value(s, "mmdb_grpc_server_handled_total", "grpc_method", "Insert", "grpc_code", "FailedPrecondition") == 1 &&
		value(s, "mmdb_grpc_server_started_total", "grpc_service", "mmdb.v1.ReplicationService", "grpc_method", "Ship") >= 1,
		"the calls are not counted per method and code")
	t.Logf("%d transfers; primary: %v commits, %v syncs; standby applied LSN %d", acked.Load(), value(p, "mmdb_commits_total", "outcome", "committed"),
		value(p, "mmdb_log_sync_duration_seconds"), lsn)
}
