package main

import (
	"math"
	"math/bits"
	"time"
)

// latencies is a histogram of latencies in bounded memory, whatever the
// run's length or rate: log-linear buckets, as HdrHistogram's.
//
// A latency below 2^subBits ns has a bucket of its own. Above, each
// power of two [2^e, 2^(e+1)) is cut into 2^(subBits-1) buckets of equal
// width, so a bucket is at most 1/2^(subBits-1) of its lowest value wide,
// and its middle, which stands for the latencies in it, is within 0.4%
// of each of them. There are at most bucketOf(math.MaxInt64)+1 (7296)
// buckets; counts grows to the highest one used.
type latencies struct {
	counts   []uint64
	total    uint64
	min, max time.Duration
}

const subBits = 8

// bucketOf is the index of the bucket that holds v nanoseconds.
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits
	return shift<<(subBits-1) + int(v>>shift)
}

// bucketMiddle is the middle of bucket i's values, in nanoseconds.
func bucketMiddle(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	shift := i>>(subBits-1) - 1
	low := uint64(i-shift<<(subBits-1)) << shift
	return low + (1<<shift-1)/2
}

// record counts n operations of latency d (a negative d as 0).
func (h *latencies) record(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	d = max(d, 0)
	i := bucketOf(uint64(d))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i] += n
	if h.total == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.total += n
}

// merge adds o's counts to h's.
func (h *latencies) merge(o *latencies) {
	if o.total == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
}

// quantile returns the q-quantile in microseconds: the latency of the
// operation at rank ceil(q*total) (nearest rank), so that p99 of 100
// operations is the 99th, not the slowest. It is its bucket's middle,
// kept within the smallest and largest latencies recorded, or the
// largest itself at the top rank (both are exact); 0 if none was.
func (h *latencies) quantile(q float64) float64 {
	if h.total == 0 {
		return 0
	}
	// q*total is whole or at least 0.001 past a whole number for the
	// quantiles reported; the slack keeps a rounding error of the product
	// from moving a whole rank up by one.
	rank := max(uint64(math.Ceil(q*float64(h.total)-1e-6)), 1)
	if rank == h.total {
		return float64(h.max.Nanoseconds()) / 1e3
	}
	var seen uint64
	v := h.max
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			v = min(max(time.Duration(bucketMiddle(i)), h.min), h.max)
			break
		}
	}
	return float64(v.Nanoseconds()) / 1e3
}
