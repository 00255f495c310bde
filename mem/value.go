package mem

import (
	"fmt"
	"math"
	"time"
)

// Type is a column type. The numeric values are part of the on-disk format
// (they appear in table definitions in the log and in images): never renumber.
type Type uint8

const (
	TypeInt64     Type = 1
	TypeUint64    Type = 2
	TypeFloat64   Type = 3
	TypeBool      Type = 4
	TypeString    Type = 5
	TypeBytes     Type = 6
	TypeTimestamp Type = 7 // nanoseconds since the Unix epoch, UTC
)

var typeNames = map[Type]string{
	TypeInt64: "int64", TypeUint64: "uint64", TypeFloat64: "float64", TypeBool: "bool",
	TypeString: "string", TypeBytes: "bytes", TypeTimestamp: "timestamp",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// variable reports whether values of the type have a variable length.
func (t Type) variable() bool { return t == TypeString || t == TypeBytes }

// Value is one typed column value or NULL. The zero Value is NULL. Values
// are small and passed by value; string and bytes values share one string
// field, so a Value never aliases a caller's []byte.
type Value struct {
	typ  Type // 0 means NULL
	bits uint64
	str  string
}

// Null returns the NULL value.
func Null() Value { return Value{} }

// Int64 returns an int64 value.
func Int64(v int64) Value { return Value{typ: TypeInt64, bits: uint64(v)} }

// Uint64 returns a uint64 value.
func Uint64(v uint64) Value { return Value{typ: TypeUint64, bits: v} }

// Float64 returns a float64 value.
func Float64(v float64) Value { return Value{typ: TypeFloat64, bits: math.Float64bits(v)} }

// Bool returns a bool value.
func Bool(v bool) Value {
	var b uint64
	if v {
		b = 1
	}
	return Value{typ: TypeBool, bits: b}
}

// String returns a string value.
func String(v string) Value { return Value{typ: TypeString, str: v} }

// Bytes returns a bytes value holding a copy of v.
func Bytes(v []byte) Value { return Value{typ: TypeBytes, str: string(v)} }

// Timestamp returns a timestamp value with nanosecond precision.
func Timestamp(v time.Time) Value { return Value{typ: TypeTimestamp, bits: uint64(v.UnixNano())} }

// TimestampNanos returns a timestamp value from nanoseconds since the epoch.
func TimestampNanos(ns int64) Value { return Value{typ: TypeTimestamp, bits: uint64(ns)} }

// Type returns the value's type, or 0 for NULL.
func (v Value) Type() Type { return v.typ }

// IsNull reports whether v is NULL.
func (v Value) IsNull() bool { return v.typ == 0 }

// AsInt64 returns the value of an int64 or timestamp (nanoseconds) value.
func (v Value) AsInt64() int64 { return int64(v.bits) }

// AsUint64 returns the value of a uint64 value.
func (v Value) AsUint64() uint64 { return v.bits }

// AsFloat64 returns the value of a float64 value.
func (v Value) AsFloat64() float64 { return math.Float64frombits(v.bits) }

// AsBool returns the value of a bool value.
func (v Value) AsBool() bool { return v.bits != 0 }

// AsString returns the value of a string or bytes value.
func (v Value) AsString() string { return v.str }

// AsBytes returns a copy of a string or bytes value.
func (v Value) AsBytes() []byte { return []byte(v.str) }

// AsTime returns the value of a timestamp value, in UTC.
func (v Value) AsTime() time.Time { return time.Unix(0, int64(v.bits)).UTC() }

// Equal reports whether two values have the same type and content.
func (v Value) Equal(o Value) bool { return v == o }

func (v Value) String() string {
	switch v.typ {
	case 0:
		return "NULL"
	case TypeInt64:
		return fmt.Sprint(int64(v.bits))
	case TypeUint64:
		return fmt.Sprint(v.bits)
	case TypeFloat64:
		return fmt.Sprint(v.AsFloat64())
	case TypeBool:
		return fmt.Sprint(v.bits != 0)
	case TypeString:
		return fmt.Sprintf("%q", v.str)
	case TypeBytes:
		return fmt.Sprintf("x'%x'", v.str)
	case TypeTimestamp:
		return v.AsTime().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("invalid(%d)", v.typ)
}
