package mem

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// OpKind says what a redo operation does. The numbers are part of the
// on-disk format.
type OpKind uint8

const (
	// OpPut stores a row's after-image (insert or update): Data is the
	// encoded row; the primary key is taken from it.
	OpPut OpKind = 1
	// OpDelete removes a row: Data is its encoded primary key.
	OpDelete OpKind = 2
	// OpCreateTable creates a table: Data is the encoded TableDef.
	OpCreateTable OpKind = 3
	// OpDropTable drops table Table; Data is empty.
	OpDropTable OpKind = 4
	// OpCreateIndex adds an index: Data is the encoded IndexDef.
	OpCreateIndex OpKind = 5
	// OpDropIndex drops an index: Data is its name.
	OpDropIndex OpKind = 6
)

func (k OpKind) String() string {
	switch k {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCreateTable:
		return "create-table"
	case OpDropTable:
		return "drop-table"
	case OpCreateIndex:
		return "create-index"
	case OpDropIndex:
		return "drop-index"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one operation of a redo record.
type Op struct {
	Kind  OpKind
	Table uint32
	Data  []byte
}

// Redo is the redo record of one transaction: the after-images of the rows
// it changed (physical redo), or a single schema change. Replaying it is
// idempotent: a put stores the whole row, a delete of a missing row does
// nothing.
type Redo struct {
	Ops []Op
}

// Redo record encoding (part of the on-disk format; the log adds LSN,
// epoch and checksums around it):
//
//	record := uvarint(len(ops)) op...
//	op     := kind:u8  uvarint(table)  uvarint(len(data))  data
//
// Table definitions (OpCreateTable) are encoded as
//
//	tabledef := version:u8(=1) uvarint(id) str(name)
//	            uvarint(ncols) { str(name) type:u8 nullable:u8 uvarint(maxlen) }
//	            primarykind:u8 uvarint(npk) { str(column) }
//	            uvarint(nidx) { indexdef }
//	indexdef := str(name) kind:u8 unique:u8 uvarint(ncols) { str(column) }
//	str      := uvarint(len) bytes

const tableDefVersion = 1

// maxRedoOps bounds the number of operations a decoder accepts, so a
// corrupt count cannot make it allocate without limit.
const maxRedoOps = 1 << 24

// AppendBinary appends the encoded record to dst.
func (r *Redo) AppendBinary(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(r.Ops)))
	for _, op := range r.Ops {
		dst = append(dst, byte(op.Kind))
		dst = binary.AppendUvarint(dst, uint64(op.Table))
		dst = binary.AppendUvarint(dst, uint64(len(op.Data)))
		dst = append(dst, op.Data...)
	}
	return dst
}

// decoder reads the encodings above, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = errorf(ErrCorrupt, "%s", what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != uvarintLen(v) {
		d.fail("bad " + what) // overflowing, truncated or not in its shortest form
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what + " missing")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what + " runs past the end")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// flag reads a byte that must be 0 or 1.
func (d *decoder) flag(what string) bool {
	b := d.byte1(what)
	if b > 1 {
		d.fail(fmt.Sprintf("%s is %d, want 0 or 1", what, b))
	}
	return b == 1
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func (d *decoder) str(what string) string { return string(d.bytes(what)) }

// DecodeRedo decodes a record made by AppendBinary. The ops' Data alias b.
func DecodeRedo(b []byte) (*Redo, error) {
	r := &Redo{}
	if err := r.Decode(b); err != nil {
		return nil, err
	}
	return r, nil
}

// Decode decodes a record made by AppendBinary into r, reusing its Ops
// slice (a reader of many records decodes them all into one Redo). The
// ops' Data alias b. On error r's ops are not to be used.
func (r *Redo) Decode(b []byte) error {
	d := &decoder{b: b}
	n := d.uvarint("op count")
	if n > maxRedoOps || n > uint64(len(b)) {
		return errorf(ErrCorrupt, "redo record claims %d ops in %d bytes", n, len(b))
	}
	clear(r.Ops)
	r.Ops = slices.Grow(r.Ops[:0], int(n))
	for i := uint64(0); i < n && d.err == nil; i++ {
		kind := OpKind(d.byte1("op kind"))
		if kind < OpPut || kind > OpDropIndex {
			d.fail(fmt.Sprintf("unknown op kind %d", kind))
		}
		table := d.uvarint("table id")
		if table > 1<<32-1 {
			d.fail("table id out of range")
		}
		data := d.bytes("op data")
		r.Ops = append(r.Ops, Op{Kind: kind, Table: uint32(table), Data: data})
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return fmt.Errorf("decode redo record: %w", d.err)
	}
	return nil
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// AppendBinary appends the table definition's encoding (the one an
// OpCreateTable carries; DecodeTableDef reads it) to dst.
func (d TableDef) AppendBinary(dst []byte) []byte { return encodeTableDef(dst, d) }

func encodeTableDef(dst []byte, def TableDef) []byte {
	dst = append(dst, tableDefVersion)
	dst = binary.AppendUvarint(dst, uint64(def.ID))
	dst = appendStr(dst, def.Name)
	dst = binary.AppendUvarint(dst, uint64(len(def.Columns)))
	for _, c := range def.Columns {
		dst = appendStr(dst, c.Name)
		dst = append(dst, byte(c.Type), boolByte(c.Nullable))
		dst = binary.AppendUvarint(dst, uint64(c.MaxLen))
	}
	dst = append(dst, byte(def.PrimaryKind))
	dst = binary.AppendUvarint(dst, uint64(len(def.PrimaryKey)))
	for _, c := range def.PrimaryKey {
		dst = appendStr(dst, c)
	}
	dst = binary.AppendUvarint(dst, uint64(len(def.Indexes)))
	for _, ix := range def.Indexes {
		dst = encodeIndexDef(dst, ix)
	}
	return dst
}

func encodeIndexDef(dst []byte, ix IndexDef) []byte {
	dst = appendStr(dst, ix.Name)
	dst = append(dst, byte(ix.Kind), boolByte(ix.Unique))
	dst = binary.AppendUvarint(dst, uint64(len(ix.Columns)))
	for _, c := range ix.Columns {
		dst = appendStr(dst, c)
	}
	return dst
}

// count reads a length that must not exceed limit.
func (d *decoder) count(what string, limit int) int {
	n := d.uvarint(what)
	if n > uint64(limit) {
		d.fail(fmt.Sprintf("%s %d exceeds %d", what, n, limit))
		return 0
	}
	return int(n)
}

func (d *decoder) indexDef() IndexDef {
	ix := IndexDef{Name: d.str("index name")}
	ix.Kind = IndexKind(d.byte1("index kind"))
	ix.Unique = d.flag("index unique")
	n := d.count("index columns", MaxKeyColumns)
	for i := 0; i < n; i++ {
		ix.Columns = append(ix.Columns, d.str("index column"))
	}
	return ix
}

// DecodeTableDef decodes an OpCreateTable payload. The result is not yet
// validated; CreateTable and Apply compile it.
func DecodeTableDef(b []byte) (TableDef, error) {
	d := &decoder{b: b}
	if v := d.byte1("table definition version"); d.err == nil && v != tableDefVersion {
		d.fail(fmt.Sprintf("table definition version %d, want %d", v, tableDefVersion))
	}
	var def TableDef
	id := d.uvarint("table id")
	if id > 1<<32-1 {
		d.fail("table id out of range")
	}
	def.ID = uint32(id)
	def.Name = d.str("table name")
	n := d.count("column count", MaxColumns)
	for i := 0; i < n && d.err == nil; i++ {
		c := ColumnDef{Name: d.str("column name")}
		c.Type = Type(d.byte1("column type"))
		c.Nullable = d.flag("column nullable")
		c.MaxLen = d.count("column max length", MaxRowSize)
		def.Columns = append(def.Columns, c)
	}
	def.PrimaryKind = IndexKind(d.byte1("primary kind"))
	n = d.count("primary key columns", MaxKeyColumns)
	for i := 0; i < n && d.err == nil; i++ {
		def.PrimaryKey = append(def.PrimaryKey, d.str("primary key column"))
	}
	n = d.count("index count", MaxIndexes)
	for i := 0; i < n && d.err == nil; i++ {
		def.Indexes = append(def.Indexes, d.indexDef())
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return TableDef{}, fmt.Errorf("decode table definition: %w", d.err)
	}
	return def, nil
}

// DecodeIndexDef decodes an OpCreateIndex payload.
func DecodeIndexDef(b []byte) (IndexDef, error) {
	d := &decoder{b: b}
	ix := d.indexDef()
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return IndexDef{}, fmt.Errorf("decode index definition: %w", d.err)
	}
	return ix, nil
}

// Describe returns what op changes, for reports of records (a standby's
// diverged log, set aside for its operator): the table's name and, for a
// put, the row's values, for a delete, the primary key's. A schema change
// names its table (when it exists) and no values.
func (db *DB) Describe(op Op) (table string, values []Value, err error) {
	t, err := db.tableByID(op.Table)
	if err != nil {
		if op.Kind >= OpCreateTable {
			return "", nil, nil
		}
		return "", nil, err
	}
	s := t.state.Load().s
	switch op.Kind {
	case OpPut:
		if err := s.validateRow(op.Data); err != nil {
			return t.name, nil, err
		}
		return t.name, Record{s: s, b: op.Data}.Values(nil), nil
	case OpDelete:
		values, err := s.decodeKey(0, op.Data)
		return t.name, values, err
	}
	return t.name, nil, nil
}
