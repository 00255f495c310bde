package checkpoint_test

import (
	"context"
	"flag"
	"runtime"
	"testing"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/workload/tatp"
)

var benchSubscribers = flag.Uint64("ckpt.subscribers", 100_000, "TATP subscribers for BenchmarkCheckpoint (1000000, about 10M rows, is the documented run)")

// BenchmarkCheckpoint writes a checkpoint image of a TATP database to
// disk (write) and restarts a database from it (load), reporting MB/s of
// image and rows/s.
func BenchmarkCheckpoint(b *testing.B) {
	db := mem.Open(mem.Options{})
	d, err := tatp.Create(db, *benchSubscribers)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Load(runtime.GOMAXPROCS(0), 1, nil); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var img checkpoint.Image
	b.Run("write", func(b *testing.B) {
		for range b.N {
			res, err := checkpoint.New(db, nil, checkpoint.Slots{}, checkpoint.Options{Dir: dir}).Run(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			img = res.Image
		}
		b.ReportMetric(float64(img.Bytes)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(img.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(img.Bytes)/1e6, "image-MB")
	})
	b.Run("load", func(b *testing.B) {
		for range b.N {
			if _, err := checkpoint.Load(vfs.Default, img.Path, mem.Open(mem.Options{}), nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(img.Bytes)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(img.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}
