// Package server is an mmdb node: it serves the engine over gRPC
// (DatabaseService, AdminService, grpc.health.v1 and server reflection)
// and, on metrics_addr, Prometheus metrics over HTTP, as its Config says,
// and shuts down gracefully.
//
// A request flows server -> mem (transaction) -> durability (the commit
// waits for its level) -> replica (a primary's commit waits for its
// standbys as sync_mode asks) -> reply. New recovers the database from
// the log before serving. A standby takes the primary's log over
// ReplicationService and refuses writes; a primary with peers ships its
// log to them (package replica). With a tls block the node serves TLS
// and, with tls.ca_file, checks who calls what (auth.go).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/durability"
	redolog "github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// Server is one mmdb node.
type Server struct {
	cfg    *conf.Config
	log    hclog.Logger
	db     *mem.DB
	store  *durability.Store
	ckpt   *checkpoint.Checkpointer // nil without a data_dir
	images *checkpoint.Shelf        // the images ImageService serves
	recv   *replica.Receiver        // takes the log on a standby; refuses it on a primary
	epochs *replica.Epochs          // the node's epoch history
	sec    *security                // who may call the node, and how it dials others

	roleMu  sync.Mutex  // orders role changes
	role    string      // primary, standby or propagator (guarded by roleMu)
	addr    string      // where clients reach the node, once it serves (guarded by roleMu)
	restart chan string // asks the process to restart the node, saying why

	markMu        sync.Mutex         // guards restarting, aside, divergedAt, divergedOlder and led (not roleMu: a promotion holds that while links end)
	restarting    bool               // a restart is asked for, to cut the log or load an image
	aside         uint64             // where the log diverged from the primary's, while its records are set aside (diverged)
	divergedAt    uint64             // where the log diverged from the primary's, once handled
	divergedOlder bool               // whether that divergence was a former primary's tail (diverged's older)
	led           replica.EpochStart // the stretch of the history this node last led as a primary, set when it stopped (demote)

	syncConf atomic.Pointer[syncConf] // the sync settings now: cfg's, then SetSync's

	syncMu sync.Mutex
	sender *replica.Sender // ships the log: on a serving primary with peers (guarded by syncMu)
	relay  *replica.Sender // relays the log: on a propagator that follows a sender (guarded by syncMu)

	standbyRole string         // the role a primary steps down to: standby, or propagator as configured or last set (guarded by roleMu)
	relayed     string         // what the relay relays: its upstream and epoch history (guarded by roleMu)
	follows     sync.WaitGroup // followed's goroutines
	keeping     sync.WaitGroup // keepEpoch

	grpc    *grpc.Server
	health  *health.Server
	metrics *metrics // nil without metrics_addr
	dbs     *dbService
	txs     *txTable
	start   time.Time
	lock    *os.File // the data directory's lock, held while the node runs

	quit     chan struct{} // closed when shutdown begins
	stopOnce sync.Once
	reaped   chan struct{} // closed when the idle-transaction reaper has stopped
}

// New builds a node from a validated Config. It takes the data directory's
// lock, so two nodes cannot share one directory, and serves metrics on
// metrics_addr, if set.
func New(cfg *conf.Config, logger hclog.Logger) (_ *Server, err error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	sec, err := newSecurity(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		sec:         sec,
		cfg:         cfg,
		role:        cfg.Role,
		standbyRole: conf.RoleStandby,
		restart:     make(chan string, 1),
		log:         logger,
		start:       time.Now(),
		quit:        make(chan struct{}),
		reaped:      make(chan struct{}),
	}
	s.warnNoTokens()
	s.syncConf.Store(syncConfOf(cfg))
	if cfg.Role == conf.RolePropagator {
		s.standbyRole = conf.RolePropagator
	}
	if cfg.MetricsAddr != "" {
		// Taken first: an address in use fails the start before the
		// recovery, which may be long.
		if s.metrics, err = listenMetrics(s); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, s.metrics.close())
			}
		}()
	}
	if cfg.DataDir != "" {
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		s.lock = lock
	}
	if cfg.DataDir != "" {
		if err := reimage(cfg, sec, logger.Named("image")); err != nil {
			return nil, errors.Join(err, s.unlock())
		}
	}
	epochs, err := replica.OpenEpochs(vfs.Default, cfg.DataDir)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("server: %w", err), s.unlock())
	}
	s.epochs = epochs
	store, slots, err := openStore(cfg, sec, epochs, s.metrics.onSync(), logger)
	if err != nil {
		return nil, errors.Join(err, s.unlock())
	}
	if cfg.DataDir != "" {
		// A cut log is cut for good once it opened: the mark goes.
		switch err := vfs.RemoveDurable(vfs.Default, filepath.Join(cfg.DataDir, truncateFile)); {
		case err == nil:
			logger.Warn("cut the log where it diverged from the primary's", "last-lsn", store.DB().LastLSN())
		case !errors.Is(err, os.ErrNotExist):
			return nil, errors.Join(fmt.Errorf("server: %w", err), store.Close(), s.unlock())
		}
	}
	if epochs.Fresh() && store.DB().LastLSN() > 0 {
		// Its data came in an image (serve -from-image, mmdbd image
		// restore) and nothing after it: it takes the history the image
		// carries. Without one, its records are taken to agree with the
		// primary it follows.
		if hist := slots.History; len(hist) > 0 && slots.Newest.LSN == store.DB().LastLSN() {
			if err := imageHistory(epochs, hist); err != nil {
				return nil, errors.Join(err, store.Close(), s.unlock())
			}
		} else {
			epochs.Trust(store.DB().LastLSN())
		}
	}
	switch {
	case cfg.Role != conf.RolePrimary:
	case epochs.Seen() > epochs.Current() || epochs.SteppedDown():
		// It stepped down for a newer primary (or for one of its own
		// epoch with a higher incarnation: two promoted at once) before
		// it stopped, and followed none since: it does not take writes
		// again on its own.
		logger.Warn("configured as primary, but it stepped down for another primary: starting as a standby; promote it to make it the primary",
			"epoch", epochs.Current(), "newer-epoch", epochs.Seen())
		s.role = conf.RoleStandby
		store.SetPrimary("", "")
	case epochs.Follows():
		// It followed another primary's log when it stopped (a former
		// primary that stepped down and caught up, or a standby whose
		// config now says primary): starting as a primary of that
		// primary's epoch would make two, and the other could be the
		// one that goes on. Promotion starts a newer epoch instead.
		logger.Warn("configured as primary, but its log follows another primary's: starting as a standby; promote it to make it the primary",
			"epoch", epochs.Current())
		s.role = conf.RoleStandby
		store.SetPrimary("", "")
	}
	if epochs.SteppedDown() && !epochs.Follows() {
		// The stretch it led until it stepped down: its records are a
		// former primary's tail, whatever the epoch of the primary it
		// follows next (diverged).
		s.led = epochs.Last()
	}
	held := false // a primary that had no room to begin its stretch of the history
	if s.role == conf.RolePrimary {
		// A primary that restarts may have lost a tail of its log that a
		// standby holds; its new records start a new incarnation, so the
		// standby finds where they diverge.
		switch epoch, err := epochs.Restart(store.DB().LastLSN() + 1); {
		case vfs.NoSpace(err):
			// As for a disk that fills while the node runs: it serves
			// reads, and takes writes once there is room (keepEpoch).
			held = true
			store.Hold(fmt.Errorf("server: the disk is full: the primary takes no writes until there is room to keep its epoch history: %w", err))
			logger.Error("the disk is full: writes are refused until there is room to keep the epoch history", "error", err)
		case err != nil:
			return nil, errors.Join(fmt.Errorf("server: %w", err), store.Close(), s.unlock())
		default:
			store.SetEpoch(epoch)
		}
	}
	s.store, s.db = store, store.DB()
	if cfg.DataDir != "" {
		s.ckpt = checkpoint.New(s.db, store, slots, checkpoint.Options{
			Dir: checkpoint.Dir(cfg.DataDir), Interval: cfg.CheckpointInterval, LogBytes: cfg.CheckpointLogBytes,
			RetainLogBytes: cfg.LogRetentionBytes, Epochs: epochs, Logger: logger.Named("checkpoint"),
		})
		s.ckpt.Start()
	}
	s.txs = newTxTable(s.db, int(cfg.MaxOpenTransactions), int(cfg.MaxTxBytes), cfg.TxIdleTimeout, logger)
	s.dbs = &dbService{
		db:          s.db,
		store:       s.store,
		sync:        s,
		txs:         s.txs,
		cv:          converter{maxValueBytes: int(cfg.MaxValueBytes)},
		maxScanRows: int(cfg.MaxScanRows),
		maxMsgBytes: int(cfg.MaxMessageBytes),
		quit:        s.quit,
		metrics:     s.metrics,
	}
	s.grpc = grpc.NewServer(s.serverOptions()...)
	pb.RegisterDatabaseServiceServer(s.grpc, s.dbs)
	pb.RegisterAdminServiceServer(s.grpc, &adminService{s: s})
	var peers []string
	for _, p := range cfg.Peers {
		peers = append(peers, p.Name)
	}
	s.recv = replica.NewReceiver(store, replica.ReceiverOptions{Node: cfg.Node, Peers: peers, Epochs: epochs, StepDown: s.stepDown,
		Diverged: s.diverged, NeedsImage: s.needsImage, OnFollow: s.followed, Downstream: s.downstream, Authorize: sec.shipsAs(), Logger: logger.Named("replica")})
	pb.RegisterReplicationServiceServer(s.grpc, s.recv)
	s.images = s.newShelf()
	chunk := min(replica.DefaultChunkBytes, int(cfg.MaxMessageBytes)/2)
	pb.RegisterImageServiceServer(s.grpc, replica.NewImageServer(s.images, chunk, s.epochs.Image, logger.Named("image")))
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	if s.metrics != nil {
		s.metrics.serve(s.log)
	}
	go func() {
		defer close(s.reaped)
		s.txs.reapLoop(s.quit)
	}()
	if held {
		s.keeping.Add(1)
		go s.keepEpoch()
	}
	return s, nil
}

// openStore restores the database from the newest checkpoint image and
// the log after it, and opens the log, at the configured durability. It
// returns what the image slots hold.
func openStore(cfg *conf.Config, sec *security, epochs *replica.Epochs, onSync func(int, time.Duration), logger hclog.Logger) (*durability.Store, checkpoint.Slots, error) {
	level, err := durability.ParseLevel(cfg.Durability)
	if err != nil {
		return nil, checkpoint.Slots{}, fmt.Errorf("server: %w", err)
	}
	floor, err := durability.ParseLevel(cfg.DurabilityFloor)
	if err != nil {
		return nil, checkpoint.Slots{}, fmt.Errorf("server: %w", err)
	}
	opts := durability.Options{
		Level: level, Floor: floor, Dirs: cfg.LogDirs(), SegmentSize: cfg.LogSegmentBytes, IgnoreCorruption: cfg.RecoveryIgnoreCorruption,
		MmapSyncInterval: cfg.MmapSyncInterval, RingBytes: cfg.LogRetentionBytes, Logger: logger.Named("durability"),
		Standby: cfg.Role != conf.RolePrimary, Epoch: epochs.Current(), OnSync: onSync, Prefill: true,
	}
	if level != durability.NoLog {
		// A node with a log keeps recent records in memory for the
		// standbys it ships to (or will, once promoted); one without
		// peers, from when it is given some (SetPeers).
		opts.RingBytes = 0
		if len(cfg.Peers) > 0 {
			opts.RingBytes = shipRing(cfg)
		}
	}
	if cfg.DataDir != "" {
		if opts.StopAfter, err = readTruncate(cfg.DataDir); err != nil {
			return nil, checkpoint.Slots{}, err
		}
	}
	if cfg.DataDir == "" {
		opts.Restore = restoreWith(cfg, sec, epochs, logger.Named("image"))
		store, err := durability.Open(opts)
		if err != nil {
			return nil, checkpoint.Slots{}, fmt.Errorf("server: %w", err)
		}
		return store, checkpoint.Slots{}, nil
	}
	if err := checkLogged(cfg); err != nil {
		return nil, checkpoint.Slots{}, err
	}
	if err := seed(cfg, sec, epochs, logger.Named("image")); err != nil {
		return nil, checkpoint.Slots{}, err
	}
	opts.Epoch = epochs.Current() // an image's history may have come with it
	store, slots, err := checkpoint.Restart(vfs.Default, checkpoint.Dir(cfg.DataDir), opts, logger.Named("checkpoint"))
	if err != nil {
		return nil, slots, fmt.Errorf("server: %w", err)
	}
	if err := keepLogged(cfg, level); err != nil {
		return nil, slots, errors.Join(err, store.Close())
	}
	return store, slots, nil
}

// shipRing returns the bytes of records a node with a log keeps in
// memory for its standbys: as many as log_retention_bytes, within
// minShipRing and maxShipRing.
func shipRing(cfg *conf.Config) int64 {
	return min(max(cfg.LogRetentionBytes, minShipRing), maxShipRing)
}

// The bounds of shipRing. Past the most, a standby catches up from the
// log (or needs an image); the least is there because the standbys follow
// the log's tail in memory, so even a node that keeps no log for them
// (log_retention_bytes 0) keeps some.
const (
	minShipRing = 16 << 20
	maxShipRing = 256 << 20
)

// unlock releases the data directory's lock, if held.
func (s *Server) unlock() error {
	if s.lock == nil {
		return nil
	}
	if err := s.lock.Close(); err != nil { // closing releases the flock
		return fmt.Errorf("server: unlock data_dir: %w", err)
	}
	return nil
}

// lockDataDir creates the data directory and takes an exclusive lock on
// its LOCK file, which names the holder's pid.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("server: create data_dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("server: open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		return nil, errors.Join(fmt.Errorf("server: data_dir %s is in use by another mmdbd (pid %s): %w", dir, strings.TrimSpace(string(holder)), err), f.Close())
	}
	if err := f.Truncate(0); err != nil {
		return nil, errors.Join(fmt.Errorf("server: write %s: %w", path, err), f.Close())
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		return nil, errors.Join(fmt.Errorf("server: write %s: %w", path, err), f.Close())
	}
	return f, nil
}

func (s *Server) serverOptions() []grpc.ServerOption {
	onPanic := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		s.log.Error("handler panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error in %s; the server logged it", method)
	})
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if s.metrics != nil {
		// Outermost: a panic counts as the INTERNAL its caller gets.
		unary = append(unary, s.metrics.grpc.UnaryServerInterceptor())
		stream = append(stream, s.metrics.grpc.StreamServerInterceptor())
	}
	if u, st := s.sec.interceptors(); u != nil {
		// Before any work, but counted in the metrics: refusals are
		// worth watching.
		unary = append(unary, u)
		stream = append(stream, st)
	}
	unary = append(unary, recovery.UnaryServerInterceptor(onPanic))
	stream = append(stream, recovery.StreamServerInterceptor(onPanic))
	if s.log.IsDebug() {
		// One line per call; only at debug level, as it costs every call.
		lg := logging.LoggerFunc(func(_ context.Context, _ logging.Level, msg string, fields ...any) {
			for i := 0; i+1 < len(fields); i += 2 {
				if k, ok := fields[i].(string); ok {
					fields[i] = strings.NewReplacer(".", "-", "_", "-").Replace(k)
				}
			}
			s.log.Debug(msg, fields...)
		})
		opts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
		unary = append(unary, logging.UnaryServerInterceptor(lg, opts...))
		stream = append(stream, logging.StreamServerInterceptor(lg, opts...))
	}
	return append(s.sec.creds(s.cfg.TLSClientAuth),
		// Calls run on a pool of goroutines whose stacks have already grown
		// to what a call needs; a fresh goroutine per call spent about a
		// tenth of the server's CPU growing its stack (runtime.morestack)
		// on every Get. When all are busy gRPC starts a goroutine anyway.
		// A write that waits for the log holds its worker for a sync, so
		// the pool is sized for the calls in flight, not for the cores.
		grpc.NumStreamWorkers(uint32(max(streamWorkers, 4*runtime.GOMAXPROCS(0)))),
		grpc.InitialWindowSize(pb.WindowBytes),
		grpc.InitialConnWindowSize(pb.ConnWindowBytes),
		// Peers ping to find dead links (replica.Dial).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: replica.KeepaliveTime / 2, PermitWithoutStream: true}),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.MaxRecvMsgSize(int(s.cfg.MaxMessageBytes)),
		grpc.MaxSendMsgSize(int(s.cfg.MaxMessageBytes)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	)
}

// serverKeepalive has the node ping each connection that goes quiet, and
// close one whose pings go unanswered: a peer or client that vanished
// without a word (power lost, a link that silently drops everything)
// ends its streams in seconds, not when TCP gives up. The log stream of a
// sender so lost would otherwise keep a standby from following another
// sender of the same epoch, and a client's Session would keep its
// transactions open.
var serverKeepalive = keepalive.ServerParameters{Time: replica.KeepaliveTime, Timeout: replica.KeepaliveTimeout}

// streamWorkers is the least number of pooled call goroutines: with
// fsync-log, 64 clients' writes all wait for syncs at once, and each
// call past the pool paid about 10 µs growing a fresh goroutine's stack.
const streamWorkers = 256

// Restarts delivers a request to restart the node (a new process on the
// same configuration), with the reason: its log diverged from its
// primary's and is to be cut at the next start. Shut the node down
// first.
func (s *Server) Restarts() <-chan string { return s.restart }

// DB returns the node's database.
func (s *Server) DB() *mem.DB { return s.db }

// WaitDurable waits until the commit at lsn meets the node's durability,
// as a reply to a client would: for callers that commit on DB directly.
func (s *Server) WaitDurable(ctx context.Context, lsn uint64) error {
	return s.store.Wait(ctx, lsn, s.store.Level())
}

// LogStats returns what the node's redo log has written (zero without
// one).
func (s *Server) LogStats() redolog.Stats { return s.store.LogStats() }

// Serve serves on lis until Shutdown; it returns nil after a shutdown.
func (s *Server) Serve(lis net.Listener) error {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(pb.DatabaseService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.roleMu.Lock()
	s.addr = reachableAddr(lis.Addr())
	err := s.startSender()
	role := s.role
	s.roleMu.Unlock()
	if err != nil {
		return err
	}
	// On every role: a standby's sync_standbys takes effect when it is
	// promoted, too late to find a typo.
	s.warnNoPeers(s.syncNow())
	s.log.Info("serving", "addr", lis.Addr().String(), "node", s.cfg.Node, "role", role, "epoch", s.epochs.Current(), "durability", s.cfg.Durability,
		"sync-mode", s.syncNow().Mode, "version", version())
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("server: serve on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Shutdown stops the node gracefully: health turns NOT_SERVING, new calls
// are refused, Session streams end after the message in hand, in-flight
// calls finish until ctx is done (then they are cut off), the metrics
// endpoint stops, open transactions are rolled back and the data
// directory is unlocked.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		close(s.quit)
		s.recv.Close() // the primary's link would hold GracefulStop up
		done := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.log.Warn("shutdown timed out; cutting off in-flight calls")
			s.grpc.Stop()
			<-done
		}
		<-s.reaped
		s.follows.Wait()
		s.keeping.Wait()
		if s.metrics != nil {
			err = s.metrics.close()
		}
		// Once the calls are done: commits in them wait for their standbys.
		if snd := s.swapSender(&s.sender, nil); snd != nil {
			snd.Close()
		}
		if relay := s.swapSender(&s.relay, nil); relay != nil {
			relay.Close()
		}
		if n := s.txs.rollbackAll(); n > 0 {
			s.log.Info("rolled back open transactions at shutdown", "count", n)
		}
		err = errors.Join(err, s.images.Close())
		s.markMu.Lock()
		restarting := s.restarting
		s.markMu.Unlock()
		if s.ckpt != nil {
			s.ckpt.Close() // a promotion still under way starts none
			// A clean shutdown leaves an image of everything, so the next
			// start replays no log; but not one holding the records the
			// next start cuts from the log.
			if !restarting {
				switch _, cerr := s.ckpt.Run(context.Background()); {
				case errors.Is(cerr, checkpoint.ErrFrozen):
					// Diverged records it could not set aside: no image
					// may hold them.
					s.log.Warn("no checkpoint at shutdown: checkpoints are stopped while this node holds records diverged from its primary's", "last-lsn", s.db.LastLSN())
				case cerr != nil:
					err = errors.Join(err, fmt.Errorf("server: checkpoint at shutdown: %w", cerr))
				}
			}
		}
		err = errors.Join(err, s.store.Close(), s.unlock())
		s.log.Info("stopped", "last-lsn", s.db.LastLSN(), "durable-lsn", s.store.DurableLSN())
	})
	return err
}

// reachableAddr is where clients reach a node listening on addr: a
// wildcard host (0.0.0.0, ::) is replaced by the machine's name, which
// a standby names in the errors it returns for writes.
func reachableAddr(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return addr.String()
	}
	host, err := os.Hostname()
	if err != nil {
		return addr.String()
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}

// version returns the module version and VCS revision the binary was built
// from.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
