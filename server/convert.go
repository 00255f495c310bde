package server

import (
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

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
		if !utf8.ValidString(k.String_) {
			// Protobuf requires it; the generated decoder does not check.
			return mem.Value{}, errorf(codes.InvalidArgument, "a string value is not valid UTF-8; use a bytes column for binary data")
		}
		if len(k.String_) > cv.maxValueBytes {
			return mem.Value{}, errorf(codes.ResourceExhausted, "a string of %d bytes exceeds max_value_bytes (%d)", len(k.String_), cv.maxValueBytes)
		}
		return mem.String(k.String_), nil
	case *pb.Value_Bytes:
		if len(k.Bytes) > cv.maxValueBytes {
			return mem.Value{}, errorf(codes.ResourceExhausted, "%d bytes exceed max_value_bytes (%d)", len(k.Bytes), cv.maxValueBytes)
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
