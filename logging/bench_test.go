package logging

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mmdb/mmdb/internal/benchutil"
	"github.com/mmdb/mmdb/logging/vfs"
)

// BenchmarkLog appends 200-byte records and waits for each to be durable,
// on the real disk under the test's temporary directory, from 1, 16 and 64
// writers over 1 and 2 channels. BenchmarkFdatasync is the bare disk, in
// the same run, for the 1-writer latency target. Both report
// records per sync (the group size).
func BenchmarkLog(b *testing.B) {
	for _, channels := range []int{1, 2} {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("channels=%d/writers=%d", channels, writers), func(b *testing.B) {
				root := b.TempDir()
				dirs := make([]string, channels)
				for i := range dirs {
					dirs[i] = filepath.Join(root, fmt.Sprint("ch", i))
				}
				l, err := Open(Options{Dirs: dirs})
				if err != nil {
					b.Fatal(err)
				}
				body := make([]byte, 200)
				ctx := context.Background()
				benchutil.RunClients(b, writers, func(_, _ int) {
					lsn, err := l.Append(append([]byte(nil), body...))
					if err == nil {
						err = l.Wait(ctx, lsn)
					}
					if err != nil {
						b.Error(err)
					}
				})
				st := l.Stats()
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(st.Records)/float64(max(st.Syncs, 1)), "records/sync")
			})
		}
	}
}

func BenchmarkFdatasync(b *testing.B) {
	f, err := vfs.Default.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Allocate(64 << 20); err != nil {
		b.Fatal(err)
	}
	block := make([]byte, 232)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.WriteAt(block, int64(i%100000)*int64(len(block))); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
