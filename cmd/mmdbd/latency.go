package main

import (
	"fmt"
	"math"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// latencies is a histogram of latencies in bounded memory, whatever the
// run's length or rate: an HdrHistogram of nanoseconds from 1 ns to
// latencyCeiling at 2 significant figures, so a latency's bucket stands
// for it within 0.8% (latencies below 256 ns are exact). Its counts,
// about 37 KB, are allocated by init (the bench does so before it
// measures) or the first record; the zero value is an empty histogram.
//
// A latency above latencyCeiling, a stalled op, is counted at the
// ceiling; the largest latency is kept apart, exact, for the maximum.
type latencies struct {
	h   *hdrhistogram.Histogram
	max time.Duration
}

// latencyCeiling is the highest latency the histogram tells apart.
const latencyCeiling = time.Hour

func (l *latencies) init() {
	if l.h == nil {
		l.h = hdrhistogram.New(1, int64(latencyCeiling), 2)
	}
}

// record counts n operations of latency d (a negative d as 0).
func (l *latencies) record(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	l.init()
	d = max(d, 0)
	// It cannot fail: the value is within the histogram's range, and a
	// run does not count 2^63 operations.
	if err := l.h.RecordValues(int64(min(d, latencyCeiling)), int64(n)); err != nil {
		panic(fmt.Sprintf("bench: recording latency %v: %v", d, err))
	}
	l.max = max(l.max, d)
}

// recordEvery counts n operations of latencies top, top-every,
// top-2*every and so on, as n calls of record would, but in a step per
// bucket of the histogram they fall in, whatever n: a paced run's missed
// operations, due every apart, may be billions. top-(n-1)*every must not
// overflow.
func (l *latencies) recordEvery(top, every time.Duration, n int64) {
	l.init()
	counted := func(d time.Duration) int64 { return int64(min(max(d, 0), latencyCeiling)) }
	for n > 0 {
		// The latencies fall, so those that share top's bucket are the
		// next k: the largest such k, by bisection.
		k, most := int64(1), n
		for k < most {
			mid := k + (most-k+1)/2
			if l.h.ValuesAreEquivalent(counted(top), counted(top-time.Duration(mid-1)*every)) {
				k = mid
			} else {
				most = mid - 1
			}
		}
		l.record(top, uint64(k))
		top -= time.Duration(k) * every
		n -= k
	}
}

// merge adds o's counts to l's.
func (l *latencies) merge(o *latencies) {
	if o.h == nil || o.h.TotalCount() == 0 {
		return
	}
	l.init()
	// Both histograms have the same range, so nothing is dropped.
	l.h.Merge(o.h)
	l.max = max(l.max, o.max)
}

// quantile returns the q-quantile in microseconds: the latency of the
// operation at rank ceil(q*total) (nearest rank), so that p99 of 100
// operations is the 99th, not the slowest. It is its bucket's highest
// value, kept within the largest latency recorded, or the largest itself
// at the top rank (exact); 0 if none was.
func (l *latencies) quantile(q float64) float64 {
	if l.h == nil || l.h.TotalCount() == 0 {
		return 0
	}
	total := l.h.TotalCount()
	// q*total is whole or at least 0.001 past a whole number for the
	// quantiles reported; the slack keeps a rounding error of the product
	// from moving a whole rank up by one.
	rank := max(int64(math.Ceil(q*float64(total)-1e-6)), 1)
	if rank == total {
		return float64(l.max.Nanoseconds()) / 1e3
	}
	// The library takes a percentile and rounds its rank to the nearest
	// (HdrHistogram's rule, not nearest rank). A quarter of a rank below
	// ours rounds to it, and its ceiling is it too, whatever a float
	// error of the product.
	v := time.Duration(l.h.ValueAtPercentile(100 * (float64(rank) - 0.25) / float64(total)))
	return float64(min(v, l.max).Nanoseconds()) / 1e3
}
