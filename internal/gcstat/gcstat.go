// Package gcstat measures what the Go garbage collector costs over an
// interval, from runtime/metrics: the share of CPU time it used and its
// stop-the-world pauses. Benchmarks report these next to their throughput.
package gcstat

import (
	"math"
	"runtime/metrics"
	"time"
)

var names = []string{
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/total:cpu-seconds",
	"/gc/cycles/total:gc-cycles",
	"/sched/pauses/total/gc:seconds",
	"/gc/heap/live:bytes",
}

// Sample is a reading of the collector's counters.
type Sample struct {
	gcCPU, totalCPU float64
	cycles          uint64
	pauses          *metrics.Float64Histogram
	liveHeap        uint64
}

// Read takes a sample.
func Read() Sample {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	return Sample{
		gcCPU:    s[0].Value.Float64(),
		totalCPU: s[1].Value.Float64(),
		cycles:   s[2].Value.Uint64(),
		pauses:   s[3].Value.Float64Histogram(),
		liveHeap: s[4].Value.Uint64(),
	}
}

// Delta is the collector's cost between two samples.
type Delta struct {
	CPUFraction float64       // GC CPU time / all CPU time available
	Cycles      uint64        // GC cycles completed
	MaxPause    time.Duration // upper bound of the largest pause bucket hit
	LiveHeap    uint64        // live heap after the last cycle, bytes
}

// Since returns the cost between start and now.
func Since(start Sample) Delta {
	end := Read()
	d := Delta{Cycles: end.cycles - start.cycles, LiveHeap: end.liveHeap}
	if total := end.totalCPU - start.totalCPU; total > 0 {
		d.CPUFraction = (end.gcCPU - start.gcCPU) / total
	}
	for i := len(end.pauses.Counts) - 1; i >= 0; i-- {
		if end.pauses.Counts[i] > start.pauses.Counts[i] {
			hi := end.pauses.Buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = end.pauses.Buckets[i]
			}
			d.MaxPause = time.Duration(hi * float64(time.Second))
			break
		}
	}
	return d
}
