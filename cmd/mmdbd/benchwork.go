package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/client"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/server"
	"github.com/mmdb/mmdb/workload/tatp"
)

var tatpKinds = func() []string {
	var k []string
	for t := tatp.Tx(0); t < tatp.NumTx; t++ {
		k = append(k, t.String())
	}
	return k
}()

// tatpMix is each of tatpKinds' share of the mix.
var tatpMix = func() []float64 {
	var m []float64
	for t := tatp.Tx(0); t < tatp.NumTx; t++ {
		m = append(m, t.Share())
	}
	return m
}()

// kvMix is the kv workload's shares of gets and puts.
func kvMix(o benchOpts) []float64 { return []float64{o.readRatio, 1 - o.readRatio} }

// kvTable is the kv workload's table: a uint64 key and a bytes value.
func kvTable(valueSize int) mem.TableDef {
	return mem.TableDef{
		Name:       "kv",
		Columns:    []mem.ColumnDef{{Name: "k", Type: mem.TypeUint64}, {Name: "v", Type: mem.TypeBytes, MaxLen: max(valueSize, 1)}},
		PrimaryKey: []string{"k"},
	}
}

// kvDraw draws the kv workload's next operation: a get, or a put with a
// fresh value.
type kvDraw struct {
	r     *rand.Rand
	o     benchOpts
	value []byte
}

func newKVDraw(o benchOpts, client int) *kvDraw {
	return &kvDraw{r: rand.New(rand.NewPCG(o.seed, uint64(client)+1)), o: o, value: make([]byte, o.valueSize)}
}

// next returns the key and whether the operation is a get.
func (d *kvDraw) next() (uint64, bool) {
	k := 1 + d.r.Uint64N(d.o.keys)
	if d.r.Float64() < d.o.readRatio {
		return k, true
	}
	for i := range d.value {
		d.value[i] = byte(d.r.Uint32())
	}
	return k, false
}

// inprocessWorkload runs against an engine in this process, configured as
// a node would be by the node flags.
func inprocessWorkload(ctx context.Context, o benchOpts, flags *conf.Flags, stderr io.Writer) (*workload, error) {
	cfg, err := conf.Load("", os.Environ(), flags)
	if err != nil {
		return nil, err
	}
	// The node in this process serves no one: it ships its log to no
	// standby, so its commits would not wait as the sync settings say.
	if len(cfg.Peers) > 0 {
		return nil, errors.New("bench: -inprocess runs a node that ships its log to no standby; -peer and the sync settings that wait on the peers would be taken without effect: run against a node over gRPC instead")
	}
	cleanup := func() error { return nil }
	if !cfg.IsSet("data_dir") {
		if cfg.DataDir, cleanup, err = benchDataDir(); err != nil {
			return nil, err
		}
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		return nil, errors.Join(err, cleanup())
	}
	// Shut down whole once the run was interrupted too (ctx is done).
	closeAll := func() error { return errors.Join(srv.Shutdown(context.WithoutCancel(ctx)), cleanup()) }
	db := srv.DB()
	// loaded waits until the load is in the log: the run's log counts
	// start when the run does, and must not take in the load's last
	// batches, still on their way to the log. A signal that ends the wait
	// ends the run, which then says it was interrupted.
	loaded := func() error {
		if err := srv.WaitDurable(ctx, db.LastLSN()); err != nil && ctx.Err() == nil {
			return fmt.Errorf("bench: wait for the load to reach the log: %w", err)
		}
		return nil
	}
	switch o.workload {
	case "tatp":
		d, err := tatp.Create(db, o.subscribers)
		if err == nil {
			bar := loadBar(stderr, o.subscribers, "subscribers")
			err = d.Load(runtime.GOMAXPROCS(0), o.seed, func(n uint64) { _ = bar.Set64(int64(n)) })
		}
		if err == nil {
			err = loaded()
		}
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		return &workload{kinds: tatpKinds, mix: tatpMix, close: closeAll, subscribers: d.P, logStats: srv.LogStats, durability: cfg.Durability, newOp: func(i int) (op, error) {
			c := d.NewClient(o.seed + uint64(i) + 1)
			c.Wait = srv.WaitDurable
			return func(ctx context.Context) opResult {
				t := c.Next()
				ok, err := c.Run(ctx, t)
				return opResult{kind: int(t), n: 1, ok: b2i(ok), err: err}
			}, nil
		}}, nil
	default: // kv
		t, err := db.CreateTable(kvTable(o.valueSize))
		if err == nil {
			err = loadKVInProcess(db, t, o, stderr)
		}
		if err == nil {
			err = loaded()
		}
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		return &workload{kinds: []string{"get", "put"}, mix: kvMix(o), close: closeAll, logStats: srv.LogStats, durability: cfg.Durability, newOp: func(i int) (op, error) {
			d := newKVDraw(o, i)
			key := make([]mem.Value, 1)
			row := make([]mem.Value, 2)
			return func(ctx context.Context) opResult {
				k, get := d.next()
				key[0] = mem.Uint64(k)
				row[0], row[1] = mem.Uint64(k), mem.Bytes(d.value)
				// Retry conflicts, as the server does for a single write.
				for {
					tx := db.Begin()
					var err error
					if get {
						_, _, err = tx.Get(t, key)
					} else {
						err = tx.Upsert(t, row)
					}
					if err == nil {
						var lsn uint64
						if lsn, err = tx.Commit(); err == nil && lsn != 0 {
							err = srv.WaitDurable(ctx, lsn)
						}
					} else {
						tx.Rollback()
					}
					if !errors.Is(err, mem.ErrConflict) {
						return opResult{kind: b2i(!get), n: 1, ok: b2i(err == nil), err: err}
					}
				}
			}, nil
		}}, nil
	}
}

func loadKVInProcess(db *mem.DB, t *mem.Table, o benchOpts, stderr io.Writer) error {
	bar := loadBar(stderr, o.keys, "keys")
	r := rand.New(rand.NewPCG(o.seed, 0))
	value := make([]byte, o.valueSize)
	for start := uint64(1); start <= o.keys; start += 1000 {
		tx := db.Begin()
		end := min(start+999, o.keys)
		for k := start; k <= end; k++ {
			for i := range value {
				value[i] = byte(r.Uint32())
			}
			if err := tx.Upsert(t, []mem.Value{mem.Uint64(k), mem.Bytes(value)}); err != nil {
				tx.Rollback()
				return fmt.Errorf("bench: load key %d: %w", k, err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			return fmt.Errorf("bench: load keys %d-%d: %w", start, end, err)
		}
		_ = bar.Set64(int64(end))
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// grpcWorkload runs against a node over gRPC, one connection per client
// so that clients share no transport state, as separate processes would.
func grpcWorkload(ctx context.Context, o benchOpts, stderr io.Writer) (*workload, error) {
	var conns []*grpc.ClientConn
	var clients []*client.Client
	var sessions []*client.Session
	closeAll := func() error {
		errs := []error{closeSessions(sessions, o.addr)}
		for _, c := range clients {
			errs = append(errs, c.Close()) // says which connection
		}
		for _, c := range conns {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("bench: close a connection to %s: %w", o.addr, err))
			}
		}
		return errors.Join(errs...)
	}
	dial := func() (*grpc.ClientConn, error) {
		conn, err := o.conn.dial(o.addr)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		conns = append(conns, conn)
		return conn, nil
	}
	// session opens a Session stream on its own connection.
	session := func() (*client.Session, error) {
		opts, err := o.conn.clientOptions([]string{o.addr})
		if err != nil {
			return nil, err
		}
		c, err := client.New(opts)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
		s, err := c.OpenSession(ctx)
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, s)
		return s, nil
	}
	setup, err := dial()
	if err != nil {
		return nil, err
	}
	durability, syncMode, err := nodeSettings(ctx, setup, o.addr, stderr)
	if err != nil {
		return nil, errors.Join(err, closeAll())
	}
	w, err := grpcOps(ctx, o, pb.NewDatabaseServiceClient(setup), dial, session, closeAll, stderr)
	if err != nil {
		return nil, err
	}
	w.durability, w.syncMode = durability, syncMode
	return w, nil
}

// closeSessions closes the sessions together, each waiting for the node
// to answer what it still owes and end the stream until benchGrace has
// passed, the same for all: sessions the node left hung hold the end of
// the run for one grace, not one each.
func closeSessions(sessions []*client.Session, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), benchGrace)
	defer cancel()
	errs := make([]error, len(sessions))
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			if err := s.CloseContext(ctx); err != nil {
				errs[i] = fmt.Errorf("bench: close a session with %s: %w", addr, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nodeSettings returns the node's durability and sync mode, from its
// Status; empty, with a warning on stderr, if the node refuses Status to
// this caller (an auth token or certificate without the admin role).
func nodeSettings(ctx context.Context, conn *grpc.ClientConn, addr string, stderr io.Writer) (durability, syncMode string, err error) {
	st, err := pb.NewAdminServiceClient(conn).Status(ctx, &pb.StatusRequest{})
	switch grpcstatus.Code(err) {
	case codes.OK:
		return st.GetDurability(), st.GetSyncMode(), nil
	case codes.PermissionDenied, codes.Unauthenticated:
		fmt.Fprintf(stderr, "warning: %s refused Status (%v): the report will not state the node's durability and sync mode\n", addr, err)
		return "", "", nil
	}
	return "", "", fmt.Errorf("bench: the status of %s: %w", addr, err)
}

// grpcOps prepares the workload's data on the node, if it needs any, and
// its ops: each client's on its own connection (dial) or session.
func grpcOps(ctx context.Context, o benchOpts, db pb.DatabaseServiceClient, dial func() (*grpc.ClientConn, error),
	session func() (*client.Session, error), closeAll func() error, stderr io.Writer) (*workload, error) {
	switch o.workload {
	case "ping":
		return &workload{kinds: []string{"ping"}, close: closeAll, newOp: func(int) (op, error) {
			conn, err := dial()
			if err != nil {
				return nil, err
			}
			h := healthpb.NewHealthClient(conn)
			req := &healthpb.HealthCheckRequest{}
			return func(ctx context.Context) opResult {
				_, err := h.Check(ctx, req)
				return opResult{n: 1, ok: b2i(err == nil), err: err}
			}, nil
		}}, nil
	case "tatp":
		p, err := prepareRemoteTATP(ctx, db, o, stderr)
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
		return &workload{kinds: tatpKinds, mix: tatpMix, close: closeAll, subscribers: p, newOp: func(i int) (op, error) {
			var call tatp.Caller
			if o.api == "session" {
				s, err := session()
				if err != nil {
					return nil, err
				}
				call = s
			} else {
				conn, err := dial()
				if err != nil {
					return nil, err
				}
				call = tatp.Unary(pb.NewDatabaseServiceClient(conn))
			}
			c := tatp.NewRemoteClient(p, o.seed+uint64(i)+1, call)
			return func(ctx context.Context) opResult {
				t := c.Next()
				ok, err := c.Run(ctx, t)
				return opResult{kind: int(t), n: 1, ok: b2i(ok), err: err}
			}, nil
		}}, nil
	default: // kv
		if err := prepareRemoteKV(ctx, db, o, stderr); err != nil {
			return nil, errors.Join(err, closeAll())
		}
		return &workload{kinds: []string{"get", "put"}, mix: kvMix(o), close: closeAll, newOp: func(i int) (op, error) {
			if o.api == "session" {
				s, err := session()
				if err != nil {
					return nil, err
				}
				return kvSessionOp(o, i, s), nil
			}
			conn, err := dial()
			if err != nil {
				return nil, err
			}
			return kvUnaryOp(o, i, pb.NewDatabaseServiceClient(conn)), nil
		}}, nil
	}
}

// prepareRemoteTATP loads TATP unless the node already holds it, and
// returns the number of subscribers. A load that did not finish is
// refused, not benchmarked.
func prepareRemoteTATP(ctx context.Context, db pb.DatabaseServiceClient, o benchOpts, stderr io.Writer) (uint64, error) {
	p, err := tatp.RemoteSubscribers(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("bench: the TATP database on %s: %w", o.addr, err)
	}
	if p > 0 {
		fmt.Fprintf(stderr, "using the %d subscribers already loaded on %s\n", p, o.addr)
		return p, nil
	}
	if err := tatp.CreateRemote(ctx, db); err != nil {
		return 0, err
	}
	bar := loadBar(stderr, o.subscribers, "subscribers")
	if err := tatp.LoadRemote(ctx, db, o.subscribers, runtime.GOMAXPROCS(0), o.seed, func(n uint64) { _ = bar.Set64(int64(n)) }); err != nil {
		return 0, err
	}
	return o.subscribers, nil
}

// prepareRemoteKV creates and loads the kv table unless it exists.
func prepareRemoteKV(ctx context.Context, db pb.DatabaseServiceClient, o benchOpts, stderr io.Writer) error {
	if t, err := db.DescribeTable(ctx, &pb.DescribeTableRequest{Table: "kv"}); err == nil {
		tables, err := db.ListTables(ctx, &pb.ListTablesRequest{})
		if err != nil {
			return fmt.Errorf("bench: list tables on %s: %w", o.addr, err)
		}
		i := slices.IndexFunc(tables.GetTables(), func(t *pb.TableStatus) bool { return t.GetName() == "kv" })
		if cols := t.GetTable().GetColumns(); len(cols) != 2 || int(cols[1].GetMaxLength()) < o.valueSize || i < 0 || tables.GetTables()[i].GetRows() != o.keys {
			return fmt.Errorf("bench: %s already has a kv table that does not match -keys %d -value-size %d; drop it (mmdbd shell -c \"drop table kv\") to reload", o.addr, o.keys, o.valueSize)
		}
		fmt.Fprintf(stderr, "using the kv table already on %s\n", o.addr)
		return nil
	}
	if _, err := db.CreateTable(ctx, &pb.CreateTableRequest{Table: pbmem.Table(kvTable(o.valueSize))}); err != nil {
		return fmt.Errorf("bench: create kv: %w", err)
	}
	bar := loadBar(stderr, o.keys, "keys")
	r := rand.New(rand.NewPCG(o.seed, 0))
	value := make([]byte, o.valueSize)
	// Batches of about 1 MiB, well under the default max_message_bytes.
	per := uint64(max(1, (1<<20)/(o.valueSize+32)))
	for start := uint64(1); start <= o.keys; start += per {
		req := &pb.CommitRequest{}
		end := min(start+per-1, o.keys)
		for k := start; k <= end; k++ {
			for i := range value {
				value[i] = byte(r.Uint32())
			}
			req.Operations = append(req.Operations, &pb.Operation{Op: &pb.Operation_Upsert{Upsert: &pb.UpsertRequest{
				Table: "kv", Row: &pb.Row{Values: []*pb.Value{client.Uint64(k), client.Bytes(slices.Clone(value))}},
			}}})
		}
		if _, err := db.Commit(ctx, req); err != nil {
			return fmt.Errorf("bench: load keys %d-%d: %w", start, end, err)
		}
		_ = bar.Set64(int64(end))
	}
	return nil
}

func kvRequest(d *kvDraw) (*pb.Request, bool) {
	k, get := d.next()
	if get {
		return &pb.Request{Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "kv", Key: []*pb.Value{client.Uint64(k)}}}}, true
	}
	row := &pb.Row{Values: []*pb.Value{client.Uint64(k), client.Bytes(slices.Clone(d.value))}}
	return &pb.Request{Op: &pb.Request_Upsert{Upsert: &pb.UpsertRequest{Table: "kv", Row: row}}}, false
}

func kvUnaryOp(o benchOpts, i int, db pb.DatabaseServiceClient) op {
	d := newKVDraw(o, i)
	return func(ctx context.Context) opResult {
		req, get := kvRequest(d)
		var err error
		if get {
			_, err = db.Get(ctx, req.GetGet())
		} else {
			_, err = db.Upsert(ctx, req.GetUpsert())
		}
		return opResult{kind: b2i(!get), n: 1, ok: b2i(err == nil), err: err}
	}
}

// kvSessionOp keeps o.window messages of o.pipeline requests in flight on
// its session; each op waits for the oldest message and sends a new one.
// Its kind is the message's first request's, its latency the message's
// from send to replies.
func kvSessionOp(o benchOpts, i int, s *client.Session) op {
	d := newKVDraw(o, i)
	type flight struct {
		p    *client.Pending
		sent time.Time
		kind int
	}
	var inflight []flight
	send := func(ctx context.Context) {
		reqs := make([]*pb.Request, o.pipeline)
		kind := 0
		for j := range reqs {
			var get bool
			reqs[j], get = kvRequest(d)
			if j == 0 {
				kind = b2i(!get)
			}
		}
		inflight = append(inflight, flight{s.StartContext(ctx, reqs), time.Now(), kind})
	}
	return func(ctx context.Context) opResult {
		for len(inflight) < o.window {
			send(ctx)
		}
		f := inflight[0]
		inflight = inflight[1:]
		replies, err := f.p.WaitContext(ctx)
		res := opResult{kind: f.kind, n: o.pipeline, lat: time.Since(f.sent), err: err}
		if err != nil {
			return res
		}
		for _, r := range replies {
			if err := client.ReplyError(r); err != nil {
				res.err = err
				res.failed++
				continue
			}
			res.ok++
		}
		return res
	}
}
