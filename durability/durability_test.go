package durability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

var dirs = []string{"/data/log/0", "/data/log/1"}

// setupBank creates the crash tests' bank in s's database.
func setupBank(t *testing.T, s *Store) banktest.Bank {
	t.Helper()
	return banktest.Setup(t, s.DB(), waiter(s, s.Level()))
}

// waiter returns a wait for level on s.
func waiter(s *Store, level Level) func(uint64) error {
	return func(lsn uint64) error { return s.Wait(context.Background(), lsn, level) }
}

// runBank runs the bank's transfers on s, waiting for level.
func runBank(s *Store, b banktest.Bank, round, workers, each int, level Level, onAck func(acked map[string]bool)) map[string]bool {
	return banktest.Run(s.DB(), b, round, workers, each, waiter(s, level), onAck)
}

// TestCrashAtEveryOperation: fsync-log under eight concurrent writers,
// the file system crashed at its k-th operation for every k (keeping a
// random part of what was not synced), then recovered: every acknowledged
// commit is there, no transaction is partial, no rolled-back one shows,
// and the recovered database takes commits again and survives a second
// crash.
func TestCrashAtEveryOperation(t *testing.T) {
	k := 1
	for ; ; k++ {
		fs := vfs.NewMemFS()
		s, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		b := setupBank(t, s)
		fs.CrashAfter(k)
		acked := runBank(s, b, 0, 8, 20, FsyncLog, nil)
		crashed := s.Close() != nil
		after := fs.Crash(rand.New(rand.NewPCG(uint64(k), 2)))
		s2, err := Open(Options{FS: after, Level: FsyncLog, Dirs: dirs, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatalf("k=%d: recovery: %v", k, err)
		}
		banktest.Check(t, s2.DB(), acked, fmt.Sprintf("k=%d", k))
		// The recovered store goes on, and survives a crash of its own.
		b2 := banktest.Of(t, s2.DB())
		more := runBank(s2, b2, 1, 2, 5, FsyncLog, nil)
		for tag := range acked {
			more[tag] = true
		}
		s3, err := Open(Options{FS: after.Crash(nil), Level: FsyncLog, Dirs: dirs, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatalf("k=%d: second recovery: %v", k, err)
		}
		banktest.Check(t, s3.DB(), more, fmt.Sprintf("k=%d, second crash", k))
		if !crashed {
			break // the workload ended before the k-th operation
		}
	}
	t.Logf("crashed at each of %d operations", k-1)
	if k < 100 {
		t.Fatalf("the workload took only %d operations", k)
	}
}

// TestMmapLogKill: mmap-log under eight concurrent writers, the process
// killed (everything written kept, synced or not) in the middle of their
// commits, at a different point each time and with the file system
// failing from its k-th operation on: every commit acknowledged before
// the kill is there and no transaction is partial.
func TestMmapLogKill(t *testing.T) {
	for k := 1; k < 160; k++ {
		fs := vfs.NewMemFS()
		s, err := Open(Options{FS: fs, Level: MmapLog, Dirs: dirs, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		b := setupBank(t, s)
		fs.CrashAfter(k) // each commit copies into the mapping once: about one operation per commit
		var killed *vfs.MemFS
		var before map[string]bool
		acked := runBank(s, b, 0, 8, 20, MmapLog, func(acked map[string]bool) {
			if len(acked) == 1+k%60 && killed == nil {
				killed, before = fs.CrashProcess(), maps.Clone(acked)
			}
		})
		_ = s.Close() // crashed or not
		if killed == nil {
			// The file system failed first: the kill comes after it.
			killed, before = fs.CrashProcess(), acked
		}
		s2, err := Open(Options{FS: killed, Level: MmapLog, Dirs: dirs, SegmentSize: 8 << 10})
		if err != nil {
			t.Fatalf("k=%d: recovery: %v", k, err)
		}
		banktest.Check(t, s2.DB(), before, fmt.Sprintf("k=%d", k))
	}
}

// TestNoLogKeepsNothing: a no-log node writes no log, so a restart comes
// back empty; its ring holds the recent records in LSN order.
func TestNoLogKeepsNothing(t *testing.T) {
	fs := vfs.NewMemFS()
	s, err := Open(Options{FS: fs, Level: NoLog, Dirs: dirs, RingBytes: 300})
	if err != nil {
		t.Fatal(err)
	}
	b := setupBank(t, s)
	acked := runBank(s, b, 0, 2, 20, NoLog, nil)
	if len(acked) == 0 {
		t.Fatal("nothing committed")
	}
	banktest.Check(t, s.DB(), acked, "no-log, before restart")
	if names, _ := fs.ReadDir(dirs[0]); len(names) != 0 {
		t.Fatalf("no-log wrote %v", names)
	}
	var lsns []uint64
	recs, ok := s.Ring().Read(nil, s.DB().LastLSN()-3, 1<<20)
	for _, r := range recs {
		if _, err := mem.DecodeRedo(r.Body); err != nil {
			t.Fatal(err)
		}
		lsns = append(lsns, r.LSN)
	}
	if !ok || len(lsns) != 3 || lsns[2] != s.DB().LastLSN() {
		t.Fatalf("the ring's last records: %v (last LSN %d)", lsns, s.DB().LastLSN())
	}
	if _, ok := s.Ring().Read(nil, 0, 1<<20); ok {
		t.Fatal("a 300-byte ring still holds LSN 1")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{FS: fs, Level: NoLog, Dirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	if tables := s2.DB().Tables(); len(tables) != 0 || s2.DB().LastLSN() != 0 {
		t.Fatalf("no-log restart: %d tables, LSN %d", len(tables), s2.DB().LastLSN())
	}
}

// openMapped opens an mmap-log store on a new in-memory filesystem,
// without a ring, and closes it when the test ends.
func openMapped(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{FS: vfs.NewMemFS(), Level: MmapLog, Dirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// TestKeepRing: a node with a log started without a ring keeps none
// until KeepRing; from then on its ring holds every record it commits,
// from the one after its last, whole, and a second KeepRing changes
// nothing. A standby's records reach the ring once it has applied them,
// and one that does not apply never does, nor is it shippable: a
// propagator relays only what it has applied.
func TestKeepRing(t *testing.T) {
	s := openMapped(t)
	b := setupBank(t, s)
	runBank(s, b, 0, 2, 10, MmapLog, nil)
	if s.Ring() != nil {
		t.Fatal("a ring before KeepRing")
	}
	before := s.DB().LastLSN()
	s.KeepRing(1 << 20)
	ring := s.Ring()
	if ring == nil || ring.Oldest() != before+1 {
		t.Fatalf("after KeepRing at LSN %d: ring %v", before, ring)
	}
	acked := runBank(s, b, 1, 2, 10, MmapLog, nil)
	s.KeepRing(1)
	if s.Ring() != ring {
		t.Fatal("a second KeepRing replaced the ring")
	}
	recs, ok := ring.Read(nil, before, 1<<20)
	if !ok || len(recs) == 0 || len(recs) != int(s.DB().LastLSN()-before) {
		t.Fatalf("the ring holds %d records after LSN %d (%v); %d were committed after it", len(recs), before, ok, s.DB().LastLSN()-before)
	}
	marks := 0
	for i, r := range recs {
		red, err := mem.DecodeRedo(r.Body)
		if err != nil || r.LSN != before+1+uint64(i) {
			t.Fatalf("the ring's record %d: LSN %d, %v", i, r.LSN, err)
		}
		for _, op := range red.Ops {
			if op.Table == b.Mark.ID() {
				marks++
			}
		}
	}
	if marks != len(acked) {
		t.Fatalf("the ring's records insert %d marks; %d transfers committed after KeepRing", marks, len(acked))
	}

	// On a standby, the ring takes the primary's records once applied.
	s.SetPrimary("p", "")
	last := s.DB().LastLSN()
	body := recs[0].Body
	red, err := mem.DecodeRedo(body)
	if err != nil {
		t.Fatal(err)
	}
	red.Ops = red.Ops[:0] // an empty record applies anywhere
	body = red.AppendBinary(nil)
	if err := s.Replicate(last+1, body, red); err != nil {
		t.Fatal(err)
	}
	if got, ok := ring.Read(nil, last, 1<<20); !ok || len(got) != 1 || got[0].LSN != last+1 || !bytes.Equal(got[0].Body, body) {
		t.Fatalf("after a replicated record at LSN %d the ring holds %+v (%v)", last+1, got, ok)
	}
	bad := &mem.Redo{Ops: []mem.Op{{Kind: mem.OpDropTable, Table: 999}}}
	if err := s.Replicate(last+2, bad.AppendBinary(nil), bad); err == nil {
		t.Fatal("a record that drops a table that does not exist applied")
	}
	if ring.Last() != last+1 {
		t.Fatalf("the ring ends at LSN %d after LSN %d did not apply, want %d", ring.Last(), last+2, last+1)
	}
	if at := s.Shippable(); at != last+1 {
		t.Fatalf("a standby that applied LSN %d and logged %d ships up to %d", last+1, last+2, at)
	}
}

// TestNoCommitAfterSetPrimary: once SetPrimary has returned and Settle
// with it, no commit gets an LSN, however many were under way: the check
// that the node is no standby and the LSN are taken under one lock.
// Rounds of four committing goroutines, each stepped down in the middle.
func TestNoCommitAfterSetPrimary(t *testing.T) {
	s := openMapped(t)
	b := setupBank(t, s)
	for round := range 30 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
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
					_, _ = b.Transfer(s.DB(), int64(w), int64(w+4), 1, fmt.Sprintf("r%d-w%d-%d", round, w, i)) // refused once a standby
				}
			}()
		}
		for start := s.DB().LastLSN(); s.DB().LastLSN() < start+50; {
			runtime.Gosched()
		}
		s.SetPrimary("p", "")
		if err := s.Settle(context.Background()); err != nil {
			t.Fatal(err)
		}
		settled := s.log.LastLSN()
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		if last := s.log.LastLSN(); last != settled || s.DB().LastLSN() != settled {
			t.Fatalf("round %d: settled at LSN %d as a standby, then the log went on to %d and the database to %d", round, settled, last, s.DB().LastLSN())
		}
		s.Lead()
	}
}

// TestLevelChecks: a transaction may ask for a stronger level than the
// node's when the node has a log, never a weaker one than the floor.
func TestLevelChecks(t *testing.T) {
	noLog, err := Open(Options{Level: NoLog})
	if err != nil {
		t.Fatal(err)
	}
	if err := noLog.Check(FsyncLog); !errors.Is(err, ErrLevel) || !strings.Contains(err.Error(), "needs a redo log") {
		t.Fatalf("fsync-log on a no-log node: %v", err)
	}
	fs := vfs.NewMemFS()
	s, err := Open(Options{FS: fs, Level: FsyncLog, Floor: FsyncLog, Dirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(NoLog); !errors.Is(err, ErrLevel) || !strings.Contains(err.Error(), "durability_floor") {
		t.Fatalf("no-log under an fsync-log floor: %v", err)
	}
	if err := s.Check(FsyncLog); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Level: NoLog, Floor: FsyncLog}); err == nil {
		t.Fatal("a floor above the level was accepted")
	}
	if _, err := ParseLevel("fsync"); err == nil {
		t.Fatal("ParseLevel took fsync")
	}
	for _, l := range []Level{NoLog, MmapLog, FsyncLog} {
		if got, err := ParseLevel(l.String()); err != nil || got != l {
			t.Fatalf("%v: %v %v", l, got, err)
		}
	}
}

// TestFullDisk: on a full disk a commit fails with ENOSPC and changes
// nothing, reads go on, and once space is freed commits are taken again.
// A commit that got its LSN before the disk was found full stops waiting
// at once, with ErrFull; the sender's WaitShippable waits on.
func TestFullDisk(t *testing.T) {
	fs := vfs.NewMemFS()
	s, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs[:1], SegmentSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	b := setupBank(t, s)
	fs.SetSpace(48 << 10)
	var failed error
	var held []uint64 // commits whose wait gave up on the full disk
	i := 0
	for ; i < 10000; i++ {
		lsn, err := b.Transfer(s.DB(), 0, 1, 1, fmt.Sprintf("t%d", i))
		if err != nil {
			failed = err
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = s.Wait(ctx, lsn, FsyncLog)
		cancel()
		switch {
		case errors.Is(err, logging.ErrFull) && errors.Is(err, syscall.ENOSPC):
			held = append(held, lsn)
		case err != nil:
			t.Fatalf("wait: %v", err)
		}
	}
	if !errors.Is(failed, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v", failed)
	}
	if len(held) == 0 {
		t.Fatal("no commit's wait gave up on the full disk")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = s.WaitShippable(ctx, held[0])
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitShippable on the full disk: %v, want it to wait", err)
	}
	if _, ok, err := s.DB().Begin().Get(b.Mark, []mem.Value{mem.String(fmt.Sprintf("t%d", i))}); err != nil || ok {
		t.Fatalf("the refused commit is visible (%v) or reads fail: %v", ok, err)
	}
	fs.SetSpace(0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		lsn, err := b.Transfer(s.DB(), 0, 1, 1, fmt.Sprintf("t%d", i))
		if err == nil {
			if err := s.Wait(context.Background(), lsn, FsyncLog); err != nil {
				t.Fatal(err)
			}
			break
		}
		if !errors.Is(err, syscall.ENOSPC) || time.Now().After(deadline) {
			t.Fatalf("once space is freed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if n := banktest.Check(t, s2.DB(), nil, "after the full disk"); n != i+1 {
		t.Fatalf("%d transfers recovered, want %d", n, i+1)
	}
}

// TestRecoveredCanRefuse: a Recovered hook that refuses what recovery
// reached stops Open before the log is opened for commits, so the log's
// files are as they were; without it the same log opens (and gains the
// segment an opening adds), with the Recovery the hook saw.
func TestRecoveredCanRefuse(t *testing.T) {
	fs := vfs.NewMemFS()
	s, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	b := setupBank(t, s)
	acked := runBank(s, b, 0, 2, 15, FsyncLog, nil)
	last := s.DB().LastLSN()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := logFiles(t, fs)
	refusal := errors.New("not this one")
	var seen Recovery
	_, err = Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs, Recovered: func(r Recovery) error { seen = r; return refusal }})
	if !errors.Is(err, refusal) {
		t.Fatalf("Open with a refusing hook: %v", err)
	}
	if seen.LastLSN != last || seen.Records != int64(last) {
		t.Fatalf("the hook saw %+v; the log holds %d records", seen, last)
	}
	if after := logFiles(t, fs); !maps.Equal(after, before) {
		t.Fatalf("a refused Open changed the log: %d files before, %d after", len(before), len(after))
	}
	s2, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s2.Close(); err != nil {
			t.Error(err)
		}
	}()
	banktest.Check(t, s2.DB(), acked, "after a refused Open")
	if maps.Equal(logFiles(t, fs), before) {
		t.Fatal("an Open that went through left the log as it was: the test shows nothing")
	}
}

// logFiles returns every log file's contents by path.
func logFiles(t *testing.T, fs *vfs.MemFS) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range dirs {
		names, err := fs.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			b, err := vfs.ReadFile(fs, d+"/"+n)
			if err != nil {
				t.Fatal(err)
			}
			out[d+"/"+n] = string(b)
		}
	}
	return out
}

// TestStopAfter: a store opened to stop after an LSN sets the records
// past it aside, for good: the records committed next take their LSNs,
// and a later recovery reads those, not the old ones.
func TestStopAfter(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := Options{FS: fs, Level: FsyncLog, Dirs: dirs, SegmentSize: 16 << 10}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	b := setupBank(t, s)
	runBank(s, b, 0, 2, 50, FsyncLog, nil)
	last := s.DB().LastLSN()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cut := last / 2
	// On a full disk the cut cannot be made for good (the log's opening
	// voids the records past it): refused, at each level. A start not
	// told to cut serves all it recovered, refusing commits.
	fs.SetSpace(1)
	for _, level := range []Level{NoLog, MmapLog, FsyncLog} {
		if _, err := Open(Options{FS: fs, Level: level, Dirs: dirs, SegmentSize: 16 << 10, StopAfter: cut}); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s: a cut on a full disk: %v, want ENOSPC", level, err)
		}
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatalf("a start on the full disk: %v", err)
	}
	if got := s.DB().LastLSN(); got != last {
		t.Fatalf("a start on the full disk recovered to %d, want %d", got, last)
	}
	if _, err := banktest.Of(t, s.DB()).Transfer(s.DB(), 0, 1, 1, "refused"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a commit on the full disk: %v, want ENOSPC", err)
	}
	if err := s.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("closing a log whose opening was never written: %v, want ENOSPC", err)
	}
	fs.SetSpace(0)
	s, err = Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs, SegmentSize: 16 << 10, StopAfter: cut})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.DB().LastLSN(); got != cut {
		t.Fatalf("stopped at LSN %d, want %d", got, cut)
	}
	acked := runBank(s, banktest.Of(t, s.DB()), 1, 1, 5, FsyncLog, nil)
	want := s.DB().LastLSN()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.DB().LastLSN(); got != want || want >= last {
		t.Fatalf("recovered LSN %d, want %d (the old log went to %d)", got, want, last)
	}
	banktest.Check(t, s.DB(), acked, "after the cut")
	if _, err := Open(Options{FS: fs, Level: FsyncLog, Dirs: dirs, StopAfter: want + 10}); err == nil {
		t.Fatal("a store opened to stop past the log's end")
	}
}

// TestSettleWaitsForLowerLSNs: Settle returns once every commit given an
// LSN is installed, not once the highest is: commits install side by
// side, and a small one given the next LSN is installed long before a
// large one given the LSN before it. Here a commit of 100,000 rows takes
// its LSN, a one-row commit takes the next and returns, and the node
// steps down; once Settle returns, every row of the first is there.
func TestSettleWaitsForLowerLSNs(t *testing.T) {
	s := openMapped(t)
	db := s.DB()
	tb, err := db.CreateTable(mem.TableDef{Name: "t", Columns: []mem.ColumnDef{{Name: "id", Type: mem.TypeInt64}}, PrimaryKey: []string{"id"}})
	if err != nil {
		t.Fatal(err)
	}
	const big = 100_000
	given := s.log.LastLSN()
	large := db.Begin()
	for i := range int64(big) {
		if err := large.Insert(tb, []mem.Value{mem.Int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := large.Commit()
		done <- err
	}()
	for s.log.LastLSN() == given {
		runtime.Gosched()
	}
	small := db.Begin()
	if err := small.Insert(tb, []mem.Value{mem.Int64(big)}); err != nil {
		t.Fatal(err)
	}
	if _, err := small.Commit(); err != nil {
		t.Fatal(err)
	}
	s.SetPrimary("p", "")
	if err := s.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rows := tb.Stats().Rows; rows != big+1 {
		t.Fatalf("Settle returned with %d rows installed, want %d", rows, big+1)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
