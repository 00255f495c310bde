package logging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// TestReadWhileWriting reads a log while it is written, as a primary's
// sender catches a standby up from the log files: readers start after
// some LSN at or below the one the log says is shipped (durable, or
// written for a mapped log) and read up to it, then on with the same
// reader up to where that LSN has got to since, while writers commit and
// segments rotate all the time. Every record up to the LSN asked for must
// come back, in order, with its body: a write in progress past it (a
// block, a marker, a segment being created) is neither damage nor the
// end of the log.
func TestReadWhileWriting(t *testing.T) {
	for _, tc := range []struct {
		channels        int
		mapped, prefill bool
	}{{1, false, false}, {3, false, false}, {2, true, false}, {2, false, true}} {
		t.Run(fmt.Sprintf("channels=%d,mapped=%v,prefill=%v", tc.channels, tc.mapped, tc.prefill), func(t *testing.T) {
			fs := vfs.NewMemFS()
			l, err := Open(Options{FS: fs, Dirs: channelDirs(tc.channels), SegmentSize: 4 << 10, MinCompress: 64,
				Mapped: tc.mapped, SyncInterval: time.Millisecond, Prefill: tc.prefill})
			if err != nil {
				t.Fatal(err)
			}
			shipped, wait := l.DurableLSN, l.Wait
			if tc.mapped {
				shipped, wait = l.WrittenLSN, l.WaitWritten
			}
			var (
				mu     sync.Mutex
				bodies = map[uint64][]byte{}
				stop   = make(chan struct{})
				wg     sync.WaitGroup
			)
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						b := bodyOf(w, i)
						lsn, err := l.Append(b)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						bodies[lsn] = b
						mu.Unlock()
						if err := wait(context.Background(), lsn); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			// Each reader keeps what it read, checked against bodies once
			// the writers have stopped (a record can be durable before its
			// writer has noted its body).
			got := make([]map[uint64][]byte, 2)
			var rg sync.WaitGroup
			for i := range got {
				got[i] = map[uint64][]byte{}
				rg.Add(1)
				go func() {
					defer rg.Done()
					rnd := rand.New(rand.NewPCG(uint64(i), 7))
					for range 40 {
						if err := readLive(l, shipped, rnd, got[i]); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			rg.Wait()
			close(stop)
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				for lsn, b := range g {
					if !bytes.Equal(b, bodies[lsn]) {
						t.Fatalf("LSN %d read back as %q, appended as %q", lsn, b, bodies[lsn])
					}
				}
			}
		})
	}
}

// readLive opens a reader of the live log l after an LSN at or below
// shipped() and reads up to shipped(), then on up to shipped() again, a
// few times, as the sender does; it notes the bodies read in got.
func readLive(l *Log, shipped func() uint64, rnd *rand.Rand, got map[uint64][]byte) error {
	upto := shipped()
	after := rnd.Uint64N(upto + 1)
	if upto > 200 {
		after = upto - rnd.Uint64N(200) // near the tail, where it is written
	}
	r, err := l.NewReader(after)
	if err != nil {
		return fmt.Errorf("read after LSN %d (shipped %d): %w", after, upto, err)
	}
	defer r.Close()
	next := after
	for round := 0; round < 5; round++ {
		for next < upto {
			rec, ok, err := r.Next()
			if err != nil || !ok {
				return fmt.Errorf("read after LSN %d: at LSN %d of %d (shipped now %d): ok %v, %w", after, next, upto, shipped(), ok, err)
			}
			if rec.LSN != next+1 {
				return fmt.Errorf("read after LSN %d: LSN %d after %d", after, rec.LSN, next)
			}
			got[rec.LSN] = bytes.Clone(rec.Body)
			next = rec.LSN
		}
		for upto == shipped() {
			time.Sleep(100 * time.Microsecond)
		}
		upto = shipped()
	}
	return nil
}

// TestReadWhileWritingFindsDamage: a live reader still reports damage
// to a record the log has written, in a segment it has finished or in
// the one it is writing, as corruption, and returns every record before it.
func TestReadWhileWritingFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		last bool // damage the segment being written
		at   int64
		b    []byte
	}{
		{"finished segment, payload", false, record.BlockHeaderSize + 2, []byte{0xff}},
		{"finished segment, blank header", false, 0, make([]byte, record.BlockHeaderSize)},
		{"segment being written, payload", true, record.BlockHeaderSize + 2, []byte{0xff}},
		{"segment being written, blank header", true, 0, make([]byte, record.BlockHeaderSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMemFS()
			dirs := channelDirs(1)
			l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 2 << 10, NoCompression: true})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var last uint64
			for i := range 60 {
				if last, err = l.Append(bodyOf(0, i)); err != nil {
					t.Fatal(err)
				}
				if err := l.Wait(context.Background(), last); err != nil {
					t.Fatal(err) // one record a block
				}
			}
			segs, err := listSegments(fs, dirs[0])
			if err != nil || len(segs) < 3 {
				t.Fatalf("segments %v: %v", segs, err)
			}
			seq := segs[1]
			if tc.last {
				seq = segs[len(segs)-1]
			}
			name := filepath.Join(dirs[0], SegmentName(seq))
			off, h, ok := findBlock(t, fs, name, func(record.BlockHeader) bool { return true })
			lsn := h.FirstLSN
			if !ok || lsn > last {
				t.Fatalf("%s holds no record of the log's", name)
			}
			corruptAt(t, fs, name, off+tc.at, tc.b)
			r, err := l.NewReader(0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for want := uint64(1); ; want++ {
				rec, ok, err := r.Next()
				if want == lsn {
					if ok || !errors.Is(err, ErrCorrupt) {
						t.Fatalf("LSN %d, damaged: ok %v, %v", lsn, ok, err)
					}
					t.Log(err)
					return
				}
				if err != nil || !ok || rec.LSN != want {
					t.Fatalf("at LSN %d: LSN %d, ok %v, %v", want, rec.LSN, ok, err)
				}
			}
		})
	}
}

// TestReadWhileOpeningOnFullDisk: a live reader made while the log,
// opened on a full disk, has not yet written its channels' opening
// segments must not take the records the opening will void (those past
// StartLSN, from before the start) for the new records given their LSNs
// once there is room.
func TestReadWhileOpeningOnFullDisk(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	old := reopen(t, fs, dirs, recovered{}, numbered("old", 20)...)
	got, err := recoverLog(fs, dirs, false)
	if err != nil || got.last != old[19] {
		t.Fatalf("recovered to %d: %v", got.last, err)
	}
	start := old[14] // as a start told to stop after it: 16 to 20 are void
	fs.SetSpace(1)
	l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, StartLSN: start, Tails: got.tails})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, err := l.NewReader(start - 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rec, ok, err := r.Next(); err != nil || !ok || rec.LSN != start {
		t.Fatalf("LSN %d, ok %v, %v; want %d", rec.LSN, ok, err, start)
	}
	if rec, ok, err := r.Next(); err != nil || ok {
		t.Fatalf("before any new record: LSN %d (%q), ok %v, %v", rec.LSN, rec.Body, ok, err)
	}
	fs.SetSpace(0)
	var lsns []uint64
	for deadline := time.Now().Add(10 * time.Second); len(lsns) < 2; time.Sleep(10 * time.Millisecond) {
		lsn, err := l.Append(fmt.Appendf(nil, "new %d", len(lsns)))
		if err == nil {
			lsns = append(lsns, lsn)
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	if err := l.Wait(context.Background(), lsns[1]); err != nil {
		t.Fatal(err)
	}
	for i, lsn := range lsns {
		rec, ok, err := r.Next()
		if want := fmt.Sprintf("new %d", i); err != nil || !ok || rec.LSN != lsn || string(rec.Body) != want {
			t.Fatalf("LSN %d is %q (ok %v, %v); want LSN %d, %q", rec.LSN, rec.Body, ok, err, lsn, want)
		}
	}
}

// TestReadWhileReleased: a live reader that reaches the end of its
// segment after the log released the segments that follow it (a
// checkpoint's image holds their records) reports ErrReleased, which
// sends a standby it catches up for an image, not corruption.
func TestReadWhileReleased(t *testing.T) {
	fs := vfs.NewMemFS()
	l, err := Open(Options{FS: fs, Dirs: channelDirs(1), SegmentSize: 4 << 10, NoCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	body := bytes.Repeat([]byte("r"), 500)
	appendN := func(n int) uint64 {
		t.Helper()
		var lsn uint64
		for range n {
			if lsn, err = l.Append(body); err == nil {
				err = l.Wait(context.Background(), lsn)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		return lsn
	}
	appendN(3)
	r, err := l.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rec, ok, err := r.Next(); err != nil || !ok || rec.LSN != 1 {
		t.Fatalf("LSN %d, ok %v, %v; want 1", rec.LSN, ok, err)
	}
	// Segments fill and go while the reader is in the first.
	last := appendN(40)
	if rel, err := l.Release(last, 0); err != nil || rel.Segments < 2 {
		t.Fatalf("released %+v, %v; want the segments before the last", rel, err)
	}
	for {
		rec, ok, err := r.Next()
		if err != nil {
			if !errors.Is(err, ErrReleased) {
				t.Fatalf("after LSN %d: %v, want ErrReleased", rec.LSN, err)
			}
			return
		}
		if !ok {
			t.Fatalf("the log ended at LSN %d, with records up to %d released past the reader", rec.LSN, last)
		}
	}
}
