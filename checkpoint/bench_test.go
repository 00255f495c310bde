package checkpoint_test

import (
	"context"
	"flag"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/workload/tatp"
)

var benchSubscribers = flag.Uint64("ckpt.subscribers", 100_000, "TATP subscribers for BenchmarkCheckpoint (1000000, about 10M rows, is the documented run)")

// loadTATP returns a database holding a TATP population of
// -ckpt.subscribers.
func loadTATP(b *testing.B) (*mem.DB, *tatp.DB) {
	d, err := tatp.Populated(*benchSubscribers)
	if err != nil {
		b.Fatal(err)
	}
	return d.DB, d
}

// BenchmarkCheckpoint writes a checkpoint image of a TATP database to
// disk (write) and restarts a database from it (load), reporting MB/s of
// image and rows/s.
func BenchmarkCheckpoint(b *testing.B) {
	db, _ := loadTATP(b)
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
			if _, _, err := checkpoint.Load(vfs.Default, img.Path, mem.Open(mem.Options{}), nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(img.Bytes)*float64(b.N)/1e6/b.Elapsed().Seconds(), "MB/s")
		b.ReportMetric(float64(img.Rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkCheckpointUnderLoad runs the TATP mix on two clients for a
// fixed time, once alone (idle) and once while checkpoints are written
// back to back (checkpointing), and reports throughput, the p99 latency
// of a transaction, and the most memory a checkpoint kept in old row
// versions (kept-MB, against heap-MB of the database).
func BenchmarkCheckpointUnderLoad(b *testing.B) {
	db, d := loadTATP(b)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	dir := b.TempDir()
	for _, mode := range []string{"idle", "checkpointing"} {
		b.Run(mode, func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var kept int64
			images := 0
			if mode == "checkpointing" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := checkpoint.New(db, nil, checkpoint.Slots{}, checkpoint.Options{Dir: dir})
					for {
						select {
						case <-stop:
							return
						default:
						}
						res, err := c.Run(context.Background())
						if err != nil {
							b.Error(err)
							return
						}
						kept = max(kept, res.KeptBytes)
						images++
					}
				}()
			}
			lat := make([][]time.Duration, 2)
			var cw sync.WaitGroup
			start := time.Now()
			for c := range lat {
				cw.Add(1)
				go func() {
					defer cw.Done()
					cl := d.NewClient(uint64(c + 7))
					for time.Since(start) < *underLoadFor {
						t0 := time.Now()
						if _, err := cl.Run(context.Background(), cl.Next()); err != nil {
							b.Error(err)
							return
						}
						lat[c] = append(lat[c], time.Since(t0))
					}
				}()
			}
			cw.Wait()
			elapsed := time.Since(start)
			close(stop)
			wg.Wait()
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "tx/s")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-us")
			b.ReportMetric(float64(all[len(all)*999/1000].Microseconds()), "p999-us")
			b.ReportMetric(float64(kept)/1e6, "kept-MB")
			b.ReportMetric(float64(ms.HeapInuse)/1e6, "heap-MB")
			b.ReportMetric(float64(images), "images")
		})
	}
}

// BenchmarkRestart measures a restart as a node's start runs it
// (checkpoint.Restart): check the image slots, load the newest image of a
// TATP database, then replay the log written after it (-ckpt.log-mb of
// it, by TATP's write transactions on four clients at mmap-log). It
// reports the seconds the whole and the replay took (the rest is checking
// and loading the image), the log's size and the replay's records per
// second. The files are in the page cache. Before each restart the
// memory the previous database freed goes back to the kernel
// (debug.FreeOSMemory), so that the restart, like a node's start in a new
// process, takes fresh memory that faults in as it is first touched.
func BenchmarkRestart(b *testing.B) {
	db, _ := loadTATP(b)
	dir := b.TempDir()
	res, err := checkpoint.New(db, nil, checkpoint.Slots{}, checkpoint.Options{Dir: dir}).Run(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	db = nil
	runtime.GC()
	img := res.Image
	opts := durability.Options{Level: durability.MmapLog, Dirs: []string{b.TempDir()}}
	store, _, err := checkpoint.Restart(vfs.Default, dir, opts, nil)
	if err != nil {
		b.Fatal(err)
	}
	writeLog(b, store, int64(*restartLogMB)<<20)
	last := store.DB().LastLSN()
	if err := store.Close(); err != nil {
		b.Fatal(err)
	}
	stats := store.LogStats()
	store = nil
	var rec durability.Recovery
	var replays time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		debug.FreeOSMemory()
		b.StartTimer()
		s, _, err := checkpoint.Restart(vfs.Default, dir, opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rec = s.Recovery()
		replays += rec.Duration
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(b.Elapsed().Seconds()/n, "restart-s")
	b.ReportMetric((b.Elapsed()-replays).Seconds()/n, "inspect+load-s")
	b.ReportMetric(replays.Seconds()/n, "replay-s")
	b.ReportMetric(float64(rec.Records)*n/replays.Seconds(), "records/s")
	b.ReportMetric(float64(stats.StoredBytes)/1e6, "log-MB")
	b.ReportMetric(float64(img.Bytes)/1e6, "image-MB")
	if rec.LastLSN != last || rec.Records != int64(last-img.LSN) {
		b.Fatalf("replayed %d records up to LSN %d; the log holds %d up to LSN %d", rec.Records, rec.LastLSN, last-img.LSN, last)
	}
}

// writeLog runs TATP's write transactions on store's database until its
// log holds at least bytes.
func writeLog(b *testing.B, store *durability.Store, bytes int64) {
	d, err := tatp.Open(store.DB(), *benchSubscribers)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := d.NewClient(uint64(c + 11))
			for i := 0; ; i++ {
				if i%1024 == 0 && store.LogStats().StoredBytes >= bytes {
					return
				}
				t := cl.Next()
				if t < tatp.UpdateSubscriberData {
					continue
				}
				if _, err := cl.Run(context.Background(), t); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

var restartLogMB = flag.Int("ckpt.log-mb", 64, "MiB of log BenchmarkRestart replays after the image (1024 is the documented run)")

var underLoadFor = flag.Duration("ckpt.load-time", 10*time.Second, "how long BenchmarkCheckpointUnderLoad runs each mode")
