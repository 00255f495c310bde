package server

import (
	"bytes"
	"math/rand/v2"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/internal/grpctest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestInteractiveStrongerDurability: an interactive transaction that
// asks for fsync-log, at Begin or at Commit, on an mmap-log node that
// syncs its mappings only when asked, is durable when its Commit returns;
// one at the node's level is not (SPEC 4). TestStrongerDurabilityRequest
// is the same for single writes.
func TestInteractiveStrongerDurability(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.MmapSyncInterval = conf.DurabilityMmapLog, 0
	})
	n.withAccounts(1)
	c := ctx(t)
	commit := func(id int64, atBegin, atCommit pb.Durability) uint64 {
		t.Helper()
		b, err := n.db.Begin(c, &pb.BeginRequest{Durability: atBegin})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.db.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1), TxId: b.GetTxId()}); err != nil {
			t.Fatal(err)
		}
		r, err := n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId(), Durability: atCommit})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetLsn()
	}
	fsync, node := pb.Durability_DURABILITY_FSYNC_LOG, pb.Durability_DURABILITY_UNSPECIFIED
	for _, tc := range []struct {
		name              string
		id                int64
		atBegin, atCommit pb.Durability
	}{{"at Begin", 10, fsync, node}, {"at Commit", 11, node, fsync}} {
		if lsn, durable := commit(tc.id, tc.atBegin, tc.atCommit), n.srv.store.DurableLSN(); durable < lsn {
			t.Errorf("fsync-log asked for %s: the commit returned at LSN %d with the log durable to %d", tc.name, lsn, durable)
		}
	}
	if lsn, durable := commit(12, node, node), n.srv.store.DurableLSN(); durable >= lsn {
		t.Fatalf("an mmap-log commit at LSN %d found the log durable to %d: the checks above show nothing", lsn, durable)
	}
}

// waitFor polls cond until it holds, failing the test with what after
// 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// TestMmapSyncIntervalReachesTheLog: on an mmap-log node with a short
// mmap_sync_interval, a commit becomes durable with nothing asking: the
// periodic flush runs (SPEC 4).
func TestMmapSyncIntervalReachesTheLog(t *testing.T) {
	n := startNode(t, func(c *conf.Config) {
		c.Durability, c.MmapSyncInterval = conf.DurabilityMmapLog, 20*time.Millisecond
	})
	n.withAccounts(1)
	r, err := n.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(2, 1)})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the commit is not durable", func() bool { return n.srv.store.DurableLSN() >= r.GetLsn() })
}

// blobTable is a table of values of up to blobBytes, to grow a log fast.
func blobTable() *pb.Table {
	return &pb.Table{
		Name: "blob",
		Columns: []*pb.Column{
			{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "data", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: blobBytes},
		},
		PrimaryKey: []string{"id"},
	}
}

// writeBlobs writes at least bytes of random values into the table blob
// (blobTable), in commits of about a megabyte that each rewrite the same
// rows, so the log grows and the database does not.
func (n *node) writeBlobs(bytes int) {
	n.t.Helper()
	const rows = 32
	r := rand.NewChaCha8([32]byte{})
	for written := 0; written < bytes; written += rows * blobBytes {
		req := &pb.CommitRequest{}
		for id := range int64(rows) {
			b := make([]byte, blobBytes)
			_, _ = r.Read(b)
			req.Operations = append(req.Operations, &pb.Operation{Op: &pb.Operation_Upsert{Upsert: &pb.UpsertRequest{
				Table: "blob", Row: row(vI(id), &pb.Value{Kind: &pb.Value_Bytes{Bytes: b}}),
			}}})
		}
		if _, err := n.db.Commit(ctx(n.t), req); err != nil {
			n.t.Fatal(err)
		}
	}
}

const blobBytes = 30000

// TestBackgroundCheckpoints: a node checkpoints by itself once
// checkpoint_interval has passed, and once checkpoint_log_bytes of log
// have been written (SPEC 5).
func TestBackgroundCheckpoints(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*conf.Config)
		write func(*node)
	}{
		{"checkpoint_interval", func(c *conf.Config) { c.CheckpointInterval = 50 * time.Millisecond }, func(n *node) { n.withAccounts(1) }},
		{"checkpoint_log_bytes", func(c *conf.Config) { c.Durability, c.CheckpointLogBytes = conf.DurabilityMmapLog, 1<<20 }, func(n *node) {
			if _, err := n.db.CreateTable(ctx(n.t), &pb.CreateTableRequest{Table: blobTable()}); err != nil {
				n.t.Fatal(err)
			}
			n.writeBlobs(1<<20 + 1<<18)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, tc.edit)
			tc.write(n)
			c := ctx(t)
			waitFor(t, "the node has written no checkpoint", func() bool {
				st, err := n.admin.Status(c, &pb.StatusRequest{})
				if err != nil {
					t.Fatal(err)
				}
				return st.GetCheckpointLsn() > 0
			})
		})
	}
}

// TestIdleTimeoutCountsFromLastActivity: a transaction with a statement
// every half of tx_idle_timeout stays open for four timeouts and
// commits, and one then left idle a little past the timeout is rolled
// back: the timeout counts from the last statement, not from Begin
// (SPEC 2). The node's clock for idle transactions is the test's, which
// it moves, and the test reaps as the node's loop would (its ticks,
// every quarter of an hour here, never come).
func TestIdleTimeoutCountsFromLastActivity(t *testing.T) {
	const idle = time.Hour
	n := startNode(t, func(c *conf.Config) { c.TxIdleTimeout = idle })
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	n.srv.txs.now = func() time.Time { return time.Unix(0, now.Load()) }
	n.withAccounts(1)
	c := ctx(t)
	b, err := n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pass := func(d time.Duration) {
		now.Add(int64(d))
		n.srv.txs.reap()
	}
	var bal int64
	for ; bal < 8; bal++ {
		pass(idle / 2)
		if bal%2 == 0 {
			_, err = n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1)), TxId: b.GetTxId()})
		} else {
			_, err = n.db.Update(c, &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: []*pb.ColumnValue{{Column: "bal", Value: vI(bal)}}, TxId: b.GetTxId()})
		}
		if err != nil {
			t.Fatalf("statement %d, %v after Begin: %v", bal, time.Duration(bal+1)*idle/2, err)
		}
	}
	if _, err := n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()}); err != nil {
		t.Fatalf("commit %v after Begin: %v", time.Duration(bal)*idle/2, err)
	}
	if r, _ := n.get(1); balance(r) != bal-1 {
		t.Fatalf("row 1 holds %v after the commit, want balance %d", r, bal-1)
	}

	b, err = n.db.Begin(c, &pb.BeginRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pass(idle / 2)
	if _, err := n.db.Get(c, &pb.GetRequest{Table: "acct", Key: key(vI(1)), TxId: b.GetTxId()}); err != nil {
		t.Fatal(err)
	}
	pass(idle - time.Second)
	if n.srv.txs.open() != 1 {
		t.Fatal("a transaction idle for less than tx_idle_timeout was rolled back")
	}
	pass(2 * time.Second)
	_, err = n.db.Commit(c, &pb.CommitRequest{TxId: b.GetTxId()})
	wantCode(t, err, codes.NotFound, "tx_idle_timeout")
}

// TestRetainedLogCatchesUpAStandby: a standby away while its primary
// committed, restarted and checkpointed twice, but wrote less than
// log_retention_bytes, catches up from the primary's log when it comes
// back, and is not imaged again (SPEC 5). The restart starts a new log
// segment, which the checkpoints' images hold all that came before, and
// leaves no records in memory: without the retention, the segment with
// the records the standby needs would go.
func TestRetainedLogCatchesUpAStandby(t *testing.T) {
	standbyAddr, standbyDir, primaryDir := grpctest.DeadAddr(t), t.TempDir(), t.TempDir()
	asStandby := func(c *conf.Config) {
		c.Node, c.Role, c.Listen, c.DataDir = "b", conf.RoleStandby, standbyAddr, standbyDir
		c.Peers = []conf.Peer{{Name: "a", Addr: "127.0.0.1:1"}}
	}
	asPrimary := func(c *conf.Config) {
		// More than the log's preallocated segments (64 MiB each).
		c.Node, c.DataDir, c.Durability, c.LogRetentionBytes = "a", primaryDir, conf.DurabilityMmapLog, 1<<30
		c.Peers = []conf.Peer{{Name: "b", Addr: standbyAddr}}
	}
	standby := startNode(t, asStandby)
	primary := startNode(t, asPrimary)
	primary.withAccounts(5)
	if err := standby.srv.store.WaitApplied(ctx(t), primary.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	standby.stop()

	insert := func(id int64) {
		t.Helper()
		if _, err := primary.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for id := int64(6); id <= 20; id++ {
		insert(id)
	}
	primary.stop()
	primary = startNode(t, asPrimary)
	for id := int64(21); id <= 22; id++ {
		insert(id)
		if _, err := primary.admin.Checkpoint(ctx(t), &pb.CheckpointRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	standby = startNode(t, asStandby)
	c := ctx(t)
	applied := make(chan error, 1)
	go func() { applied <- standby.srv.store.WaitApplied(c, primary.srv.db.LastLSN()) }()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case why := <-standby.srv.Restarts():
		t.Fatalf("the standby asks to restart, to %s", why)
	}
	if got, want := standby.fingerprint(), primary.fingerprint(); got != want {
		t.Fatalf("the standby holds\n%s\nthe primary\n%s", got, want)
	}
}

// TestBootstrapReportsProgress: a diskless node whose image is slow to
// come logs how far the transfer is while it loads it (SPEC 7: progress
// is reported to the receiver). A proxy holds the source's answers back
// past progressEvery. The source serves TLS: a node without TLS would
// first probe it for TLS, and the probe would spend progressEvery of the
// stall.
func TestBootstrapReportsProgress(t *testing.T) {
	src := startSecured(t, nil)
	app := *src.n // src.n's own client has no TLS
	app.db = pb.NewDatabaseServiceClient(src.dial(t, nil, "", "0123456789abcdef-app"))
	app.withAccounts(10)
	proxy := faultproxy.New(t, src.n.addr)
	proxy.Stall(true)
	progress := regexp.MustCompile(`receiving the image: lsn=\d+ received-bytes=\d+ bytes=\d+`)
	// The stall lasts progressEvery and a second from when the node
	// dials the source, however slow its start (TLS, a busy machine).
	go func() {
		defer proxy.Stall(false)
		for deadline := time.Now().Add(30 * time.Second); proxy.Accepted() == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(progressEvery + time.Second)
	}()

	cert, key := src.ca.Issue(t, "p")
	cfg := conf.DefaultConfig()
	cfg.Node, cfg.Listen, cfg.DataDir, cfg.Durability, cfg.BootstrapFrom = "p", "127.0.0.1:0", "", conf.DurabilityNoLog, proxy.Addr()
	cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = cert, key, src.ca.File
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logged bytes.Buffer
	srv, err := New(cfg, hclog.New(&hclog.LoggerOptions{Output: &logged, Mutex: &mu}))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !progress.Match(logged.Bytes()) {
		t.Fatalf("the node logged no progress of the transfer:\n%s", logged.String())
	}
}
