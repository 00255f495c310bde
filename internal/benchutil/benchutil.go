// Package benchutil runs go test benchmarks as a number of concurrent
// clients and reports the garbage collector's cost beside the throughput.
package benchutil

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/gcstat"
)

// RunClients runs b.N operations spread over the given number of client
// goroutines. op gets the client's number and the operation's number
// (0..b.N-1); operations are handed out in chunks so that the counter is
// not what is measured. It reports ops/s, the GC's CPU share, and the
// process's CPU time per operation (cpu-ns/op), which unlike the wall
// time leaves out what a busy host steals from this virtual machine, and
// the page faults per operation (faults/op: each costs microseconds of
// system time here, and unlike time they do not vary with the host's
// load).
func RunClients(b *testing.B, clients int, op func(client, i int)) {
	const chunk = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	start := gcstat.Read()
	cpu0, faults0 := CPUTime(b), Faults(b)
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
	b.ReportMetric(float64(CPUTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(Faults(b)-faults0)/float64(b.N), "faults/op")
}

// CPUTime returns the user and system CPU time the process has used.
func CPUTime(b *testing.B) time.Duration {
	ru := rusage(b)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Faults returns the page faults the process has taken (minor and major:
// a minor one maps memory the process touches for the first time).
func Faults(b *testing.B) int64 {
	ru := rusage(b)
	return ru.Minflt + ru.Majflt
}

func rusage(b *testing.B) *syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return &ru
}

// ReportGC adds the collector's CPU share and largest pause to the
// benchmark's output.
func ReportGC(b *testing.B, d gcstat.Delta) {
	b.ReportMetric(100*d.CPUFraction, "gc-cpu-%")
	b.ReportMetric(float64(d.MaxPause.Microseconds()), "max-gc-pause-us")
}
