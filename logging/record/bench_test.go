package record

import (
	"context"
	"sync"
	"testing"

	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/workload/tatp"
)

// captureLog keeps the redo records of commits while on.
type captureLog struct {
	mu   sync.Mutex
	on   bool
	last uint64
	recs [][]byte
}

func (l *captureLog) Commit(r *mem.Redo) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last++
	if l.on {
		l.recs = append(l.recs, r.AppendBinary(nil))
	}
	return l.last, nil
}

var tatpRecords = sync.OnceValue(func() [][]byte {
	log := &captureLog{}
	d, err := tatp.Create(mem.Open(mem.Options{Log: log}), 20000)
	if err == nil {
		err = d.Load(2, 1, nil)
	}
	if err != nil {
		panic(err)
	}
	log.mu.Lock()
	log.on = true
	log.mu.Unlock()
	c := d.NewClient(1)
	for i := 0; i < 40000; i++ {
		if _, err := c.Run(context.Background(), c.Next()); err != nil {
			panic(err)
		}
	}
	return log.recs
})

// BenchmarkCompressTATP compresses the redo records of the TATP mix's
// writes, in blocks of a group commit's size, with each compression, and
// reports the ratio and the cost per record. Issue #4 picks the codec from
// these numbers.
func BenchmarkCompressTATP(b *testing.B) {
	recs := tatpRecords()
	for _, c := range []Compression{None, S2, Zstd} {
		for _, group := range []int{8, 64, 512} {
			b.Run(c.String()+"/records="+itoa(group), func(b *testing.B) {
				e := &Encoder{Compression: c, MinCompress: 256}
				var bl Builder
				var out []byte
				raw, stored, n := 0, 0, 0
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					bl.Reset()
					for j := 0; j < group; j++ {
						r := recs[(i*group+j)%len(recs)]
						if err := bl.Add(uint64(i*group+j+1), 1, r); err != nil {
							b.Fatal(err)
						}
					}
					var err error
					if out, err = e.Append(out[:0], 1, 64, &bl); err != nil {
						b.Fatal(err)
					}
					raw += bl.Len()
					stored += len(out) - BlockHeaderSize
					n += group
				}
				b.ReportMetric(float64(raw)/float64(stored), "ratio")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/record")
				b.ReportMetric(float64(raw)/float64(n), "raw-B/record")
			})
		}
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
