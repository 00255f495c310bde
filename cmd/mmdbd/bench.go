package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/logging"
)

// benchOpts are mmdbd bench's flags.
type benchOpts struct {
	workload    string
	addr        string
	conn        *connFlags // over gRPC: the credentials
	inprocess   bool
	api         string
	clients     int
	duration    time.Duration
	warmup      time.Duration
	subscribers uint64
	readRatio   float64
	keys        uint64
	valueSize   int
	pipeline    int
	window      int
	seed        uint64
	rate        float64
	json        bool
}

// op does one unit of a client's work: one transaction, or one pipelined
// message of requests.
type op func(ctx context.Context) opResult

// opResult is what an op did: the kind of work (an index into the
// workload's kinds), how many operations it was and how many succeeded.
// An error is an unexpected failure; expected ones (TATP's) only lower ok.
// With an error, failed is how many of the n operations failed with one
// (a pipelined message whose replies failed in part); 0 means all of
// them. lat, when set, is the latency the op measured itself (a pipelined
// message's, from its send); otherwise the call is timed.
type opResult struct {
	kind, n, ok, failed int
	lat                 time.Duration
	err                 error
}

// workload is a prepared benchmark: its kinds of operation, one op per
// client, and what to release at the end.
type workload struct {
	kinds []string
	// mix is each kind's share of the ops, which a paced run's missed
	// ops (that never drew their kind) are attributed by; nil for equal
	// shares.
	mix   []float64
	newOp func(client int) (op, error)
	close func() error
	// subscribers is TATP's P: what the clients draw from, which over
	// gRPC is what the node already holds when it holds TATP.
	subscribers uint64
	// The node's durability; over gRPC, from its Status, with its sync
	// mode (empty if the node refused Status to the caller).
	durability, syncMode string
	// In process only: its log's counts.
	logStats func() logging.Stats
}

// bench runs a workload and reports throughput and latency.
func bench(args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("mmdbd bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOpts
	fs.StringVar(&o.workload, "workload", "tatp", "tatp, kv (single-row get/put) or ping (grpc.health.v1 Check, the transport baseline)")
	fs.StringVar(&o.addr, "addr", "", "the node to load over gRPC (default: -config's listen address, else "+defaultAddr+"; ignored with -inprocess)")
	fs.BoolVar(&o.inprocess, "inprocess", false, "run against the engine in this process, with the node flags below, instead of over gRPC")
	fs.StringVar(&o.api, "api", "unary", "over gRPC: unary (one RPC per call) or session (a Session stream per client)")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to measure")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "how long to run before measuring")
	fs.Uint64Var(&o.subscribers, "subscribers", 100000, "tatp: subscribers to load (an existing TATP database is used as it is)")
	fs.Float64Var(&o.readRatio, "read-ratio", 0.8, "kv: the share of gets; the rest are puts")
	fs.Uint64Var(&o.keys, "keys", 100000, "kv: keys to load and draw from")
	fs.IntVar(&o.valueSize, "value-size", 100, "kv: bytes per value")
	fs.IntVar(&o.pipeline, "pipeline", 16, "kv with -api session: requests per message")
	fs.IntVar(&o.window, "window", 4, "kv with -api session: messages in flight per client")
	fs.Uint64Var(&o.seed, "seed", 1, "the random seed of the load and the clients")
	fs.Float64Var(&o.rate, "rate", 0, "units of work per second, all clients together (0: as fast as they go); latency counts from when each was due, and those due but not started by the end are reported as missed and in the latencies, as waiting until the end")
	fs.BoolVar(&o.json, "json", false, "print the result as one JSON object")
	own := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { own[f.Name] = true })
	flags := conf.RegisterFlags(fs)
	node := map[string]bool{} // the flags RegisterFlags added
	fs.VisitAll(func(f *flag.Flag) { node[f.Name] = !own[f.Name] })
	o.conn = addConnFlags(fs, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !o.inprocess {
		if err := clientFlagsOnly(fs, node); err != nil {
			return err
		}
		// Over gRPC the node flags -tls-*-file are the client's.
		tlsFiles := conf.DefaultConfig()
		if err := flags.Apply(tlsFiles); err != nil {
			return err
		}
		o.conn.caFile, o.conn.certFile, o.conn.keyFile = tlsFiles.TLSCAFile, tlsFiles.TLSCertFile, tlsFiles.TLSKeyFile
		if err := o.conn.load(); err != nil {
			return err
		}
		if o.addr, err = o.conn.addr(o.addr); err != nil {
			return err
		}
	} else if o.conn.config != "" {
		return errors.New("-config names the node to load over gRPC; with -inprocess give the node's flags")
	}
	if err := o.check(); err != nil {
		return err
	}
	// SIGINT or SIGTERM ends the run early and closes the workload (an
	// in-process run's scratch data directory goes); a second one ends the
	// process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	var w *workload
	if o.inprocess {
		w, err = inprocessWorkload(ctx, o, flags, stderr)
	} else if w, err = grpcWorkload(ctx, o, stderr); err != nil {
		err = o.conn.explain(o.addr, err)
	}
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, w.close()) }()
	res, err := runBench(ctx, o, w, stderr)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted: the run was stopped before its end, and nothing is reported")
	}
	res.Durability, res.SyncMode, res.Subscribers = w.durability, w.syncMode, w.subscribers
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.print(stdout)
	}
	if err != nil {
		return fmt.Errorf("print the result: %w", err)
	}
	if res.Errors > 0 {
		err = fmt.Errorf("%d operations failed; the last: %s", res.Errors, res.LastError)
	}
	return err
}

// clientFlagsOnly refuses the node flags given when bench runs over gRPC,
// but for -tls-ca-file, -tls-cert-file and -tls-key-file (the client's
// credentials then): the node runs as it is configured, and a flag such
// as -durability fsync-log would be taken without effect.
func clientFlagsOnly(fs *flag.FlagSet, node map[string]bool) error {
	var given []string
	fs.Visit(func(f *flag.Flag) {
		if node[f.Name] && !slices.Contains([]string{"tls-ca-file", "tls-cert-file", "tls-key-file"}, f.Name) {
			given = append(given, "-"+f.Name)
		}
	})
	if len(given) == 0 {
		return nil
	}
	fmt.Fprintf(fs.Output(), "mmdbd bench: %s: node flags, for -inprocess; over gRPC the node runs as it is configured\n", strings.Join(given, ", "))
	return errUsage
}

func (o *benchOpts) check() error {
	switch {
	case !slices.Contains([]string{"tatp", "kv", "ping"}, o.workload):
		return fmt.Errorf("-workload %q: one of tatp, kv, ping", o.workload)
	case o.api != "unary" && o.api != "session":
		return fmt.Errorf("-api %q: unary or session", o.api)
	case o.inprocess && o.workload == "ping":
		return errors.New("-workload ping measures the transport; it has no -inprocess form")
	case o.workload == "ping" && o.api == "session":
		return errors.New("-workload ping is a unary health check; it has no session form")
	case o.clients < 1 || o.duration <= 0 || o.warmup < 0:
		return errors.New("-clients must be at least 1, -duration positive and -warmup at least 0")
	case !(o.rate >= 0) || math.IsInf(o.rate, 0): // NaN fails every comparison
		return fmt.Errorf("-rate %g: a number, at least 0", o.rate)
	case o.rate > 0 && !(o.perClient() >= 1 && o.perClient() <= float64(math.MaxInt64/o.clients)):
		return fmt.Errorf("-rate %g: out of range for %d clients: each would run an op every %gs, and that must be between 1ns and %s",
			o.rate, o.clients, o.perClient()/1e9, time.Duration(math.MaxInt64/o.clients))
	case o.rate > 0 && o.api == "session":
		return errors.New("-rate paces unary calls; a session pipelines its own")
	case !(o.readRatio >= 0 && o.readRatio <= 1):
		return fmt.Errorf("-read-ratio %g: between 0 and 1", o.readRatio)
	case o.keys < 1 || o.subscribers < 1 || o.valueSize < 0 || o.pipeline < 1 || o.window < 1:
		return errors.New("-keys, -subscribers, -pipeline and -window must be at least 1, -value-size at least 0")
	}
	return nil
}

// perClient is, with -rate, the nanoseconds between one client's ops.
func (o *benchOpts) perClient() float64 {
	return float64(o.clients) / o.rate * float64(time.Second)
}

func (o *benchOpts) mode() string {
	if o.inprocess {
		return "inprocess"
	}
	return "grpc"
}

// loadBar is a progress bar on stderr for loading n items.
func loadBar(stderr io.Writer, n uint64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(int64(n),
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("loading "+what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
	)
}

// clientStats is what one client measured.
type clientStats struct {
	kinds   []latencies // per kind
	ops, ok []int64
	errors  int64
	lastErr error
	// The operations that failed in the measured time, and their
	// latencies: apart from those that returned without an error.
	failed    int64
	failedLat latencies
	// With -rate: how many ops started in the measured time, and of
	// those how many were due in the warm-up (carried); how many due in
	// the measured time had not started by the end, and the latencies
	// of those (how long each had waited when the client stopped), also
	// split among the kinds by the mix, as an op draws its kind only when
	// it runs (attributeMissed).
	started, carried, missed int64
	missedLat                latencies
	missedKinds              []latencies
	missedOf                 []int64 // per kind
}

// benchGrace is how long after the run's end an operation may still
// run before it is cancelled and counted as failed, and how long the
// sessions, closed at the end, wait for the node to end them: a node that
// never answers must not keep bench from ending and reporting.
var benchGrace = 10 * time.Second

// benchSleep waits d and returns true, or false once ctx ends first. A
// paced client waits with it for its next op; tests make it wake late.
var benchSleep = func(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runBench runs every client for the warmup, then measures for the
// duration, printing a progress line on stderr each second.
func runBench(ctx context.Context, o benchOpts, w *workload, stderr io.Writer) (*benchResult, error) {
	ops := make([]op, o.clients)
	for i := range ops {
		var err error
		if ops[i], err = w.newOp(i); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	measureFrom, end := start.Add(o.warmup), start.Add(o.warmup+o.duration)
	stats := make([]*clientStats, o.clients)
	// The log's counts cover the measured time, as the ops do.
	var logBefore logging.Stats
	var logAt *time.Timer
	logTaken := make(chan struct{})
	takeLog := func() {
		logBefore = w.logStats()
		close(logTaken)
	}
	switch {
	case w.logStats == nil:
	case o.warmup == 0:
		takeLog()
	default:
		logAt = time.AfterFunc(time.Until(measureFrom), takeLog)
	}
	// The ops' context ends benchGrace after the run's end, so that one
	// that never returns fails instead of holding the run.
	opCtx, cancelOps := context.WithCancel(ctx)
	defer cancelOps()
	overdue := time.AfterFunc(time.Until(end)+benchGrace, cancelOps)
	defer overdue.Stop()
	var done atomic.Int64
	var wg sync.WaitGroup
	for i := range ops {
		st := &clientStats{kinds: make([]latencies, len(w.kinds)), ops: make([]int64, len(w.kinds)), ok: make([]int64, len(w.kinds))}
		for k := range st.kinds {
			st.kinds[k].init() // not while the run is measured
		}
		st.failedLat.init()
		if o.rate > 0 {
			st.missedLat.init()
		}
		stats[i] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			// With -rate, each client's work is due at a fixed interval
			// (staggered between clients), and waits for it; one started
			// late counts its latency from when it was due, so a server
			// that falls behind shows in the latency instead of slowing the
			// load. Whether an op is measured goes by when it started, so
			// tx/s is what ran in the measured time, not what was due (an
			// overloaded node's throughput, not 0), and a client behind
			// its schedule stops at the end all the same.
			// The ops due in the measured time that had not started by the
			// end are the backlog the node left: they are counted as
			// missed, not dropped unseen, and are in the latencies with how
			// long each had waited for its start when the client stopped
			// (what it would have taken at the least), so that a stall at
			// the end shows as one in the middle does.
			// A sleeping client that wakes late (the timer's resolution, up
			// to a millisecond or so, or a stall of the process) counts
			// from when its op was due all the same: what held it up is
			// not told apart from the node's own stalls, so none is hidden.
			var every time.Duration
			due := start
			if o.rate > 0 {
				every = time.Duration(o.perClient()) // check keeps it in range
				due = start.Add(every * time.Duration(i) / time.Duration(o.clients))
			}
			for {
				now := time.Now()
				t0 := now // what the latency counts from
				if every > 0 {
					if !due.Before(end) {
						return
					}
					if wait := due.Sub(now); wait > 0 {
						if !benchSleep(ctx, wait) {
							return
						}
						now = time.Now()
					}
				}
				if !now.Before(end) || ctx.Err() != nil {
					if every > 0 {
						var first time.Time
						first, st.missed = dueIn(due, every, measureFrom, end)
						st.missedLat.recordEvery(now.Sub(first), every, st.missed)
						st.missedKinds, st.missedOf = make([]latencies, len(w.kinds)), make([]int64, len(w.kinds))
						attributeMissed(st.missedKinds, st.missedOf, w.mix, now.Sub(first), every, st.missed,
							rand.New(rand.NewPCG(o.seed, 0x6d6973736564^uint64(i))))
					}
					return
				}
				// An op is measured if it started in the measured time,
				// paced or not: a paced one due in the warm-up that a
				// backlog held into the measured time is carried.
				measured := !now.Before(measureFrom)
				if every > 0 {
					// A paced op is one operation (-rate refuses -api
					// session, whose messages hold several), so started
					// adds up with the kinds' counts and failed.count.
					if measured {
						st.started++
						if due.Before(measureFrom) {
							st.carried++
						}
					}
					t0, due = due, due.Add(every)
				}
				r := ops[i](opCtx)
				if r.lat == 0 {
					r.lat = time.Since(t0)
				}
				if r.err != nil && opCtx.Err() != nil && ctx.Err() == nil {
					r.err = fmt.Errorf("cancelled, still running %s after the run's end: %w", benchGrace, r.err)
				}
				// A failure counts in the warm-up too: the run's numbers
				// stand only if nothing failed. In the measured time its
				// latency is kept apart, so that ops that fail slowly (or
				// fast) neither hide from the report nor skew the
				// latencies of those that returned. A message that failed
				// in part counts its other operations as they returned.
				if r.err != nil {
					failed := r.n
					if r.failed > 0 {
						failed = r.failed
					}
					st.errors += int64(failed)
					st.lastErr = r.err
					if !measured {
						continue
					}
					st.failed += int64(failed)
					st.failedLat.record(r.lat, uint64(failed))
					if r.n -= failed; r.n == 0 {
						continue
					}
				}
				if !measured {
					continue
				}
				// The op's latency stands for each of its operations.
				st.kinds[r.kind].record(r.lat, uint64(r.n))
				st.ops[r.kind] += int64(r.n)
				st.ok[r.kind] += int64(r.ok)
				done.Add(int64(r.n))
			}
		}()
	}
	stop := make(chan struct{})
	var pw sync.WaitGroup
	pw.Add(1)
	go func() {
		defer pw.Done()
		progress(stderr, o, start, measureFrom, end, &done, stop)
	}()
	wg.Wait()
	close(stop)
	pw.Wait()
	res := summarize(o, w.kinds, stats, o.duration)
	// A timer that had not fired: the run was interrupted in its warm-up.
	if w.logStats != nil && (logAt == nil || !logAt.Stop()) {
		<-logTaken
		res.Log = newLogResult(logBefore, w.logStats())
	}
	return res, nil
}

// dueIn is how many of the times next, next+every, next+2*every, ...
// fall in [from, to), and the first of them.
func dueIn(next time.Time, every time.Duration, from, to time.Time) (time.Time, int64) {
	if next.Before(from) {
		next = next.Add((from.Sub(next) + every - 1) / every * every)
	}
	if !next.Before(to) {
		return next, 0
	}
	return next, int64((to.Sub(next) + every - 1) / every)
}

// attributeMissed splits a client's n missed ops, due every apart, the
// first of which had waited top when the run ended, among the kinds by
// their shares of the mix (equal shares if mix is nil): a missed op never
// drew its kind, as an op draws it when it runs. Each kind gets its share
// of n rounded down, and the few left over are drawn from the mix with
// r, so that a client that missed one op does not always give it to the
// same kind. A kind's ops are recorded in its latencies (kinds) spread
// evenly over the waits of all n, as its share of the mix would be, and
// counted in missed.
func attributeMissed(kinds []latencies, missed []int64, mix []float64, top, every time.Duration, n int64, r *rand.Rand) {
	if len(mix) != len(kinds) {
		mix = make([]float64, len(kinds))
		for k := range mix {
			mix[k] = 1
		}
	}
	var sum float64
	for _, s := range mix {
		sum += s
	}
	counts := make([]int64, len(kinds))
	left := n
	for k, s := range mix {
		counts[k] = min(int64(float64(n)*s/sum), left)
		left -= counts[k]
	}
	for ; left > 0; left-- {
		x, pick := r.Float64()*sum, -1
		for k, s := range mix {
			if s > 0 {
				if pick = k; x < s {
					break
				}
			}
			x -= s
		}
		counts[pick]++
	}
	for k, c := range counts {
		if c == 0 {
			continue
		}
		step := time.Duration(float64(every) * float64(n) / float64(c))
		kinds[k].recordEvery(top-(step-every)/2, step, c)
		missed[k] += c
	}
}

// progress prints a line a second until stop is closed.
func progress(stderr io.Writer, o benchOpts, start, measureFrom, end time.Time, done *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := int64(0), measureFrom
	for {
		select {
		case <-stop:
			fmt.Fprintln(stderr)
			return
		case now := <-t.C:
			if now.Before(measureFrom) {
				fmt.Fprintf(stderr, "\rwarming up %s of %s", now.Sub(start).Round(time.Second), o.warmup)
				continue
			}
			n := done.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			fmt.Fprintf(stderr, "\r%s %s: %s of %s, %.0f ops/s      ", o.workload, o.api, now.Sub(measureFrom).Round(time.Second), end.Sub(measureFrom), rate)
		}
	}
}

// benchResult is a run's outcome; its JSON is `mmdbd bench -json`.
type benchResult struct {
	Workload     string        `json:"workload"`
	Mode         string        `json:"mode"`
	API          string        `json:"api"`
	Clients      int           `json:"clients"`
	DurationS    float64       `json:"duration_s"`
	TxPerSec     float64       `json:"tx_per_sec"`
	OKPerSec     float64       `json:"ok_per_sec"`
	P50us        float64       `json:"p50_us"`
	P90us        float64       `json:"p90_us"`
	P99us        float64       `json:"p99_us"`
	P999us       float64       `json:"p999_us"`
	MaxUs        float64       `json:"max_us"`
	LatencyFrom  string        `json:"latency_from"`
	Rate         *rateResult   `json:"rate,omitempty"`
	Errors       int64         `json:"errors"`
	LastError    string        `json:"last_error,omitempty"`
	Failed       *failedResult `json:"failed,omitempty"`
	Durability   string        `json:"durability,omitempty"`
	SyncMode     string        `json:"sync_mode,omitempty"`
	Log          *logResult    `json:"log,omitempty"`
	Subscribers  uint64        `json:"subscribers,omitempty"`
	Keys         uint64        `json:"keys,omitempty"`
	ReadRatio    *float64      `json:"read_ratio,omitempty"`
	ValueSize    *int          `json:"value_size,omitempty"`
	Pipeline     int           `json:"pipeline,omitempty"`
	Window       int           `json:"window,omitempty"`
	Transactions []kindResult  `json:"transactions"`
}

// What the latencies count from (benchResult.LatencyFrom): closed loop,
// from each op's start; with -rate, from when each was due, the missed
// ops in with how long they had waited when the run ended.
const (
	latencyFromStart    = "start"
	latencyFromSchedule = "schedule"
)

// rateResult is how an open-loop (-rate) run kept to its schedule: how
// many ops were due in the measured time (Scheduled); how many started
// in it (Started, the ops tx/s counts and those that failed: the sum of
// transactions[].count and failed.count), Carried of them due in the
// warm-up (a backlog the node worked off); and how many due in it had
// not started by its end (Missed, the backlog then, which tx/s does not
// count and the latencies do, as waiting until the end). So
// Started + Missed = Scheduled + Carried.
type rateResult struct {
	PerSec    float64 `json:"per_sec"`
	Scheduled int64   `json:"scheduled"`
	Started   int64   `json:"started"`
	Carried   int64   `json:"carried"`
	Missed    int64   `json:"missed"`
}

// failedResult is the operations that failed with an error in the
// measured time: how many, and their latencies, from the same start as
// the others' (latency_from), to the failure.
type failedResult struct {
	Count int64   `json:"count"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
	MaxUs float64 `json:"max_us"`
}

// logResult is what the redo log did during an in-process run's
// measured time.
type logResult struct {
	Records          int64   `json:"records"`
	Syncs            int64   `json:"syncs"`
	GroupSize        float64 `json:"avg_group_size"`
	BytesPerCommit   float64 `json:"log_bytes_per_commit"`
	CompressionRatio float64 `json:"compression_ratio"`
}

func newLogResult(before, after logging.Stats) *logResult {
	d := logging.Stats{Records: after.Records - before.Records, Syncs: after.Syncs - before.Syncs,
		RawBytes: after.RawBytes - before.RawBytes, StoredBytes: after.StoredBytes - before.StoredBytes}
	if d.Records == 0 {
		return nil
	}
	r := &logResult{Records: d.Records, Syncs: d.Syncs, BytesPerCommit: float64(d.StoredBytes) / float64(d.Records)}
	if d.Syncs > 0 {
		r.GroupSize = float64(d.Records) / float64(d.Syncs)
	}
	if d.StoredBytes > 0 {
		r.CompressionRatio = float64(d.RawBytes) / float64(d.StoredBytes)
	}
	return r
}

// kindResult is one kind of operation's share of a run.
type kindResult struct {
	Name   string  `json:"name"`
	Count  int64   `json:"count"`
	OK     int64   `json:"ok"`
	Missed int64   `json:"missed"`
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
}

func summarize(o benchOpts, kinds []string, stats []*clientStats, d time.Duration) *benchResult {
	res := &benchResult{Workload: o.workload, Mode: o.mode(), API: o.api, Clients: o.clients, DurationS: d.Seconds(), Transactions: []kindResult{}}
	if o.inprocess {
		res.API = "none"
	}
	if o.workload == "kv" {
		res.Keys, res.ReadRatio, res.ValueSize = o.keys, &o.readRatio, &o.valueSize
		if o.api == "session" && !o.inprocess {
			res.Pipeline, res.Window = o.pipeline, o.window
		}
	}
	var all latencies
	res.LatencyFrom = latencyFromStart
	if o.rate > 0 {
		res.LatencyFrom = latencyFromSchedule
		for _, st := range stats {
			all.merge(&st.missedLat)
		}
	}
	var total, ok int64
	for k, name := range kinds {
		var ks latencies
		kr := kindResult{Name: name}
		for _, st := range stats {
			ks.merge(&st.kinds[k])
			kr.Count += st.ops[k]
			kr.OK += st.ok[k]
		}
		// The overall latencies have the missed ops' own waits.
		all.merge(&ks)
		for _, st := range stats {
			if st.missedKinds != nil {
				ks.merge(&st.missedKinds[k])
				kr.Missed += st.missedOf[k]
			}
		}
		kr.P50us, kr.P99us = ks.quantile(0.5), ks.quantile(0.99)
		res.Transactions = append(res.Transactions, kr)
		total += kr.Count
		ok += kr.OK
	}
	if o.rate > 0 {
		res.Rate = &rateResult{PerSec: o.rate}
	}
	var failed latencies
	for _, st := range stats {
		res.Errors += st.errors
		failed.merge(&st.failedLat)
		if st.failed > 0 {
			if res.Failed == nil {
				res.Failed = &failedResult{}
			}
			res.Failed.Count += st.failed
		}
		if st.lastErr != nil {
			res.LastError = st.lastErr.Error()
		}
		if res.Rate != nil {
			res.Rate.Started += st.started
			res.Rate.Carried += st.carried
			res.Rate.Missed += st.missed
		}
	}
	if res.Rate != nil {
		res.Rate.Scheduled = res.Rate.Started - res.Rate.Carried + res.Rate.Missed
	}
	if res.Failed != nil {
		res.Failed.P50us, res.Failed.P99us, res.Failed.MaxUs = failed.quantile(0.5), failed.quantile(0.99), failed.quantile(1)
	}
	res.TxPerSec, res.OKPerSec = float64(total)/d.Seconds(), float64(ok)/d.Seconds()
	res.P50us, res.P90us, res.P99us, res.P999us, res.MaxUs = all.quantile(0.5), all.quantile(0.9), all.quantile(0.99), all.quantile(0.999), all.quantile(1)
	return res
}

func (r *benchResult) print(w io.Writer) error {
	out := &errWriter{w: w}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "workload %s, %s, api %s, %d clients, %gs measured", r.Workload, r.Mode, r.API, r.Clients, r.DurationS)
	if r.Subscribers != 0 {
		fmt.Fprintf(tw, ", %d subscribers", r.Subscribers)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "tx/s\t%.0f\nok/s\t%.0f\n", r.TxPerSec, r.OKPerSec)
	if rt := r.Rate; rt != nil {
		fmt.Fprintf(tw, "rate\t%g/s asked: %d ops due, %d missed (not started by the end); %d started, %d of them due in the warm-up\n", rt.PerSec, rt.Scheduled, rt.Missed, rt.Started, rt.Carried)
	}
	fmt.Fprintf(tw, "errors\t%d\n", r.Errors)
	if r.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", r.LastError)
	}
	if f := r.Failed; f != nil {
		fmt.Fprintf(tw, "failed\t%d operations in the measured time, latency p50/p99/max %.1f / %.1f / %.1f µs (not in tx/s nor in the latencies below)\n", f.Count, f.P50us, f.P99us, f.MaxUs)
	}
	fmt.Fprintf(tw, "latency p50/p90/p99/p99.9/max\t%.1f / %.1f / %.1f / %.1f / %.1f µs", r.P50us, r.P90us, r.P99us, r.P999us, r.MaxUs)
	if r.LatencyFrom == latencyFromSchedule {
		fmt.Fprintln(tw, ", from each op's scheduled start; the missed in them, as waiting until the end")
	} else {
		fmt.Fprintln(tw, ", from each op's start")
	}
	if r.Durability != "" {
		fmt.Fprintf(tw, "durability\t%s\n", r.Durability)
	}
	if r.SyncMode != "" {
		fmt.Fprintf(tw, "sync mode\t%s\n", r.SyncMode)
	}
	if l := r.Log; l != nil {
		fmt.Fprintf(tw, "log\t%d records, %d syncs (%.1f per group), %.1f bytes per commit, compression %.2fx\n", l.Records, l.Syncs, l.GroupSize, l.BytesPerCommit, l.CompressionRatio)
	}
	fmt.Fprintln(tw)
	if r.Rate != nil {
		// The missed, by the mix, are in the kinds' latencies.
		fmt.Fprintln(tw, "kind\tcount\tok\tmissed\tp50 µs\tp99 µs")
		for _, k := range r.Transactions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.1f\t%.1f\n", strings.ToLower(k.Name), k.Count, k.OK, k.Missed, k.P50us, k.P99us)
		}
		return out.flush(tw)
	}
	fmt.Fprintln(tw, "kind\tcount\tok\tp50 µs\tp99 µs")
	for _, k := range r.Transactions {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\n", strings.ToLower(k.Name), k.Count, k.OK, k.P50us, k.P99us)
	}
	return out.flush(tw)
}

// benchDataDir is a scratch data directory for an in-process run that was
// given none, so that it never takes a running node's lock.
func benchDataDir() (string, func() error, error) {
	dir, err := os.MkdirTemp("", "mmdb-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: scratch data directory: %w", err)
	}
	return dir, func() error { return os.RemoveAll(dir) }, nil
}
