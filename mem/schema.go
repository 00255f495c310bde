package mem

import (
	"fmt"
	"strings"
)

// IndexKind says how an index is organized.
type IndexKind uint8

// Index kinds. The numbers are part of the on-disk format.
const (
	// Hash indexes serve point lookups on the full key only.
	Hash IndexKind = 1
	// Ordered indexes serve point lookups, prefix and range scans, both ways.
	Ordered IndexKind = 2
)

func (k IndexKind) String() string {
	switch k {
	case Hash:
		return "hash"
	case Ordered:
		return "ordered"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ColumnDef declares a column. Columns are NOT NULL unless Nullable.
// MaxLen is required for string and bytes columns (in bytes) and must be
// zero for the others.
type ColumnDef struct {
	Name     string
	Type     Type
	Nullable bool
	MaxLen   int
}

// IndexDef declares a secondary index over one or more columns. A unique
// index refuses two rows with equal keys, NULL counting as equal to
// NULL (unlike SQL's UNIQUE). A hash index takes any number of rows per
// key: past a few, a key's entries go to an overflow tree (index.go).
type IndexDef struct {
	Name    string
	Columns []string
	Unique  bool
	Kind    IndexKind
}

// TableDef declares a table. PrimaryKey names one or more NOT NULL columns;
// PrimaryKind picks the primary index's organization (Hash when zero).
// ID is assigned by CreateTable and is stable for the table's life; it is
// what redo records and images refer to.
type TableDef struct {
	ID          uint32
	Name        string
	Columns     []ColumnDef
	PrimaryKey  []string
	PrimaryKind IndexKind
	Indexes     []IndexDef
}

// Limits on definitions.
const (
	MaxNameLen    = 128
	MaxColumns    = 1024
	MaxIndexes    = 64
	MaxKeyColumns = 16
)

// Clone returns a deep copy of the definition.
func (d TableDef) Clone() TableDef {
	c := d
	c.Columns = append([]ColumnDef(nil), d.Columns...)
	c.PrimaryKey = append([]string(nil), d.PrimaryKey...)
	c.Indexes = make([]IndexDef, len(d.Indexes))
	for i, ix := range d.Indexes {
		ix.Columns = append([]string(nil), ix.Columns...)
		c.Indexes[i] = ix
	}
	return c
}

// nameRule says what validName takes, for errors.
var nameRule = fmt.Sprintf("want 1-%d letters, digits or '_', not starting with a digit", MaxNameLen)

func validName(s string) bool {
	if s == "" || len(s) > MaxNameLen {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// checkName checks the name of a table, column or index; what says which
// ("table name", or with the table: `table "t": column name`). A name
// past MaxNameLen is over a limit of the engine (ErrLimit); one with
// characters a name may not have, or none, is invalid.
func checkName(what, name string) error {
	if len(name) > MaxNameLen {
		return errorf(ErrLimit, "%s %q: %d bytes; %s", what, name, len(name), nameRule)
	}
	if !validName(name) {
		return errorf(ErrInvalid, "%s %q: %s", what, name, nameRule)
	}
	return nil
}

// column is a compiled column: where its value lives in an encoded row.
type column struct {
	ColumnDef
	off int // fixed columns: byte offset in the row; variable ones: ordinal among variable columns
}

// index is a compiled index definition: column ordinals in key order.
type indexDef struct {
	name   string
	cols   []int
	unique bool
	kind   IndexKind
}

// schema is a compiled TableDef. It is immutable once built.
type schema struct {
	def       TableDef
	cols      []column
	byName    map[string]int
	nullBytes int // size of the NULL bitmap
	fixedEnd  int // end of the fixed-width area
	nvar      int
	varStart  int // start of variable data: fixedEnd + 2*nvar
	minRow    int
	maxRow    int
	indexes   []indexDef // [0] is the primary key
	// For validateRow: per NULL-bitmap byte, the bits that must be clear
	// (NOT NULL columns, and the bits past the last column); and the
	// columns whose bytes it checks, in order: variable-length, bool and
	// nullable ones (any 8 bytes are a valid value of the other types).
	notNull []byte
	checked []int
	// fixedPK says the primary key has no variable-length column: its
	// bytes sit at the same place in every version of a row.
	fixedPK bool
}

func fixedWidth(t Type) int {
	if t == TypeBool {
		return 1
	}
	return 8
}

// compileSchema validates a definition and computes the row layout.
func compileSchema(def TableDef) (*schema, error) {
	if err := checkName("table name", def.Name); err != nil {
		return nil, err
	}
	if len(def.Columns) == 0 {
		return nil, errorf(ErrInvalid, "table %q: 0 columns, want 1-%d", def.Name, MaxColumns)
	}
	if len(def.Columns) > MaxColumns {
		return nil, errorf(ErrLimit, "table %q: %d columns, more than the limit of %d", def.Name, len(def.Columns), MaxColumns)
	}
	s := &schema{def: def.Clone(), byName: make(map[string]int, len(def.Columns))}
	s.nullBytes = (len(def.Columns) + 7) / 8
	off := s.nullBytes
	for i, c := range def.Columns {
		if err := checkName(fmt.Sprintf("table %q: column name", def.Name), c.Name); err != nil {
			return nil, err
		}
		if _, dup := s.byName[c.Name]; dup {
			return nil, errorf(ErrInvalid, "table %q: column %q declared twice", def.Name, c.Name)
		}
		if _, ok := typeNames[c.Type]; !ok {
			return nil, errorf(ErrInvalid, "table %q column %q: unknown type %d", def.Name, c.Name, c.Type)
		}
		if c.Type.variable() {
			if c.MaxLen <= 0 {
				return nil, errorf(ErrInvalid, "table %q column %q: %s needs a max length in 1..%d, got %d", def.Name, c.Name, c.Type, MaxRowSize, c.MaxLen)
			}
			if c.MaxLen > MaxRowSize {
				return nil, errorf(ErrLimit, "table %q column %q: max length %d, more than the row size limit of %d", def.Name, c.Name, c.MaxLen, MaxRowSize)
			}
		} else if c.MaxLen != 0 {
			return nil, errorf(ErrInvalid, "table %q column %q: max length applies only to string and bytes", def.Name, c.Name)
		}
		s.byName[c.Name] = i
		s.cols = append(s.cols, column{ColumnDef: c})
		if !c.Type.variable() {
			s.cols[i].off = off
			off += fixedWidth(c.Type)
		}
	}
	s.fixedEnd = off
	for i := range s.cols {
		if s.cols[i].Type.variable() {
			s.cols[i].off = s.nvar
			s.nvar++
		}
	}
	s.varStart = s.fixedEnd + 2*s.nvar
	s.notNull = make([]byte, s.nullBytes)
	for c := range s.nullBytes * 8 {
		if c >= len(s.cols) || !s.cols[c].Nullable {
			s.notNull[c/8] |= 1 << (c % 8)
		}
		if c < len(s.cols) && (s.cols[c].Type.variable() || s.cols[c].Type == TypeBool || s.cols[c].Nullable) {
			s.checked = append(s.checked, c)
		}
	}
	s.minRow = s.varStart
	s.maxRow = s.varStart
	for _, c := range s.cols {
		if c.Type.variable() {
			s.maxRow += c.MaxLen
		}
	}
	if s.maxRow > MaxRowSize {
		return nil, errorf(ErrLimit, "table %q: a row may take %d bytes, more than the limit of %d", def.Name, s.maxRow, MaxRowSize)
	}
	if len(def.PrimaryKey) == 0 {
		return nil, errorf(ErrInvalid, "table %q: a primary key is required", def.Name)
	}
	kind := def.PrimaryKind
	if kind == 0 {
		kind = Hash
		s.def.PrimaryKind = Hash
	}
	pk, err := s.compileIndex(IndexDef{Name: "primary", Columns: def.PrimaryKey, Unique: true, Kind: kind})
	if err != nil {
		return nil, err
	}
	s.fixedPK = true
	for _, c := range pk.cols {
		if s.cols[c].Nullable {
			return nil, errorf(ErrInvalid, "table %q: primary key column %q must be NOT NULL", def.Name, s.cols[c].Name)
		}
		s.fixedPK = s.fixedPK && !s.cols[c].Type.variable()
	}
	s.indexes = append(s.indexes, pk)
	for _, ix := range def.Indexes {
		if err := s.addIndex(ix); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// addIndex compiles and appends a secondary index definition.
func (s *schema) addIndex(ix IndexDef) error {
	if len(s.indexes)-1 >= MaxIndexes {
		return errorf(ErrLimit, "table %q: at most %d secondary indexes", s.def.Name, MaxIndexes)
	}
	if strings.EqualFold(ix.Name, "primary") {
		return errorf(ErrInvalid, "table %q: index name %q is reserved", s.def.Name, ix.Name)
	}
	for _, have := range s.indexes {
		if have.name == ix.Name {
			return errorf(ErrIndexExist, "table %q index %q", s.def.Name, ix.Name)
		}
	}
	c, err := s.compileIndex(ix)
	if err != nil {
		return err
	}
	s.indexes = append(s.indexes, c)
	return nil
}

func (s *schema) compileIndex(ix IndexDef) (indexDef, error) {
	if err := checkName(fmt.Sprintf("table %q: index name", s.def.Name), ix.Name); err != nil {
		return indexDef{}, err
	}
	if ix.Kind != Hash && ix.Kind != Ordered {
		return indexDef{}, errorf(ErrInvalid, "table %q index %q: kind must be hash or ordered", s.def.Name, ix.Name)
	}
	if len(ix.Columns) == 0 {
		return indexDef{}, errorf(ErrInvalid, "table %q index %q: 0 key columns, want 1-%d", s.def.Name, ix.Name, MaxKeyColumns)
	}
	if len(ix.Columns) > MaxKeyColumns {
		return indexDef{}, errorf(ErrLimit, "table %q index %q: %d key columns, more than the limit of %d", s.def.Name, ix.Name, len(ix.Columns), MaxKeyColumns)
	}
	d := indexDef{name: ix.Name, unique: ix.Unique, kind: ix.Kind}
	seen := map[int]bool{}
	for _, name := range ix.Columns {
		c, ok := s.byName[name]
		if !ok {
			return indexDef{}, errorf(ErrNoColumn, "table %q index %q: column %q", s.def.Name, ix.Name, name)
		}
		if seen[c] {
			return indexDef{}, errorf(ErrInvalid, "table %q index %q: column %q listed twice", s.def.Name, ix.Name, name)
		}
		seen[c] = true
		d.cols = append(d.cols, c)
	}
	return d, nil
}

// secondaryDefs returns the secondary index definitions in index order.
func (s *schema) secondaryDefs() []IndexDef {
	out := make([]IndexDef, 0, len(s.indexes)-1)
	for _, ix := range s.indexes[1:] {
		names := make([]string, len(ix.cols))
		for i, c := range ix.cols {
			names[i] = s.cols[c].Name
		}
		out = append(out, IndexDef{Name: ix.name, Columns: names, Unique: ix.unique, Kind: ix.kind})
	}
	return out
}

// withIndex returns a copy of the schema with one more secondary index.
func (s *schema) withIndex(ix IndexDef) (*schema, error) {
	def := s.def.Clone()
	def.Indexes = append(s.secondaryDefs(), ix)
	return compileSchema(def)
}

// withoutIndex returns a copy of the schema without the named secondary index.
func (s *schema) withoutIndex(name string) (*schema, int, error) {
	if name == "primary" {
		// Reads take the name for the primary key, so "no such index"
		// would read as a lie.
		return nil, 0, errorf(ErrNoIndex, "table %q: %q is the primary key, not a secondary index, and cannot be dropped", s.def.Name, name)
	}
	def := s.def.Clone()
	defs := s.secondaryDefs()
	for i, ix := range defs {
		if ix.Name == name {
			def.Indexes = append(defs[:i:i], defs[i+1:]...)
			ns, err := compileSchema(def)
			return ns, i + 1, err
		}
	}
	return nil, 0, errorf(ErrNoIndex, "table %q index %q", s.def.Name, name)
}

// Column returns the ordinal of the named column.
func (s *schema) column(name string) (int, error) {
	c, ok := s.byName[name]
	if !ok {
		return 0, errorf(ErrNoColumn, "table %q column %q", s.def.Name, name)
	}
	return c, nil
}

// indexByName returns the ordinal of the named index ("primary" or "" is 0).
func (s *schema) indexByName(name string) (int, error) {
	if name == "" || name == "primary" {
		return 0, nil
	}
	for i, ix := range s.indexes {
		if ix.name == name {
			return i, nil
		}
	}
	return 0, errorf(ErrNoIndex, "table %q index %q", s.def.Name, name)
}
