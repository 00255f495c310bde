// Package mem is mmdb's in-memory engine: the catalog, row storage in
// slotted pages, hash and ordered indexes, serializable transactions, the
// redo records that commits hand to the log, replay of those records, and
// consistent snapshots for checkpoints. It knows nothing of disks or
// networks: the log plugs in through CommitLog, and everything else calls
// the API below.
//
// # Using it
//
//	db := mem.Open(mem.Options{})                  // Options.Log plugs in the redo log
//	subs, err := db.CreateTable(mem.TableDef{
//		Name: "subscriber",
//		Columns: []mem.ColumnDef{
//			{Name: "s_id", Type: mem.TypeUint64},
//			{Name: "sub_nbr", Type: mem.TypeString, MaxLen: 15},
//			{Name: "vlr_location", Type: mem.TypeUint64},
//		},
//		PrimaryKey: []string{"s_id"},               // hash by default; PrimaryKind: mem.Ordered to scan it
//		Indexes: []mem.IndexDef{{Name: "by_nbr", Columns: []string{"sub_nbr"}, Unique: true, Kind: mem.Hash}},
//	})
//	vlr, _ := subs.Column("vlr_location")
//
//	tx := db.Begin()
//	rec, found, err := tx.Get(subs, []mem.Value{mem.Uint64(7)})
//	err = tx.Update(subs, []mem.Value{mem.Uint64(7)}, []mem.ColumnValue{{Column: vlr, Value: mem.Uint64(42)}})
//	lsn, err := tx.Commit()                        // mem.ErrConflict: retry the transaction
//
// Values are typed (Int64, Uint64, Float64, Bool, String, Bytes, Timestamp,
// Null) and must match the column's type exactly. Rows come back as Record,
// a zero-copy view with typed accessors by column ordinal; a Record stays
// valid after its transaction ends because stored rows are never modified
// in place. Errors wrap the sentinels in errors.go (test with errors.Is)
// and name the table, column, index or key involved; a failed operation
// changes nothing.
//
// # Transactions
//
// Every read and write goes through a Tx. Isolation is serializable, by
// optimistic concurrency control (Silo); the protocol is described in
// tx.go. Readers take no locks and never block writers; a transaction that
// would break serializability fails at Commit with ErrConflict and leaves
// no trace, and the caller retries it. Inside a transaction, look tables
// up with Tx.Table rather than DB.Table: a name it finds no table under is
// then among what Commit checks. Rollback, or any failed Commit,
// writes nothing anywhere: uncommitted data never reaches the heap's
// visible versions, the indexes' visible entries, the log or a standby.
//
// # Commit and the log
//
// Commit builds a Redo record (after-images of the rows it wrote, keyed by
// table id; one record per transaction) and calls Options.Log.Commit with
// it while holding its row locks, before anything becomes visible. The
// hook returns the LSN; the rows are installed with it and Commit returns
// it. A commit validates and takes its LSN in one step, one commit at a
// time, so the LSN order is an order the transactions serialize in: every
// prefix of the log is a state of a serial history, which a standby
// applying it, or an image made at an LSN, may show its readers. The caller then waits for whatever durability it needs (the log
// issue's durability levels) before acknowledging. A transaction that
// wrote nothing gets no LSN; Tx.Seen names the newest commit whose
// effects it read, for the caller to wait on before it answers. Schema changes are
// logged the same way, one per record. They hold commits off for an
// instant only: CreateIndex builds a new index while commits go on and
// keep it up to date, and logs it once it holds every row (see
// createIndex). Apply builds a CreateIndex of the log while the records
// after it apply: from its LSN the index is in the table's definition,
// and reads by it wait for it (Table.IndexReady); a Replayer builds it
// at once.
// Without a log, a Counter assigns
// LSNs in memory. Tx.Relog logs rows as they are, changing nothing: a
// standby that applies the record ends with exactly those rows (how a
// standby that differs is repaired through the log).
//
// Apply replays a record at its LSN, idempotently, for recovery and
// standbys. A Replayer replays a whole log on every core, for recovery:
// rows are spread over workers by primary key, so each row's changes are
// installed in LSN order while different rows move independently, and
// the database is not read until it is done. Snapshot gives a consistent view as of an LSN without stopping
// writers, for checkpoints and images: image plus the log after its LSN,
// applied in order, rebuild the committed state.
//
// # Memory layout and the garbage collector
//
// Rows live in 32 KiB pages (page.go) that hold no pointers; a row's
// address is its RID (page, slot). Hash indexes are flat arrays of
// {hash, RID} (index.go), each RID with a hint of where its row's bytes
// are in the page, so that a point read fetches the row while it checks
// the row's version, and ordered indexes are B-trees whose keys are
// carved from shared slabs. So the collector's work grows with the number
// of pages and B-tree nodes, not with the number of rows. Stats reports
// rows, heap bytes and index bytes per table.
package mem
