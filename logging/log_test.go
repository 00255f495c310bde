package logging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mmdb/mmdb/logging/vfs"
)

func channelDirs(n int) []string {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("/log/ch%d", i)
	}
	return dirs
}

// bodyOf is the record body appended for an LSN by worker w's i-th append.
func bodyOf(w, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("w%d-%d;", w, i)), 1+(w+i)%7)
}

// appendConcurrently has workers append and wait for records; it returns
// each LSN's body and the LSNs whose Wait succeeded.
func appendConcurrently(t *testing.T, l *Log, workers, each int) (map[uint64][]byte, []uint64) {
	t.Helper()
	var mu sync.Mutex
	bodies := map[uint64][]byte{}
	var acked []uint64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				body := bodyOf(w, i)
				lsn, err := l.Append(bytes.Clone(body))
				if err != nil {
					return
				}
				mu.Lock()
				bodies[lsn] = body
				mu.Unlock()
				if err := l.Wait(context.Background(), lsn); err != nil {
					return
				}
				mu.Lock()
				acked = append(acked, lsn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return bodies, acked
}

func TestLogGroupCommit(t *testing.T) {
	for _, channels := range []int{1, 3} {
		fs := vfs.NewMemFS()
		fs.SetSyncDelay(300 * time.Microsecond) // a fast disk's flush
		l, err := Open(Options{FS: fs, Dirs: channelDirs(channels), SegmentSize: 16 << 10, MinCompress: 64})
		if err != nil {
			t.Fatal(err)
		}
		const workers, each = 8, 300
		bodies, acked := appendConcurrently(t, l, workers, each)
		if len(acked) != workers*each || l.DurableLSN() != workers*each {
			t.Fatalf("%d channels: %d acknowledged, durable LSN %d", channels, len(acked), l.DurableLSN())
		}
		st := l.Stats()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		// Records that queue behind a sync share the next one.
		if st.Records != workers*each || st.Syncs == 0 || st.Syncs >= st.Records || st.StoredBytes <= 0 {
			t.Fatalf("%d channels: stats %+v (want fewer syncs than records: group commit)", channels, st)
		}
		t.Logf("%d channels: %d records in %d syncs (%.1f per group), %d raw bytes stored in %d", channels, st.Records, st.Syncs, float64(st.Records)/float64(st.Syncs), st.RawBytes, st.StoredBytes)
		last, _, err := readAllRecords(t, fs, l.opts.Dirs, bodies)
		if err != nil || last != workers*each {
			t.Fatalf("%d channels: read back to LSN %d: %v", channels, last, err)
		}
	}
}

// TestLogCrash crashes the file system at its k-th operation under eight
// concurrent writers, for many k: after recovery every acknowledged record
// is there, with its body, and nothing past what was appended.
func TestLogCrash(t *testing.T) {
	for k := 1; k < 400; k += 3 {
		fs := vfs.NewMemFS()
		dirs := channelDirs(2)
		l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, MinCompress: 64})
		if err != nil {
			t.Fatal(err)
		}
		fs.CrashAfter(k)
		bodies, acked := appendConcurrently(t, l, 8, 40)
		if err := l.Close(); err != nil && !errors.Is(err, vfs.ErrCrashed) {
			t.Fatalf("k=%d: close: %v", k, err)
		}
		maxAcked := uint64(0)
		for _, lsn := range acked {
			maxAcked = max(maxAcked, lsn)
		}
		after := fs.Crash(rand.New(rand.NewPCG(uint64(k), 1)))
		last, _, err := readAllRecords(t, after, dirs, bodies)
		if err != nil {
			t.Fatalf("k=%d: recovery: %v", k, err)
		}
		if last < maxAcked || last > l.LastLSN() {
			t.Fatalf("k=%d: recovered to LSN %d; %d was acknowledged, %d appended", k, last, maxAcked, l.LastLSN())
		}
	}
}

// TestLogFullDisk: when the disk fills, appends and waits fail with
// ENOSPC, nothing acknowledged is lost, and the log stays failed.
func TestLogFullDisk(t *testing.T) {
	fs := vfs.NewMemFS()
	fs.SetSpace(64 << 10)
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 16 << 10, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	var failed error
	var acked uint64
	bodies := map[uint64][]byte{}
	for i := 0; i < 10000 && failed == nil; i++ {
		body := bytes.Repeat([]byte{'x'}, 100)
		lsn, err := l.Append(body)
		if err != nil {
			failed = err
			break
		}
		bodies[lsn] = body
		if err := l.Wait(context.Background(), lsn); err != nil {
			failed = err
			break
		}
		acked = lsn
	}
	if !errors.Is(failed, unix.ENOSPC) {
		t.Fatalf("filling the disk: %v", failed)
	}
	if _, err := l.Append([]byte("more")); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("an append after the failure: %v", err)
	}
	if err := l.Close(); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("close: %v", err)
	}
	last, _, err := readAllRecords(t, fs, dirs, bodies)
	if err != nil || last < acked {
		t.Fatalf("after the full disk: read to LSN %d, %d acknowledged: %v", last, acked, err)
	}
}
