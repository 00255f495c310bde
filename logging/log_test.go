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

// appendConcurrently has workers append records, each worker up to each
// of them (body gives worker w's i-th), and wait for each with wait (nil:
// Wait); a worker stops at its first failure. It returns each LSN's body
// and the LSNs whose wait succeeded.
func appendConcurrently(l *Log, workers, each int, body func(w, i int) []byte, wait func(lsn uint64, i int) error) (map[uint64][]byte, []uint64) {
	if body == nil {
		body = bodyOf
	}
	if wait == nil {
		wait = func(lsn uint64, _ int) error { return l.Wait(context.Background(), lsn) }
	}
	var mu sync.Mutex
	bodies := map[uint64][]byte{}
	var acked []uint64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				b := body(w, i)
				lsn, err := l.Append(bytes.Clone(b))
				if err != nil {
					return
				}
				mu.Lock()
				bodies[lsn] = b
				mu.Unlock()
				if err := wait(lsn, i); err != nil {
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
		bodies, acked := appendConcurrently(l, workers, each, nil, nil)
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

// TestLogCompresses: a log opened with the default options stores
// compressible records in blocks well under their raw size (SPEC 3:
// a block is compressed when that pays).
func TestLogCompresses(t *testing.T) {
	// The segment size is not the default's only to spare MemFS 64 MiB.
	l, err := Open(Options{FS: vfs.NewMemFS(), Dirs: channelDirs(1), SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 1000 {
		body := bytes.Repeat([]byte(fmt.Sprintf("subscriber %d in zone %d;", i, i%7)), 20)
		if last, err = l.Append(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Wait(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Records != 1000 || st.StoredBytes <= 0 || st.StoredBytes > st.RawBytes/4 {
		t.Fatalf("%d records of %d raw bytes stored in %d: want under a quarter", st.Records, st.RawBytes, st.StoredBytes)
	}
}

// TestTap: a tap set while workers append is given every record from
// the one after the LSN it was started with, in LSN order with no gap,
// each with its body, in both modes; a record AppendIf's admit refuses
// gets no LSN and reaches no tap.
func TestTap(t *testing.T) {
	for _, mapped := range []bool{false, true} {
		l, err := Open(Options{FS: vfs.NewMemFS(), Dirs: channelDirs(2), SegmentSize: 256 << 10, Mapped: mapped})
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu     sync.Mutex
			start  uint64
			tapped []uint64
			bodies = map[uint64][]byte{}
		)
		done := make(chan map[uint64][]byte)
		go func() {
			// Pauses now and then, so that the tap comes in the middle.
			all, _ := appendConcurrently(l, 4, 500, nil, func(_ uint64, i int) error {
				if i%20 == 0 {
					time.Sleep(time.Millisecond)
				}
				return nil
			})
			done <- all
		}()
		for l.LastLSN() < 200 {
			time.Sleep(time.Millisecond)
		}
		l.Tap(func(last uint64) func(uint64, []byte) {
			start = last
			return func(lsn uint64, body []byte) {
				mu.Lock()
				defer mu.Unlock()
				tapped = append(tapped, lsn)
				bodies[lsn] = bytes.Clone(body)
			}
		})
		all := <-done
		refused := errors.New("refused")
		if lsn, err := l.AppendIf([]byte("no"), func() error { return refused }); !errors.Is(err, refused) || lsn != 0 {
			t.Fatalf("mapped=%v: a refused record: LSN %d, %v", mapped, lsn, err)
		}
		if lsn, err := l.AppendIf([]byte("yes"), func() error { return nil }); err != nil || lsn != 2001 {
			t.Fatalf("mapped=%v: an admitted record: LSN %d (want 2001), %v", mapped, lsn, err)
		}
		all[2001] = []byte("yes")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if start < 200 || start >= 2000 {
			t.Fatalf("mapped=%v: the tap started after LSN %d, while 200 to 2000 were being appended", mapped, start)
		}
		if want := 2001 - int(start); len(tapped) != want {
			t.Fatalf("mapped=%v: the tap was given %d records after LSN %d, want %d", mapped, len(tapped), start, want)
		}
		for i, lsn := range tapped {
			if lsn != start+1+uint64(i) || !bytes.Equal(bodies[lsn], all[lsn]) {
				t.Fatalf("mapped=%v: the tap's record %d is LSN %d (%q), want LSN %d (%q)", mapped, i, lsn, bodies[lsn], start+1+uint64(i), all[lsn])
			}
		}
	}
}

// TestOnSync: the log tells OnSync of every sync Stats counts, with the
// records each made durable, in both modes.
func TestOnSync(t *testing.T) {
	for _, mapped := range []bool{false, true} {
		fs := vfs.NewMemFS()
		fs.SetSyncDelay(300 * time.Microsecond)
		var mu sync.Mutex
		var calls, records int64
		var took time.Duration
		onSync := func(n int, d time.Duration) {
			mu.Lock()
			calls, records, took = calls+1, records+int64(n), took+d
			mu.Unlock()
		}
		// Segments large enough that no segment switch syncs for the flusher.
		l, err := Open(Options{FS: fs, Dirs: channelDirs(2), SegmentSize: 1 << 20, Mapped: mapped, OnSync: onSync})
		if err != nil {
			t.Fatal(err)
		}
		const workers, each = 8, 40
		if _, acked := appendConcurrently(l, workers, each, nil, nil); len(acked) != workers*each {
			t.Fatalf("mapped %v: %d acknowledged", mapped, len(acked))
		}
		st := l.Stats()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if calls != st.Syncs || records != st.Records || took != st.SyncTime {
			t.Fatalf("mapped %v: OnSync saw %d syncs of %d records in %s; Stats say %+v", mapped, calls, records, took, st)
		}
	}
}

// TestMappedSyncInterval: a log written through mappings (mmap-log)
// with a SyncInterval makes what it wrote durable within that interval
// without being asked, so a crash of the machine keeps it (SPEC 4: what
// the periodic mmap_sync_interval flush wrote survives); without one,
// nothing asks, and the crash loses what was only written.
func TestMappedSyncInterval(t *testing.T) {
	for _, interval := range []time.Duration{20 * time.Millisecond, 0} {
		t.Run(fmt.Sprint("interval=", interval), func(t *testing.T) {
			fs := vfs.NewMemFS()
			dirs := channelDirs(1)
			l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 1 << 20, Mapped: true, SyncInterval: interval})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Close(); err != nil && !errors.Is(err, vfs.ErrCrashed) {
					t.Error(err) // the file system crashed under it; nothing else may fail
				}
			}()
			bodies := map[uint64][]byte{}
			var last uint64
			for i := range 50 {
				body := bytes.Repeat([]byte{byte(i)}, 100)
				if last, err = l.Append(body); err != nil {
					t.Fatal(err)
				}
				bodies[last] = body
			}
			if err := l.WaitWritten(context.Background(), last); err != nil {
				t.Fatal(err)
			}
			if interval > 0 {
				for deadline := time.Now().Add(5 * time.Second); l.DurableLSN() < last; time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("durable to LSN %d of %d, 5 s after they were written", l.DurableLSN(), last)
					}
				}
			} else {
				time.Sleep(200 * time.Millisecond)
				if l.DurableLSN() == last {
					t.Fatalf("durable to LSN %d with nothing asking, 200 ms after they were written", last)
				}
			}
			got, _, err := readAllRecords(t, fs.Crash(nil), dirs, bodies)
			if err != nil || (got == last) != (interval > 0) {
				t.Fatalf("after a crash, the log holds records to LSN %d of %d: %v", got, last, err)
			}
		})
	}
}

// TestLogCrash crashes the file system at its k-th operation under eight
// concurrent writers, for many k: after recovery every acknowledged record
// is there, with its body, and nothing past what was appended.
func TestLogCrash(t *testing.T) {
	for k := 1; k < 400; k += 3 {
		fs := vfs.NewMemFS()
		dirs := channelDirs(2)
		// Every other k makes spares too (Prefill): the crash may hit
		// their operations, which are not in step with the commits', so
		// those runs differ from one time to the next.
		l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, MinCompress: 64, Prefill: k%2 == 0})
		if err != nil {
			t.Fatal(err)
		}
		fs.CrashAfter(k)
		bodies, acked := appendConcurrently(l, 8, 40, nil, nil)
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

// TestLogFullDisk: when the disk fills, the records already queued are
// kept (neither lost nor failed): a Wait on one gives up at once with
// ErrFull (and ENOSPC), where Follow waits on. Append refuses new records
// with ENOSPC before giving them an LSN. Once space is freed the kept
// records become durable and appends are taken again, all without a
// restart; for a log written through mappings (mmap-log) as for one
// written with writes.
func TestLogFullDisk(t *testing.T) {
	for _, mapped := range []bool{false, true} {
		t.Run(fmt.Sprint("mapped=", mapped), func(t *testing.T) {
			fs := vfs.NewMemFS()
			fs.SetSpace(64 << 10)
			dirs := channelDirs(1)
			l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 16 << 10, NoCompression: true, Mapped: mapped})
			if err != nil {
				t.Fatal(err)
			}
			bodies := map[uint64][]byte{}
			var refused error
			var waiting []uint64 // appended, not yet durable when the disk filled
			for i := 0; i < 10000 && refused == nil; i++ {
				body := bytes.Repeat([]byte{byte(i)}, 100)
				lsn, err := l.Append(body)
				if err != nil {
					refused = err
					break
				}
				bodies[lsn] = body
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err = l.Wait(ctx, lsn)
				cancel()
				if err != nil {
					if !errors.Is(err, ErrFull) || !errors.Is(err, unix.ENOSPC) {
						t.Fatalf("waiting on a full disk: %v, want ErrFull", err)
					}
					waiting = append(waiting, lsn)
				}
			}
			if !errors.Is(refused, unix.ENOSPC) || !errors.Is(refused, ErrFull) {
				t.Fatalf("filling the disk: %v", refused)
			}
			if len(waiting) == 0 {
				t.Fatal("no record was held back by the full disk")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			err = l.Follow(ctx, waiting[0], !mapped)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("following the log through a full disk: %v, want it to wait", err)
			}
			last := l.LastLSN()
			if _, err := l.Append([]byte("more")); !errors.Is(err, unix.ENOSPC) || l.LastLSN() != last {
				t.Fatalf("an append on the full disk: %v (last LSN %d, was %d)", err, l.LastLSN(), last)
			}
			fs.SetSpace(0) // space is freed
			if err := l.Follow(context.Background(), waiting[len(waiting)-1], false); err != nil {
				t.Fatalf("the records queued when the disk filled: %v", err)
			}
			if err := l.Wait(context.Background(), waiting[len(waiting)-1]); err != nil {
				t.Fatalf("waiting once the records queued when the disk filled are durable: %v", err)
			}
			var lsn uint64
			deadline := time.Now().Add(10 * time.Second)
			for {
				if lsn, err = l.Append([]byte("after")); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil || lsn != last+1 {
				t.Fatalf("appending once space is back: LSN %d (want %d): %v", lsn, last+1, err)
			}
			bodies[lsn] = []byte("after")
			if err := l.Wait(context.Background(), lsn); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			got, _, err := readAllRecords(t, fs, dirs, bodies)
			if err != nil || got != lsn {
				t.Fatalf("after the full disk: read to LSN %d, want %d: %v", got, lsn, err)
			}
		})
	}
}

// TestFullDiskHoldsBackLaterOnly: a wait gives up on a full disk only
// for a record at or after one the disk holds back. Record 1 (channel 0)
// is written and slowly synced while record 2 (channel 1) finds no room
// for a segment: a wait on 2 fails with ErrFull, one on 1 returns once
// the sync is done.
func TestFullDiskHoldsBackLaterOnly(t *testing.T) {
	fs := vfs.NewMemFS()
	l, err := Open(Options{FS: fs, Dirs: channelDirs(2), SegmentSize: 4096, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		fs.SetSpace(0)
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}()
	fs.SetSpace(1)                          // no room for another segment
	fs.SetSyncDelay(500 * time.Millisecond) // record 1's sync is under way when record 2 fails
	one, err := l.Append([]byte("fits in channel 0's segment"))
	if err != nil {
		t.Fatal(err)
	}
	two, err := l.Append(bytes.Repeat([]byte{'x'}, 5000)) // needs a segment of its own
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Wait(ctx, two); !errors.Is(err, ErrFull) {
		t.Fatalf("a wait on the record the full disk holds back: %v, want ErrFull", err)
	}
	if err := l.Wait(ctx, one); err != nil || l.DurableLSN() != one {
		t.Fatalf("a wait on the record before it: %v (durable LSN %d)", err, l.DurableLSN())
	}
}

// TestLargeRecords: a record larger than MaxBlockBytes gets a block of
// its own; one over MaxRecordBytes is refused before it gets an LSN.
func TestLargeRecords(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 64 << 10, MaxBlockBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	bodies := map[uint64][]byte{}
	for i, n := range []int{100, 300 << 10, 200, 5 << 10} {
		body := bytes.Repeat([]byte{byte(i)}, n)
		lsn, err := l.Append(body)
		if err != nil {
			t.Fatal(err)
		}
		bodies[lsn] = body
	}
	if _, err := l.Append(make([]byte, MaxRecordBytes+1)); !errors.Is(err, ErrTooLarge) || l.LastLSN() != 4 {
		t.Fatalf("a record over the limit: %v (last LSN %d)", err, l.LastLSN())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last, _, err := readAllRecords(t, fs, dirs, bodies); err != nil || last != 4 {
		t.Fatalf("read back to %d: %v", last, err)
	}
}

// TestFullDiskUnderLoad: records appended while a flush that met a full
// disk is retried, with syncs slow enough for appends to arrive during
// them, are written in order and none is acknowledged before it is
// durable.
func TestFullDiskUnderLoad(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4096, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte{'x'}, 1000)
	bodies := map[uint64][]byte{}
	for i := 0; i < 3; i++ {
		lsn, err := l.Append(body)
		if err != nil {
			t.Fatal(err)
		}
		bodies[lsn] = body
	}
	fs.SetSpace(1)
	lsn, err := l.Append(body) // needs a new segment: the disk is full
	if err != nil {
		t.Fatal(err)
	}
	bodies[lsn] = body
	deadline := time.Now().Add(5 * time.Second)
	for {
		lsn, err := l.Append([]byte("refused"))
		if err != nil {
			break
		}
		bodies[lsn] = []byte("refused") // taken before the flusher found the disk full
		if time.Now().After(deadline) {
			t.Fatal("appends were not refused on a full disk")
		}
	}
	fs.SetSpace(0)
	fs.SetSyncDelay(50 * time.Millisecond)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; {
				b := bodyOf(w, i)
				lsn, err := l.Append(bytes.Clone(b))
				if err != nil {
					time.Sleep(5 * time.Millisecond) // still full: try again
					continue
				}
				mu.Lock()
				bodies[lsn] = b
				mu.Unlock()
				if err := l.Wait(context.Background(), lsn); err != nil {
					t.Error(err)
					return
				}
				i++
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if last, _, err := readAllRecords(t, fs, dirs, bodies); err != nil || last != l.LastLSN() {
		t.Fatalf("read back to %d of %d: %v", last, l.LastLSN(), err)
	}
}
