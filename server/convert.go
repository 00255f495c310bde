package server

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// The range of timestamps a column holds: int64 nanoseconds since the epoch.
var (
	minTimestamp = time.Unix(0, math.MinInt64)
	maxTimestamp = time.Unix(0, math.MaxInt64)
)

// converter turns request values into engine values, enforcing the
// request limits on the way.
type converter struct {
	maxValueBytes int
}

// value converts one request value.
func (cv converter) value(v *pb.Value) (mem.Value, error) {
	switch k := v.GetKind().(type) {
	case *pb.Value_Null:
		return mem.Null(), nil
	case *pb.Value_Int64:
		return mem.Int64(k.Int64), nil
	case *pb.Value_Uint64:
		return mem.Uint64(k.Uint64), nil
	case *pb.Value_Float64:
		return mem.Float64(k.Float64), nil
	case *pb.Value_Bool:
		return mem.Bool(k.Bool), nil
	case *pb.Value_String_:
		if len(k.String_) > cv.maxValueBytes {
			return mem.Value{}, errorf(codes.InvalidArgument, "a string of %d bytes exceeds max_value_bytes (%d)", len(k.String_), cv.maxValueBytes)
		}
		return mem.String(k.String_), nil
	case *pb.Value_Bytes:
		if len(k.Bytes) > cv.maxValueBytes {
			return mem.Value{}, errorf(codes.InvalidArgument, "%d bytes exceed max_value_bytes (%d)", len(k.Bytes), cv.maxValueBytes)
		}
		return mem.Bytes(k.Bytes), nil
	case *pb.Value_Timestamp:
		if err := k.Timestamp.CheckValid(); err != nil {
			return mem.Value{}, errorf(codes.InvalidArgument, "%v", err)
		}
		t := k.Timestamp.AsTime()
		if t.Before(minTimestamp) || t.After(maxTimestamp) {
			return mem.Value{}, errorf(codes.InvalidArgument, "timestamp %s is outside the range a timestamp column holds (%s to %s)", t.Format(time.RFC3339Nano), minTimestamp.UTC().Format(time.RFC3339), maxTimestamp.UTC().Format(time.RFC3339))
		}
		return mem.Timestamp(t), nil
	default:
		return mem.Value{}, errorf(codes.InvalidArgument, "the value has no kind; set one of null, int64, uint64, float64, bool, string, bytes, timestamp")
	}
}

// values converts a list of request values, appending to dst.
func (cv converter) values(dst []mem.Value, vs []*pb.Value, what string) ([]mem.Value, error) {
	for i, v := range vs {
		mv, err := cv.value(v)
		if err != nil {
			return nil, fmt.Errorf("%s value %d: %w", what, i, err)
		}
		dst = append(dst, mv)
	}
	return dst, nil
}

// pbValue converts an engine value for a reply.
func pbValue(v mem.Value) *pb.Value {
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

// pbRow converts a stored row for a reply.
func pbRow(r mem.Record) *pb.Row {
	n := r.NumColumns()
	row := &pb.Row{Values: make([]*pb.Value, n)}
	for c := 0; c < n; c++ {
		row.Values[c] = pbValue(r.Value(c))
	}
	return row
}

// pbValues converts engine values for a reply.
func pbValues(vs []mem.Value) []*pb.Value {
	out := make([]*pb.Value, len(vs))
	for i, v := range vs {
		out[i] = pbValue(v)
	}
	return out
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

// memTableDef converts a CreateTable request's definition. The engine
// checks names, types and lengths; this only maps the enums.
func memTableDef(t *pb.Table) (mem.TableDef, error) {
	if t == nil {
		return mem.TableDef{}, errorf(codes.InvalidArgument, "create table: the table definition is missing")
	}
	def := mem.TableDef{Name: t.GetName(), PrimaryKey: t.GetPrimaryKey()}
	var err error
	if def.PrimaryKind, err = memIndexKind(t.GetPrimaryKind(), t.GetName(), "primary"); err != nil {
		return def, err
	}
	for _, c := range t.GetColumns() {
		typ, ok := memType(c.GetType())
		if !ok {
			return def, errorf(codes.InvalidArgument, "table %q: column %q: unknown type %v", t.GetName(), c.GetName(), c.GetType())
		}
		def.Columns = append(def.Columns, mem.ColumnDef{Name: c.GetName(), Type: typ, Nullable: c.GetNullable(), MaxLen: int(c.GetMaxLength())})
	}
	for _, ix := range t.GetIndexes() {
		kind, err := memIndexKind(ix.GetKind(), t.GetName(), ix.GetName())
		if err != nil {
			return def, err
		}
		if kind == 0 {
			kind = mem.Hash
		}
		def.Indexes = append(def.Indexes, mem.IndexDef{Name: ix.GetName(), Columns: ix.GetColumns(), Unique: ix.GetUnique(), Kind: kind})
	}
	return def, nil
}

func memType(t pb.ColumnType) (mem.Type, bool) {
	for m, p := range typeToPB {
		if p == t {
			return m, true
		}
	}
	return 0, false
}

func memIndexKind(k pb.IndexKind, table, index string) (mem.IndexKind, error) {
	if k == pb.IndexKind_INDEX_KIND_UNSPECIFIED {
		return 0, nil
	}
	for m, p := range kindToPB {
		if p == k {
			return m, nil
		}
	}
	return 0, errorf(codes.InvalidArgument, "table %q: index %q: unknown kind %v", table, index, k)
}

// pbTable converts a table definition for a reply.
func pbTable(def mem.TableDef) *pb.Table {
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

// pbTableStatus converts a table's memory accounting.
func pbTableStatus(s mem.TableStats) *pb.TableStatus {
	return &pb.TableStatus{
		Name:       s.Name,
		Rows:       uint64(s.Rows),
		Bytes:      uint64(s.HeapBytes + s.IndexBytes),
		HeapBytes:  uint64(s.HeapBytes),
		IndexBytes: uint64(s.IndexBytes),
	}
}
