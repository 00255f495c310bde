package replica_test

import (
	"bufio"
	"context"
	"flag"
	"io"
	"net"
	"runtime/debug"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/internal/benchutil"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
	"github.com/mmdb/mmdb/workload/tatp"
)

var benchSubscribers = flag.Uint64("image.subscribers", 100_000, "TATP subscribers for BenchmarkImageTransfer (1000000, about 10M rows, is the documented run)")

// BenchmarkImageTransfer serves the image of a TATP database over
// loopback gRPC and measures, in MB/s of image and rows/s: encoding it in
// memory (what a diskless node serves), streaming it to a client that
// discards it (transfer), and streaming it into a new database, indexes
// built (transfer+load: what a diskless node's bootstrap costs).
func BenchmarkImageTransfer(b *testing.B) {
	d, err := tatp.Populated(*benchSubscribers)
	if err != nil {
		b.Fatal(err)
	}
	db := d.DB
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) { return checkpoint.Encode(ctx, db, nil) },
		LSN:    db.LastLSN, Keep: time.Hour,
	})
	defer shelf.Close()
	srv := grpc.NewServer(grpc.InitialWindowSize(pb.WindowBytes), grpc.InitialConnWindowSize(pb.ConnWindowBytes))
	pb.RegisterImageServiceServer(srv, replica.NewImageServer(shelf, replica.DefaultChunkBytes, nil, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	var img *checkpoint.Served
	b.Run("encode", func(b *testing.B) {
		for range b.N {
			if img, err = checkpoint.Encode(context.Background(), db, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(img.Size)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(img.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(img.Size)/1e6, "image-MB")
	})
	if _, err := shelf.Get(context.Background(), checkpoint.ImageID{}); err != nil { // encoded once, kept
		b.Fatal(err)
	}
	fetch := func(b *testing.B, use func(st *replica.ImageStream) error) {
		var info replica.ImageInfo
		var cpu time.Duration
		for range b.N {
			// The previous database's memory goes back to the kernel
			// first, so that the load, like a starting node's, takes
			// fresh memory that faults in as it is first touched.
			b.StopTimer()
			debug.FreeOSMemory()
			b.StartTimer()
			cpu0 := benchutil.CPUTime(b)
			err := replica.Fetch(context.Background(), lis.Addr().String(), replica.FetchOptions{}, func(st *replica.ImageStream) error {
				info = st.Info()
				return use(st)
			})
			if err != nil {
				b.Fatal(err)
			}
			cpu += benchutil.CPUTime(b) - cpu0
		}
		b.ReportMetric(float64(info.Size)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(info.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		// Against s/op: how many of the cores the transfer kept busy.
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	}
	b.Run("transfer", func(b *testing.B) {
		fetch(b, func(st *replica.ImageStream) error {
			_, err := io.Copy(io.Discard, st)
			return err
		})
	})
	b.Run("transfer+load", func(b *testing.B) {
		fetch(b, func(st *replica.ImageStream) error {
			_, _, err := checkpoint.LoadFrom(bufio.NewReaderSize(st, 1<<20), "bench", st.Info().Size, mem.Open(mem.Options{}), nil)
			return err
		})
	})
}
