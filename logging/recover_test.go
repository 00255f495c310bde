package logging

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// recovered is what recoverLog read: the records by LSN, the last LSN
// and the tails to open the log with.
type recovered struct {
	bodies map[uint64][]byte
	last   uint64
	tails  []Tail
}

// recoverLog reads the whole log, as recovery does.
func recoverLog(fs vfs.FS, dirs []string, ignore bool) (recovered, error) {
	return readLog(ReaderOptions{FS: fs, Dirs: dirs, IgnoreCorruption: ignore})
}

// reopen opens the log in dirs where recovery left it (got), appends
// bodies, closes it and returns their LSNs.
func reopen(t *testing.T, fs vfs.FS, dirs []string, got recovered, bodies ...string) []uint64 {
	t.Helper()
	log, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 1 << 20, StartLSN: got.last, Tails: got.tails})
	if err != nil {
		t.Fatal(err)
	}
	lsns := make([]uint64, len(bodies))
	for i, b := range bodies {
		if lsns[i], err = log.Append([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	return lsns
}

// numbered returns n bodies "prefix 0", "prefix 1", ...
func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i)
	}
	return out
}

// readLog reads the log opts describe, as recovery does.
func readLog(opts ReaderOptions) (recovered, error) {
	r, err := NewReader(opts)
	if err != nil {
		return recovered{}, err
	}
	out := recovered{bodies: map[uint64][]byte{}}
	for {
		rec, ok, err := r.Next()
		if err != nil {
			return recovered{}, errors.Join(err, r.Close())
		}
		if !ok {
			break
		}
		out.bodies[rec.LSN] = bytes.Clone(rec.Body)
	}
	out.last = r.Last()
	out.tails, err = r.Finish()
	return out, errors.Join(err, r.Close())
}

// TestRecoveryCycles runs the log through many crash-and-recover cycles
// on one file system: each cycle opens the log after what recovery read,
// appends from eight writers until the file system crashes at a random
// operation (keeping a random part of what was not synced), and recovers.
// Every acknowledged record must come back with its body, every record of
// an earlier cycle must stay as it was recovered, and records that
// followed a gap (void once the log is reopened) must never reappear,
// though their LSNs are given to new records.
func TestRecoveryCycles(t *testing.T) {
	for seed := uint64(0); seed < 12; seed++ {
		r := rand.New(rand.NewPCG(seed, 3))
		fs := vfs.NewMemFS()
		dirs := channelDirs(1 + int(seed%3))
		known := map[uint64][]byte{}
		var start uint64
		var tails []Tail
		for cycle := 0; cycle < 8; cycle++ {
			// Odd seeds make spares (Prefill) too, whose operations the
			// crash may also hit.
			l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, MinCompress: 64, StartLSN: start, Tails: tails, Prefill: seed%2 == 1})
			if err != nil {
				t.Fatalf("seed %d cycle %d: open: %v", seed, cycle, err)
			}
			fs.CrashAfter(5 + r.IntN(150))
			bodies, acked := appendConcurrently(l, 8, math.MaxInt, func(w, i int) []byte {
				return []byte(fmt.Sprintf("cycle %d writer %d append %d", cycle, w, i))
			}, nil)
			maxAcked := slices.Max(append(acked, 0))
			if err := l.Close(); !errors.Is(err, vfs.ErrCrashed) {
				t.Fatalf("seed %d cycle %d: close: %v", seed, cycle, err)
			}
			fs = fs.Crash(rand.New(rand.NewPCG(seed, uint64(cycle))))
			got, err := recoverLog(fs, dirs, false)
			if err != nil {
				t.Fatalf("seed %d cycle %d: recovery: %v", seed, cycle, err)
			}
			if got.last < max(maxAcked, start) || got.last > l.LastLSN() {
				t.Fatalf("seed %d cycle %d: recovered to LSN %d; %d acknowledged, %d before the cycle, %d appended", seed, cycle, got.last, maxAcked, start, l.LastLSN())
			}
			for lsn := uint64(1); lsn <= got.last; lsn++ {
				want := known[lsn]
				if lsn > start {
					want = bodies[lsn]
				}
				if !bytes.Equal(got.bodies[lsn], want) {
					t.Fatalf("seed %d cycle %d: LSN %d is %q, want %q", seed, cycle, lsn, got.bodies[lsn], want)
				}
			}
			for lsn := start + 1; lsn <= got.last; lsn++ {
				known[lsn] = bodies[lsn]
			}
			start, tails = got.last, got.tails
		}
	}
}

// TestGapRecordsAreVoided: when one channel lost its unsynced tail, the
// merged log stops at the first missing LSN even though the other channel
// holds later records; those are dropped when the log is reopened, and new
// records take their LSNs.
func TestGapRecordsAreVoided(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 2, 1<<20, 5)
	l.add(100)
	l.syncAll()
	l.add(50)
	l.flush(0)
	l.flush(1)
	if err := l.writers[1].sync(); err != nil { // only channel 1 (odd LSNs) syncs
		t.Fatal(err)
	}
	fs = fs.Crash(nil)
	got, err := recoverLog(fs, l.dirs, false)
	if err != nil || got.last != 101 {
		t.Fatalf("recovered to %d: %v", got.last, err)
	}
	for i, lsn := range reopen(t, fs, l.dirs, got, numbered("new", 10)...) {
		if lsn != 102+uint64(i) {
			t.Fatalf("append %d: LSN %d", i, lsn)
		}
	}
	again, err := recoverLog(fs, l.dirs, false)
	if err != nil || again.last != 111 {
		t.Fatalf("recovered to %d: %v", again.last, err)
	}
	for lsn := uint64(102); lsn <= 111; lsn++ {
		if want := fmt.Sprintf("new %d", lsn-102); string(again.bodies[lsn]) != want {
			t.Fatalf("LSN %d is %q, want %q", lsn, again.bodies[lsn], want)
		}
	}
}

// TestTornTailIsTruncated: opening the log after a torn tail cuts the
// torn bytes off the segment, and the log reads cleanly afterwards.
func TestTornTailIsTruncated(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 1, 1<<20, 2)
	l.add(100)
	l.syncAll()
	l.add(100)
	l.flush(0)
	name := filepath.Join(l.dirs[0], SegmentName(1))
	corruptAt(t, fs, name, l.writers[0].off-10, []byte{0xAA}) // garbage in the unsynced last block
	fs = fs.Crash(rand.New(rand.NewPCG(1, 1)))
	got, err := recoverLog(fs, l.dirs, false)
	if err != nil || got.last < 100 || !got.tails[0].Torn {
		t.Fatalf("recovered to %d, tail %+v: %v", got.last, got.tails[0], err)
	}
	reopen(t, fs, l.dirs, got)
	if size, err := fileSize(fs, name); err != nil || size != got.tails[0].Offset {
		t.Fatalf("segment is %d bytes, want it cut at %d: %v", size, got.tails[0].Offset, err)
	}
	again, err := recoverLog(fs, l.dirs, false)
	if err != nil || again.last != got.last || again.tails[0].Torn {
		t.Fatalf("second recovery to %d (want %d), tail %+v: %v", again.last, got.last, again.tails[0], err)
	}
}

// TestIgnoreCorruption: corruption in the middle of a channel stops
// recovery with the file and offset; told to ignore it, recovery keeps
// what comes before, the reopened log sets the later segments aside
// (never deleting them) and carries on, and the next recovery needs no
// telling.
func TestIgnoreCorruption(t *testing.T) {
	fs, l := syncedSegments(t, 9, 20, 4)
	name := filepath.Join(l.dirs[0], SegmentName(2))
	corruptAt(t, fs, name, record.SegmentHeaderSize+5, []byte{0xFF})
	if _, err := recoverLog(fs, l.dirs, false); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name+" at offset 64") {
		t.Fatalf("corruption not reported with its place: %v", err)
	}
	got, err := recoverLog(fs, l.dirs, true)
	if err != nil || !got.tails[0].Corrupt || got.tails[0].Seq != 2 || got.tails[0].Offset != record.SegmentHeaderSize || got.tails[0].Err == nil {
		t.Fatalf("ignoring: tail %+v: %v", got.tails[0], err)
	}
	for lsn := uint64(1); lsn <= got.last; lsn++ {
		if !bytes.Equal(got.bodies[lsn], l.bodies[lsn]) {
			t.Fatalf("LSN %d differs", lsn)
		}
	}
	reopen(t, fs, l.dirs, got, "after")
	names, err := fs.ReadDir(l.dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	var void int
	for _, n := range names {
		if strings.HasSuffix(n, voidSuffix) {
			void++
		}
	}
	if void != int(l.writers[0].seq)-2 {
		t.Fatalf("%d segments set aside, want %d: %v", void, l.writers[0].seq-2, names)
	}
	again, err := recoverLog(fs, l.dirs, false)
	if err != nil || again.last != got.last+1 || string(again.bodies[again.last]) != "after" {
		t.Fatalf("recovery after the repair: to %d (want %d): %v", again.last, got.last+1, err)
	}
}

// TestNewerSegmentVersion: a segment whose whole header names a format
// version this build does not read (a newer build wrote it) is refused
// with ErrVersion, naming the versions, even told to ignore corruption:
// it is not damage, and setting it and the segments after it aside would
// drop commits.
func TestNewerSegmentVersion(t *testing.T) {
	fs, l := syncedSegments(t, 9, 20, 4)
	name := filepath.Join(l.dirs[0], SegmentName(2))
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	hb := make([]byte, record.SegmentHeaderSize)
	if _, err := f.ReadAt(hb, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(hb[8:], record.Version+1)
	binary.LittleEndian.PutUint32(hb[60:], crc32.Checksum(hb[:60], crc32.MakeTable(crc32.Castagnoli)))
	corruptAt(t, fs, name, 0, hb)
	for _, ignore := range []bool{false, true} {
		_, err := recoverLog(fs, l.dirs, ignore)
		if !errors.Is(err, record.ErrVersion) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) ||
			!strings.Contains(err.Error(), fmt.Sprintf("version %d; this build reads %d", record.Version+1, record.Version)) {
			t.Fatalf("ignore corruption %v: a segment of a newer version: %v", ignore, err)
		}
	}
}

// TestChannelMismatch: a log read with another channel count, or with a
// channel's directory missing, is refused rather than read short.
func TestChannelMismatch(t *testing.T) {
	fs := vfs.NewMemFS()
	l := newTestLog(t, fs, 2, 1<<20, 1)
	l.add(50)
	l.syncAll()
	if _, err := recoverLog(fs, l.dirs[:1], false); !errors.Is(err, ErrMismatch) {
		t.Fatalf("two channels read as one: %v", err)
	}
	if _, err := recoverLog(fs, []string{l.dirs[1], l.dirs[0]}, false); !errors.Is(err, ErrMismatch) {
		t.Fatalf("channels swapped: %v", err)
	}
	if _, err := recoverLog(fs, []string{l.dirs[0], "/elsewhere"}, false); !errors.Is(err, ErrMismatch) {
		t.Fatalf("a channel's directory missing: %v", err)
	}
	if _, err := Open(Options{FS: fs, Dirs: l.dirs}); err == nil || !strings.Contains(err.Error(), "must be read") {
		t.Fatalf("opening a log that was not read: %v", err)
	}
}

// TestMappedLog runs the mmap-log mode under eight writers, crashing at a
// random file system operation: after a crash of the process (kill -9)
// every record WaitWritten acknowledged is there; after a crash of the
// machine every record Wait acknowledged (synced) is, and recovery finds
// no corruption in what the unsynced mapping pages left behind.
func TestMappedLog(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		fs := vfs.NewMemFS()
		dirs := channelDirs(1 + int(seed%2))
		l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, MinCompress: 64, Mapped: true})
		if err != nil {
			t.Fatal(err)
		}
		fs.SetSyncDelay(100 * time.Microsecond) // commits copy in while an msync runs
		fs.CrashAfter(3 + r.IntN(2000))         // about 1,600 copies and 150 other operations
		var mu sync.Mutex
		var synced uint64
		bodies, acked := appendConcurrently(l, 8, 200, func(w, i int) []byte {
			return []byte(fmt.Sprintf("writer %d append %d", w, i))
		}, func(lsn uint64, i int) error {
			if err := l.WaitWritten(context.Background(), lsn); err != nil || i%10 != 9 {
				return err
			}
			// Now and then a commit that asks for fsync.
			if err := l.Wait(context.Background(), lsn); err != nil {
				return err
			}
			mu.Lock()
			synced = max(synced, lsn)
			mu.Unlock()
			return nil
		})
		written := slices.Max(append(acked, 0))
		_ = l.Close() // crashed or not
		kill, power := fs.CrashProcess(), fs.Crash(rand.New(rand.NewPCG(seed, 12)))
		for _, tc := range []struct {
			name  string
			fs    vfs.FS
			acked uint64
		}{{"kill -9", kill, written}, {"power loss", power, synced}} {
			got, err := recoverLog(tc.fs, dirs, false)
			if err != nil {
				t.Fatalf("seed %d, %s: recovery: %v", seed, tc.name, err)
			}
			if seed == 0 {
				t.Logf("%s: %d acknowledged, recovered to %d of %d", tc.name, tc.acked, got.last, l.LastLSN())
			}
			if got.last < tc.acked {
				t.Fatalf("seed %d, %s: recovered to LSN %d, %d acknowledged", seed, tc.name, got.last, tc.acked)
			}
			for lsn := uint64(1); lsn <= got.last; lsn++ {
				if !bytes.Equal(got.bodies[lsn], bodies[lsn]) {
					t.Fatalf("seed %d, %s: LSN %d is %q, want %q", seed, tc.name, lsn, got.bodies[lsn], bodies[lsn])
				}
			}
		}
	}
}

// TestMappedCopyCutShort: in a mapped segment, a last block whose copy a
// crash cut short (its header whole, its payload partly zero, within one
// sector) is a torn tail; the same bytes in a segment written with
// write(2) would be corruption.
func TestMappedCopyCutShort(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		fs := vfs.NewMemFS()
		l, err := Open(Options{FS: fs, Dirs: channelDirs(1), NoCompression: true, Mapped: mapped, SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		w := l.chans[0].w
		// Add synced blocks until the next begins early in a sector, so
		// the damage below stays within one.
		for i := 0; i < 5 || w.off%vfs.SectorSize > 300; i++ {
			if i > 50 {
				t.Fatalf("no block began early in a sector (at %d)", w.off)
			}
			if last, err = l.Append(bytes.Repeat([]byte{'a' + byte(i%26)}, 40)); err != nil {
				t.Fatal(err)
			}
			if err := l.Wait(context.Background(), last); err != nil {
				t.Fatal(err)
			}
		}
		end := w.off // after the sync's marker
		lsn, err := l.Append(bytes.Repeat([]byte{'z'}, 40))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWritten(context.Background(), lsn); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		// Zero the second half of the last block's payload, as a copy cut
		// short leaves it (Close added a marker after it: zero that too).
		name := filepath.Join("/log/ch0", SegmentName(1))
		corruptAt(t, fs, name, end+record.BlockHeaderSize+20, make([]byte, 100))
		got, err := recoverLog(fs, channelDirs(1), false)
		switch {
		case mapped && (err != nil || got.last != last || !got.tails[0].Torn):
			t.Fatalf("mapped: recovered to %d (want %d), tail %+v: %v", got.last, last, got.tails, err)
		case !mapped && !errors.Is(err, ErrCorrupt):
			t.Fatalf("written: %v, want corruption", err)
		}
	}
}

// TestMappedWritebackOutOfOrder: past the last sync, a power loss can
// keep a mapped segment's pages in any order, and an msync can write out
// a page while a block is half copied into it: a bad block, neither blank
// nor zero-filled, with a valid block after it that proves nothing
// synced. In a mapped segment that is a torn tail; in a segment written
// with write(2), whose lost sectors read back blank, it is corruption.
func TestMappedWritebackOutOfOrder(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		fs := vfs.NewMemFS()
		l, err := Open(Options{FS: fs, Dirs: channelDirs(1), NoCompression: true, Mapped: mapped, SegmentSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		last, err := l.Append(bytes.Repeat([]byte{'a'}, 40))
		if err == nil {
			err = l.Wait(context.Background(), last)
		}
		if err != nil {
			t.Fatal(err)
		}
		w := l.chans[0].w
		end := w.off // after the sync's marker
		// Two blocks, B and C, written but not synced.
		for _, b := range []byte{'b', 'c'} {
			lsn, err := l.Append(bytes.Repeat([]byte{b}, 40))
			if err == nil {
				err = l.WaitWritten(context.Background(), lsn)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		size := w.off - end
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		// B's payload holds what a half-done copy left; C is whole; the
		// marker Close added after them, whose synced field would prove B
		// synced, did not reach the disk.
		name := filepath.Join("/log/ch0", SegmentName(1))
		corruptAt(t, fs, name, end+record.BlockHeaderSize+10, bytes.Repeat([]byte{0xa5}, 20))
		corruptAt(t, fs, name, end+size, make([]byte, record.BlockHeaderSize))
		got, err := recoverLog(fs, channelDirs(1), false)
		switch {
		case mapped && (err != nil || got.last != last || !got.tails[0].Torn || got.tails[0].Offset != end):
			t.Fatalf("mapped: recovered to %d (want %d), tail %+v (want torn at %d): %v", got.last, last, got.tails, end, err)
		case !mapped && !errors.Is(err, ErrCorrupt):
			t.Fatalf("written: %v, want corruption", err)
		}
	}
}

// TestKillThenPowerLoss: what recovery replays after a process crash may
// exist only in the page cache; the reopened log makes it durable before
// it takes new commits, so a power loss after those commits loses
// neither them nor what they followed.
func TestKillThenPowerLoss(t *testing.T) {
	fs := vfs.NewMemFS()
	dirs := channelDirs(2)
	l, err := Open(Options{FS: fs, Dirs: dirs, Mapped: true, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	bodies, acked := appendConcurrently(l, 4, 50, nil, func(lsn uint64, _ int) error { return l.WaitWritten(context.Background(), lsn) })
	if len(acked) != 200 {
		t.Fatalf("%d acknowledged", len(acked))
	}
	killed := fs.CrashProcess() // nothing was synced: the interval is zero
	got, err := recoverLog(killed, dirs, false)
	if err != nil || got.last != 200 {
		t.Fatalf("after the kill: recovered to %d: %v", got.last, err)
	}
	l2, err := Open(Options{FS: killed, Dirs: dirs, SegmentSize: 64 << 10, StartLSN: got.last, Tails: got.tails})
	if err != nil {
		t.Fatal(err)
	}
	more, acked2 := appendConcurrently(l2, 4, 10, nil, nil)
	maps.Copy(bodies, more)
	after := killed.Crash(rand.New(rand.NewPCG(1, 2))) // power loss, l2 still open
	final, err := recoverLog(after, dirs, false)
	if err != nil || final.last != slices.Max(acked2) {
		t.Fatalf("after the power loss: recovered to %d, want %d: %v", final.last, slices.Max(acked2), err)
	}
	for lsn := uint64(1); lsn <= final.last; lsn++ {
		if !bytes.Equal(final.bodies[lsn], bodies[lsn]) {
			t.Fatalf("LSN %d differs", lsn)
		}
	}
	_ = l2.Close()
}

// TestOpenOnFullDisk: a log reopened on a disk with no room for its new
// segments opens all the same, refusing records with ErrFull (a node
// that stopped with its disk full starts and serves reads). Records past
// StartLSN stay until room is found: then the new segment voids them
// before any new record is written, as an opening with room does. Closed
// while still full, the log says that its opening was never written. A
// disk quota used up (EDQUOT) is a full disk too.
func TestOpenOnFullDisk(t *testing.T) {
	for _, c := range []struct {
		mapped bool
		full   syscall.Errno
	}{{false, syscall.ENOSPC}, {true, syscall.ENOSPC}, {false, syscall.EDQUOT}} {
		mapped := c.mapped
		t.Run(fmt.Sprintf("mapped=%v/%v", mapped, c.full), func(t *testing.T) {
			fs := vfs.NewMemFS()
			dirs := channelDirs(2)
			old := reopen(t, fs, dirs, recovered{}, numbered("old", 20)...)
			got, err := recoverLog(fs, dirs, false)
			if err != nil || got.last != old[19] {
				t.Fatalf("recovered to %d: %v", got.last, err)
			}
			start := old[14] // as a start told to stop after it
			open := func() *Log {
				l, err := Open(Options{FS: fs, Dirs: dirs, SegmentSize: 4 << 10, Mapped: mapped, StartLSN: start, Tails: got.tails})
				if err != nil {
					t.Fatalf("open on the full disk: %v", err)
				}
				if _, err := l.Append([]byte("refused")); !errors.Is(err, ErrFull) || !errors.Is(err, c.full) || l.LastLSN() != start {
					t.Fatalf("an append on the full disk: %v (last LSN %d)", err, l.LastLSN())
				}
				return l
			}

			if c.full == syscall.EDQUOT {
				fs.SetQuota(1)
			} else {
				fs.SetSpace(1)
			}
			if err := open().Close(); !errors.Is(err, c.full) {
				t.Fatalf("closing a log that never found room for its opening: %v", err)
			}
			if again, err := recoverLog(fs, dirs, false); err != nil || again.last != got.last {
				t.Fatalf("after it, recovered to %d (want %d as before): %v", again.last, got.last, err)
			}

			l := open()
			fs.SetSpace(0)
			var lsn uint64
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if lsn, err = l.Append([]byte("new")); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil || lsn != start+1 {
				t.Fatalf("once there is room: LSN %d, %v; want %d", lsn, err, start+1)
			}
			if err := l.Wait(context.Background(), lsn); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			after, err := recoverLog(fs, dirs, false)
			if err != nil || after.last != lsn || string(after.bodies[lsn]) != "new" || string(after.bodies[start]) != string(got.bodies[start]) {
				t.Fatalf("recovered to %d (want %d), LSN %d is %q: %v", after.last, lsn, lsn, after.bodies[lsn], err)
			}
		})
	}
}
