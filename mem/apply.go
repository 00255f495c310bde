package mem

import (
	"bytes"
	"context"
	"fmt"
)

// Apply replays one redo record with the LSN it was committed at: recovery
// replays the log with it and standbys apply the primary's log with it.
// A record below LastLSN is already applied and is skipped (after it is
// checked), so replaying a log twice, or a log that overlaps an image,
// never rolls a row back. A record at LastLSN is applied: an image loads
// as many records at its one LSN, and re-applying is harmless because a
// put stores the whole after-image, a delete of a missing row does
// nothing, and a schema change already in effect is skipped.
//
// The record is checked in full before anything is applied: an unknown
// table, a malformed row or key, two operations on one row, or a put that
// would break a unique index reject it with ErrCorrupt or ErrNoTable and
// nothing changes. Apply does not call the CommitLog. Calls are
// serialized; they are meant for a database that takes no local writes (a
// standby, or recovery before serving), while readers run concurrently.
//
// A CreateIndex is built while the records after it apply (a standby's
// reads and its primary's sync acks go on): the index is part of the
// table's definition from its LSN, and reads by it wait for it
// (Table.IndexReady). The next schema change waits for the build. A
// Replayer, which serves no reads, builds it at once.
func (db *DB) Apply(lsn uint64, r *Redo) error { return db.apply(lsn, r, true) }

// apply is Apply; online says whether a CreateIndex is built while later
// records apply (buildApplied), or at once.
func (db *DB) apply(lsn uint64, r *Redo, online bool) error {
	if lsn == 0 || lsn > tidLSN {
		return errorf(ErrInvalid, "apply: LSN %d out of range", lsn)
	}
	if r == nil {
		return errorf(ErrInvalid, "apply LSN %d: no record", lsn)
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	if err := db.faulted(); err != nil {
		return err
	}
	db.stopBuild()
	if len(r.Ops) > 0 && r.Ops[0].Kind >= OpCreateTable {
		if len(r.Ops) != 1 {
			return errorf(ErrCorrupt, "apply LSN %d: a schema change must be alone in its record", lsn)
		}
		def, err := checkDDL(lsn, r.Ops[0])
		if err != nil || lsn < db.LastLSN() {
			return err // older than the database: in effect already
		}
		if b := db.applying.Load(); b != nil {
			<-b.ready
			if err := db.faulted(); err != nil {
				return err // the build found the rows break its index
			}
		}
		return db.applyDDL(lsn, r.Ops[0], def, online)
	}
	return db.applyData(lsn, r)
}

// faulted returns why Apply refuses every record (an index it applied
// did not fit the rows), or nil.
func (db *DB) faulted() error {
	if f := db.fault.Load(); f != nil {
		return *f
	}
	return nil
}

// applyData is Apply for a data record; the caller holds applyMu. (Apart,
// so that both functions' defers are open-coded, as in Commit.)
func (db *DB) applyData(lsn uint64, r *Redo) error {
	tx := db.Begin()
	defer tx.Rollback()
	var err error
	if tx.writes, err = db.resolve(tx.writes, &tx.arena, lsn, r); err != nil {
		return err
	}
	if lsn < db.LastLSN() {
		return nil
	}
	return tx.installReplayed(lsn)
}

// resolve checks a data record and appends its ops to dst as writes: a
// put as an update, a delete as a delete; applyLock finds out which rows
// exist. The puts' primary keys are appended to *keys.
func (db *DB) resolve(dst []write, keys *[]byte, lsn uint64, r *Redo) ([]write, error) {
	var seen map[string]bool
	if len(r.Ops) > linearWrites {
		seen = make(map[string]bool, len(r.Ops))
	}
	first := len(dst)
	for i, op := range r.Ops {
		w, err := db.resolveOp(op, keys)
		if err != nil {
			return dst, fmt.Errorf("apply LSN %d op %d: %w", lsn, i, err)
		}
		var again bool
		if seen != nil {
			k := wmapKey(w.t, w.key)
			again, seen[k] = seen[k], true
		} else {
			for _, o := range dst[first:] {
				again = again || o.t == w.t && bytes.Equal(o.key, w.key)
			}
		}
		if again {
			s := w.t.state.Load().s
			return dst, errorf(ErrCorrupt, "apply LSN %d op %d: a second operation on table %q primary key %s", lsn, i, w.t.name, describeKey(s, 0, w.key))
		}
		dst = append(dst, w)
	}
	return dst, nil
}

// installReplayed locks the rows tx.writes (a replayed record's writes)
// target, claims their keys and installs them with TID lsn.
func (tx *Tx) installReplayed(lsn uint64) error {
	if len(tx.writes) > linearWrites {
		tx.owned = make(map[ownKey]int, len(tx.writes))
	}
	db := tx.db
	db.gate.RLock()
	for db.online.Load() != nil { // a build begun since Apply stopped one
		db.gate.RUnlock()
		db.stopBuild()
		db.gate.RLock()
	}
	defer db.gate.RUnlock()
	if err := tx.applyLock(lsn); err != nil {
		tx.abort()
		return err
	}
	tx.install(lsn)
	db.applied(lsn)
	return nil
}

// applyLock finds and locks each target row of a replayed record (a put
// of a missing row becomes an insert, a delete of one is dropped), then
// places the inserts and claims their keys, checking unique indexes.
func (tx *Tx) applyLock(lsn uint64) error {
	writes := tx.writes
	tx.writes = tx.writes[:0]
	// The writes dropped (or not reached, after an error) leave copies
	// past the end, which point at the record's rows and keys: the state
	// is recycled with what it holds.
	defer func() { clear(writes[len(tx.writes):]) }()
	for _, w := range writes {
		if w.t.dropped.Load() {
			return errorf(ErrNoTable, "apply LSN %d: table %q was dropped", lsn, w.t.name)
		}
		exists, err := tx.lockExisting(&w)
		if err != nil {
			return fmt.Errorf("apply LSN %d: %w", lsn, err)
		}
		if !exists && w.op == wDelete {
			continue
		}
		tx.writes = append(tx.writes, w)
		if w.locked {
			tx.markOwned(len(tx.writes) - 1)
		}
	}
	for i := range tx.writes {
		w := &tx.writes[i]
		if w.op == wInsert {
			w.rid = w.t.heap.insert(w.row, tidLocked|tidAbsent)
			tx.markOwned(i)
		}
		if err := tx.claimKeys(w); err != nil {
			return errorf(ErrCorrupt, "apply LSN %d: %v", lsn, err)
		}
	}
	return nil
}

// resolveOp checks one data operation and turns it into a write; a put's
// primary key is appended to *keys.
func (db *DB) resolveOp(op Op, keys *[]byte) (write, error) {
	if op.Kind != OpPut && op.Kind != OpDelete {
		return write{}, errorf(ErrCorrupt, "op kind %s in a data record", op.Kind)
	}
	t, err := db.tableByID(op.Table)
	if err != nil {
		return write{}, err
	}
	s := t.state.Load().s
	switch op.Kind {
	case OpPut:
		if err := s.validateRow(op.Data); err != nil {
			return write{}, err
		}
		// The row is copied into its page when installed; until then it
		// is the record's.
		start := len(*keys)
		*keys = s.appendRowKey(*keys, 0, op.Data)
		return write{t: t, op: wUpdate, row: op.Data, key: (*keys)[start:len(*keys):len(*keys)]}, nil
	default:
		if _, err := s.decodeKey(0, op.Data); err != nil {
			return write{}, err
		}
	}
	return write{t: t, op: wDelete, key: op.Data}, nil
}

// lockExisting finds and locks the row a replayed write targets. It reports
// whether the row exists; a put of a missing row becomes an insert.
func (tx *Tx) lockExisting(w *write) (bool, error) {
	st := w.t.state.Load()
	for {
		h, _, found, err := tx.point(w.t, st, 0, w.key)
		if err != nil {
			return false, err
		}
		if !found {
			if w.op == wUpdate {
				w.op = wInsert
			}
			return false, nil
		}
		prev, ok := w.t.heap.lock(h.rid)
		if !ok {
			continue // deleted meanwhile: look again
		}
		if prev != h.tid {
			w.t.heap.setTID(h.rid, prev) // changed meanwhile: look again
			continue
		}
		w.rid, w.tid, w.locked = h.rid, h.tid, true
		return true, nil
	}
}

// applyDDL replays a schema change that checkDDL passed, with the
// definition it decoded. One already in effect (the same table or index
// exists, or is already gone) is skipped, so that replay stays
// idempotent.
func (db *DB) applyDDL(lsn uint64, op Op, def ddlDef, online bool) error {
	if db.ddlInEffect(op) {
		db.applied(lsn)
		return nil
	}
	if op.Kind == OpCreateTable {
		_, _, err := db.createTable(context.Background(), def.table, lsn)
		return err
	}
	t, err := db.tableByID(op.Table)
	if err != nil {
		return fmt.Errorf("apply LSN %d: %w", lsn, err)
	}
	switch op.Kind {
	case OpDropTable:
		_, err = db.dropTable(context.Background(), t, lsn)
	case OpCreateIndex:
		if online {
			err = db.buildApplied(t, def.index, lsn)
		} else {
			_, err = db.createIndex(context.Background(), t, def.index, lsn)
		}
	default: // OpDropIndex: checkDDL passes no other kind
		_, err = db.dropIndex(context.Background(), t, string(op.Data), lsn)
	}
	return err
}

// ddlDef is the definition a schema change record carries, decoded by
// checkDDL: the table an OpCreateTable creates, the index an
// OpCreateIndex adds.
type ddlDef struct {
	table TableDef
	index IndexDef
}

// checkDDL checks the form of a schema change record, its kind and the
// definition it carries, and returns the definition decoded. Apply
// checks one it skips, as older than the database, as it checks a data
// record it skips.
func checkDDL(lsn uint64, op Op) (ddlDef, error) {
	var def ddlDef
	var err error
	switch op.Kind {
	case OpCreateTable:
		if def.table, err = DecodeTableDef(op.Data); err != nil {
			return ddlDef{}, fmt.Errorf("apply LSN %d: %w", lsn, err)
		}
		if def.table.ID == 0 || def.table.ID != op.Table {
			return ddlDef{}, errorf(ErrCorrupt, "apply LSN %d: table id %d in a record for table %d", lsn, def.table.ID, op.Table)
		}
	case OpCreateIndex:
		if def.index, err = DecodeIndexDef(op.Data); err != nil {
			return ddlDef{}, fmt.Errorf("apply LSN %d: %w", lsn, err)
		}
	case OpDropTable, OpDropIndex:
	default:
		return ddlDef{}, errorf(ErrCorrupt, "apply LSN %d: op kind %s", lsn, op.Kind)
	}
	return def, nil
}

// ddlInEffect reports whether a replayed schema change is already in
// effect. Only an exact match counts: a different table under the id, or a
// different index under the name, still fails when applied. A dropped
// index leaves nothing to tell it from one that never was, so dropping a
// missing secondary index is always taken as a repeat.
func (db *DB) ddlInEffect(op Op) bool {
	t, exists := db.catalog.Load().byID[op.Table]
	switch op.Kind {
	case OpCreateTable:
		// Encodings are canonical and the stored definition is normalized,
		// so equal bytes mean the same table.
		return exists && string(encodeTableDef(nil, t.state.Load().def())) == string(op.Data)
	case OpDropTable:
		// Gone already: dropped before, as ids are never reused. An id
		// never handed out is an error, not a repeat.
		db.holdDDL()
		defer db.unlockDDL()
		return !exists && uint64(op.Table) < db.nextID
	case OpCreateIndex:
		if !exists {
			return false
		}
		st := t.state.Load()
		for _, ix := range st.s.secondaryDefs()[:st.readable()-1] {
			if string(encodeIndexDef(nil, ix)) == string(op.Data) {
				return true
			}
		}
		return false
	case OpDropIndex:
		if !exists {
			return false
		}
		_, err := t.Index(string(op.Data))
		return err != nil && string(op.Data) != "" && string(op.Data) != "primary"
	}
	return false
}
