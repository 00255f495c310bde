package main

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestLatenciesNearestRank: the q-quantile is the latency at rank
// ceil(q*n) (nearest rank), each latency weighted by its operations, so
// that p99 of 100 is the 99th, not the slowest, and p50 of two the
// faster. Latencies below 256 ns are exact.
func TestLatenciesNearestRank(t *testing.T) {
	ns := func(n int, weight uint64) *latencies {
		var h latencies
		for i := n; i >= 1; i-- {
			h.record(time.Duration(i), weight)
		}
		return &h
	}
	var two latencies
	two.record(1, 99)
	two.record(2, 1)
	// Of ten, p99.9 is the slowest, which is exact, not its bucket's
	// middle.
	top := ns(9, 1)
	top.record(1234567, 1)
	for i, c := range []struct {
		h    *latencies
		q    float64
		want float64 // ns
	}{
		{ns(100, 1), 0.5, 50}, {ns(100, 1), 0.99, 99}, {ns(200, 1), 0.999, 200}, {ns(200, 1), 0.99, 198},
		{ns(2, 1), 0.5, 1}, {ns(3, 1), 0.5, 2}, {ns(1, 1), 0.99, 1}, {ns(10, 1), 0.999, 10},
		{ns(100, 16), 0.99, 99}, {&two, 0.99, 1}, {&latencies{}, 0.5, 0}, {top, 0.999, 1234567}, {top, 0.5, 5},
	} {
		if got := c.h.quantile(c.q) * 1e3; math.Abs(got-c.want) > 1e-9 {
			t.Errorf("case %d: quantile %g = %g ns, want %g", i, c.q, got, c.want)
		}
	}
}

// TestLatenciesAccuracy: a histogram of a million latencies, spread over
// six orders of magnitude with a long tail and merged from several
// clients' histograms, gives p50, p90, p99, p99.9 and the maximum within
// 1% of the exact nearest-rank quantiles of the latencies themselves, in
// a few hundred KB (the latencies kept would take 8 MB).
func TestLatenciesAccuracy(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	const n = 1_000_000
	exact := make([]time.Duration, 0, n)
	clients := make([]latencies, 4)
	for i := range n {
		// Log-normal around 100 µs, and one in a thousand a stall of up
		// to a second.
		d := time.Duration(math.Exp(math.Log(100e3) + 1.5*r.NormFloat64()))
		if r.IntN(1000) == 0 {
			d = time.Duration(r.Int64N(int64(time.Second)))
		}
		exact = append(exact, d)
		clients[i%len(clients)].record(d, 1)
	}
	var h latencies
	for i := range clients {
		h.merge(&clients[i])
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := float64(exact[int(math.Ceil(q*n))-1].Nanoseconds()) / 1e3
		if got := h.quantile(q); math.Abs(got-want) > 0.01*want {
			t.Errorf("p%g: %.3f µs, exactly %.3f µs", q*100, got, want)
		}
	}
	if size := h.h.ByteSize(); size > 48<<10 {
		t.Errorf("the histogram takes %d bytes", size)
	}
}

// TestLatenciesAboveRange: a latency past the histogram's ceiling (an op
// stalled for hours) counts at the ceiling, and the maximum is still
// the exact one.
func TestLatenciesAboveRange(t *testing.T) {
	var h latencies
	h.record(time.Millisecond, 8)
	h.record(2*time.Hour, 1)
	h.record(3*time.Hour, 1)
	if got, want := h.quantile(1), float64(3*time.Hour/time.Microsecond); got != want {
		t.Errorf("max %g µs, want %g", got, want)
	}
	if got, want := h.quantile(0.9), float64(latencyCeiling/time.Microsecond); math.Abs(got-want) > 0.01*want {
		t.Errorf("p90 %g µs, want the ceiling, %g", got, want)
	}
	if got := h.quantile(0.5); math.Abs(got-1000) > 10 {
		t.Errorf("p50 %g µs, want 1000", got)
	}
}

// TestBenchLatencyMemoryIsBounded: what a run keeps of its latencies
// does not grow with its operations; before, it kept every one (16 bytes
// an op, more as its slice grew), so a long run at a high rate ran out of
// memory. What a run allocates besides is fixed (its histograms take a
// few hundred KB whatever the ops), so the bound is on what a longer run
// allocates more than a shorter one, per op more that it ran.
func TestBenchLatencyMemoryIsBounded(t *testing.T) {
	w := &workload{kinds: []string{"instant"}, close: func() error { return nil }, newOp: func(int) (op, error) {
		return func(context.Context) opResult { return opResult{n: 1, ok: 1} }, nil
	}}
	run := func(d time.Duration) (alloc uint64, ops int64) {
		o := benchOpts{workload: "kv", api: "unary", clients: 1, duration: d}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res, err := runBench(context.Background(), o, w, io.Discard)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		return after.TotalAlloc - before.TotalAlloc, res.Transactions[0].Count
	}
	shortAlloc, shortOps := run(100 * time.Millisecond)
	longAlloc, longOps := run(300 * time.Millisecond)
	more := longOps - shortOps
	if perOp := (float64(longAlloc) - float64(shortAlloc)) / float64(more); more < 10000 || perOp > 2 {
		t.Errorf("%d ops more allocated %.1f bytes each (%d ops: %d bytes, %d ops: %d bytes)", more, perOp, shortOps, shortAlloc, longOps, longAlloc)
	}
	if shortAlloc > 2<<20 {
		t.Errorf("a run of %d ops allocated %d bytes", shortOps, shortAlloc)
	}
}

// TestLatenciesRecordEvery: recordEvery counts a schedule's latencies
// as recording each would, below 0 and above the ceiling too, and a
// billion of them in a step per bucket.
func TestLatenciesRecordEvery(t *testing.T) {
	for _, c := range []struct {
		top, every time.Duration
		n          int64
	}{
		{250 * time.Millisecond, 10 * time.Millisecond, 10}, {100 * time.Microsecond, 7, 50000},
		{5 * time.Microsecond, time.Microsecond, 12}, {latencyCeiling + time.Minute, 3 * time.Second, 100}, {time.Second, time.Second, 1},
	} {
		var each, every latencies
		for i := range c.n {
			each.record(c.top-time.Duration(i)*c.every, 1)
		}
		every.recordEvery(c.top, c.every, c.n)
		if !every.h.Equals(each.h) || every.max != each.max {
			t.Errorf("%d latencies from %s every %s: recordEvery counts them otherwise than record", c.n, c.top, c.every)
		}
	}
	var many latencies
	many.recordEvery(time.Second, time.Nanosecond, 1e9)
	if n, p50 := many.h.TotalCount(), many.quantile(0.5); n != 1e9 || math.Abs(p50-500e3) > 0.01*500e3 {
		t.Errorf("a billion latencies from 1s down every ns: %d counted, p50 %g µs", n, p50)
	}
}
