package mem

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// Concurrency tests of the engine's contract (SPEC section 2): serializable
// transactions, rollback and aborts leave no trace, commits become visible
// only at commit. Every run is bounded by iteration counts, not wall time.

// ---------------------------------------------------------------------------
// Helpers

// ccSink collects failures from worker goroutines and reports the first few.
type ccSink struct {
	t *testing.T
	n atomic.Int64
}

func ccNewSink(t *testing.T) *ccSink { return &ccSink{t: t} }

func (s *ccSink) fail(format string, args ...any) {
	if s.n.Add(1) <= 10 {
		s.t.Errorf(format, args...)
	}
}

func (s *ccSink) failed() bool { return s.n.Load() > 0 }

func (s *ccSink) done() {
	if n := s.n.Load(); n > 10 {
		s.t.Errorf("... %d failures in all", n)
	}
}

// ccAttempt runs fn in a new transaction and commits it; an error from fn
// rolls the transaction back. The Tx is never touched after Commit.
func ccAttempt(db *DB, fn func(tx *Tx) error) (uint64, error) {
	tx := db.Begin()
	if err := fn(tx); err != nil {
		tx.Rollback()
		return 0, err
	}
	return tx.Commit()
}

// ccRetry runs ccAttempt until it ends with something other than ErrConflict.
// It returns the LSN, the number of conflicts and the final error.
func ccRetry(db *DB, fn func(tx *Tx) error) (uint64, int, error) {
	for n := 0; ; n++ {
		lsn, err := ccAttempt(db, fn)
		if !errors.Is(err, ErrConflict) {
			return lsn, n, err
		}
		if n >= 100000 {
			return 0, n, fmt.Errorf("no progress after %d conflicts: %w", n, err)
		}
		if n%4 == 3 {
			runtime.Gosched()
		}
	}
}

func ccTable(t *testing.T, db *DB, def TableDef) *Table {
	t.Helper()
	tb, err := db.CreateTable(def)
	if err != nil {
		t.Fatalf("create table %s: %v", def.Name, err)
	}
	return tb
}

func ccCol(t *testing.T, tb *Table, name string) int {
	t.Helper()
	c, err := tb.Column(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ccIndex(t *testing.T, tb *Table, name string) int {
	t.Helper()
	ix, err := tb.Index(name)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func ccKey(v int64) []Value { return []Value{Int64(v)} }

func ccPct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// ccCheckEntries checks that the table has wantRows rows and every index
// exactly one entry per row: no aborted claim, stale entry or placeholder
// was left behind.
func ccCheckEntries(t *testing.T, tb *Table, wantRows int64) {
	t.Helper()
	st := tb.Stats()
	if st.Rows != wantRows {
		t.Errorf("table %s: Stats().Rows = %d, want %d", tb.Name(), st.Rows, wantRows)
	}
	for _, is := range st.Indexes {
		if is.Entries != wantRows {
			t.Errorf("table %s index %s: %d entries, want %d (one per row)", tb.Name(), is.Name, is.Entries, wantRows)
		}
	}
}

// ---------------------------------------------------------------------------
// Bank accounts, shared by the bank and snapshot tests.

type ccBank struct {
	db      *DB
	tb      *Table
	n       int
	initial int64
	bal     int // column ordinal
	pad     int
}

func ccNewBank(t *testing.T, db *DB, name string, n int, initial int64, padLen int) *ccBank {
	t.Helper()
	tb := ccTable(t, db, TableDef{
		Name: name,
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "bal", Type: TypeInt64},
			{Name: "pad", Type: TypeString, MaxLen: 1024},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: Ordered,
	})
	b := &ccBank{db: db, tb: tb, n: n, initial: initial, bal: ccCol(t, tb, "bal"), pad: ccCol(t, tb, "pad")}
	pad := strings.Repeat("p", padLen)
	for lo := 0; lo < n; lo += 500 {
		_, err := ccAttempt(db, func(tx *Tx) error {
			for i := lo; i < n && i < lo+500; i++ {
				if err := tx.Insert(tb, []Value{Int64(int64(i)), Int64(initial), String(pad)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
	}
	return b
}

var errCCMissing = errors.New("test: account not found during execution")

// transfer moves amt from account a to account c: Get both, Update both.
// setPad, if not nil, also rewrites a's pad column. yield, if not nil, is
// called between the reads and the writes and after the writes, to let
// other transactions interleave.
func (b *ccBank) transfer(tx *Tx, a, c int, amt int64, setPad *string, yield func()) error {
	ra, ok, err := tx.Get(b.tb, ccKey(int64(a)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %d", errCCMissing, a)
	}
	rc, ok, err := tx.Get(b.tb, ccKey(int64(c)))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %d", errCCMissing, c)
	}
	if yield != nil {
		yield()
	}
	set := []ColumnValue{{Column: b.bal, Value: Int64(ra.Int64(b.bal) - amt)}}
	if setPad != nil {
		set = append(set, ColumnValue{Column: b.pad, Value: String(*setPad)})
	}
	if err := tx.Update(b.tb, ccKey(int64(a)), set); err != nil {
		return err
	}
	if err := tx.Update(b.tb, ccKey(int64(c)), []ColumnValue{{Column: b.bal, Value: Int64(rc.Int64(b.bal) + amt)}}); err != nil {
		return err
	}
	if yield != nil {
		yield()
	}
	return nil
}

// ccYielder returns a function that yields the processor half the time.
func ccYielder(rng *rand.Rand) func() {
	return func() {
		if rng.IntN(2) == 0 {
			runtime.Gosched()
		}
	}
}

// sumByGet reads every account by primary key.
func (b *ccBank) sumByGet(tx *Tx) (sum int64, rows int, err error) {
	for i := 0; i < b.n; i++ {
		r, ok, err := tx.Get(b.tb, ccKey(int64(i)))
		if err != nil {
			return 0, 0, err
		}
		if ok {
			sum += r.Int64(b.bal)
			rows++
		}
	}
	return sum, rows, nil
}

// sumByScan reads every account by a scan of the ordered primary key.
func (b *ccBank) sumByScan(tx *Tx) (sum int64, rows int, err error) {
	err = tx.Scan(b.tb, ScanSpec{}, func(r Record) bool {
		sum += r.Int64(b.bal)
		rows++
		return true
	})
	return sum, rows, err
}

// ---------------------------------------------------------------------------
// 1. Bank transfers

func TestBankTransfer(t *testing.T) {
	cases := []struct {
		name               string
		accounts, writers  int
		transfers, readers int
		minReads, maxReads int
	}{
		{name: "uniform", accounts: 100, writers: 8, transfers: 250, readers: 2, minReads: 20, maxReads: 150},
		{name: "hot", accounts: 5, writers: 16, transfers: 120, readers: 2, minReads: 50, maxReads: 1500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ccBankRun(t, c.accounts, c.writers, c.transfers, c.readers, c.minReads, c.maxReads)
		})
	}
}

func ccBankRun(t *testing.T, accounts, writers, transfers, readers, minReads, maxReads int) {
	const initial = 1000
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	b := ccNewBank(t, db, "acct", accounts, initial, 16)
	want := int64(accounts) * initial
	startLSN := db.LastLSN()

	var (
		wg          sync.WaitGroup
		writersWG   sync.WaitGroup
		stop        atomic.Bool
		writerError atomic.Bool
		conflicts   atomic.Int64
		deltas      = make([][]int64, writers) // per writer: net change per account
		lsns        = make([][]uint64, writers)
	)
	for w := 0; w < writers; w++ {
		deltas[w] = make([]int64, accounts)
		wg.Add(1)
		writersWG.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			yield := ccYielder(rng)
			for i := 0; i < transfers && !writerError.Load(); i++ {
				a := rng.IntN(accounts)
				c := rng.IntN(accounts - 1)
				if c >= a {
					c++
				}
				amt := int64(1 + rng.IntN(50))
				lsn, n, err := ccRetry(db, func(tx *Tx) error { return b.transfer(tx, a, c, amt, nil, yield) })
				conflicts.Add(int64(n))
				if err != nil {
					writerError.Store(true)
					errs.fail("writer %d: transfer %d->%d: %v", w, a, c, err)
					return
				}
				if lsn == 0 {
					errs.fail("writer %d: a committed transfer got LSN 0", w)
				}
				deltas[w][a] -= amt
				deltas[w][c] += amt
				lsns[w] = append(lsns[w], lsn)
			}
		}(w)
	}

	// Readers: one transaction reads all accounts by Get, by a scan of the
	// ordered primary key, or both. A committed read must see the exact
	// total; an aborted one is discarded (but counted).
	var readsOK, readsAborted, abortedWrong atomic.Int64
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; i < maxReads && (i < minReads || !stop.Load()) && !writerError.Load(); i++ {
				runtime.Gosched() // leave the processors to the writers between reads
				mode := (r + i) % 3
				var s1, s2 int64
				var n1, n2 int
				_, err := ccAttempt(db, func(tx *Tx) error {
					var err error
					switch mode {
					case 0:
						s1, n1, err = b.sumByGet(tx)
						s2, n2 = s1, n1
					case 1:
						s1, n1, err = b.sumByScan(tx)
						s2, n2 = s1, n1
					case 2:
						if s1, n1, err = b.sumByGet(tx); err != nil {
							return err
						}
						s2, n2, err = b.sumByScan(tx)
					}
					return err
				})
				wrong := s1 != want || s2 != want || n1 != accounts || n2 != accounts
				switch {
				case err == nil:
					readsOK.Add(1)
					if wrong {
						errs.fail("reader %d (mode %d) committed having seen total %d/%d over %d/%d rows, want %d over %d",
							r, mode, s1, s2, n1, n2, want, accounts)
					}
				case errors.Is(err, ErrConflict):
					readsAborted.Add(1)
					if wrong {
						abortedWrong.Add(1)
					}
				default:
					errs.fail("reader %d: %v", r, err)
				}
			}
		}(r)
	}
	writersWG.Wait()
	stop.Store(true)
	wg.Wait()
	if writerError.Load() {
		return
	}

	// Final state, even after a reader's failure: each balance is the
	// initial one plus the committed transfers' net effect; the total is
	// unchanged.
	var all []uint64
	expect := make([]int64, accounts)
	for i := range expect {
		expect[i] = initial
	}
	for w := range deltas {
		for i, d := range deltas[w] {
			expect[i] += d
		}
		all = append(all, lsns[w]...)
	}
	_, err := ccAttempt(db, func(tx *Tx) error {
		sum, n, err := b.sumByScan(tx)
		if err != nil {
			return err
		}
		if sum != want || n != accounts {
			t.Errorf("final scan: total %d over %d rows, want %d over %d", sum, n, want, accounts)
		}
		bad := 0
		for i := 0; i < accounts; i++ {
			r, ok, err := tx.Get(b.tb, ccKey(int64(i)))
			if err != nil || !ok {
				return fmt.Errorf("final get %d: found %v, %v", i, ok, err)
			}
			if got := r.Int64(b.bal); got != expect[i] {
				if bad++; bad <= 5 {
					t.Errorf("account %d: balance %d, want %d from the committed transfers", i, got, expect[i])
				}
			}
		}
		if bad > 5 {
			t.Errorf("%d accounts in all disagree with the committed transfers", bad)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// One LSN per committed transfer, all distinct, and no LSN spent on an
	// aborted attempt: the Counter hands out LSNs without gaps.
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Fatalf("LSN %d returned by two commits", all[i])
		}
	}
	if got, want := db.LastLSN()-startLSN, uint64(len(all)); got != want {
		t.Errorf("LastLSN advanced by %d over %d committed transfers", got, want)
	}
	ccCheckEntries(t, b.tb, int64(accounts))
	total := int64(writers * transfers)
	t.Logf("%d transfers, %d conflicts (%.1f%% of attempts); %d committed reads, %d aborted (%.1f%%), %d aborted reads had seen a wrong total",
		total, conflicts.Load(), ccPct(conflicts.Load(), total+conflicts.Load()),
		readsOK.Load(), readsAborted.Load(), ccPct(readsAborted.Load(), readsOK.Load()+readsAborted.Load()), abortedWrong.Load())
}

// TestConcurrentConflictAbortKeepsTID is the two-transaction interleaving
// behind lost updates under contention: Z and X both read and update a row;
// T commits a change to it; X then fails at Commit because the row changed
// since it was read. Z read the same old version as X, so Z must fail too.
func TestConcurrentConflictAbortKeepsTID(t *testing.T) {
	defer goleak.VerifyNone(t)
	db := Open(Options{})
	b := ccNewBank(t, db, "acct", 1, 100, 0)
	key := ccKey(0)
	add := func(tx *Tx, d int64) {
		r, ok, err := tx.Get(b.tb, key)
		if err != nil || !ok {
			t.Fatalf("get: %v %v", ok, err)
		}
		if err := tx.Update(b.tb, key, []ColumnValue{{Column: b.bal, Value: Int64(r.Int64(b.bal) + d)}}); err != nil {
			t.Fatal(err)
		}
	}
	z := db.Begin()
	add(z, 100)
	x := db.Begin()
	add(x, 10)
	if _, err := ccAttempt(db, func(tx *Tx) error { add(tx, 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Commit(); !errors.Is(err, ErrConflict) {
		t.Fatalf("X: Commit = %v, want ErrConflict (the row changed after X read it)", err)
	}
	_, zerr := z.Commit()
	var final int64
	if _, err := ccAttempt(db, func(tx *Tx) error {
		r, _, err := tx.Get(b.tb, key)
		final = r.Int64(b.bal)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(zerr, ErrConflict) {
		t.Errorf("Z: Commit = %v, want ErrConflict: Z read the version T overwrote; balance is now %d, T's +1 is lost", zerr, final)
	} else if final != 101 {
		t.Errorf("final balance %d, want 101 (T's commit only)", final)
	}
}

// TestConcurrentRollbackAfterCommit checks the documented promise that
// rolling back a finished transaction does nothing, which the common
// "defer tx.Rollback()" idiom relies on. If transactions are pooled, a
// finished Tx may already be another goroutine's transaction.
func TestConcurrentRollbackAfterCommit(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		workers = 8
		txs     = 200
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	b := ccNewBank(t, db, "acct", workers, 0, 0)

	// Sequentially: a Rollback of a committed Tx, then the next Begin.
	for i := 0; i < 100; i++ {
		t1 := db.Begin()
		if _, _, err := t1.Get(b.tb, ccKey(0)); err != nil {
			t.Fatal(err)
		}
		if _, err := t1.Commit(); err != nil {
			t.Fatal(err)
		}
		t2 := db.Begin() // in real code: another goroutine's transaction
		t1.Rollback()    // the deferred Rollback of t1's owner: must do nothing
		_, _, err := t2.Get(b.tb, ccKey(0))
		t2.Rollback()
		if err != nil {
			t.Fatalf("a Rollback of a committed transaction ended another, live transaction (same Tx: %v): %v", t1 == t2, err)
		}
	}

	// Concurrently, with the idiom: each worker increments its own row.
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < txs && !errs.failed(); i++ {
				err := func() error {
					tx := db.Begin()
					defer tx.Rollback()
					r, ok, err := tx.Get(b.tb, ccKey(int64(w)))
					if err != nil || !ok {
						return fmt.Errorf("get: %v %w", ok, err)
					}
					if err := tx.Update(b.tb, ccKey(int64(w)), []ColumnValue{{Column: b.bal, Value: Int64(r.Int64(b.bal) + 1)}}); err != nil {
						return fmt.Errorf("update: %w", err)
					}
					runtime.Gosched()
					if _, err := tx.Commit(); err != nil {
						return fmt.Errorf("commit: %w", err)
					}
					if _, _, err := tx.Get(b.tb, ccKey(int64(w))); !errors.Is(err, ErrTxDone) {
						return fmt.Errorf("get after commit: %v, want ErrTxDone", err)
					}
					return nil
				}()
				if err != nil {
					errs.fail("worker %d, transaction %d: %v", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if errs.failed() {
		return
	}
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for w := 0; w < workers; w++ {
			r, ok, err := tx.Get(b.tb, ccKey(int64(w)))
			if err != nil || !ok {
				return fmt.Errorf("row %d: %v %w", w, ok, err)
			}
			if r.Int64(b.bal) != txs {
				t.Errorf("row %d: %d increments, want %d", w, r.Int64(b.bal), txs)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// 2. Write skew

func TestWriteSkew(t *testing.T) {
	for _, mode := range []string{"get", "scan"} {
		t.Run(mode, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ccWriteSkewRun(t, mode == "scan")
		})
	}
}

// ccWriteSkewRun runs rounds of the on-call doctors example: each shift has
// two doctors on call; each doctor, concurrently, checks that both are on
// call (by Get, or by a scan of an index on (shift, oncall)) and if so goes
// off call. Serializability keeps one on call.
func ccWriteSkewRun(t *testing.T, byScan bool) {
	const (
		shifts = 4
		rounds = 250
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	tb := ccTable(t, db, TableDef{
		Name: "doctors",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "shift", Type: TypeInt64},
			{Name: "oncall", Type: TypeBool},
		},
		PrimaryKey: []string{"id"},
		Indexes:    []IndexDef{{Name: "by_shift_oncall", Columns: []string{"shift", "oncall"}, Kind: Ordered}},
	})
	onc := ccCol(t, tb, "oncall")
	byShift := ccIndex(t, tb, "by_shift_oncall")
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i := 0; i < 2*shifts; i++ {
			if err := tx.Insert(tb, []Value{Int64(int64(i)), Int64(int64(i / 2)), Bool(true)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	onCall := func(tx *Tx, shift int) (int, error) {
		n := 0
		if byScan {
			err := tx.Scan(tb, ScanSpec{Index: byShift, Prefix: []Value{Int64(int64(shift)), Bool(true)}}, func(Record) bool {
				n++
				return true
			})
			return n, err
		}
		for d := 0; d < 2; d++ {
			r, ok, err := tx.Get(tb, ccKey(int64(2*shift+d)))
			if err != nil {
				return 0, err
			}
			if ok && r.Bool(onc) {
				n++
			}
		}
		return n, nil
	}
	var conflicts, offs, bothOff atomic.Int64
	for round := 0; round < rounds && !errs.failed(); round++ {
		if _, _, err := ccRetry(db, func(tx *Tx) error {
			for i := 0; i < 2*shifts; i++ {
				if err := tx.Update(tb, ccKey(int64(i)), []ColumnValue{{Column: onc, Value: Bool(true)}}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for doc := 0; doc < 2*shifts; doc++ {
			wg.Add(1)
			go func(doc int) {
				defer wg.Done()
				<-start
				var wrote bool
				_, n, err := ccRetry(db, func(tx *Tx) error {
					wrote = false
					c, err := onCall(tx, doc/2)
					if err != nil {
						return err
					}
					runtime.Gosched() // widen the window between the check and the write
					if c < 2 {
						return nil
					}
					wrote = true
					return tx.Update(tb, ccKey(int64(doc)), []ColumnValue{{Column: onc, Value: Bool(false)}})
				})
				conflicts.Add(int64(n))
				if err != nil {
					errs.fail("doctor %d: %v", doc, err)
				}
				if wrote {
					offs.Add(1)
				}
			}(doc)
		}
		close(start)
		wg.Wait()
		_, err := ccAttempt(db, func(tx *Tx) error {
			for s := 0; s < shifts; s++ {
				n := 0
				for d := 0; d < 2; d++ {
					r, ok, err := tx.Get(tb, ccKey(int64(2*s+d)))
					if err != nil || !ok {
						return fmt.Errorf("doctor %d: found %v, %v", 2*s+d, ok, err)
					}
					if r.Bool(onc) {
						n++
					}
				}
				if n == 0 {
					bothOff.Add(1)
					errs.fail("round %d shift %d: write skew, both doctors went off call", round, s)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds x %d shifts: %d doctors went off call, %d conflicts, %d write skews",
		rounds, shifts, offs.Load(), conflicts.Load(), bothOff.Load())
	if offs.Load() != int64(rounds*shifts) && !errs.failed() {
		t.Errorf("%d doctors went off call in %d shift-rounds: want exactly one per shift-round", offs.Load(), rounds*shifts)
	}
}

// ---------------------------------------------------------------------------
// 3. Phantoms

func ccItemsTable(t *testing.T, db *DB) *Table {
	return ccTable(t, db, TableDef{
		Name: "items",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "cat", Type: TypeInt64},
			{Name: "email", Type: TypeString, MaxLen: 64},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: Ordered,
		Indexes: []IndexDef{
			{Name: "by_cat", Columns: []string{"cat"}, Kind: Ordered},
			{Name: "by_email_h", Columns: []string{"email"}, Kind: Hash},
			{Name: "by_email_o", Columns: []string{"email"}, Kind: Ordered},
		},
	})
}

// TestPhantomRange: "insert only if the range holds fewer than K rows",
// checked by a range scan of an ordered non-unique index (forward, reverse,
// limited, or with an inclusive upper bound). Two transactions that both
// saw K-1 rows must not both commit.
func TestPhantomRange(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		ranges   = 4
		width    = 100
		limit    = 6
		seeded   = 2
		writers  = 8
		attempts = 40
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	tb := ccItemsTable(t, db)
	byCat := ccIndex(t, tb, "by_cat")
	var nextID atomic.Int64
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for g := 0; g < ranges; g++ {
			for i := 0; i < seeded; i++ {
				id := nextID.Add(1)
				if err := tx.Insert(tb, []Value{Int64(id), Int64(int64(g*width + 7*i)), String(fmt.Sprint("seed", id))}); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	count := func(tx *Tx, g int, how int) (int, error) {
		spec := ScanSpec{Index: byCat, Lower: ccKey(int64(g * width)), Upper: ccKey(int64((g + 1) * width))}
		switch how {
		case 1:
			spec.Reverse = true
		case 2:
			spec.Limit = limit // enough to decide
		case 3: // the same range as an inclusive upper bound
			spec.Upper, spec.UpperInclusive = ccKey(int64((g+1)*width-1)), true
		}
		n := 0
		err := tx.Scan(tb, spec, func(r Record) bool {
			n++
			return true
		})
		return n, err
	}
	var (
		inserted  [ranges]atomic.Int64
		conflicts atomic.Int64
		wg        sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; i < attempts && !errs.failed(); i++ {
				g := rng.IntN(ranges)
				cat := int64(g*width + rng.IntN(width))
				how := rng.IntN(4)
				var did bool
				_, n, err := ccRetry(db, func(tx *Tx) error {
					did = false
					c, err := count(tx, g, how)
					if err != nil {
						return err
					}
					runtime.Gosched()
					if c >= limit {
						return nil
					}
					did = true
					id := nextID.Add(1)
					err = tx.Insert(tb, []Value{Int64(id), Int64(cat), String(fmt.Sprint("w", id))})
					runtime.Gosched()
					return err
				})
				conflicts.Add(int64(n))
				if err != nil {
					errs.fail("writer %d: %v", w, err)
					return
				}
				if did {
					inserted[g].Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if errs.failed() {
		return
	}
	total := 0
	for g := 0; g < ranges; g++ {
		if _, err := ccAttempt(db, func(tx *Tx) error {
			for how := 0; how < 4; how++ {
				n, err := count(tx, g, how)
				if err != nil {
					return err
				}
				if n > limit {
					t.Errorf("range %d (scan %d): %d rows, the limit is %d: two inserts each saw room for one", g, how, n, limit)
				}
				if how == 0 {
					total += n
					if n != limit {
						t.Errorf("range %d: %d rows, want %d (enough attempts to fill it)", g, n, limit)
					}
					if want := int64(n - seeded); inserted[g].Load() != want {
						t.Errorf("range %d: %d committed inserts, but %d rows were added", g, inserted[g].Load(), want)
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ccCheckEntries(t, tb, int64(total))
	t.Logf("%d attempts, %d conflicts", writers*attempts, conflicts.Load())
}

// TestPhantomAbsent: "insert a row with this email only if none has it",
// checked by a lookup that finds nothing on a non-unique index (hash or
// ordered). At most one row per email may result.
func TestPhantomAbsent(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		emails  = 60
		writers = 8
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	tb := ccItemsTable(t, db)
	byH := ccIndex(t, tb, "by_email_h")
	byO := ccIndex(t, tb, "by_email_o")
	emailCol := ccCol(t, tb, "email")
	var (
		nextID    atomic.Int64
		wins      [emails]atomic.Int64
		conflicts atomic.Int64
		wg        sync.WaitGroup
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for e := 0; e < emails && !errs.failed(); e++ {
				email := fmt.Sprintf("user%d@example.com", e)
				ix := byH
				if (w+e)%2 == 1 {
					ix = byO
				}
				var did bool
				_, n, err := ccRetry(db, func(tx *Tx) error {
					did = false
					found := false
					if err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{String(email)}}, func(Record) bool {
						found = true
						return false
					}); err != nil {
						return err
					}
					runtime.Gosched()
					if found {
						return nil
					}
					did = true
					id := nextID.Add(1)
					err := tx.Insert(tb, []Value{Int64(id), Int64(int64(e)), String(email)})
					runtime.Gosched()
					return err
				})
				conflicts.Add(int64(n))
				if err != nil {
					errs.fail("writer %d: %v", w, err)
					return
				}
				if did {
					wins[e].Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if errs.failed() {
		return
	}
	if _, err := ccAttempt(db, func(tx *Tx) error {
		per := map[string]int{}
		if err := tx.Scan(tb, ScanSpec{}, func(r Record) bool {
			per[r.Str(emailCol)]++
			return true
		}); err != nil {
			return err
		}
		for e := 0; e < emails; e++ {
			email := fmt.Sprintf("user%d@example.com", e)
			for _, ix := range []int{byH, byO} {
				n := 0
				if err := tx.Scan(tb, ScanSpec{Index: ix, Prefix: []Value{String(email)}}, func(Record) bool {
					n++
					return true
				}); err != nil {
					return err
				}
				if n != 1 {
					t.Errorf("%s: %d rows by index %d, want 1", email, n, ix)
				}
			}
			if per[email] != 1 || wins[e].Load() != 1 {
				t.Errorf("%s: %d rows in a full scan, %d committed inserts; want 1 and 1", email, per[email], wins[e].Load())
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ccCheckEntries(t, tb, emails)
	t.Logf("%d attempts, %d conflicts", writers*emails, conflicts.Load())
}

// ---------------------------------------------------------------------------
// 4. Concurrent inserts of one key

func TestConcurrentInsertSameKey(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		writers = 8
		keys    = 120
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	tb := ccTable(t, db, TableDef{
		Name: "users",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "email", Type: TypeString, MaxLen: 64},
			{Name: "nick", Type: TypeString, MaxLen: 64},
			{Name: "g", Type: TypeInt64},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: Ordered,
		Indexes: []IndexDef{
			{Name: "by_email", Columns: []string{"email"}, Unique: true, Kind: Hash},
			{Name: "by_nick", Columns: []string{"nick"}, Unique: true, Kind: Ordered},
		},
	})
	byEmail := ccIndex(t, tb, "by_email")
	byNick := ccIndex(t, tb, "by_nick")
	gCol := ccCol(t, tb, "g")

	// Each phase contends on a different key: the primary key, the unique
	// hash index, the unique ordered index, or all three. Writer g's row for
	// key k is row(k, g); the fields not contended are unique to g. Writers
	// retry on ErrConflict until they commit or get ErrDuplicate.
	type rowKeys struct {
		id          int64
		email, nick string
	}
	phases := []struct {
		name string
		row  func(k, g int) rowKeys
	}{
		{"primary", func(k, g int) rowKeys {
			return rowKeys{int64(1_000 + k), fmt.Sprintf("a-%d-%d", k, g), fmt.Sprintf("a-%d-%d", k, g)}
		}},
		{"unique-hash", func(k, g int) rowKeys {
			return rowKeys{int64(100_000 + k*writers + g), fmt.Sprintf("b-%d", k), fmt.Sprintf("b-%d-%d", k, g)}
		}},
		{"unique-ordered", func(k, g int) rowKeys {
			return rowKeys{int64(200_000 + k*writers + g), fmt.Sprintf("c-%d-%d", k, g), fmt.Sprintf("c-%d", k)}
		}},
		{"all", func(k, g int) rowKeys {
			return rowKeys{int64(300_000 + k), fmt.Sprintf("d-%d", k), fmt.Sprintf("d-%d", k)}
		}},
	}
	var totalRows int64
	for _, ph := range phases {
		var (
			winner    [keys]atomic.Int64 // 1 + the winning writer
			wins      [keys]atomic.Int64
			dups      atomic.Int64
			conflicts atomic.Int64
			wg        sync.WaitGroup
		)
		for g := 0; g < writers; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for k := 0; k < keys && !errs.failed(); k++ {
					rk := ph.row(k, g)
					_, n, err := ccRetry(db, func(tx *Tx) error {
						err := tx.Insert(tb, []Value{Int64(rk.id), String(rk.email), String(rk.nick), Int64(int64(g))})
						runtime.Gosched() // let the other writers reach their commits too
						return err
					})
					conflicts.Add(int64(n))
					switch {
					case err == nil:
						wins[k].Add(1)
						winner[k].Store(int64(g + 1))
					case errors.Is(err, ErrDuplicate):
						dups.Add(1)
					default:
						errs.fail("%s: writer %d key %d: %v", ph.name, g, k, err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		if errs.failed() {
			return
		}
		for k := 0; k < keys; k++ {
			if n := wins[k].Load(); n != 1 {
				t.Errorf("%s: key %d: %d inserts committed, want exactly 1", ph.name, k, n)
				continue
			}
			w := int(winner[k].Load() - 1)
			won := ph.row(k, w)
			if _, err := ccAttempt(db, func(tx *Tx) error {
				for g := 0; g < writers; g++ {
					rk := ph.row(k, g)
					r1, ok1, err := tx.Get(tb, ccKey(rk.id))
					if err != nil {
						return err
					}
					r2, ok2, err := tx.GetBy(tb, byEmail, []Value{String(rk.email)})
					if err != nil {
						return err
					}
					r3, ok3, err := tx.GetBy(tb, byNick, []Value{String(rk.nick)})
					if err != nil {
						return err
					}
					// Every lookup finds the winner's row or nothing: a key
					// the winner has finds its row; a loser's own key finds
					// nothing.
					for i, f := range []struct {
						ok   bool
						r    Record
						want bool
					}{{ok1, r1, rk.id == won.id}, {ok2, r2, rk.email == won.email}, {ok3, r3, rk.nick == won.nick}} {
						if f.ok != f.want {
							t.Errorf("%s: key %d, writer %d's key %d: found %v, want %v (winner %d)", ph.name, k, g, i, f.ok, f.want, w)
						} else if f.ok && f.r.Int64(gCol) != int64(w) {
							t.Errorf("%s: key %d, writer %d's key %d: found writer %d's row, the winner is %d", ph.name, k, g, i, f.r.Int64(gCol), w)
						}
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		totalRows += keys
		t.Logf("%s: %d keys x %d writers: %d duplicates, %d conflicts retried", ph.name, keys, writers, dups.Load(), conflicts.Load())
	}
	// Nothing partial anywhere: as many rows and index entries as winners,
	// and the same rows through every index.
	ccCheckEntries(t, tb, totalRows)
	if _, err := ccAttempt(db, func(tx *Tx) error {
		byPK, byN := 0, 0
		if err := tx.Scan(tb, ScanSpec{}, func(r Record) bool {
			byPK++
			r2, ok, err := tx.GetBy(tb, byEmail, []Value{r.Value(1)})
			if err != nil || !ok || !bytes.Equal(r2.Encoded(), r.Encoded()) {
				t.Errorf("row %v: by email found %v, %v", r.Values(nil), ok, err)
			}
			return true
		}); err != nil {
			return err
		}
		if err := tx.Scan(tb, ScanSpec{Index: byNick}, func(Record) bool { byN++; return true }); err != nil {
			return err
		}
		if int64(byPK) != totalRows || int64(byN) != totalRows {
			t.Errorf("scans: %d rows by primary key, %d by nick, want %d", byPK, byN, totalRows)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// 5. Uncommitted data is never visible

var errCCPoison = errors.New("test: the log refuses this record")

// ccPoisonLog assigns LSNs like a Counter but fails every record that
// touches the poison table: the transaction fails after validation, at the
// last moment before its writes would become visible.
type ccPoisonLog struct {
	mu     sync.Mutex
	last   uint64
	poison atomic.Uint32
}

func (l *ccPoisonLog) Commit(r *Redo) (uint64, error) {
	for _, op := range r.Ops {
		if p := l.poison.Load(); p != 0 && op.Table == p {
			return 0, errCCPoison
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last++
	return l.last, nil
}

func TestUncommittedInvisible(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		rows        = 64
		markWriters = 3
		markTxs     = 300
		churnTxs    = 600
		readers     = 2
		minReads    = 200
		markerBase  = 1_000_000
		markVal     = -1
		markTag     = "MARK"
	)
	errs := ccNewSink(t)
	defer errs.done()
	log := &ccPoisonLog{}
	db := Open(Options{Log: log})
	tb := ccTable(t, db, TableDef{
		Name: "data",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "val", Type: TypeInt64},
			{Name: "tag", Type: TypeString, MaxLen: 16},
			{Name: "code", Type: TypeString, MaxLen: 16},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: Ordered,
		Indexes: []IndexDef{
			{Name: "by_tag", Columns: []string{"tag"}, Kind: Ordered},
			{Name: "by_code", Columns: []string{"code"}, Unique: true, Kind: Hash},
		},
	})
	poison := ccTable(t, db, TableDef{
		Name:       "poison",
		Columns:    []ColumnDef{{Name: "id", Type: TypeInt64}},
		PrimaryKey: []string{"id"},
	})
	log.poison.Store(poison.ID())
	val, tag := ccCol(t, tb, "val"), ccCol(t, tb, "tag")
	byTag, byCode := ccIndex(t, tb, "by_tag"), ccIndex(t, tb, "by_code")
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i := 0; i < rows; i++ {
			if err := tx.Insert(tb, []Value{Int64(int64(i)), Int64(0), String(fmt.Sprint("t", i%4)), String(fmt.Sprint("c", i))}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var (
		wg, writersWG sync.WaitGroup
		stop          atomic.Bool
		nextMark      atomic.Int64
		outcomes      [4]atomic.Int64 // rolled back, duplicate, conflict, refused by the log
		churned       atomic.Int64
	)
	// Marker writers: mark some rows (value, and a secondary key), insert a
	// marked row, then never commit successfully: roll back; or commit with
	// a duplicate unique key (fails in phase 1, after the marked rows are
	// locked and their keys claimed); or commit a record the log refuses
	// (fails after validation). Some first read a row the churn writer
	// changes, so validation may fail too.
	for w := 0; w < markWriters; w++ {
		wg.Add(1)
		writersWG.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 5))
			for i := 0; i < markTxs && !errs.failed(); i++ {
				tx := db.Begin()
				how := i % 4
				var err error
				if how == 3 {
					_, _, err = tx.Get(tb, ccKey(int64(rng.IntN(rows))))
				}
				for j := 0; j < 1+rng.IntN(3) && err == nil; j++ {
					err = tx.Update(tb, ccKey(int64(rng.IntN(rows))), []ColumnValue{
						{Column: val, Value: Int64(markVal)}, {Column: tag, Value: String(markTag)}})
				}
				if err == nil {
					m := markerBase + nextMark.Add(1)
					err = tx.Insert(tb, []Value{Int64(m), Int64(markVal), String(markTag), String(fmt.Sprint("MARK", m))})
				}
				if err != nil {
					tx.Rollback()
					errs.fail("marker writer %d: %v", w, err)
					return
				}
				switch how {
				case 0:
					tx.Rollback()
					outcomes[0].Add(1)
					continue
				case 1:
					m := markerBase + nextMark.Add(1)
					err = tx.Insert(tb, []Value{Int64(m), Int64(markVal), String(markTag), String(fmt.Sprint("c", rng.IntN(rows)))})
				default:
					err = tx.Insert(poison, ccKey(int64(i)))
				}
				if err != nil {
					tx.Rollback()
					errs.fail("marker writer %d: %v", w, err)
					return
				}
				_, err = tx.Commit()
				switch {
				case err == nil:
					errs.fail("marker writer %d: a transaction meant to fail (case %d) committed", w, how)
				case how == 1 && errors.Is(err, ErrDuplicate):
					outcomes[1].Add(1)
				case errors.Is(err, ErrConflict):
					outcomes[2].Add(1)
				case how >= 2 && errors.Is(err, errCCPoison):
					outcomes[3].Add(1)
				default:
					errs.fail("marker writer %d (case %d): %v", w, how, err)
				}
			}
		}(w)
	}
	// A legitimate writer keeps changing values and tags.
	wg.Add(1)
	writersWG.Add(1)
	go func() {
		defer wg.Done()
		defer writersWG.Done()
		rng := rand.New(rand.NewPCG(9, 9))
		for i := 0; i < churnTxs && !errs.failed(); i++ {
			id := int64(rng.IntN(rows))
			newTag := fmt.Sprint("t", rng.IntN(4))
			_, _, err := ccRetry(db, func(tx *Tx) error {
				r, ok, err := tx.Get(tb, ccKey(id))
				if err != nil || !ok {
					return fmt.Errorf("churn get %d: %v %w", id, ok, err)
				}
				return tx.Update(tb, ccKey(id), []ColumnValue{
					{Column: val, Value: Int64(r.Int64(val) + 1)}, {Column: tag, Value: String(newTag)}})
			})
			if err != nil {
				errs.fail("churn: %v", err)
				return
			}
			churned.Add(1)
		}
	}()
	// Readers: every read, committed or not, must show no marker.
	check := func(where string, r Record) {
		if r.Int64(val) == markVal || r.Str(tag) == markTag || r.Int64(0) >= markerBase {
			errs.fail("%s: saw uncommitted data %v", where, r.Values(nil))
		}
	}
	var readsOK, readsAborted atomic.Int64
	for rd := 0; rd < readers; rd++ {
		wg.Add(1)
		go func(rd int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(rd), 7))
			for i := 0; (i < minReads || !stop.Load()) && !errs.failed(); i++ {
				var miss string // a row this transaction did not see
				_, err := ccAttempt(db, func(tx *Tx) error {
					miss = ""
					for j := 0; j < 4; j++ {
						id := int64(rng.IntN(rows))
						r, ok, err := tx.Get(tb, ccKey(id))
						if err != nil {
							return err
						}
						if !ok {
							miss = fmt.Sprintf("get %d: not found", id)
							continue
						}
						check("get", r)
					}
					m := markerBase + 1 + rng.Int64N(nextMark.Load()+1)
					if r, ok, err := tx.Get(tb, ccKey(m)); err != nil {
						return err
					} else if ok {
						check("get marked row", r)
					}
					if r, ok, err := tx.GetBy(tb, byCode, []Value{String(fmt.Sprint("MARK", m))}); err != nil {
						return err
					} else if ok {
						check("get marked row by code", r)
					}
					if err := tx.Scan(tb, ScanSpec{Index: byTag, Prefix: []Value{String(markTag)}}, func(r Record) bool {
						check("scan by marked tag", r)
						return true
					}); err != nil {
						return err
					}
					if i%4 == 0 {
						n := 0
						if err := tx.Scan(tb, ScanSpec{Index: [2]int{0, byTag}[i/4%2]}, func(r Record) bool {
							n++
							check("full scan", r)
							return true
						}); err != nil {
							return err
						}
						if n != rows {
							miss = fmt.Sprintf("full scan saw %d rows, want %d", n, rows)
						}
					}
					return nil
				})
				switch {
				case err == nil:
					readsOK.Add(1)
					if miss != "" {
						errs.fail("reader %d committed after: %s", rd, miss)
					}
				case errors.Is(err, ErrConflict):
					readsAborted.Add(1)
				default:
					errs.fail("reader %d: %v", rd, err)
				}
			}
		}(rd)
	}
	writersWG.Wait()
	stop.Store(true)
	wg.Wait()
	if errs.failed() {
		return
	}
	ccCheckEntries(t, tb, rows)
	ccCheckEntries(t, poison, 0)
	if _, err := ccAttempt(db, func(tx *Tx) error {
		n := 0
		var sum int64
		err := tx.Scan(tb, ScanSpec{}, func(r Record) bool {
			n++
			sum += r.Int64(val)
			check("final scan", r)
			return true
		})
		if n != rows || sum != churned.Load() {
			t.Errorf("final: %d rows with values summing to %d, want %d rows and %d (one per committed churn)", n, sum, rows, churned.Load())
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("marker transactions: %d rolled back, %d duplicate, %d conflict, %d refused by the log; %d churn commits; reads: %d committed, %d aborted",
		outcomes[0].Load(), outcomes[1].Load(), outcomes[2].Load(), outcomes[3].Load(), churned.Load(), readsOK.Load(), readsAborted.Load())
}

// TestUncommittedMultiRow: writers set all K rows to one new value per
// transaction; a reader that commits must see them all equal.
func TestUncommittedMultiRow(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		k        = 8
		writers  = 2
		txs      = 400
		readers  = 3
		minReads = 100
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	b := ccNewBank(t, db, "set", k, 0, 0)
	var (
		wg, writersWG  sync.WaitGroup
		stop           atomic.Bool
		ok, aborted    atomic.Int64
		tornButAborted atomic.Int64
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		writersWG.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writersWG.Done()
			for i := 1; i <= txs && !errs.failed(); i++ {
				v := int64(w*1_000_000 + i)
				if _, _, err := ccRetry(db, func(tx *Tx) error {
					for j := 0; j < k; j++ {
						if err := tx.Update(b.tb, ccKey(int64(j)), []ColumnValue{{Column: b.bal, Value: Int64(v)}}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					errs.fail("writer %d: %v", w, err)
					return
				}
			}
		}(w)
	}
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; (i < minReads || !stop.Load()) && !errs.failed(); i++ {
				var vals []int64
				_, err := ccAttempt(db, func(tx *Tx) error {
					vals = vals[:0]
					if (r+i)%2 == 0 {
						for j := 0; j < k; j++ {
							rec, found, err := tx.Get(b.tb, ccKey(int64(j)))
							if err != nil {
								return err
							}
							if found {
								vals = append(vals, rec.Int64(b.bal))
							}
						}
						return nil
					}
					return tx.Scan(b.tb, ScanSpec{}, func(rec Record) bool {
						vals = append(vals, rec.Int64(b.bal))
						return true
					})
				})
				torn := len(vals) != k
				for _, v := range vals {
					torn = torn || v != vals[0]
				}
				switch {
				case err == nil:
					ok.Add(1)
					if torn {
						errs.fail("reader %d committed having seen %v: not all %d rows of one commit", r, vals, k)
					}
				case errors.Is(err, ErrConflict):
					aborted.Add(1)
					if torn {
						tornButAborted.Add(1)
					}
				default:
					errs.fail("reader %d: %v", r, err)
				}
			}
		}(r)
	}
	writersWG.Wait()
	stop.Store(true)
	wg.Wait()
	t.Logf("reads: %d committed, %d aborted (%.1f%%), %d aborted reads had seen a torn state",
		ok.Load(), aborted.Load(), ccPct(aborted.Load(), ok.Load()+aborted.Load()), tornButAborted.Load())
}

// ---------------------------------------------------------------------------
// 6. Row relocation

// ccDocsTable has a hash primary key, a unique hash index on code and an
// ordered index on grp; rows grow through body.
func ccDocsTable(t *testing.T, db *DB) *Table {
	return ccTable(t, db, TableDef{
		Name: "docs",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "code", Type: TypeString, MaxLen: 16},
			{Name: "grp", Type: TypeInt64},
			{Name: "body", Type: TypeString, MaxLen: 8000},
		},
		PrimaryKey: []string{"id"},
		Indexes: []IndexDef{
			{Name: "by_code", Columns: []string{"code"}, Unique: true, Kind: Hash},
			{Name: "by_grp", Columns: []string{"grp"}, Kind: Ordered},
		},
	})
}

// ccRID returns the RID the primary key of tb leads to for id, or
// all ones.
func ccRID(tb *Table, id int64) uint64 {
	st := tb.state.Load()
	key, _ := st.s.appendKey(nil, 0, 0, ccKey(id))
	for _, c := range st.idx[0].lookup(key, nil) {
		if _, row := tb.heap.read(c); row != nil {
			if eq, _ := st.s.rowKeyEqual(0, row, key, nil); eq {
				return c
			}
		}
	}
	return ^uint64(0)
}

// TestRelocationIndexGap freezes a committer in the middle of moving a row
// (by holding the by_code shard lock it needs) and looks at the row
// meanwhile. Moving a row must never leave it reachable through no index:
// readers would miss it, and a second row with its primary key could
// commit.
func TestRelocationIndexGap(t *testing.T) {
	defer goleak.VerifyNone(t)
	db := Open(Options{})
	tb := ccDocsTable(t, db)
	body := ccCol(t, tb, "body")
	// Row 0 is small; rows 1-4 fill most of the page, so that growing row 0
	// to 8000 bytes moves it.
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i, n := range []int{100, 8000, 8000, 8000, 1000} {
			if err := tx.Insert(tb, []Value{Int64(int64(i)), String(fmt.Sprint("code", i)), Int64(0), String(strings.Repeat("b", n))}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := ccRID(tb, 0)
	if tb.Stats().Pages != 1 {
		t.Skipf("setup: the rows take %d pages, want 1", tb.Stats().Pages)
	}
	st := tb.state.Load()
	pk, _ := st.s.appendKey(nil, 0, 0, ccKey(0))
	codeKey, _ := st.s.appendKey(nil, 1, 0, []Value{String("code0")})
	hx := st.idx[1].(*hashIndex)
	_, shard := hx.hash(codeKey)
	dupCode := ""
	for i := 0; dupCode == ""; i++ {
		k, _ := st.s.appendKey(nil, 1, 0, []Value{String(fmt.Sprint("dup", i))})
		if _, sh := hx.hash(k); sh != shard {
			dupCode = fmt.Sprint("dup", i)
		}
	}

	shard.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			shard.mu.Unlock()
		}
	}
	defer unlock()
	done := make(chan error, 1)
	go func() {
		_, err := ccAttempt(db, func(tx *Tx) error {
			return tx.Update(tb, ccKey(0), []ColumnValue{{Column: body, Value: String(strings.Repeat("g", 8000))}})
		})
		done <- err
	}()
	gap, finished := false, false
	for i := 0; i < 200_000 && !gap && !finished; i++ {
		select {
		case err := <-done:
			finished = true
			done <- err
		default:
			gap = len(st.idx[0].lookup(pk, nil)) == 0
			runtime.Gosched()
		}
	}
	if gap {
		// The committer is stuck between dropping row 0's old index
		// entries and adding the new ones.
		found, err := func() (bool, error) {
			tx := db.Begin()
			_, found, err := tx.Get(tb, ccKey(0))
			if err != nil {
				tx.Rollback()
				return false, err
			}
			_, err = tx.Commit()
			return found, err
		}()
		if err == nil && !found {
			t.Errorf("a transaction of one Get committed without finding row 0, which exists throughout (it is being moved)")
		}
		var found2 bool
		_, err = ccAttempt(db, func(tx *Tx) error {
			var err error
			if _, found2, err = tx.Get(tb, ccKey(0)); err != nil {
				return err
			}
			_, _, err = tx.Get(tb, ccKey(1))
			return err
		})
		if err == nil && !found2 {
			t.Errorf("a transaction of two Gets committed without finding row 0, which exists throughout: validation ran in the same gap")
		}
		_, err = ccAttempt(db, func(tx *Tx) error {
			return tx.Insert(tb, []Value{Int64(0), String(dupCode), Int64(0), String("dup")})
		})
		if err == nil {
			t.Errorf("inserting a second row with primary key 0 committed while row 0 was being moved")
		} else if !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrConflict) {
			t.Errorf("inserting a second row with primary key 0: %v, want ErrDuplicate or ErrConflict", err)
		}
	} else if !finished {
		t.Logf("no gap seen: the committer blocked with row 0 still indexed")
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("the update that moves row 0: %v", err)
	}
	if after := ccRID(tb, 0); after == before {
		t.Fatalf("setup: row 0 did not move (RID %x)", before)
	}
	ccCheckEntries(t, tb, 5)
}

// TestRelocationPageCompaction is a page state that the relocation workload
// reaches by chance: the page's records end right at its slot directory,
// with dead bytes from updates, and an insert needs a new slot. Compaction
// must not read the new slot's word out of record bytes.
func TestRelocationPageCompaction(t *testing.T) {
	defer goleak.VerifyNone(t)
	db := Open(Options{})
	tb := ccTable(t, db, TableDef{
		Name:       "pages",
		Columns:    []ColumnDef{{Name: "id", Type: TypeInt64}, {Name: "body", Type: TypeString, MaxLen: 8000}},
		PrimaryKey: []string{"id"},
	})
	s := tb.state.Load().s
	rowLen := func(n int) int {
		b, err := s.encodeRow(nil, []Value{Int64(0), String(strings.Repeat("w", n))})
		if err != nil {
			t.Fatal(err)
		}
		return len(b)
	}
	set := func(id int64, n int, insert bool) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		_, err = ccAttempt(db, func(tx *Tx) error {
			v := String(strings.Repeat("w", n))
			if insert {
				return tx.Insert(tb, []Value{Int64(id), v})
			}
			return tx.Update(tb, ccKey(id), []ColumnValue{{Column: 1, Value: v}})
		})
		return err
	}
	// Four rows, then new versions of three of them: the last one exactly
	// fills the free space, so the records now end where the slot
	// directory begins, and the old versions are dead bytes.
	for i := int64(0); i < 4; i++ {
		if err := set(i, 5000, true); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(0); i < 2; i++ {
		if err := set(i, 5000, false); err != nil {
			t.Fatal(err)
		}
	}
	free := PageSize - 4*slotSize - 6*rowLen(5000)
	n := free - rowLen(0)
	if n < 0 || rowLen(n) != free {
		t.Skipf("setup: no row fills %d free bytes", free)
	}
	if err := set(2, n, false); err != nil {
		t.Fatal(err)
	}
	want := []int{5000, 5000, n, 5000, 10}
	if tb.Stats().Pages != 1 {
		t.Skipf("setup: %d pages, want 1", tb.Stats().Pages)
	}
	p := tb.heap.page(0)
	p.mu.Lock()
	end, dead, nslots := p.end, p.dead, p.nslots
	p.mu.Unlock()
	if end != PageSize-4*slotSize || dead == 0 || nslots != 4 {
		t.Skipf("setup: page end %d, dead %d, %d slots; want end %d, dead bytes, 4 slots", end, dead, nslots, PageSize-4*slotSize)
	}
	// A fifth row fits once the dead bytes are reclaimed; its slot word
	// lies where row 2's last bytes are.
	if err := set(4, 10, true); err != nil {
		t.Fatalf("insert into a page with dead bytes: %v", err)
	}
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i, want := range want {
			r, ok, err := tx.Get(tb, ccKey(int64(i)))
			if err != nil || !ok || r.Str(1) != strings.Repeat("w", want) {
				t.Errorf("row %d: found %v, %v, body of %d bytes, want %d", i, ok, err, len(r.Str(1)), want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRelocationReaders: writers grow and shrink a string column so rows
// move between pages; readers by primary key, by a unique secondary index
// and by an ordered secondary index must never miss a row that exists
// throughout, and inserting a duplicate of such a row must never commit.
func TestRelocationReaders(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		rows     = 120
		groups   = 6
		writers  = 2
		updates  = 800
		readers  = 3
		minReads = 300
	)
	errs := ccNewSink(t)
	defer errs.done()
	db := Open(Options{})
	tb := ccDocsTable(t, db)
	body := ccCol(t, tb, "body")
	byCode, byGrp := ccIndex(t, tb, "by_code"), ccIndex(t, tb, "by_grp")
	code := func(id int) string { return fmt.Sprint("code", id) }
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i := 0; i < rows; i++ {
			if err := tx.Insert(tb, []Value{Int64(int64(i)), String(code(i)), Int64(int64(i % groups)), String(strings.Repeat("b", 100))}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ridOf := func(id int) uint64 { return ccRID(tb, int64(id)) }
	before := make([]uint64, rows)
	for i := range before {
		before[i] = ridOf(i)
	}
	pagesBefore := tb.Stats().Pages

	var (
		wg, writersWG  sync.WaitGroup
		stop           atomic.Bool
		moves          atomic.Int64
		missedGet      atomic.Int64 // a lone Get (which always commits) missed the row
		missedAborted  atomic.Int64 // a miss in a transaction that then failed
		readsOK, abort atomic.Int64
		inFlight       [writers]atomic.Int64 // the row each writer is updating
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		writersWG.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writersWG.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 13))
			for i := 0; i < updates && !errs.failed(); i++ {
				id := w + writers*rng.IntN(rows/writers) // each writer owns its rows: no write conflicts
				n := 50 + rng.IntN(6000)
				old := ridOf(id)
				inFlight[w].Store(int64(id))
				if _, _, err := ccRetry(db, func(tx *Tx) error {
					return tx.Update(tb, ccKey(int64(id)), []ColumnValue{{Column: body, Value: String(strings.Repeat(string(rune('a'+i%26)), n))}})
				}); err != nil {
					errs.fail("writer %d: update %d: %v", w, id, err)
					return
				}
				if ridOf(id) != old {
					moves.Add(1)
				}
			}
		}(w)
	}
	// An inserter tries to insert rows whose primary key or unique code
	// exists throughout: a duplicate must never commit.
	var dupOK, dupConflict atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(5, 19))
		for i := 0; !stop.Load() && !errs.failed(); i++ {
			id := rng.IntN(rows)
			newID := int64(rows + i)
			if i%2 == 0 {
				newID = int64(id) // the same primary key
			}
			_, err := ccAttempt(db, func(tx *Tx) error {
				return tx.Insert(tb, []Value{Int64(newID), String(code(id)), Int64(int64(id % groups)), String("dup")})
			})
			switch {
			case errors.Is(err, ErrDuplicate):
				dupOK.Add(1)
			case errors.Is(err, ErrConflict):
				dupConflict.Add(1)
			case err == nil:
				errs.fail("inserting row %d with code %q, which row %d has throughout, committed", newID, code(id), id)
			default:
				errs.fail("inserter: %v", err)
			}
			runtime.Gosched()
		}
	}()
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 17))
			for i := 0; (i < minReads || !stop.Load()) && !errs.failed(); i++ {
				id := rng.IntN(rows)
				if i%2 == 0 {
					id = int(inFlight[rng.IntN(writers)].Load()) // a row that may be moving now
				}
				mode := (r + i/2) % 4
				missed := false
				_, err := ccAttempt(db, func(tx *Tx) error {
					missed = false
					switch mode {
					case 0: // one Get: atomic by itself, its Commit cannot fail
						rec, ok, err := tx.Get(tb, ccKey(int64(id)))
						if err != nil {
							return err
						}
						missed = !ok || rec.Int64(0) != int64(id)
					case 1: // by the unique secondary index
						rec, ok, err := tx.GetBy(tb, byCode, []Value{String(code(id))})
						if err != nil {
							return err
						}
						missed = !ok || rec.Int64(0) != int64(id)
					case 2: // a group by the ordered secondary index
						n := 0
						if err := tx.Scan(tb, ScanSpec{Index: byGrp, Prefix: ccKey(int64(id % groups))}, func(Record) bool {
							n++
							return true
						}); err != nil {
							return err
						}
						missed = n != rows/groups
					case 3: // both ways in one transaction
						_, ok1, err := tx.Get(tb, ccKey(int64(id)))
						if err != nil {
							return err
						}
						_, ok2, err := tx.GetBy(tb, byCode, []Value{String(code(id))})
						if err != nil {
							return err
						}
						missed = !ok1 || !ok2
					}
					return nil
				})
				switch {
				case err == nil:
					readsOK.Add(1)
					if missed {
						if mode == 0 {
							missedGet.Add(1)
						}
						errs.fail("reader %d (mode %d) committed without finding row %d, which exists throughout", r, mode, id)
					}
				case errors.Is(err, ErrConflict):
					abort.Add(1)
					if mode == 0 {
						errs.fail("reader %d: a transaction of one Get failed to commit: %v", r, err)
					}
					if missed {
						missedAborted.Add(1)
					}
				default:
					errs.fail("reader %d: %v", r, err)
				}
			}
		}(r)
	}
	writersWG.Wait()
	stop.Store(true)
	wg.Wait()

	moved := 0
	for i := range before {
		if ridOf(i) != before[i] {
			moved++
		}
	}
	t.Logf("%d updates moved a row (%d of %d rows end elsewhere; pages %d -> %d); reads: %d committed, %d aborted; misses: %d in lone Gets, %d in aborted reads; duplicate inserts: %d ErrDuplicate, %d ErrConflict",
		moves.Load(), moved, rows, pagesBefore, tb.Stats().Pages, readsOK.Load(), abort.Load(), missedGet.Load(), missedAborted.Load(), dupOK.Load(), dupConflict.Load())
	if moves.Load() == 0 {
		t.Errorf("no update moved a row: the test does not exercise relocation")
	}
	ccCheckEntries(t, tb, rows)
	if _, err := ccAttempt(db, func(tx *Tx) error {
		for i := 0; i < rows; i++ {
			r1, ok1, err := tx.Get(tb, ccKey(int64(i)))
			if err != nil {
				return err
			}
			r2, ok2, err := tx.GetBy(tb, byCode, []Value{String(code(i))})
			if err != nil {
				return err
			}
			if !ok1 || !ok2 || !bytes.Equal(r1.Encoded(), r2.Encoded()) {
				t.Errorf("row %d: by primary key %v, by code %v, same row %v", i, ok1, ok2, ok1 && ok2 && bytes.Equal(r1.Encoded(), r2.Encoded()))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// 7. Snapshots under load

type ccLogRec struct {
	lsn uint64
	ops []Op
}

// ccRecordLog is a CommitLog that keeps every record with its LSN.
type ccRecordLog struct {
	mu   sync.Mutex
	last uint64
	recs []ccLogRec
}

func (l *ccRecordLog) Commit(r *Redo) (uint64, error) {
	ops := make([]Op, len(r.Ops))
	for i, op := range r.Ops {
		ops[i] = Op{Kind: op.Kind, Table: op.Table, Data: append([]byte(nil), op.Data...)}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last++
	l.recs = append(l.recs, ccLogRec{lsn: l.last, ops: ops})
	return l.last, nil
}

// upTo returns the records with LSN <= lsn, in LSN order.
func (l *ccRecordLog) upTo(lsn uint64) []ccLogRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ccLogRec
	for _, r := range l.recs {
		if r.lsn <= lsn {
			out = append(out, r)
		}
	}
	return out
}

// ccRows is a table's rows keyed by encoded primary key.
type ccRows map[string][]byte

// ccSnapshotRows scans tb in sn, yielding every yieldEvery rows; kept, if
// not nil, records the most bytes of old versions the snapshot held.
func ccSnapshotRows(sn *Snapshot, tb *Table, yieldEvery int, kept *int64) (ccRows, error) {
	s := tb.state.Load().s
	out := ccRows{}
	n := 0
	err := sn.Scan(tb.ID(), func(r Record) error {
		k := string(s.appendRowKey(nil, 0, r.Encoded()))
		if _, dup := out[k]; dup {
			return fmt.Errorf("snapshot of %s returned key %s twice", tb.Name(), describeKey(s, 0, []byte(k)))
		}
		out[k] = append([]byte(nil), r.Encoded()...)
		if n++; yieldEvery > 0 && n%yieldEvery == 0 {
			runtime.Gosched() // let writers change pages the scan has not reached
			if kept != nil {
				*kept = max(*kept, sn.KeptBytes())
			}
		}
		return nil
	})
	return out, err
}

func ccTableRows(t *testing.T, db *DB, name string) ccRows {
	t.Helper()
	tb, err := db.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	s := tb.state.Load().s
	out := ccRows{}
	if _, err := ccAttempt(db, func(tx *Tx) error {
		return tx.Scan(tb, ScanSpec{}, func(r Record) bool {
			out[string(s.appendRowKey(nil, 0, r.Encoded()))] = append([]byte(nil), r.Encoded()...)
			return true
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func ccDiffRows(t *testing.T, what string, s *schema, got, want ccRows) {
	t.Helper()
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 5 {
			t.Errorf(what+": "+format, args...)
		}
	}
	decode := func(b []byte) []Value { return Record{s: s, b: b}.Values(nil) }
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			report("row %v missing", decode(w))
		case !bytes.Equal(g, w):
			report("row is %v, want %v", decode(g), decode(w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			report("extra row %v", decode(g))
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d rows differ in all", what, bad)
	}
}

func TestSnapshotUnderLoad(t *testing.T) {
	cases := []struct {
		name     string
		disjoint bool // writers on disjoint accounts: few conflicts
		relocate bool // transfers also resize a row, so rows move pages
	}{
		{name: "disjoint", disjoint: true},
		{name: "shared"},
		{name: "relocating", disjoint: true, relocate: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ccSnapshotRun(t, c.disjoint, c.relocate)
		})
	}
}

// ccSnapshotRun: writers transfer money (each transfer also inserts a history
// row, and every other one deletes an older one) while snapshots are taken
// and scanned slowly; each snapshot must hold the invariant total and
// exactly the state that replaying the log up to its LSN builds.
func ccSnapshotRun(t *testing.T, disjoint, relocate bool) {
	const (
		accounts  = 1000
		initial   = 1000
		writers   = 4
		transfers = 250
		snapshots = 3
	)
	errs := ccNewSink(t)
	defer errs.done()
	log := &ccRecordLog{}
	db := Open(Options{Log: log})
	b := ccNewBank(t, db, "acct", accounts, initial, 200)
	hist := ccTable(t, db, TableDef{
		Name: "history",
		Columns: []ColumnDef{
			{Name: "id", Type: TypeInt64},
			{Name: "src", Type: TypeInt64},
			{Name: "dst", Type: TypeInt64},
			{Name: "amt", Type: TypeInt64},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: Ordered,
	})
	want := int64(accounts * initial)
	if n := b.tb.Stats().Pages; n < 4 {
		t.Fatalf("accounts fill %d pages; the test needs several", n)
	}

	var (
		wg        sync.WaitGroup
		committed atomic.Int64
		conflicts atomic.Int64
		missing   atomic.Int64
		writing   atomic.Int64
		nextHist  atomic.Int64
	)
	writing.Store(writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			defer writing.Add(-1)
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			yield := ccYielder(rng)
			pick := func() int {
				if disjoint {
					return w + writers*rng.IntN(accounts/writers)
				}
				return rng.IntN(accounts)
			}
			for i := 0; i < transfers && !errs.failed(); i++ {
				a, c := pick(), pick()
				for c == a {
					c = pick()
				}
				amt := int64(1 + rng.IntN(50))
				var pad *string
				if relocate {
					p := strings.Repeat("q", rng.IntN(1000))
					pad = &p
				}
				hid := nextHist.Add(1)
				do := func(tx *Tx) error {
					if err := b.transfer(tx, a, c, amt, pad, yield); err != nil {
						return err
					}
					// Every other transfer deletes an older history row (its
					// slot is reused by later inserts). Only this transfer
					// deletes that row; it may not be committed yet.
					if hid > 40 && hid%2 == 0 {
						if err := tx.Delete(hist, ccKey(hid-40)); err != nil && !errors.Is(err, ErrNotFound) {
							return err
						}
					}
					return tx.Insert(hist, []Value{Int64(hid), Int64(int64(a)), Int64(int64(c)), Int64(amt)})
				}
				_, n, err := ccRetry(db, do)
				for tries := 0; errors.Is(err, errCCMissing) && tries < 1000; tries++ {
					// The transfer's Get missed an existing account while it
					// moved (TestRelocationReaders covers that); the attempt
					// rolled back, so count it and try again.
					missing.Add(1)
					var m int
					_, m, err = ccRetry(db, do)
					n += m
				}
				conflicts.Add(int64(n))
				if err != nil {
					errs.fail("writer %d: %v", w, err)
					return
				}
				committed.Add(1)
			}
		}(w)
	}

	type taken struct {
		lsn        uint64
		acct, hist ccRows
	}
	var (
		shots []taken
		kept  []int64 // per snapshot, the most bytes it had copied aside
	)
	shot := func(sn *Snapshot, yieldEvery int) {
		tk := taken{lsn: sn.LSN()}
		var err1, err2 error
		var k int64
		tk.acct, err1 = ccSnapshotRows(sn, b.tb, yieldEvery, &k)
		tk.hist, err2 = ccSnapshotRows(sn, hist, yieldEvery, &k)
		kept = append(kept, k)
		sn.Close()
		if err := errors.Join(err1, err2); err != nil {
			errs.fail("snapshot at LSN %d: %v", tk.lsn, err)
			return
		}
		shots = append(shots, tk)
	}
	for i := 1; i <= snapshots && !errs.failed(); i++ {
		// Wait, without a clock, for a share of the transfers to commit.
		for committed.Load() < int64(i*writers*transfers/(snapshots+1)) && writing.Load() > 0 {
			runtime.Gosched()
		}
		sn := db.Snapshot()
		var second *Snapshot
		if i%2 == 0 {
			second = db.Snapshot() // two snapshots open at once
		}
		shot(sn, 8)
		if second != nil {
			shot(second, 3)
		}
	}
	wg.Wait()
	if errs.failed() {
		return
	}
	// A snapshot with nothing going on equals the live state.
	idle := db.Snapshot()
	idleAcct, err1 := ccSnapshotRows(idle, b.tb, 0, nil)
	idleHist, err2 := ccSnapshotRows(idle, hist, 0, nil)
	idle.Close()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("idle snapshot: %v", err)
	}
	if idle.LSN() != db.LastLSN() {
		t.Errorf("idle snapshot at LSN %d, LastLSN %d", idle.LSN(), db.LastLSN())
	}
	shots = append(shots, taken{lsn: idle.LSN(), acct: idleAcct, hist: idleHist})
	ccDiffRows(t, "idle snapshot vs live accounts", b.tb.state.Load().s, idleAcct, ccTableRows(t, db, "acct"))
	ccDiffRows(t, "idle snapshot vs live history", hist.state.Load().s, idleHist, ccTableRows(t, db, "history"))

	// Replay the log into a fresh database, in LSN order, stopping at each
	// snapshot's LSN: the snapshot must hold exactly the state replayed so
	// far, the records with LSN <= its LSN.
	sort.SliceStable(shots, func(i, j int) bool { return shots[i].lsn < shots[j].lsn })
	replay := Open(Options{})
	recs := log.upTo(db.LastLSN())
	next := 0
	for i, tk := range shots {
		var sum int64
		for _, row := range tk.acct {
			sum += Record{s: b.tb.state.Load().s, b: row}.Int64(b.bal)
		}
		if sum != want || len(tk.acct) != accounts {
			t.Errorf("snapshot %d at LSN %d: total %d over %d accounts, want %d over %d", i, tk.lsn, sum, len(tk.acct), want, accounts)
		}
		for ; next < len(recs) && recs[next].lsn <= tk.lsn; next++ {
			if err := replay.Apply(recs[next].lsn, &Redo{Ops: recs[next].ops}); err != nil {
				t.Fatalf("replay LSN %d: %v", recs[next].lsn, err)
			}
		}
		if next == 0 || recs[next-1].lsn != tk.lsn {
			t.Fatalf("snapshot %d at LSN %d: the log has no record with that LSN", i, tk.lsn)
		}
		ccDiffRows(t, fmt.Sprintf("snapshot %d at LSN %d vs replay: accounts", i, tk.lsn), b.tb.state.Load().s, tk.acct, ccTableRows(t, replay, "acct"))
		ccDiffRows(t, fmt.Sprintf("snapshot %d at LSN %d vs replay: history", i, tk.lsn), hist.state.Load().s, tk.hist, ccTableRows(t, replay, "history"))
	}
	lsns := make([]uint64, len(shots))
	for i := range shots {
		lsns[i] = shots[i].lsn
	}
	t.Logf("snapshots at LSNs %v of %d (most bytes copied aside while scanning: %v); %d transfers, %d conflicts, %d retries after a missed account",
		lsns, db.LastLSN(), kept, committed.Load(), conflicts.Load(), missing.Load())
}

// TestConcurrentUpsertsOfAnAbsentKey: two transactions upsert the same
// key, absent when both looked; the second to commit gets ErrConflict
// (run again, it replaces the first's row), never ErrDuplicate: in no
// serial order does an upsert find a duplicate primary key. A unique
// secondary key taken meanwhile is still a duplicate.
func TestConcurrentUpsertsOfAnAbsentKey(t *testing.T) {
	db := Open(Options{})
	tb := relogKV(t, db, 1)
	first, second := db.Begin(), db.Begin()
	if err := first.Upsert(tb, kv(5, 50)); err != nil {
		t.Fatal(err)
	}
	if err := second.Upsert(tb, kv(5, 51)); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Commit(); !errors.Is(err, ErrConflict) {
		t.Fatalf("the second upsert of a key absent when it looked: %v, want ErrConflict", err)
	}
	reviewCommit(t, func(tx *Tx) error { return tx.Upsert(tb, kv(5, 51)) }, db)

	first, second = db.Begin(), db.Begin()
	if err := first.Upsert(tb, kv(6, 60)); err != nil {
		t.Fatal(err)
	}
	if err := second.Upsert(tb, kv(7, 60)); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Commit(); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("an upsert whose unique secondary key was taken: %v, want ErrDuplicate", err)
	}
}

// ---------------------------------------------------------------------------
// 8. LSN order is a serial order

// ccYieldLog is a ccRecordLog that yields before it gives an LSN, to widen
// the window between a commit's validation and its LSN.
type ccYieldLog struct{ ccRecordLog }

func (l *ccYieldLog) Commit(r *Redo) (uint64, error) {
	runtime.Gosched()
	return l.ccRecordLog.Commit(r)
}

// ccSeen is what one committed transaction read: each key's row (nil:
// absent), and each range scanned with the rows it returned.
type ccSeen struct {
	rows  map[string][]byte
	scans []ccSeenScan
}

type ccSeenScan struct {
	lo, hi []byte // encoded primary keys, [lo, hi)
	rows   [][]byte
}

// TestLSNOrderIsSerialOrder: every prefix of the log, applied in LSN
// order, is a state of a serial history: each committed transaction's
// reads (rows found, keys found absent, ranges scanned) are exactly what
// the log's records before its LSN leave. A standby applies the log in
// LSN order and serves reads at every prefix, and an image is the state
// at one, so an LSN order that contradicts the order transactions
// serialized in shows its readers a state no serial history passes
// through: T1 reads key k absent and writes y; T2 inserts k; if T2 is
// given the lower LSN, a reader between them sees k without T1's y,
// though T1 came first.
func TestLSNOrderIsSerialOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		keys    = 24
		workers = 8
		txs     = 1500
	)
	log := &ccYieldLog{}
	db := Open(Options{Log: log})
	tb := ccTable(t, db, TableDef{
		Name:        "kv",
		Columns:     []ColumnDef{{Name: "k", Type: TypeInt64}, {Name: "v", Type: TypeInt64}},
		PrimaryKey:  []string{"k"},
		PrimaryKind: Ordered,
	})
	s := tb.state.Load().s
	keyOf := func(k int64) string {
		b, err := s.appendKey(nil, 0, 0, ccKey(k))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	errs := ccNewSink(t)
	defer errs.done()
	var (
		mu   sync.Mutex
		seen = map[uint64]ccSeen{}
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < txs && !errs.failed(); i++ {
				var got ccSeen
				lsn, _, err := ccRetry(db, func(tx *Tx) error {
					got = ccSeen{rows: map[string][]byte{}}
					for range 2 {
						k := rng.Int64N(keys)
						r, ok, err := tx.Get(tb, ccKey(k))
						if err != nil {
							return err
						}
						var row []byte
						if ok {
							row = slices.Clone(r.Encoded())
						}
						got.rows[keyOf(k)] = row
					}
					if rng.IntN(4) == 0 {
						lo := rng.Int64N(keys)
						sc := ccSeenScan{lo: []byte(keyOf(lo)), hi: []byte(keyOf(lo + 3))}
						if err := tx.Scan(tb, ScanSpec{Lower: ccKey(lo), Upper: ccKey(lo + 3)}, func(r Record) bool {
							sc.rows = append(sc.rows, slices.Clone(r.Encoded()))
							return true
						}); err != nil {
							return err
						}
						got.scans = append(got.scans, sc)
					}
					runtime.Gosched()
					k := rng.Int64N(keys)
					if rng.IntN(3) == 0 {
						err := tx.Delete(tb, ccKey(k))
						if errors.Is(err, ErrNotFound) {
							err = nil
						}
						return err
					}
					return tx.Upsert(tb, []Value{Int64(k), Int64(next.Add(1))})
				})
				if err != nil {
					errs.fail("worker %d: %v", w, err)
					return
				}
				if lsn != 0 {
					mu.Lock()
					seen[lsn] = got
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if errs.failed() {
		return
	}
	state := map[string][]byte{}
	bad := 0
	for _, rec := range log.upTo(math.MaxUint64) {
		got, ok := seen[rec.lsn]
		if !ok && rec.lsn != 1 { // 1 created the table
			t.Fatalf("LSN %d in the log was given to no transaction", rec.lsn)
		}
		for k, want := range got.rows {
			if have := state[k]; !bytes.Equal(have, want) {
				bad++
				if bad <= 5 {
					t.Errorf("LSN %d read key %s as %x; the log before it leaves %x", rec.lsn, describeKey(s, 0, []byte(k)), want, have)
				}
			}
		}
		for _, sc := range got.scans {
			var have [][]byte
			for k, row := range state {
				if k >= string(sc.lo) && k < string(sc.hi) {
					have = append(have, row)
				}
			}
			slices.SortFunc(have, func(a, b []byte) int {
				return bytes.Compare(s.appendRowKey(nil, 0, a), s.appendRowKey(nil, 0, b))
			})
			if !slices.EqualFunc(have, sc.rows, bytes.Equal) {
				bad++
				if bad <= 5 {
					t.Errorf("LSN %d scanned [%s, %s) and got %d rows; the log before it leaves %d", rec.lsn,
						describeKey(s, 0, sc.lo), describeKey(s, 0, sc.hi), len(sc.rows), len(have))
				}
			}
		}
		for _, op := range rec.ops {
			if op.Kind == OpPut {
				state[string(s.appendRowKey(nil, 0, op.Data))] = op.Data
			} else {
				delete(state, string(op.Data))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d reads of %d transactions contradict the LSN order", bad, len(seen))
	}
}
