// Package benchutil runs go test benchmarks as a number of concurrent
// clients and reports the garbage collector's cost beside the throughput.
package benchutil

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mmdb/mmdb/internal/gcstat"
)

// RunClients runs b.N operations spread over the given number of client
// goroutines. op gets the client's number and the operation's number
// (0..b.N-1); operations are handed out in chunks so that the counter is
// not what is measured. It reports ops/s and the GC's CPU share.
func RunClients(b *testing.B, clients int, op func(client, i int)) {
	const chunk = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	start := gcstat.Read()
	b.ResetTimer()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= b.N {
					return
				}
				for i := lo; i < min(lo+chunk, b.N); i++ {
					op(c, i)
				}
			}
		}(c)
	}
	wg.Wait()
	b.StopTimer()
	ReportGC(b, gcstat.Since(start))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// ReportGC adds the collector's CPU share and largest pause to the
// benchmark's output.
func ReportGC(b *testing.B, d gcstat.Delta) {
	b.ReportMetric(100*d.CPUFraction, "gc-cpu-%")
	b.ReportMetric(float64(d.MaxPause.Microseconds()), "max-gc-pause-us")
}
