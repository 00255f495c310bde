package logging

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// testLog writes records to channels the way the log will: each record to
// channel lsn % channels, a block every few records, small segments so
// there are many.
type testLog struct {
	t       *testing.T
	fs      vfs.FS
	dirs    []string
	writers []*segmentWriter
	enc     []*record.Encoder
	blocks  []*record.Builder
	r       *rand.Rand
	lsn     uint64
	bodies  map[uint64][]byte
}

func newTestLog(t *testing.T, fs vfs.FS, channels int, segSize int64, seed uint64) *testLog {
	l := &testLog{t: t, fs: fs, r: rand.New(rand.NewPCG(seed, 1)), bodies: map[uint64][]byte{}}
	for c := 0; c < channels; c++ {
		dir := fmt.Sprintf("/log/ch%d", c)
		if err := vfs.MkdirDurable(fs, dir); err != nil {
			t.Fatal(err)
		}
		l.dirs = append(l.dirs, dir)
		l.writers = append(l.writers, newSegmentWriter(fs, dir, uint32(c), uint32(channels), segSize, Tail{}, 0))
		l.enc = append(l.enc, &record.Encoder{Compression: record.S2, MinCompress: 64})
		l.blocks = append(l.blocks, &record.Builder{})
	}
	for _, w := range l.writers { // as Open does
		if err := w.start(); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// add appends n records, flushing each channel's block every few records.
func (l *testLog) add(n int) {
	l.t.Helper()
	for i := 0; i < n; i++ {
		l.lsn++
		body := bytes.Repeat([]byte{byte(l.lsn)}, 1+l.r.IntN(200))
		l.bodies[l.lsn] = body
		c := int(l.lsn % uint64(len(l.dirs)))
		if err := l.blocks[c].Add(l.lsn, 1, body); err != nil {
			l.t.Fatal(err)
		}
		if l.r.IntN(4) == 0 {
			l.flush(c)
		}
	}
}

func (l *testLog) flush(c int) {
	l.t.Helper()
	if l.blocks[c].Count() == 0 {
		return
	}
	if _, err := l.writers[c].write(l.blocks[c], l.enc[c]); err != nil {
		l.t.Fatal(err)
	}
	l.blocks[c].Reset()
}

// syncAll flushes and syncs every channel, then writes the marker that
// records the sync, as Log does; everything added so far is then durable.
func (l *testLog) syncAll() {
	l.t.Helper()
	for c, w := range l.writers {
		l.flush(c)
		if err := w.sync(); err != nil {
			l.t.Fatal(err)
		}
		if err := w.marker(); err != nil {
			l.t.Fatal(err)
		}
	}
}

// readAllRecords reads the log back and checks each record's body.
func readAllRecords(t *testing.T, fs vfs.FS, dirs []string, bodies map[uint64][]byte) (uint64, []Tail, error) {
	t.Helper()
	r, err := NewReader(ReaderOptions{FS: fs, Dirs: dirs})
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()
	for {
		rec, ok, err := r.Next()
		if err != nil {
			return r.Last(), nil, err
		}
		if !ok {
			tails, err := r.Finish()
			return r.Last(), tails, err
		}
		if !bytes.Equal(rec.Body, bodies[rec.LSN]) {
			t.Fatalf("LSN %d: body of %d bytes, want %d", rec.LSN, len(rec.Body), len(bodies[rec.LSN]))
		}
	}
}

func TestReadBackAcrossChannelsAndSegments(t *testing.T) {
	for _, channels := range []int{1, 2, 4} {
		fs := vfs.NewMemFS()
		l := newTestLog(t, fs, channels, 2048, 1)
		l.add(3000)
		l.syncAll()
		last, tails, err := readAllRecords(t, fs, l.dirs, l.bodies)
		if err != nil || last != 3000 {
			t.Fatalf("%d channels: read to LSN %d of 3000: %v", channels, last, err)
		}
		for _, tl := range tails {
			if tl.Torn || tl.Seq < 2 {
				t.Fatalf("%d channels: tail %+v", channels, tl)
			}
		}
	}
}

// TestTornTail crashes after a sync with more records written but not
// synced, keeping a random part of them: recovery reads at least every
// synced record, never a damaged one, and calls the rest a torn tail.
func TestTornTail(t *testing.T) {
	for seed := uint64(0); seed < 60; seed++ {
		fs := vfs.NewMemFS()
		l := newTestLog(t, fs, 2, 4096, seed)
		l.add(400)
		l.syncAll()
		synced := l.lsn
		l.add(300)
		for c := range l.writers {
			l.flush(c) // written, not synced
		}
		after := fs.Crash(rand.New(rand.NewPCG(seed, 7)))
		last, _, err := readAllRecords(t, after, l.dirs, l.bodies)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if last < synced || last > l.lsn {
			t.Fatalf("seed %d: recovered to LSN %d; %d were synced, %d written", seed, last, synced, l.lsn)
		}
	}
}

// TestCorruptionIsReported flips a byte in a synced block that has valid
// blocks after it: that is corruption, reported with the file and offset.
func TestCorruptionIsReported(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 1, 1<<20, 3)
	l.add(500)
	l.syncAll()
	name := filepath.Join(l.dirs[0], SegmentName(1))
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	const at = record.SegmentHeaderSize + 40
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[0] ^ 0xFF}, at); err != nil {
		t.Fatal(err)
	}
	_, _, err = readAllRecords(t, fs, l.dirs, l.bodies)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "offset 64") ||
		!strings.Contains(err.Error(), "synced to offset") {
		t.Fatalf("a flipped byte in the first block: %v", err)
	}
}

// corruptAt overwrites bytes of a segment file.
func corruptAt(t *testing.T, fs vfs.FS, name string, off int64, b []byte) {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// syncedSegments writes a one-channel log in rounds of 20 records, each
// synced, over 2 KiB segments, and checks it spans at least min segments.
func syncedSegments(t *testing.T, seed uint64, rounds int, min uint64) (*vfs.MemFS, *testLog) {
	t.Helper()
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 1, 2048, seed)
	for i := 0; i < rounds; i++ {
		l.add(20)
		l.syncAll()
	}
	if l.writers[0].seq < min {
		t.Fatalf("only %d segments", l.writers[0].seq)
	}
	return fs, l
}

// TestCorruptionProofs damages synced data where only one of the proofs
// can tell it from a torn tail, each in turn.
func TestCorruptionProofs(t *testing.T) {
	cases := []struct {
		name  string
		setup func(l *testLog) (file string, off int64, b []byte)
		want  string
	}{
		{"a bad block in a segment with a successor", func(l *testLog) (string, int64, []byte) {
			return filepath.Join(l.dirs[0], SegmentName(1)), record.SegmentHeaderSize + 3, []byte{0xFF, 0xFF}
		}, "says this segment was synced to offset"},
		{"a blank header in a segment with a successor", func(l *testLog) (string, int64, []byte) {
			return filepath.Join(l.dirs[0], SegmentName(1)), record.SegmentHeaderSize, make([]byte, record.BlockHeaderSize)
		}, "says the segment's data ended at offset"},
		{"a blank header in the last segment, before a later block's watermark", func(l *testLog) (string, int64, []byte) {
			return filepath.Join(l.dirs[0], SegmentName(l.writers[0].seq)), record.SegmentHeaderSize, make([]byte, record.BlockHeaderSize)
		}, "blank block header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, l := syncedSegments(t, 8, 30, 3)
			file, off, b := tc.setup(l)
			corruptAt(t, fs, file, off, b)
			_, _, err := readAllRecords(t, fs, l.dirs, l.bodies)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want corruption saying %q", err, tc.want)
			}
		})
	}
}

// TestMissingSegment: a segment gone from the middle of a channel is
// corruption, not a silent end.
func TestMissingSegment(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 1, 2048, 4)
	l.add(1000)
	l.syncAll()
	if err := fs.Remove(filepath.Join(l.dirs[0], SegmentName(2))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readAllRecords(t, fs, l.dirs, l.bodies); !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(SegmentName(2))) {
		t.Fatalf("a missing segment: %v", err)
	}
}

// TestCorruptLastSyncedBlock: a flipped byte in the last block, synced and
// with nothing after it, is corruption, not a torn tail.
func TestCorruptLastSyncedBlock(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 1, 1<<20, 6)
	l.add(200)
	l.syncAll()
	w := l.writers[0]
	at := w.off - record.BlockHeaderSize - 10 // inside the last block's payload, before the marker
	f, err := fs.Open(filepath.Join(l.dirs[0], SegmentName(w.seq)))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[0] ^ 0x01}, at); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readAllRecords(t, fs, l.dirs, l.bodies); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "synced to offset") {
		t.Fatalf("a flipped bit in the last synced block: %v", err)
	}
}

// TestCrashAtEveryOperation runs a writer that syncs now and then, crashes
// the file system at its k-th operation for every k, keeps a random part of
// what was not synced, and recovers: every record synced before the crash
// is read back, nothing past what was written, and no corruption is
// reported.
func TestCrashAtEveryOperation(t *testing.T) {
	total := 0
	for k := 1; ; k++ {
		fs := vfs.NewMemFS()
		l := newTestLog(t, fs, 2, 2048, uint64(k))
		fs.CrashAfter(k)
		var acked uint64
		err := func() error {
			for round := 0; round < 16; round++ {
				for i := 0; i < 20; i++ {
					l.lsn++
					body := bytes.Repeat([]byte{byte(l.lsn)}, 1+l.r.IntN(150))
					l.bodies[l.lsn] = body
					c := int(l.lsn % 2)
					if err := l.blocks[c].Add(l.lsn, 1, body); err != nil {
						return err
					}
				}
				for c, w := range l.writers {
					if l.blocks[c].Count() > 0 {
						if _, err := w.write(l.blocks[c], l.enc[c]); err != nil {
							return err
						}
						l.blocks[c].Reset()
					}
					if err := w.sync(); err != nil {
						return err
					}
				}
				acked = l.lsn
			}
			return nil
		}()
		if err == nil {
			total = k
			break // the workload finished before the k-th operation
		}
		if !errors.Is(err, vfs.ErrCrashed) {
			t.Fatalf("k=%d: %v", k, err)
		}
		after := fs.Crash(rand.New(rand.NewPCG(uint64(k), 9)))
		last, _, err := readAllRecords(t, after, l.dirs, l.bodies)
		if err != nil {
			t.Fatalf("k=%d: recovery: %v", k, err)
		}
		if last < acked || last > l.lsn {
			t.Fatalf("k=%d: recovered to LSN %d; %d were acknowledged, %d written", k, last, acked, l.lsn)
		}
	}
	t.Logf("crashed at each of %d operations", total-1)
	if total < 50 {
		t.Fatalf("the workload took only %d operations", total)
	}
}

// FuzzSegmentFile reads arbitrary bytes as a channel's only segment:
// records, a clean end, a torn tail or ErrCorrupt; never a panic, never
// records out of order.
func FuzzSegmentFile(f *testing.F) {
	fs := vfs.NewMemFS()
	l := newTestLog(&testing.T{}, fs, 1, 4096, 1)
	l.add(30)
	l.syncAll()
	seed, err := vfs.ReadFile(fs, filepath.Join(l.dirs[0], SegmentName(1)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:record.SegmentHeaderSize+10])
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := vfs.NewMemFS()
		if err := fs.MkdirAll("/ch"); err != nil {
			t.Fatal(err)
		}
		file, err := fs.Create("/ch/" + SegmentName(1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := file.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(ReaderOptions{FS: fs, Dirs: []string{"/ch"}})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMismatch) {
				t.Fatalf("an error that is not ErrCorrupt: %v", err)
			}
			return
		}
		defer func() { _ = r.Close() }()
		last := uint64(0)
		for {
			rec, ok, err := r.Next()
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("an error that is not ErrCorrupt: %v", err)
				}
				return
			}
			if !ok {
				return
			}
			if rec.LSN != last+1 {
				t.Fatalf("LSN %d after %d", rec.LSN, last)
			}
			last = rec.LSN
		}
	})
}
