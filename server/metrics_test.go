package server

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/metricstest"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// metricsNode starts a node with fsync-log that serves metrics on a port
// the kernel picks, and returns it with the metrics address.
func metricsNode(t *testing.T) (*node, string) {
	t.Helper()
	n := startNode(t, func(c *conf.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.Durability = conf.DurabilityFsyncLog
	})
	return n, n.srv.metrics.lis.Addr().String()
}

// TestMetricsEndpoint: after commits, a failing call and a checkpoint,
// /metrics holds SPEC 10's series for a lone primary, with the values
// the node's work gives them.
func TestMetricsEndpoint(t *testing.T) {
	n, addr := metricsNode(t)
	const rows = 20
	n.withAccounts(rows)
	c := ctx(t)
	// A batch is a commit too; a read-only one is none.
	if r, err := n.db.Commit(c, &pb.CommitRequest{Operations: []*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(rows+1, 7)}}}}}); err != nil || !r.GetCommitted() {
		t.Fatal(r, err)
	}
	if _, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1))}); err != nil {
		t.Fatal(err)
	}
	_, err := n.db.Get(c, &pb.GetRequest{Table: "nope", Key: key(vI(1))})
	wantCode(t, err, codes.NotFound)
	ck, err := n.admin.Checkpoint(c, &pb.CheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := n.admin.Status(c, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}

	m := metricstest.Scrape(t, addr)
	want := func(name string, ok func(v float64) bool, labels ...string) {
		t.Helper()
		v, found := m.Value(name, labels...)
		if !found || !ok(v) {
			t.Errorf("%s%v = %v (present: %v)", name, labels, v, found)
		}
	}
	is := func(x float64) func(float64) bool { return func(v float64) bool { return v == x } }
	positive := func(v float64) bool { return v > 0 }
	const commits = rows + 1
	want("mmdb_commits_total", is(commits), "outcome", "committed")
	for _, o := range []string{"degraded", "unconfirmed", "aborted", "refused"} {
		want("mmdb_commits_total", is(0), "outcome", o)
	}
	want("mmdb_commit_duration_seconds", is(commits))
	if sum, _ := m.Sum("mmdb_commit_duration_seconds"); sum <= 0 || sum > 30 {
		t.Errorf("the commits took %vs in all", sum)
	}
	want("mmdb_table_rows", is(commits), "table", "acct")
	want("mmdb_table_heap_bytes", positive, "table", "acct")
	want("mmdb_table_index_bytes", positive, "table", "acct")
	want("mmdb_grpc_server_handled_total", is(rows), "grpc_method", "Insert", "grpc_code", "OK")
	want("mmdb_grpc_server_handled_total", is(1), "grpc_method", "Get", "grpc_code", "OK")
	want("mmdb_grpc_server_handled_total", is(1), "grpc_method", "Get", "grpc_code", "NotFound")
	want("mmdb_grpc_server_handling_seconds", is(rows), "grpc_method", "Insert")

	records, _ := m.Value("mmdb_log_records_total")
	if records != float64(commits+1) { // and the table's creation
		t.Errorf("mmdb_log_records_total = %v, want %d", records, commits+1)
	}
	want("mmdb_log_raw_bytes_total", positive)
	want("mmdb_log_stored_bytes_total", positive)
	want("mmdb_log_compression_ratio", func(v float64) bool { return v > 0.1 && v < 10 })
	// fsync-log: every commit waited for a sync, so the groups hold them all.
	want("mmdb_log_sync_duration_seconds", positive)
	want("mmdb_log_group_records", positive)
	if grouped, _ := m.Sum("mmdb_log_group_records"); grouped != records {
		t.Errorf("the syncs made %v records durable; the log wrote %v", grouped, records)
	}
	want("mmdb_last_lsn", is(float64(st.GetLastLsn())))
	want("mmdb_durable_lsn", is(float64(st.GetLastLsn())))
	want("mmdb_epoch", is(float64(st.GetEpoch())))
	want("mmdb_role", is(1), "role", "primary")
	want("mmdb_role", is(0), "role", "standby")
	want("mmdb_replication_degraded", is(0))
	want("mmdb_open_transactions", is(0))

	want("mmdb_checkpoints_total", is(1), "result", "written")
	want("mmdb_checkpoints_total", is(0), "result", "failed")
	want("mmdb_checkpoints_total", is(0), "result", "cancelled")
	want("mmdb_checkpoint_image_bytes", is(float64(ck.GetBytes())))
	want("mmdb_checkpoint_lsn", is(float64(ck.GetLsn())))
	want("mmdb_checkpoint_last_duration_seconds", is(ck.GetDuration().AsDuration().Seconds()))

	want("go_goroutines", positive)
	want("process_resident_memory_bytes", positive)
}

// TestMetricsAddrInUse: a metrics_addr the node cannot have fails New,
// naming the key, and leaves nothing held: the data directory can be
// opened again at once.
func TestMetricsAddrInUse(t *testing.T) {
	cfg := conf.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.MetricsAddr = metricstest.TakenAddr(t)
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "metrics_addr") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New with metrics_addr taken: %v", err)
	}
	n := startNode(t, func(c *conf.Config) { c.DataDir = cfg.DataDir })
	if _, err := n.admin.Status(ctx(t), &pb.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsStopAtShutdown: the endpoint closes with the node.
func TestMetricsStopAtShutdown(t *testing.T) {
	n, addr := metricsNode(t)
	metricstest.Scrape(t, addr)
	n.stop()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		t.Fatalf("metrics_addr %s still takes connections after shutdown: %v", addr, conn.Close())
	}
}

// TestCommitOutcomes: each way a commit ends is counted once, and only
// the commits that got an LSN have a latency.
func TestCommitOutcomes(t *testing.T) {
	n, _ := metricsNode(t)
	m := n.srv.metrics
	start := time.Now()
	for _, c := range []struct {
		writes   int
		lsn      uint64
		degraded bool
		err      error
	}{
		{1, 5, false, nil}, // committed
		{2, 6, true, nil},  // degraded
		{1, 7, false, errors.New("standbys did not answer")},     // unconfirmed
		{1, 0, false, fmt.Errorf("commit: %w", mem.ErrConflict)}, // aborted
		{1, 0, false, errors.New("the log failed")},              // refused
		{0, 0, false, nil}, // read-only: no commit
	} {
		m.commitEnded(start, c.writes, c.lsn, c.degraded, c.err)
	}
	for o, name := range outcomeNames {
		if got := testutil.ToFloat64(m.commits[o]); got != 1 {
			t.Errorf("%s: %v commits, want 1", name, got)
		}
	}
	var h dto.Metric
	if err := m.latency.Write(&h); err != nil {
		t.Fatal(err)
	}
	if got := h.GetHistogram().GetSampleCount(); got != 3 {
		t.Errorf("%d latencies observed; want those of the 3 commits with an LSN", got)
	}
}

// TestLatencyBucketsResolveMicroseconds: on a no-log node a point Get
// and a commit take microseconds on the server; the latency histograms
// must tell such latencies apart, not hold them all in their lowest
// bucket, where histogram_quantile can only guess within it.
//
// Found in review: the lowest bucket was 25 µs, and it held more than
// nine in ten of the Gets' handling times and of the commits' latencies,
// so every quantile of them read as a fraction of 25 µs.
func TestLatencyBucketsResolveMicroseconds(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.MetricsAddr = "127.0.0.1:0"
		c.Durability = conf.DurabilityNoLog
	})
	const rows = 100
	n.withAccounts(rows) // commits
	for i := 1; i <= rows; i++ {
		if _, err := n.db.Get(ctx(t), &pb.GetRequest{Table: "acct", Key: key(vI(int64(i)))}); err != nil {
			t.Fatal(err)
		}
	}
	m := metricstest.Scrape(t, n.srv.metrics.lis.Addr().String())
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"mmdb_commit_duration_seconds", nil},
		{"mmdb_grpc_server_handling_seconds", []string{"grpc_method", "Get"}},
		{"mmdb_grpc_server_handling_seconds", []string{"grpc_method", "Insert"}},
	} {
		h := histogram(t, m, c.name, c.labels...)
		lowest := h.GetBucket()[0]
		if 2*lowest.GetCumulativeCount() > h.GetSampleCount() {
			t.Errorf("%s%v: %d of %d observations (mean %.1f µs) in the lowest bucket, up to %g s",
				c.name, c.labels, lowest.GetCumulativeCount(), h.GetSampleCount(), 1e6*h.GetSampleSum()/float64(h.GetSampleCount()), lowest.GetUpperBound())
		}
	}
}

// histogram returns the one histogram of family name with labels.
func histogram(t *testing.T, m metricstest.Families, name string, labels ...string) *dto.Histogram {
	t.Helper()
	var found *dto.Histogram
	for _, s := range m[name].GetMetric() {
		if !metricsHaveLabels(s, labels) {
			continue
		}
		if found != nil || s.GetHistogram() == nil {
			t.Fatalf("%s%v: not one histogram", name, labels)
		}
		found = s.GetHistogram()
	}
	if found == nil || found.GetSampleCount() == 0 {
		t.Fatalf("%s%v: no observations", name, labels)
	}
	return found
}

func metricsHaveLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			ok = ok || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
		}
		if !ok {
			return false
		}
	}
	return true
}
