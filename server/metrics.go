package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/replica"
)

// metrics is a node's Prometheus endpoint (metrics_addr): its own
// registry, served over HTTP at /metrics, names prefixed mmdb_. Most
// series are read from the node's own counts when scraped
// (nodeCollector); only what has no count to read is observed as it
// happens: commit latency and outcome (dbService), log syncs
// (logging.Options.OnSync) and gRPC calls (the interceptors). A node
// without metrics_addr has no metrics value, and its calls and commits
// pay nothing for them.
type metrics struct {
	reg     *prometheus.Registry
	grpc    *grpcprom.ServerMetrics
	commits [numOutcomes]prometheus.Counter
	latency prometheus.Histogram // commits that got an LSN, as their clients waited
	syncs   prometheus.Histogram // how long each group sync of the log took
	groups  prometheus.Histogram // the records each group sync made durable

	lis  net.Listener
	http *http.Server  // nil until serve
	done chan struct{} // closed when http's Serve has returned
}

// outcome is how a commit a client asked for ended.
type outcome int

const (
	outcomeCommitted   outcome = iota // it has an LSN and met its durability and sync mode
	outcomeDegraded                   // it has an LSN, but the standbys did not answer in time and the node went on without them
	outcomeUnconfirmed                // it has an LSN, but did not meet its durability or sync mode (the reply is an error)
	outcomeAborted                    // a serialization conflict, after the server's retries: no LSN
	outcomeRefused                    // the node refused it (a standby, a full or failed log, a dropped table): no LSN
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"committed", "degraded", "unconfirmed", "aborted", "refused"}

// latencyBuckets span what the server measures, in seconds: from a point
// Get's handling or a no-log commit (a few µs: a lowest bucket above them
// would hold them all, and their quantiles would say nothing) to a
// sync_timeout (seconds).
var latencyBuckets = []float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// listenMetrics opens the node's metrics_addr, so that an address that
// cannot be had fails the node's start, and builds the registry. The
// node's own series are read from s once scrapes begin (serve).
func listenMetrics(s *Server) (*metrics, error) {
	cfg := s.cfg
	lis, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("server: %s: metrics_addr: %w", cfg.Origin("metrics_addr"), err) // err names the address
	}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithNamespace(namespace)),
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace(namespace), grpcprom.WithHistogramBuckets(latencyBuckets)),
		),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "commit_duration_seconds",
			Help: "How long commits that got an LSN took, from the request to the reply, with the waits for durability and standbys.", Buckets: latencyBuckets}),
		syncs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "log_sync_duration_seconds",
			Help: "How long each group sync (fdatasync, or msync for mmap-log) of the redo log took.", Buckets: latencyBuckets}),
		groups: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "log_group_records",
			Help: "The records each group sync of the redo log made durable.", Buckets: prometheus.ExponentialBuckets(1, 2, 13)}),
		lis:  lis,
		done: make(chan struct{}),
	}
	commits := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "commits_total",
		Help: "Commits of transactions that write, by outcome: committed, degraded, unconfirmed, aborted, refused."}, []string{"outcome"})
	for o, name := range outcomeNames {
		m.commits[o] = commits.WithLabelValues(name) // resolved once: a commit only adds
	}
	err = errors.Join(
		m.reg.Register(collectors.NewGoCollector()),
		m.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
		m.reg.Register(m.grpc),
		m.reg.Register(commits),
		m.reg.Register(m.latency),
		m.reg.Register(m.syncs),
		m.reg.Register(m.groups),
		m.reg.Register(newNodeCollector(s)),
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("server: metrics: %w", err), lis.Close())
	}
	return m, nil
}

const namespace = "mmdb"

// serve serves the registry on the listener until close.
func (m *metrics) serve(log hclog.Logger) {
	errLog := log.Named("metrics").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error})
	mux := http.NewServeMux()
	// A series that fails to collect is left out of the scrape (and
	// logged), not the whole scrape.
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: errLog, ErrorHandling: promhttp.ContinueOnError}))
	m.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
	log.Info("serving metrics", "addr", m.lis.Addr().String(), "path", "/metrics")
	go func() {
		defer close(m.done)
		if err := m.http.Serve(m.lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics endpoint stopped", "addr", m.lis.Addr().String(), "error", err)
		}
	}()
}

// close stops the endpoint: scrapes under way are cut off.
func (m *metrics) close() error {
	if m.http == nil {
		if err := m.lis.Close(); err != nil {
			return fmt.Errorf("server: close metrics_addr %s: %w", m.lis.Addr(), err)
		}
		return nil
	}
	err := m.http.Close()
	<-m.done
	if err != nil {
		return fmt.Errorf("server: close the metrics endpoint on %s: %w", m.lis.Addr(), err)
	}
	return nil
}

// onSync is the log's OnSync hook; nil without metrics.
func (m *metrics) onSync() func(records int, took time.Duration) {
	if m == nil {
		return nil
	}
	return func(records int, took time.Duration) {
		m.syncs.Observe(took.Seconds())
		m.groups.Observe(float64(records))
	}
}

// started is when a commit's request started, for its latency; zero
// without metrics, which saves the clock read.
func (m *metrics) started() time.Time {
	if m == nil {
		return time.Time{}
	}
	return time.Now()
}

// commitEnded counts a commit a client asked for, of a transaction that
// writes rows, and observes its latency since start when it got an LSN:
// lsn, degraded and err are what the commit and its waits returned. A
// read-only transaction is no commit here.
func (m *metrics) commitEnded(start time.Time, writes int, lsn uint64, degraded bool, err error) {
	if m == nil || writes == 0 {
		return
	}
	o := outcomeCommitted
	switch {
	case lsn == 0 && errors.Is(err, mem.ErrConflict):
		o = outcomeAborted
	case lsn == 0:
		o = outcomeRefused
	case err != nil:
		o = outcomeUnconfirmed
	case degraded:
		o = outcomeDegraded
	}
	m.commits[o].Inc()
	if lsn != 0 {
		m.latency.Observe(time.Since(start).Seconds())
	}
}

// nodeCollector reads the node's state when scraped: the log's counts,
// LSNs, role and epoch, the standbys, the checkpoints and the tables'
// memory. Nothing of it costs a commit anything.
type nodeCollector struct {
	s *Server

	logRecords, logRawBytes, logStoredBytes, compression *prometheus.Desc
	lastLSN, durableLSN, epoch, role, openTxs            *prometheus.Desc

	degraded, lagRecords, lagBytes, lagSeconds, receivedLSN, appliedLSN, standbyState, inQuorum *prometheus.Desc

	checkpoints, checkpointSeconds, checkpointBytes, checkpointLSN *prometheus.Desc

	tableRows, tableHeapBytes, tableIndexBytes *prometheus.Desc
}

func newNodeCollector(s *Server) *nodeCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &nodeCollector{
		s:              s,
		logRecords:     desc("log_records_total", "Records written to the redo log."),
		logRawBytes:    desc("log_raw_bytes_total", "Bytes of the records written to the redo log, before compression."),
		logStoredBytes: desc("log_stored_bytes_total", "Bytes written to the redo log's segments, block headers included."),
		compression:    desc("log_compression_ratio", "Raw record bytes per byte stored in the redo log (mmdb_log_raw_bytes_total / mmdb_log_stored_bytes_total); above 1 when compression saves more than the headers cost."),
		lastLSN:        desc("last_lsn", "The node's last LSN: the last commit on a primary, the last one applied on a standby."),
		durableLSN:     desc("durable_lsn", "The largest LSN up to which the redo log is synced; 0 without a log."),
		epoch:          desc("epoch", "The node's epoch: it grows with each promotion."),
		role:           desc("role", "1 for the node's role (primary, standby, propagator), 0 for the others.", "role"),
		openTxs:        desc("open_transactions", "Interactive transactions open now."),
		degraded:       desc("replication_degraded", "1 while the primary's commits do not wait for the standbys because they did not answer in time (on_sync_timeout = degrade)."),
		lagRecords:     desc("replication_lag_records", "Records committed on this node that the standby has not applied yet.", "standby", "via"),
		lagBytes:       desc("replication_lag_bytes", "The size of the records the standby has not applied yet, before compression; estimated for a standby behind the records this node keeps in memory, 0 while it keeps none.", "standby", "via"),
		lagSeconds:     desc("replication_lag_seconds", "How long ago the oldest record the standby has not applied was committed; 0 when it has applied everything.", "standby", "via"),
		receivedLSN:    desc("replication_received_lsn", "The last LSN the standby received.", "standby", "via"),
		appliedLSN:     desc("replication_applied_lsn", "The last LSN the standby applied.", "standby", "via"),
		standbyState:   desc("replication_standby_state", "1 for the standby's link state as mmdbd status shows it, 0 for the others.", "standby", "via", "state"),
		inQuorum:       desc("replication_in_quorum", "1 if the standby's acknowledgements count towards sync_quorum (sync_standbys is empty or names it), 0 if not.", "standby", "via"),
		checkpoints:    desc("checkpoints_total", "Checkpoints run, by result: written, skipped (nothing new), failed.", "result"),
		checkpointSeconds: desc("checkpoint_last_duration_seconds",
			"How long the last checkpoint written by this process took."),
		checkpointBytes: desc("checkpoint_image_bytes", "The newest checkpoint image's size."),
		checkpointLSN:   desc("checkpoint_lsn", "The newest checkpoint image's LSN; 0 without one."),
		tableRows:       desc("table_rows", "Rows in the table.", "table"),
		tableHeapBytes:  desc("table_heap_bytes", "Memory of the table's pages.", "table"),
		tableIndexBytes: desc("table_index_bytes", "Memory of the table's indexes.", "table"),
	}
}

// Describe implements prometheus.Collector.
func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.logRecords, c.logRawBytes, c.logStoredBytes, c.compression, c.lastLSN, c.durableLSN, c.epoch, c.role, c.openTxs,
		c.degraded, c.lagRecords, c.lagBytes, c.lagSeconds, c.receivedLSN, c.appliedLSN, c.standbyState, c.inQuorum,
		c.checkpoints, c.checkpointSeconds, c.checkpointBytes, c.checkpointLSN,
		c.tableRows, c.tableHeapBytes, c.tableIndexBytes,
	} {
		ch <- d
	}
}

// roles and standbyStates are the values the state-set series take, so
// that each is present (at 0) before the node first enters it.
var (
	roles         = []string{conf.RolePrimary, conf.RoleStandby, conf.RolePropagator}
	standbyStates = []string{replica.StateConnecting, replica.StateCatchingUp, replica.StateStreaming, replica.StateDegraded,
		replica.StateDisconnected, replica.StateNeedsImage, replica.StateRefused}
)

// Collect implements prometheus.Collector.
func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { metric(d, prometheus.GaugeValue, v, labels...) }
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		metric(d, prometheus.CounterValue, v, labels...)
	}

	st := s.store.LogStats()
	counter(c.logRecords, float64(st.Records))
	counter(c.logRawBytes, float64(st.RawBytes))
	counter(c.logStoredBytes, float64(st.StoredBytes))
	if st.StoredBytes > 0 {
		gauge(c.compression, float64(st.RawBytes)/float64(st.StoredBytes))
	}
	gauge(c.lastLSN, float64(s.db.LastLSN()))
	gauge(c.durableLSN, float64(s.store.DurableLSN()))
	gauge(c.epoch, float64(s.epochs.Current()))
	role := s.Role()
	for _, r := range roles {
		gauge(c.role, bit(r == role), r)
	}
	gauge(c.openTxs, float64(s.txs.open()))

	standbys, degraded := s.replication()
	gauge(c.degraded, bit(degraded))
	// via tells apart a standby the node links to from the same one
	// seen behind a propagator (a standby may list both as peers).
	for _, sb := range standbys {
		gauge(c.lagRecords, float64(sb.LagRecords), sb.Name, sb.Via)
		gauge(c.lagBytes, float64(sb.LagBytes), sb.Name, sb.Via)
		gauge(c.lagSeconds, sb.Lag.Seconds(), sb.Name, sb.Via)
		gauge(c.receivedLSN, float64(sb.Received), sb.Name, sb.Via)
		gauge(c.appliedLSN, float64(sb.Applied), sb.Name, sb.Via)
		gauge(c.inQuorum, bit(!sb.OutsideQuorum), sb.Name, sb.Via)
		known := false
		for _, state := range standbyStates {
			known = known || state == sb.State
			gauge(c.standbyState, bit(state == sb.State), sb.Name, sb.Via, state)
		}
		if !known {
			gauge(c.standbyState, 1, sb.Name, sb.Via, sb.State)
		}
	}

	if s.ckpt != nil {
		cs := s.ckpt.Stats()
		counter(c.checkpoints, float64(cs.Written), "written")
		counter(c.checkpoints, float64(cs.Skipped), "skipped")
		counter(c.checkpoints, float64(cs.Cancelled), "cancelled")
		counter(c.checkpoints, float64(cs.Failed), "failed")
		if cs.Written > 0 {
			gauge(c.checkpointSeconds, cs.LastDuration.Seconds())
		}
		gauge(c.checkpointBytes, float64(cs.Newest.Bytes))
		gauge(c.checkpointLSN, float64(cs.Newest.LSN))
	}

	for _, t := range s.db.Stats() {
		gauge(c.tableRows, float64(t.Rows), t.Name)
		gauge(c.tableHeapBytes, float64(t.HeapBytes), t.Name)
		gauge(c.tableIndexBytes, float64(t.IndexBytes), t.Name)
	}
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
