package client

import (
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Value constructors: a value's kind must match its column's type exactly.

// Int64 returns an int64 value.
func Int64(v int64) *pb.Value { return &pb.Value{Kind: &pb.Value_Int64{Int64: v}} }

// Uint64 returns a uint64 value.
func Uint64(v uint64) *pb.Value { return &pb.Value{Kind: &pb.Value_Uint64{Uint64: v}} }

// Float64 returns a float64 value.
func Float64(v float64) *pb.Value { return &pb.Value{Kind: &pb.Value_Float64{Float64: v}} }

// Bool returns a bool value.
func Bool(v bool) *pb.Value { return &pb.Value{Kind: &pb.Value_Bool{Bool: v}} }

// String returns a string value.
func String(v string) *pb.Value { return &pb.Value{Kind: &pb.Value_String_{String_: v}} }

// Bytes returns a bytes value.
func Bytes(v []byte) *pb.Value { return &pb.Value{Kind: &pb.Value_Bytes{Bytes: v}} }

// Time returns a timestamp value.
func Time(v time.Time) *pb.Value {
	return &pb.Value{Kind: &pb.Value_Timestamp{Timestamp: timestamppb.New(v)}}
}

// Null returns NULL.
func Null() *pb.Value { return &pb.Value{Kind: &pb.Value_Null{Null: structpb.NullValue_NULL_VALUE}} }

// Row is a row's values in table column order. Accessors take the
// column's ordinal and return the zero value for NULL or a value of
// another kind.
type Row []*pb.Value

// Int64 returns column i as an int64.
func (r Row) Int64(i int) int64 { return r[i].GetInt64() }

// Uint64 returns column i as a uint64.
func (r Row) Uint64(i int) uint64 { return r[i].GetUint64() }

// Float64 returns column i as a float64.
func (r Row) Float64(i int) float64 { return r[i].GetFloat64() }

// Bool returns column i as a bool.
func (r Row) Bool(i int) bool { return r[i].GetBool() }

// String returns column i as a string.
func (r Row) String(i int) string { return r[i].GetString_() }

// Bytes returns column i as bytes.
func (r Row) Bytes(i int) []byte { return r[i].GetBytes() }

// Time returns column i as a time.
func (r Row) Time(i int) time.Time {
	ts := r[i].GetTimestamp()
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// IsNull reports whether column i is NULL.
func (r Row) IsNull(i int) bool {
	_, ok := r[i].GetKind().(*pb.Value_Null)
	return ok
}
