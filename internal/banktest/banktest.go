// Package banktest is the crash tests' workload: accounts whose balances
// always sum to Accounts*Initial, moved between by transfers that each
// also insert a marker row, so that a recovered database shows which
// transactions committed and whether any is partial.
package banktest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/mmdb/mmdb/mem"
)

// The bank's size.
const (
	Accounts = 8
	Initial  = 100
)

// Bank is the two tables: acct (id, bal) and mark (tag).
type Bank struct {
	Acct, Mark *mem.Table
}

// Setup creates the tables and accounts in db; wait waits for a commit's
// durability.
func Setup(t testing.TB, db *mem.DB, wait func(lsn uint64) error) Bank {
	t.Helper()
	acct, err := db.CreateTable(mem.TableDef{Name: "acct", Columns: []mem.ColumnDef{
		{Name: "id", Type: mem.TypeInt64}, {Name: "bal", Type: mem.TypeInt64},
	}, PrimaryKey: []string{"id"}, PrimaryKind: mem.Ordered})
	if err != nil {
		t.Fatal(err)
	}
	mark, err := db.CreateTable(mem.TableDef{Name: "mark", Columns: []mem.ColumnDef{
		{Name: "tag", Type: mem.TypeString, MaxLen: 64},
	}, PrimaryKey: []string{"tag"}, PrimaryKind: mem.Ordered})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	for i := 0; i < Accounts; i++ {
		if err := tx.Insert(acct, []mem.Value{mem.Int64(int64(i)), mem.Int64(Initial)}); err != nil {
			t.Fatal(err)
		}
	}
	lsn, err := tx.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(lsn); err != nil {
		t.Fatal(err)
	}
	return Bank{acct, mark}
}

// Of returns the bank in a recovered database.
func Of(t testing.TB, db *mem.DB) Bank {
	t.Helper()
	acct, err := db.Table("acct")
	if err != nil {
		t.Fatal(err)
	}
	mark, err := db.Table("mark")
	if err != nil {
		t.Fatal(err)
	}
	return Bank{acct, mark}
}

// Transfer moves an amount between two accounts and inserts the marker
// tag, in one transaction.
func (b Bank) Transfer(db *mem.DB, from, to int64, amount int64, tag string) (uint64, error) {
	tx := db.Begin()
	defer tx.Rollback()
	var bal [2]int64
	for i, id := range []int64{from, to} {
		rec, ok, err := tx.Get(b.Acct, []mem.Value{mem.Int64(id)})
		if err != nil || !ok {
			return 0, fmt.Errorf("get %d: %v %v", id, ok, err)
		}
		bal[i] = rec.Int64(1)
	}
	if err := tx.Update(b.Acct, []mem.Value{mem.Int64(from)}, []mem.ColumnValue{{Column: 1, Value: mem.Int64(bal[0] - amount)}}); err != nil {
		return 0, err
	}
	if err := tx.Update(b.Acct, []mem.Value{mem.Int64(to)}, []mem.ColumnValue{{Column: 1, Value: mem.Int64(bal[1] + amount)}}); err != nil {
		return 0, err
	}
	if err := tx.Insert(b.Mark, []mem.Value{mem.String(tag)}); err != nil {
		return 0, err
	}
	return tx.Commit()
}

// Check verifies a recovered database: balances sum right (no partial
// transaction), every acknowledged marker is there, and no marker of a
// rolled-back transaction is. It returns the number of markers.
func Check(t testing.TB, db *mem.DB, acked map[string]bool, what string) int {
	t.Helper()
	b := Of(t, db)
	tx := db.Begin()
	defer tx.Rollback()
	var sum int64
	n := 0
	if err := tx.Scan(b.Acct, mem.ScanSpec{}, func(r mem.Record) bool { sum += r.Int64(1); n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != Accounts || sum != Accounts*Initial {
		t.Fatalf("%s: %d accounts summing to %d, want %d summing to %d: a partial transaction", what, n, sum, Accounts, Accounts*Initial)
	}
	present := map[string]bool{}
	if err := tx.Scan(b.Mark, mem.ScanSpec{}, func(r mem.Record) bool { present[r.Str(0)] = true; return true }); err != nil {
		t.Fatal(err)
	}
	for tag := range acked {
		if !present[tag] {
			t.Fatalf("%s: acknowledged commit %s is lost", what, tag)
		}
	}
	for tag := range present {
		if strings.HasPrefix(tag, "rolledback") {
			t.Fatalf("%s: rolled-back transaction %s is visible", what, tag)
		}
	}
	return len(present)
}

// Run has workers transfer (and now and then roll back) until a commit or
// its wait fails; it returns the acknowledged markers, whose tags start
// with "r<round>-", so that later rounds on the same database add new
// ones. onAck, if set, is
// called with the acknowledged markers after each is added, under the
// lock that guards them.
func Run(db *mem.DB, b Bank, round, workers, each int, wait func(lsn uint64) error, onAck func(acked map[string]bool)) map[string]bool {
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(round)))
			for i := 0; i < each; i++ {
				from, to := r.Int64N(Accounts), r.Int64N(Accounts)
				if from == to {
					continue
				}
				if i%5 == 4 {
					tx := db.Begin()
					_ = tx.Insert(b.Mark, []mem.Value{mem.String(fmt.Sprintf("rolledback-r%d-w%d-%d", round, w, i))})
					tx.Rollback()
				}
				tag := fmt.Sprintf("r%d-w%d-%d", round, w, i)
				lsn, err := b.Transfer(db, from, to, r.Int64N(10), tag)
				if errors.Is(err, mem.ErrConflict) {
					continue
				}
				if err != nil || wait(lsn) != nil {
					return
				}
				mu.Lock()
				acked[tag] = true
				if onAck != nil {
					onAck(acked)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return acked
}
