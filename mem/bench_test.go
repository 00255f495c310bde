package mem_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/benchutil"
	"github.com/mmdb/mmdb/internal/gcstat"
	"github.com/mmdb/mmdb/mem"
)

// Engine micro-benchmarks, each at 1, 2 and 8 concurrent clients, over a
// table of -bench.rows rows (id uint64 key, a uint64 and a 32-byte string).
// Results and the machine are recorded in docs/benchmarks.md.

var benchRows = flag.Int("bench.rows", 1_000_000, "rows preloaded for the engine benchmarks")

var clientCounts = []int{1, 2, 8}

func kvTable(b *testing.B, kind mem.IndexKind, rows int) (*mem.DB, *mem.Table) {
	b.Helper()
	db := mem.Open(mem.Options{})
	t, err := db.CreateTable(mem.TableDef{
		Name: "kv",
		Columns: []mem.ColumnDef{
			{Name: "id", Type: mem.TypeUint64},
			{Name: "n", Type: mem.TypeUint64},
			{Name: "payload", Type: mem.TypeString, MaxLen: 32},
		},
		PrimaryKey: []string{"id"}, PrimaryKind: kind,
	})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	for lo := 0; lo < rows; lo += batch {
		tx := db.Begin()
		for id := lo; id < min(lo+batch, rows); id++ {
			if err := tx.Insert(t, kvRow(uint64(id))); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return db, t
}

func kvRow(id uint64) []mem.Value {
	return []mem.Value{mem.Uint64(id), mem.Uint64(id), mem.String("0123456789abcdef0123456789abcdef")}
}

// spread maps operation i to a key, scattering consecutive operations.
func spread(i, rows int) uint64 { return uint64((i * 7919) % rows) }

func forClients(b *testing.B, run func(b *testing.B, clients int)) {
	for _, c := range clientCounts {
		b.Run(fmt.Sprintf("clients=%d", c), func(b *testing.B) { run(b, c) })
	}
}

func BenchmarkGet(b *testing.B) {
	db, t := kvTable(b, mem.Hash, *benchRows)
	forClients(b, func(b *testing.B, clients int) {
		keys := make([][]mem.Value, clients)
		for c := range keys {
			keys[c] = make([]mem.Value, 1)
		}
		benchutil.RunClients(b, clients, func(c, i int) {
			keys[c][0] = mem.Uint64(spread(i, *benchRows))
			tx := db.Begin()
			r, ok, err := tx.Get(t, keys[c])
			if err != nil || !ok || r.Uint64(1) != keys[c][0].AsUint64() {
				b.Errorf("get %v: %v %v", keys[c][0], ok, err)
			}
			if _, err := tx.Commit(); err != nil {
				b.Error(err)
			}
		})
	})
}

func BenchmarkUpdate(b *testing.B) {
	db, t := kvTable(b, mem.Hash, *benchRows)
	forClients(b, func(b *testing.B, clients int) {
		keys := make([][]mem.Value, clients)
		sets := make([][]mem.ColumnValue, clients)
		for c := range keys {
			keys[c] = make([]mem.Value, 1)
			sets[c] = make([]mem.ColumnValue, 1)
		}
		benchutil.RunClients(b, clients, func(c, i int) {
			keys[c][0] = mem.Uint64(spread(i, *benchRows))
			sets[c][0] = mem.ColumnValue{Column: 1, Value: mem.Uint64(uint64(i))}
			for {
				tx := db.Begin()
				if err := tx.Update(t, keys[c], sets[c]); err != nil {
					b.Fatal(err)
				}
				_, err := tx.Commit()
				if err == nil {
					return
				}
				if !errors.Is(err, mem.ErrConflict) {
					b.Fatal(err)
				}
			}
		})
	})
}

func BenchmarkInsert(b *testing.B) {
	forClients(b, func(b *testing.B, clients int) {
		db, t := kvTable(b, mem.Hash, 0)
		rows := make([][]mem.Value, clients)
		benchutil.RunClients(b, clients, func(c, i int) {
			rows[c] = append(rows[c][:0], kvRow(uint64(i))...)
			tx := db.Begin()
			if err := tx.Insert(t, rows[c]); err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkInsertFewKeys inserts rows into a table with a non-unique hash
// index on a column of four values, so that each key has b.N/4 rows: the
// cost of an insert must not grow with the rows that share its key.
func BenchmarkInsertFewKeys(b *testing.B) {
	forClients(b, func(b *testing.B, clients int) {
		db := mem.Open(mem.Options{})
		t, err := db.CreateTable(mem.TableDef{
			Name:       "few",
			Columns:    []mem.ColumnDef{{Name: "id", Type: mem.TypeUint64}, {Name: "n", Type: mem.TypeUint64}},
			PrimaryKey: []string{"id"},
			Indexes:    []mem.IndexDef{{Name: "by_n", Columns: []string{"n"}, Kind: mem.Hash}},
		})
		if err != nil {
			b.Fatal(err)
		}
		rows := make([][]mem.Value, clients)
		benchutil.RunClients(b, clients, func(c, i int) {
			rows[c] = append(rows[c][:0], mem.Uint64(uint64(i)), mem.Uint64(uint64(i%4)))
			tx := db.Begin()
			if err := tx.Insert(t, rows[c]); err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		})
	})
}

func BenchmarkDelete(b *testing.B) {
	forClients(b, func(b *testing.B, clients int) {
		db, t := kvTable(b, mem.Hash, b.N)
		keys := make([][]mem.Value, clients)
		for c := range keys {
			keys[c] = make([]mem.Value, 1)
		}
		benchutil.RunClients(b, clients, func(c, i int) {
			keys[c][0] = mem.Uint64(uint64(i))
			tx := db.Begin()
			if err := tx.Delete(t, keys[c]); err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkScan reads 10 consecutive rows of an ordered primary key.
func BenchmarkScan(b *testing.B) {
	db, t := kvTable(b, mem.Ordered, *benchRows)
	forClients(b, func(b *testing.B, clients int) {
		bounds := make([][]mem.Value, clients)
		for c := range bounds {
			bounds[c] = make([]mem.Value, 1)
		}
		benchutil.RunClients(b, clients, func(c, i int) {
			bounds[c][0] = mem.Uint64(spread(i, *benchRows-10))
			tx := db.Begin()
			n := 0
			err := tx.Scan(t, mem.ScanSpec{Lower: bounds[c], Limit: 10}, func(mem.Record) bool { n++; return true })
			if err != nil || n != 10 {
				b.Fatalf("scan: %d rows, %v", n, err)
			}
			if _, err := tx.Commit(); err != nil && !errors.Is(err, mem.ErrConflict) {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkGCCycle measures one full garbage collection with 1M and 10M
// rows loaded (a hash primary key and an ordered secondary index), to show
// that the collector's work does not grow with the number of rows. It
// reports the time of a forced cycle and the heap it covers.
func BenchmarkGCCycle(b *testing.B) {
	for _, rows := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			db, _ := kvTable(b, mem.Hash, rows)
			if _, err := db.CreateIndex(context.Background(), "kv", mem.IndexDef{Name: "by_n", Columns: []string{"n"}, Kind: mem.Ordered}); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			start := gcstat.Read()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runtime.GC()
			}
			b.StopTimer()
			d := gcstat.Since(start)
			b.ReportMetric(float64(ms.HeapAlloc>>20), "heap-MiB")
			b.ReportMetric(float64(ms.HeapObjects), "heap-objects")
			b.ReportMetric(float64(d.MaxPause.Microseconds()), "max-gc-pause-us")
			runtime.KeepAlive(db)
		})
	}
}

// BenchmarkCreateIndex times building a secondary index on n over a
// table of -bench.rows rows, alone and while a writer updates n in rows
// at random (one commit per row): the writer's commits per second and
// its worst latencies while the build runs say whether the build holds
// commits off.
func BenchmarkCreateIndex(b *testing.B) {
	db, t := kvTable(b, mem.Hash, *benchRows)
	for _, kind := range []mem.IndexKind{mem.Hash, mem.Ordered} {
		for _, load := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/writer=%v", kind, load), func(b *testing.B) {
				var lat []time.Duration
				for i := 0; i < b.N; i++ {
					stop := make(chan struct{})
					done := make(chan []time.Duration)
					if load {
						go func() {
							var l []time.Duration
							key, set := make([]mem.Value, 1), make([]mem.ColumnValue, 1)
							for j := 0; ; j++ {
								select {
								case <-stop:
									done <- l
									return
								default:
								}
								key[0] = mem.Uint64(spread(j, *benchRows))
								set[0] = mem.ColumnValue{Column: 1, Value: mem.Uint64(uint64(j))}
								start := time.Now()
								tx := db.Begin()
								if err := tx.Update(t, key, set); err != nil {
									b.Error(err)
								}
								if _, err := tx.Commit(); err != nil && !errors.Is(err, mem.ErrConflict) {
									b.Error(err)
								}
								l = append(l, time.Since(start))
							}
						}()
					}
					if _, err := db.CreateIndex(context.Background(), "kv", mem.IndexDef{Name: "by_n", Columns: []string{"n"}, Kind: kind}); err != nil {
						b.Fatal(err)
					}
					if load {
						close(stop)
						lat = append(lat, <-done...)
					}
					b.StopTimer()
					if _, err := db.DropIndex("kv", "by_n"); err != nil {
						b.Fatal(err)
					}
					runtime.GC()
					b.StartTimer()
				}
				if load {
					slices.Sort(lat)
					b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "writes/s")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
					b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-us")
				}
			})
		}
	}
}

// BenchmarkGetByInBigTransaction: one transaction inserts b.N rows, each
// after a GetBy of its unique secondary key (a load that checks what it
// inserts). The cost per row should not grow with the rows before it.
func BenchmarkGetByInBigTransaction(b *testing.B) {
	db := mem.Open(mem.Options{})
	t, err := db.CreateTable(mem.TableDef{Name: "s", Columns: []mem.ColumnDef{{Name: "k", Type: mem.TypeUint64}, {Name: "m", Type: mem.TypeUint64}},
		PrimaryKey: []string{"k"}, Indexes: []mem.IndexDef{{Name: "by_m", Columns: []string{"m"}, Unique: true, Kind: mem.Hash}}})
	if err != nil {
		b.Fatal(err)
	}
	ix, _ := t.Index("by_m")
	tx := db.Begin()
	defer tx.Rollback()
	b.ResetTimer()
	for i := range uint64(b.N) {
		if _, found, err := tx.GetBy(t, ix, []mem.Value{mem.Uint64(i + 1<<40)}); err != nil || found {
			b.Fatal(found, err)
		}
		if err := tx.Insert(t, []mem.Value{mem.Uint64(i), mem.Uint64(i + 1<<40)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanInBigTransaction: Scan with Limit 10 of an ordered
// secondary index, in a transaction that has updated `writes` rows of
// the table (moving their keys in that index): alone (scan), after one
// more update of a row it wrote (write+scan: a bulk job paging through a
// table it changes), and as a whole transaction of the writes and one
// scan (tx: what the first scan costs). The cost of a scan should follow
// the rows it delivers and skips, not the transaction's writes.
func BenchmarkScanInBigTransaction(b *testing.B) {
	const rows = 1 << 16
	db := mem.Open(mem.Options{})
	t, err := db.CreateTable(mem.TableDef{
		Name:        "kv",
		Columns:     []mem.ColumnDef{{Name: "id", Type: mem.TypeUint64}, {Name: "n", Type: mem.TypeUint64}, {Name: "payload", Type: mem.TypeString, MaxLen: 32}},
		PrimaryKey:  []string{"id"},
		PrimaryKind: mem.Ordered,
		Indexes:     []mem.IndexDef{{Name: "by_n", Columns: []string{"n"}, Kind: mem.Ordered}},
	})
	if err != nil {
		b.Fatal(err)
	}
	for lo := 0; lo < rows; lo += 1000 {
		tx := db.Begin()
		for id := lo; id < min(lo+1000, rows); id++ {
			if err := tx.Insert(t, kvRow(uint64(id))); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	ix, _ := t.Index("by_n")
	key, set, lower := make([]mem.Value, 1), make([]mem.ColumnValue, 1), make([]mem.Value, 1)
	update := func(tx *mem.Tx, i, n int) {
		key[0] = mem.Uint64(spread(i, rows))
		set[0] = mem.ColumnValue{Column: 1, Value: mem.Uint64(uint64(n % rows))}
		if err := tx.Update(t, key, set); err != nil {
			b.Fatal(err)
		}
	}
	scan := func(tx *mem.Tx, i int) {
		lower[0] = mem.Uint64(spread(31*i, rows-64))
		n := 0
		err := tx.Scan(t, mem.ScanSpec{Index: ix, Lower: lower, Limit: 10}, func(mem.Record) bool { n++; return true })
		if err != nil || n != 10 {
			b.Fatalf("scan: %d rows, %v", n, err)
		}
	}
	begin := func(writes int) *mem.Tx {
		tx := db.Begin()
		for i := range writes {
			update(tx, i, 7*i+3)
		}
		return tx
	}
	for _, writes := range []int{0, 4, 1 << 10, 1 << 14} {
		for _, mode := range []string{"scan", "write+scan", "tx"} {
			if writes == 0 && mode != "scan" {
				continue
			}
			b.Run(fmt.Sprintf("writes=%d/%s", writes, mode), func(b *testing.B) {
				if mode == "tx" {
					benchutil.RunClients(b, 1, func(_, i int) {
						tx := begin(writes)
						scan(tx, i)
						tx.Rollback()
					})
					return
				}
				tx := begin(writes)
				defer tx.Rollback()
				scan(tx, 0) // the first makes what the others use
				benchutil.RunClients(b, 1, func(_, i int) {
					if mode == "write+scan" {
						update(tx, i%writes, 13*i)
					}
					scan(tx, i)
				})
			})
		}
	}
}
