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
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/mmdb/mmdb/client"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/servertest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/workload/tatp"
)

// TestBenchOverGRPCRefusesNodeFlags: over gRPC, a node flag (but for the
// client's -tls-*-file credentials) is refused, as the node runs as it
// is configured; before, -durability fsync-log was taken, ignored, and
// the run reported as if it had held.
func TestBenchOverGRPCRefusesNodeFlags(t *testing.T) {
	addr := startNode(t, nil)
	ping := []string{"bench", "-addr", addr, "-workload", "ping", "-clients", "1", "-warmup", "0s", "-duration", "50ms"}
	var stderr strings.Builder
	code := run(append(ping, "-durability", "fsync-log", "-data-dir", "/tmp/x"), nil, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "-data-dir, -durability: node flags, for -inprocess") {
		t.Errorf("bench over gRPC with node flags: exit %d\n%s", code, &stderr)
	}
	stderr.Reset()
	if code := run(ping, nil, io.Discard, &stderr); code != 0 {
		t.Errorf("bench over gRPC: exit %d\n%s", code, &stderr)
	}
	stderr.Reset()
	if code := run(append(ping, "-warmup", "-1s"), nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "-warmup at least 0") {
		t.Errorf("bench -warmup -1s: exit %d\n%s", code, &stderr)
	}
	// NaN fails every comparison: it passed the range checks, and ran as
	// no pacing (-rate) or all puts (-read-ratio).
	for _, bad := range [][]string{{"-rate", "NaN"}, {"-rate", "+Inf"}, {"-read-ratio", "NaN"}} {
		stderr.Reset()
		if code := run(append(slices.Clone(ping), bad...), nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), bad[0]+" ") {
			t.Errorf("bench %s %s: exit %d\n%s", bad[0], bad[1], code, &stderr)
		}
	}
}

// TestBenchInterruptedCleansUp: SIGINT stops an in-process run, which
// removes its scratch data directory and exits 1 saying it was
// interrupted; before, the signal ended the process and left the
// directory (with its preallocated log under -durability mmap-log or
// fsync-log) in $TMPDIR.
func TestBenchInterruptedCleansUp(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	done := make(chan error, 1)
	go func() {
		done <- bench([]string{"-inprocess", "-workload", "kv", "-keys", "100", "-clients", "1", "-warmup", "0s", "-duration", "1m",
			"-durability", "mmap-log"}, io.Discard, io.Discard)
	}()
	// bench catches the signal before it makes the directory.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scratch data directory after 10s")
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("bench interrupted: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bench runs on 30s after SIGINT")
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
		t.Errorf("left in $TMPDIR: %v %v", entries, err)
	}
}

// slowWorkload is a workload of one kind whose every op takes d.
func slowWorkload(d time.Duration) *workload {
	return &workload{kinds: []string{"slow"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		return func(context.Context) opResult {
			time.Sleep(d)
			return opResult{n: 1, ok: 1}
		}, nil
	}}
}

// TestBenchRateCountsWhatRan: with -rate above what the node does, tx/s is
// what ran in the measured time and the run ends on time; before, it
// counted the operations that were due (so it reported the rate asked
// for) and ran on past the end until the clients caught up.
func TestBenchRateCountsWhatRan(t *testing.T) {
	o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: 300 * time.Millisecond, rate: 1000}
	start := time.Now()
	res, err := runBench(context.Background(), o, slowWorkload(20*time.Millisecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Two clients of 20 ms ops do at most 100/s.
	if took := time.Since(start); res.TxPerSec > 110 || took > 600*time.Millisecond {
		t.Errorf("-rate 1000 against 100/s: %.0f tx/s reported, the run took %s", res.TxPerSec, took)
	}
	// Latency still counts from when each op was due: the backlog shows.
	if res.P99us < 100_000 {
		t.Errorf("p99 %.0f µs: the backlog does not show", res.P99us)
	}
}

// TestBenchRateReportsBacklog: an open-loop run against a node that
// falls behind reports the ops due in the measured time that never
// started (the backlog at its end), as text and JSON; before, they were
// neither run nor counted, so a saturated node looked better than it was.
func TestBenchRateReportsBacklog(t *testing.T) {
	o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: 300 * time.Millisecond, rate: 1000}
	res, err := runBench(context.Background(), o, slowWorkload(20*time.Millisecond), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// Each client has an op due every 2 ms, 150 in 300 ms, and does at
	// most 15 of them.
	r := res.Rate
	if r == nil || r.Scheduled != 300 || r.Started > 32 || r.Started < 1 || r.Missed != r.Scheduled-r.Started {
		t.Fatalf("-rate 1000 against 100/s for 300ms: %+v", r)
	}
	var out strings.Builder
	if err := res.print(&out); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d missed", r.Missed); !strings.Contains(out.String(), want) {
		t.Errorf("no %q in\n%s", want, &out)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"missed":%d`, r.Missed); !strings.Contains(string(b), want) {
		t.Errorf("no %s in %s", want, b)
	}
}

// TestDueIn counts the times of a schedule in a window, and finds the
// first.
func TestDueIn(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	for _, c := range []struct {
		next, every, from, to int
		want                  int64
		first                 int // when want > 0
	}{
		{0, 2, 0, 300, 150, 0}, {1, 2, 0, 300, 150, 1}, {1, 2, 0, 301, 150, 1}, {1, 2, 0, 302, 151, 1},
		{0, 2, 101, 300, 99, 102}, {300, 2, 0, 300, 0, 0}, {400, 2, 0, 300, 0, 0}, {5, 10, 0, 5, 0, 0},
	} {
		first, got := dueIn(at(c.next), time.Duration(c.every)*time.Millisecond, at(c.from), at(c.to))
		if got != c.want || got > 0 && !first.Equal(at(c.first)) {
			t.Errorf("dueIn(%d every %d in [%d, %d)) = %d from %s, want %d from %dms", c.next, c.every, c.from, c.to, got, first.Sub(at(0)), c.want, c.first)
		}
	}
}

// stallsOnce is a workload of kinds in equal shares, each client's first
// op of which sleeps for stall, and every other returns at once.
func stallsOnce(stall time.Duration, kinds ...string) *workload {
	return &workload{kinds: kinds, close: func() error { return nil }, newOp: func(int) (op, error) {
		first := true
		return func(context.Context) opResult {
			if first {
				first = false
				time.Sleep(stall)
			}
			return opResult{n: 1, ok: 1}
		}, nil
	}}
}

// TestBenchRateCountsMissedInLatency: in a paced run, the ops due in the
// measured time that never started, because the op before them stalled
// past the end, are in the latencies with how long they had waited when
// the run ended, as the JSON's latency_from says; before, they were only
// counted as missed, and a run whose every measured op was held up by a
// stall reported latencies of 0.
func TestBenchRateCountsMissedInLatency(t *testing.T) {
	w := stallsOnce(300*time.Millisecond, "stalls once")
	// An op due every 10 ms: the 10 due in the measured time, from 50 ms
	// to 140 ms, wait until the stall ends at 300 ms at the earliest.
	o := benchOpts{workload: "kv", api: "unary", clients: 1, warmup: 50 * time.Millisecond, duration: 100 * time.Millisecond, rate: 100}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Rate; r == nil || r.Missed != 10 || r.Started != 0 {
		t.Fatalf("a stall from the warm-up past the end: %+v", r)
	}
	if res.LatencyFrom != "schedule" || res.P50us < 150_000 || res.MaxUs < 250_000 {
		t.Errorf("10 ops missed after waiting 160-250 ms: latency from %q, p50 %.0f µs, max %.0f µs", res.LatencyFrom, res.P50us, res.MaxUs)
	}
	// Closed loop, the latencies still count from each op's start.
	if res := summarize(benchOpts{}, nil, nil, time.Second); res.LatencyFrom != "start" {
		t.Errorf("closed loop: latency from %q", res.LatencyFrom)
	}
}

// TestBenchRateStartedIsWhatTxCounts: in a paced run, rate.started is
// the ops tx/s counts (transactions[].count) and the failed, those that
// started in the measured time, and rate.carried those of them due in
// the warm-up, so that started + missed = scheduled + carried; before,
// tx/s counted the ops that started in the measured time and
// rate.started those due in it, so with a backlog from the warm-up the
// two told of different ops.
func TestBenchRateStartedIsWhatTxCounts(t *testing.T) {
	w := &workload{kinds: []string{"slow"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		calls := 0
		return func(context.Context) opResult {
			time.Sleep(15 * time.Millisecond)
			if calls++; calls%3 == 0 {
				return opResult{n: 1, err: errors.New("aborted")}
			}
			return opResult{n: 1, ok: 1}
		}, nil
	}}
	// An op due every 10 ms that takes 15: the measured time starts
	// with a backlog from the warm-up.
	o := benchOpts{workload: "kv", api: "unary", clients: 1, warmup: 100 * time.Millisecond, duration: 200 * time.Millisecond, rate: 100}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Rate
	var counted, failed int64
	for _, k := range res.Transactions {
		counted += k.Count
	}
	if res.Failed != nil {
		failed = res.Failed.Count
	}
	if r == nil || r.Scheduled != 20 || r.Started+r.Missed != r.Scheduled+r.Carried || r.Started != counted+failed || r.Carried == 0 || failed == 0 {
		t.Errorf("paced with a backlog: rate %+v, %d counted, %d failed", r, counted, failed)
	}
	if want := float64(counted) / o.duration.Seconds(); res.TxPerSec != want {
		t.Errorf("tx/s %g, want %g", res.TxPerSec, want)
	}
}

// TestBenchRateMissedInTheirKinds: in a paced run, the missed ops are
// split among the kinds by the mix and are in each kind's latencies, and
// the kinds' missed add up to rate.missed; before, they were in the
// overall latencies only, so a kind whose every op was held up by a stall
// reported no latency at all.
func TestBenchRateMissedInTheirKinds(t *testing.T) {
	w := stallsOnce(300*time.Millisecond, "a", "b")
	// As in TestBenchRateCountsMissedInLatency: 10 ops due in the
	// measured time, all missed, having waited 160 to 250 ms at least.
	o := benchOpts{workload: "kv", api: "unary", clients: 1, warmup: 50 * time.Millisecond, duration: 100 * time.Millisecond, rate: 100}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Rate; r == nil || r.Missed != 10 {
		t.Fatalf("a stall from the warm-up past the end: %+v", r)
	}
	for _, k := range res.Transactions {
		if k.Missed != 5 || k.P50us < 150_000 || k.P99us < k.P50us {
			t.Errorf("kind %s of half the mix, 10 ops missed: %+v", k.Name, k)
		}
	}
	var out strings.Builder
	if err := res.print(&out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^kind +count +ok +missed +p50 µs +p99 µs\n(a|b) +0 +0 +5 +`).MatchString(out.String()) {
		t.Errorf("the kinds' missed are not printed:\n%s", &out)
	}
}

// TestAttributeMissed splits missed ops among kinds by the mix, spread
// over the waits of all of them.
func TestAttributeMissed(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	kinds, missed := make([]latencies, 3), make([]int64, 3)
	// 1000 ops due a millisecond apart, having waited 1 s down to 1 ms.
	attributeMissed(kinds, missed, []float64{0.8, 0.2, 0}, time.Second, time.Millisecond, 1000, r)
	if missed[0] != 800 || missed[1] != 200 || missed[2] != 0 {
		t.Errorf("1000 missed by a mix of 80%%, 20%%, 0%%: %v", missed)
	}
	for k := range 2 {
		if p50 := kinds[k].quantile(0.5); math.Abs(p50-500_000) > 10_000 {
			t.Errorf("kind %d: p50 %.0f µs of waits spread from 1 ms to 1 s", k, p50)
		}
	}
	// One op missed, many times: the kind is drawn from the mix, not
	// always the same.
	got := make([]int64, 3)
	for range 100 {
		attributeMissed(make([]latencies, 3), got, []float64{0.35, 0.35, 0.3}, time.Second, time.Millisecond, 1, r)
	}
	if got[0] < 15 || got[1] < 15 || got[2] < 15 || got[0]+got[1]+got[2] != 100 {
		t.Errorf("100 single missed ops by a mix of 35%%, 35%%, 30%%: %v", got)
	}
	// The mixes of the workloads add up.
	var sum float64
	for _, s := range tatpMix {
		sum += s
	}
	if math.Abs(sum-1) > 1e-9 || len(tatpMix) != len(tatpKinds) {
		t.Errorf("TATP's mix: %v", tatpMix)
	}
}

// TestBenchRateEndsOnTime: a client whose next op is due after the end
// stops at the end; before, it waited until the op was due.
func TestBenchRateEndsOnTime(t *testing.T) {
	o := benchOpts{workload: "kv", api: "unary", clients: 1, duration: 100 * time.Millisecond, rate: 0.5}
	start := time.Now()
	res, err := runBench(context.Background(), o, slowWorkload(0), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second || res.Transactions[0].Count != 1 {
		t.Errorf("-rate 0.5 for 100ms: %d ops, took %s", res.Transactions[0].Count, took)
	}
}

// TestBenchReportsLoadedSubscribers: over gRPC against a node that
// already holds TATP, the report states the subscribers the run drew
// from (TATP's P), not -subscribers; before, it stated the flag's value.
func TestBenchReportsLoadedSubscribers(t *testing.T) {
	addr := startNode(t, nil)
	args := []string{"bench", "-addr", addr, "-workload", "tatp", "-clients", "1", "-warmup", "0s", "-duration", "20ms", "-json"}
	if code := run(append(args, "-subscribers", "300"), nil, io.Discard, io.Discard); code != 0 {
		t.Fatalf("load: exit %d", code)
	}
	var out, stderr strings.Builder
	if code := run(append(args, "-subscribers", "5000"), nil, &out, &stderr); code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, &stderr)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil || res.Subscribers != 300 {
		t.Errorf("subscribers %d reported, want 300 (%v)\n%s", res.Subscribers, err, &out)
	}
}

// benchJSON runs mmdbd bench with args and -json, in a scratch $TMPDIR,
// and returns its result.
func benchJSON(t *testing.T, args ...string) benchResult {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	var out, stderr strings.Builder
	if err := bench(append(args, "-json"), &out, &stderr); err != nil {
		t.Fatalf("bench %v: %v\n%s", args, err, &stderr)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("%v: %s", err, &out)
	}
	return res
}

// TestBenchLogLeavesOutTheLoad: an in-process run that only reads writes
// no log, and says so; before, the load's last batches, still on their
// way to the log when the run began, were counted as the run's (1 to 8
// records of 114 KB here, in log_bytes_per_commit too).
func TestBenchLogLeavesOutTheLoad(t *testing.T) {
	res := benchJSON(t, "-inprocess", "-workload", "kv", "-keys", "100000", "-read-ratio", "1", "-durability", "fsync-log",
		"-clients", "1", "-warmup", "0s", "-duration", "20ms")
	if res.Log != nil {
		t.Errorf("a run of reads wrote to the log: %+v", *res.Log)
	}
}

// TestBenchLogLeavesOutTheWarmup: an in-process run's log counts cover
// the measured time, as its tx/s does; before, they took in the warm-up
// too, so with all writes the log held twice the commits counted.
func TestBenchLogLeavesOutTheWarmup(t *testing.T) {
	res := benchJSON(t, "-inprocess", "-workload", "kv", "-keys", "1000", "-read-ratio", "0", "-durability", "mmap-log",
		"-clients", "2", "-warmup", "300ms", "-duration", "300ms")
	puts := res.Transactions[1].Count
	if res.Log == nil || math.Abs(float64(res.Log.Records-puts)) > 0.1*float64(puts) {
		t.Errorf("%d puts measured; the log says %+v", puts, res.Log)
	}
}

// TestBenchCountsWarmupErrors: an operation that fails in the warm-up is
// an error of the run (and bench exits 1 for it), as one that fails later
// is; before, the warm-up's failures were dropped with its samples.
func TestBenchCountsWarmupErrors(t *testing.T) {
	w := &workload{kinds: []string{"flaky"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		first := true
		return func(context.Context) opResult {
			time.Sleep(time.Millisecond)
			if first {
				first = false
				return opResult{n: 1, err: errors.New("node unavailable")}
			}
			return opResult{n: 1, ok: 1}
		}, nil
	}}
	o := benchOpts{workload: "kv", api: "unary", clients: 1, warmup: 50 * time.Millisecond, duration: 50 * time.Millisecond}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || res.LastError != "node unavailable" || res.Transactions[0].Count == 0 {
		t.Errorf("an error in the warm-up: %d errors (%q), %d ops", res.Errors, res.LastError, res.Transactions[0].Count)
	}
}

// TestBenchPrintStatesP: the printed report of a TATP run states P, the
// subscribers it drew from, as TATP.md asks of every run; before, only
// the JSON did.
func TestBenchPrintStatesP(t *testing.T) {
	r := &benchResult{Workload: "tatp", Mode: "grpc", API: "unary", Clients: 2, DurationS: 1, Subscribers: 300}
	var out strings.Builder
	if err := r.print(&out); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); !strings.Contains(first, "300 subscribers") {
		t.Errorf("the report's first line does not state P: %q", first)
	}
}

// TestBenchEndsWhenAnOpHangs: an operation still running well after the
// run's end (a node that never answers) is cancelled and counted as an
// error, so the run ends and says so; before, bench waited for it
// forever.
func TestBenchEndsWhenAnOpHangs(t *testing.T) {
	defer func(g time.Duration) { benchGrace = g }(benchGrace)
	benchGrace = 100 * time.Millisecond
	w := &workload{kinds: []string{"stuck"}, close: func() error { return nil }, newOp: func(client int) (op, error) {
		return func(ctx context.Context) opResult {
			if client == 0 {
				<-ctx.Done() // a call that never returns
				return opResult{n: 1, err: ctx.Err()}
			}
			time.Sleep(time.Millisecond)
			return opResult{n: 1, ok: 1}
		}, nil
	}}
	o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: 100 * time.Millisecond}
	done := make(chan *benchResult, 1)
	go func() {
		res, err := runBench(context.Background(), o, w, io.Discard)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		if res.Errors != 1 || !strings.Contains(res.LastError, "after the run's end") {
			t.Errorf("a hung op: %d errors, the last %q", res.Errors, res.LastError)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runBench waits on for an op that never returns")
	}
}

// TestBenchRateCountsALateWake: with -rate, an op the client slept for
// counts its latency from when it was due, though the client woke late:
// what held it up (the timer's resolution, up to about a millisecond, or
// a stall of the process) is not told apart from the node's stalls.
// Before, it counted from the wake, so the lateness was hidden.
func TestBenchRateCountsALateWake(t *testing.T) {
	const late = 30 * time.Millisecond
	defer func(s func(context.Context, time.Duration) bool) { benchSleep = s }(benchSleep)
	benchSleep = func(ctx context.Context, d time.Duration) bool {
		time.Sleep(d + late)
		return true
	}
	// Ops due at 0, 100 and 200 ms: the client sleeps for the last two.
	o := benchOpts{workload: "kv", api: "unary", clients: 1, duration: 250 * time.Millisecond, rate: 10}
	res, err := runBench(context.Background(), o, slowWorkload(0), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.P50us < float64(late/time.Microsecond) {
		t.Errorf("instant ops paced at -rate 10, the client waking %s late: p50 %.0f µs", late, res.P50us)
	}
}

// TestBenchRateOutOfRange: a -rate whose interval between one client's
// ops does not fit a time.Duration (it overflowed to a negative one), or
// rounds to nothing, is refused; before, either ran unpaced, as fast as
// the clients went, with latency from each op's start.
func TestBenchRateOutOfRange(t *testing.T) {
	for _, rate := range []float64{1e-12, 1e10} {
		o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: time.Second, keys: 1, subscribers: 1, pipeline: 1, window: 1, rate: rate}
		if err := o.check(); err == nil || !strings.Contains(err.Error(), "-rate") {
			t.Errorf("-rate %g with 2 clients: %v", rate, err)
		}
	}
	o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: time.Second, keys: 1, subscribers: 1, pipeline: 1, window: 1, rate: 1e-6}
	if err := o.check(); err != nil {
		t.Errorf("-rate 1e-6: %v", err)
	}
}

// TestBenchInProcessRefusesPeers: an in-process node ships its log to no
// standby, so -peer (and the sync settings that wait on the peers) is
// refused; before, a run with -sync-mode applied-ack -sync-quorum 1 and a
// peer that was not even up reported commits that waited for no standby
// as if the sync mode had held.
func TestBenchInProcessRefusesPeers(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	err := bench([]string{"-inprocess", "-workload", "kv", "-keys", "10", "-clients", "1", "-warmup", "0s", "-duration", "20ms",
		"-peer", "b=127.0.0.1:1", "-sync-mode", "applied-ack", "-sync-quorum", "1"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "peer") {
		t.Errorf("bench -inprocess with a peer and sync quorum 1: %v", err)
	}
}

// TestBenchJSONStatesValueSizeZero: a kv run's JSON states its value size
// when it is 0, as it states a read ratio of 0; before, value_size was
// left out, so the result read as if it had no value size (or the
// default's 100 bytes).
func TestBenchJSONStatesValueSizeZero(t *testing.T) {
	o := benchOpts{workload: "kv", api: "unary", clients: 1, duration: time.Second, keys: 10, valueSize: 0, readRatio: 0}
	b, err := json.Marshal(summarize(o, []string{"get", "put"}, nil, o.duration))
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"value_size":0`, `"read_ratio":0`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("no %s in %s", field, b)
		}
	}
}

// TestBenchInProcessOpsHeedTheirContext: an in-process op blocked on its
// commit's wait for the log returns when its context ends (the run's
// end, benchGrace after it, or an interrupt); before, it waited on the
// process's signal context alone, so nothing but a signal stopped it.
func TestBenchInProcessOpsHeedTheirContext(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, workload := range []string{"kv", "tatp"} {
		fs := flag.NewFlagSet("bench", flag.ContinueOnError)
		flags := conf.RegisterFlags(fs)
		if err := fs.Parse([]string{"-durability", "fsync-log"}); err != nil {
			t.Fatal(err)
		}
		o := benchOpts{workload: workload, inprocess: true, clients: 1, keys: 10, subscribers: 10, readRatio: 0, valueSize: 8, seed: 1}
		w, err := inprocessWorkload(context.Background(), o, flags, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		op, err := w.newOp(0)
		if err != nil {
			t.Fatal(err)
		}
		// A commit's record is not yet synced when it commits, so its
		// wait is still to come when the op's context has already ended.
		ended, cancel := context.WithCancel(context.Background())
		cancel()
		var cancelled int
		for range 50 {
			if r := op(ended); errors.Is(r.err, context.Canceled) {
				cancelled++
			}
		}
		if err := w.close(); err != nil {
			t.Fatal(err)
		}
		if cancelled == 0 {
			t.Errorf("%s: no op of 50 given an ended context returned its end", workload)
		}
	}
}

// TestBenchRefusesPartialTATPLoad: a TATP run over gRPC against a node
// whose load stopped part way is refused, saying how to reload; before,
// it took the subscribers it found for P and benchmarked the partial
// database.
func TestBenchRefusesPartialTATPLoad(t *testing.T) {
	addr := startNode(t, nil)
	conn := servertest.Dial(t, addr)
	db := pb.NewDatabaseServiceClient(conn)
	if err := tatp.CreateRemote(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := tatp.LoadRemote(ctx, db, 2000, 1, 1, func(uint64) { cancel() }); err == nil {
		t.Fatal("a load cancelled after its first batch finished")
	}
	var stderr strings.Builder
	code := run([]string{"bench", "-addr", addr, "-workload", "tatp", "-subscribers", "2000", "-clients", "1", "-warmup", "0s", "-duration", "20ms"}, nil, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "did not finish") || !strings.Contains(stderr.String(), "drop table subscriber") {
		t.Errorf("bench against a partial TATP load: exit %d\n%s", code, &stderr)
	}
}

// TestBenchCountsErrorsPerOperation: a pipelined message's failures count
// once per operation that failed, a message that failed whole once per
// operation it held; before, each counted one error however many of its
// operations failed, so -api session understated errors up to -pipeline
// times.
func TestBenchCountsErrorsPerOperation(t *testing.T) {
	w := &workload{kinds: []string{"message"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		calls := 0
		return func(context.Context) opResult {
			time.Sleep(time.Millisecond)
			switch calls++; calls {
			case 1:
				return opResult{n: 16, ok: 13, failed: 3, err: errors.New("a reply failed")}
			case 2:
				return opResult{n: 16, err: errors.New("the stream broke")}
			}
			return opResult{n: 16, ok: 16}
		}, nil
	}}
	o := benchOpts{workload: "kv", api: "session", clients: 1, duration: 50 * time.Millisecond, pipeline: 16}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 3+16 {
		t.Errorf("3 failed replies, then a message of 16 failed: %d errors", res.Errors)
	}
	// The 13 replies that returned count as the others do.
	if n := res.Transactions[0].Count; n%16 != 13 || res.Failed == nil || res.Failed.Count != 3+16 {
		t.Errorf("3 of a message's 16 replies failed, then a message of 16: %d operations counted, failed %+v", n, res.Failed)
	}
}

// TestBenchReportsFailedLatency: the latencies of the ops that failed in
// the measured time are reported apart, with their count, in text and
// JSON; before, they were in no latency at all, so a run whose slow ops
// failed reported only its fast ones.
func TestBenchReportsFailedLatency(t *testing.T) {
	const slow = 40 * time.Millisecond
	w := &workload{kinds: []string{"flaky"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		calls := 0
		return func(context.Context) opResult {
			if calls++; calls%4 == 0 {
				time.Sleep(slow) // a timeout, say
				return opResult{n: 1, err: errors.New("deadline exceeded")}
			}
			time.Sleep(time.Millisecond)
			return opResult{n: 1, ok: 1}
		}, nil
	}}
	o := benchOpts{workload: "kv", api: "unary", clients: 2, duration: 300 * time.Millisecond}
	res, err := runBench(context.Background(), o, w, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Failed
	if f == nil || f.Count < 2 || f.Count > res.Errors || f.P50us < float64(slow/time.Microsecond) || f.MaxUs < f.P99us {
		t.Fatalf("ops failing after %s: failed %+v of %d errors", slow, f, res.Errors)
	}
	if res.P99us >= float64(slow/time.Microsecond) {
		t.Errorf("the failed ops are in the latencies of those that returned: p99 %.0f µs", res.P99us)
	}
	var out strings.Builder
	if err := res.print(&out); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d operations in the measured time, latency p50/p99/max %.1f", f.Count, f.P50us); !strings.Contains(out.String(), want) {
		t.Errorf("no %q in\n%s", want, &out)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"failed":{"count":%d,`, f.Count); !strings.Contains(string(b), want) {
		t.Errorf("no %s in %s", want, b)
	}
}

// TestBenchOverGRPCStatesNodeSettings: a run over gRPC reports the node's
// durability and sync mode, from its Status, in text and JSON; before,
// only an in-process run stated its durability, and a remote result did
// not say what its commits had waited for.
func TestBenchOverGRPCStatesNodeSettings(t *testing.T) {
	var durability, syncMode string
	addr := startNode(t, func(c *conf.Config) { durability, syncMode = c.Durability, c.SyncMode })
	args := []string{"bench", "-addr", addr, "-workload", "ping", "-clients", "1", "-warmup", "0s", "-duration", "20ms"}
	var out, stderr strings.Builder
	if code := run(append(args, "-json"), nil, &out, &stderr); code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, &stderr)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil || durability == "" || res.Durability != durability || res.SyncMode != syncMode {
		t.Errorf("node of durability %q, sync mode %q: reported %q, %q (%v)", durability, syncMode, res.Durability, res.SyncMode, err)
	}
	out.Reset()
	if code := run(args, nil, &out, &stderr); code != 0 {
		t.Fatalf("bench: exit %d\n%s", code, &stderr)
	}
	if !regexp.MustCompile(`(?m)^durability +`+durability+`$`).MatchString(out.String()) || !regexp.MustCompile(`(?m)^sync mode +`+syncMode+`$`).MatchString(out.String()) {
		t.Errorf("the report does not state durability %s and sync mode %s:\n%s", durability, syncMode, &out)
	}
}

// hungSessions is a node that takes Session streams and then neither
// answers nor ends them: a hung process.
type hungSessions struct {
	pb.UnimplementedDatabaseServiceServer
}

func (hungSessions) Session(stream pb.DatabaseService_SessionServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestBenchClosesHungSessionsTogether: the sessions a hung node holds
// open at the end of a run are closed together, within one benchGrace
// for all, and each says it was cut off; before, they were closed one
// after another, so N of them held the end of the run N graces.
func TestBenchClosesHungSessionsTogether(t *testing.T) {
	defer func(g time.Duration) { benchGrace = g }(benchGrace)
	benchGrace = 250 * time.Millisecond
	addr, _ := grpctest.Serve(t, func(g *grpc.Server) { pb.RegisterDatabaseServiceServer(g, hungSessions{}) })
	c, err := client.New(client.Options{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 8
	var sessions []*client.Session
	for range n {
		s, err := c.OpenSession(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	start := time.Now()
	err = closeSessions(sessions, addr)
	if took := time.Since(start); took > 4*benchGrace {
		t.Errorf("%d hung sessions took %s to close, with a grace of %s", n, took, benchGrace)
	}
	if got := strings.Count(fmt.Sprint(err), "did not end it in time"); got != n {
		t.Errorf("%d of %d hung sessions said they were cut off: %v", got, n, err)
	}
}

// TestBenchDocsListEveryJSONField: docs/benchmarks.md documents every
// field of bench -json, nested ones by their path (rate.missed,
// transactions[].p50_us); before, it documented none.
func TestBenchDocsListEveryJSONField(t *testing.T) {
	b, err := os.ReadFile("../../docs/benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	_, doc, _ := strings.Cut(string(b), "## What `mmdbd bench` prints")
	doc, _, _ = strings.Cut(doc, "\n## ")
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !strings.Contains(doc, "`"+prefix+name+"`") {
				t.Errorf("docs/benchmarks.md does not document bench's JSON field %s%s", prefix, name)
			}
			switch ft := f.Type; {
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), prefix+name+".")
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), prefix+name+"[].")
			}
		}
	}
	walk(reflect.TypeFor[benchResult](), "")
}
