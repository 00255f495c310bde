// Package pbmem converts between the engine's types (mem) and the API's
// messages (proto/mmdb/v1): values, rows, table definitions and sizes. The
// server and the benchmark's remote workloads share it.
package pbmem

import (
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Value converts an engine value.
func Value(v mem.Value) *pb.Value {
	switch v.Type() {
	case mem.TypeInt64:
		return &pb.Value{Kind: &pb.Value_Int64{Int64: v.AsInt64()}}
	case mem.TypeUint64:
		return &pb.Value{Kind: &pb.Value_Uint64{Uint64: v.AsUint64()}}
	case mem.TypeFloat64:
		return &pb.Value{Kind: &pb.Value_Float64{Float64: v.AsFloat64()}}
	case mem.TypeBool:
		return &pb.Value{Kind: &pb.Value_Bool{Bool: v.AsBool()}}
	case mem.TypeString:
		return &pb.Value{Kind: &pb.Value_String_{String_: v.AsString()}}
	case mem.TypeBytes:
		return &pb.Value{Kind: &pb.Value_Bytes{Bytes: v.AsBytes()}}
	case mem.TypeTimestamp:
		return &pb.Value{Kind: &pb.Value_Timestamp{Timestamp: timestamppb.New(v.AsTime())}}
	default:
		return &pb.Value{Kind: &pb.Value_Null{Null: structpb.NullValue_NULL_VALUE}}
	}
}

// Values converts engine values.
func Values(vs []mem.Value) []*pb.Value {
	out := make([]*pb.Value, len(vs))
	for i, v := range vs {
		out[i] = Value(v)
	}
	return out
}

// Row converts a stored row.
func Row(r mem.Record) *pb.Row {
	n := r.NumColumns()
	row := &pb.Row{Values: make([]*pb.Value, n)}
	for c := 0; c < n; c++ {
		row.Values[c] = Value(r.Value(c))
	}
	return row
}

var (
	typeToPB = map[mem.Type]pb.ColumnType{
		mem.TypeInt64:     pb.ColumnType_COLUMN_TYPE_INT64,
		mem.TypeUint64:    pb.ColumnType_COLUMN_TYPE_UINT64,
		mem.TypeFloat64:   pb.ColumnType_COLUMN_TYPE_FLOAT64,
		mem.TypeBool:      pb.ColumnType_COLUMN_TYPE_BOOL,
		mem.TypeString:    pb.ColumnType_COLUMN_TYPE_STRING,
		mem.TypeBytes:     pb.ColumnType_COLUMN_TYPE_BYTES,
		mem.TypeTimestamp: pb.ColumnType_COLUMN_TYPE_TIMESTAMP,
	}
	kindToPB = map[mem.IndexKind]pb.IndexKind{
		mem.Hash:    pb.IndexKind_INDEX_KIND_HASH,
		mem.Ordered: pb.IndexKind_INDEX_KIND_ORDERED,
	}
)

// TableDef converts a table definition from a request. The engine checks
// names, types and lengths when it creates the table; this maps the enums
// (an unspecified index kind is hash) and fails, wrapping mem.ErrInvalid,
// on one it does not know.
func TableDef(t *pb.Table) (mem.TableDef, error) {
	if t == nil {
		return mem.TableDef{}, fmt.Errorf("%w: the table definition is missing", mem.ErrInvalid)
	}
	def := mem.TableDef{Name: t.GetName(), PrimaryKey: t.GetPrimaryKey()}
	var err error
	if def.PrimaryKind, err = indexKind(t.GetPrimaryKind(), t.GetName(), "primary"); err != nil {
		return def, err
	}
	for _, c := range t.GetColumns() {
		typ, ok := memType(c.GetType())
		if !ok {
			return def, fmt.Errorf("%w: table %q: column %q: unknown type %v", mem.ErrInvalid, t.GetName(), c.GetName(), c.GetType())
		}
		def.Columns = append(def.Columns, mem.ColumnDef{Name: c.GetName(), Type: typ, Nullable: c.GetNullable(), MaxLen: int(c.GetMaxLength())})
	}
	for _, ix := range t.GetIndexes() {
		d, err := IndexDef(t.GetName(), ix)
		if err != nil {
			return def, err
		}
		def.Indexes = append(def.Indexes, d)
	}
	return def, nil
}

// IndexDef converts the definition of a secondary index of table from a
// request, as TableDef converts a table's: the engine checks names and
// columns, this maps the kind (unspecified is hash) and fails, wrapping
// mem.ErrInvalid, on one it does not know or a missing definition.
func IndexDef(table string, ix *pb.Index) (mem.IndexDef, error) {
	if ix == nil {
		return mem.IndexDef{}, fmt.Errorf("%w: table %q: the index definition is missing", mem.ErrInvalid, table)
	}
	kind, err := indexKind(ix.GetKind(), table, ix.GetName())
	if err != nil {
		return mem.IndexDef{}, err
	}
	return mem.IndexDef{Name: ix.GetName(), Columns: ix.GetColumns(), Unique: ix.GetUnique(), Kind: kind}, nil
}

func memType(t pb.ColumnType) (mem.Type, bool) {
	for m, p := range typeToPB {
		if p == t {
			return m, true
		}
	}
	return 0, false
}

func indexKind(k pb.IndexKind, table, index string) (mem.IndexKind, error) {
	if k == pb.IndexKind_INDEX_KIND_UNSPECIFIED {
		return mem.Hash, nil
	}
	for m, p := range kindToPB {
		if p == k {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: table %q: index %q: unknown kind %v", mem.ErrInvalid, table, index, k)
}

// Table converts a table definition for a reply.
func Table(def mem.TableDef) *pb.Table {
	t := &pb.Table{Name: def.Name, PrimaryKey: def.PrimaryKey, PrimaryKind: kindToPB[def.PrimaryKind]}
	if t.PrimaryKind == pb.IndexKind_INDEX_KIND_UNSPECIFIED {
		t.PrimaryKind = pb.IndexKind_INDEX_KIND_HASH
	}
	for _, c := range def.Columns {
		t.Columns = append(t.Columns, &pb.Column{Name: c.Name, Type: typeToPB[c.Type], Nullable: c.Nullable, MaxLength: uint32(c.MaxLen)})
	}
	for _, ix := range def.Indexes {
		t.Indexes = append(t.Indexes, &pb.Index{Name: ix.Name, Columns: ix.Columns, Unique: ix.Unique, Kind: kindToPB[ix.Kind]})
	}
	return t
}

// TableStatus converts a table's memory accounting.
func TableStatus(s mem.TableStats) *pb.TableStatus {
	out := &pb.TableStatus{
		Name:       s.Name,
		Rows:       uint64(s.Rows),
		Bytes:      uint64(s.HeapBytes + s.IndexBytes),
		HeapBytes:  uint64(s.HeapBytes),
		IndexBytes: uint64(s.IndexBytes),
	}
	for _, ix := range s.Indexes {
		is := &pb.IndexStatus{Name: ix.Name, Kind: kindToPB[ix.Kind], Entries: uint64(ix.Entries), Bytes: uint64(ix.Bytes), Building: ix.Building}
		if ix.Fault != nil {
			is.Fault = ix.Fault.Error()
		}
		out.Indexes = append(out.Indexes, is)
	}
	return out
}
