package mmdbv1

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// samples are messages with every kind of value and operation.
func samples() []proto.Message {
	vals := []*Value{
		{Kind: &Value_Null{}}, {Kind: &Value_Int64{Int64: -5}}, {Kind: &Value_Uint64{Uint64: 1 << 63}},
		{Kind: &Value_Float64{Float64: 2.5}}, {Kind: &Value_Bool{Bool: true}}, {Kind: &Value_String_{String_: "héllo"}},
		{Kind: &Value_Bytes{Bytes: []byte{0, 1, 2}}}, {Kind: &Value_Timestamp{Timestamp: timestamppb.New(time.Unix(1, 2))}},
	}
	row := &Row{Values: vals}
	return []proto.Message{
		&GetResponse{Found: true, Row: row},
		&CommitRequest{
			TxId:       7,
			Conditions: []*Condition{{Table: "t", Key: vals[:2], Expect: Condition_EXPECT_EXISTS, Equals: []*ColumnValue{{Column: "c", Value: vals[5]}}}},
			Operations: []*Operation{
				{Op: &Operation_Get{Get: &GetRequest{Table: "t", Key: vals, Index: "ix"}}},
				{Op: &Operation_Insert{Insert: &InsertRequest{Table: "t", Row: row}}},
				{Op: &Operation_Update{Update: &UpdateRequest{Table: "t", Key: vals[:1], Set: []*ColumnValue{{Column: "a", Value: vals[3]}}}}},
				{Op: &Operation_Upsert{Upsert: &UpsertRequest{Table: "t", Row: row}}},
				{Op: &Operation_Delete{Delete: &DeleteRequest{Table: "t", Key: vals[:1]}}},
			},
		},
		&SessionRequest{Requests: []*Request{
			{Id: 1, Op: &Request_Begin{Begin: &BeginRequest{}}},
			{Id: 2, Op: &Request_Commit{Commit: &CommitRequest{TxId: 3}}},
			{Id: 3, Op: &Request_Rollback{Rollback: &RollbackRequest{TxId: 3}}},
		}},
		&SessionResponse{Replies: []*Reply{
			{Id: 1, Code: 6, Message: "dup", Result: &Reply_Insert{Insert: &InsertResponse{Lsn: 9}}},
			{Id: 2, Result: &Reply_Begin{Begin: &BeginResponse{TxId: 4, IdleTimeout: durationpb.New(time.Second)}}},
		}},
		&CreateTableRequest{Table: &Table{Name: "t", Columns: []*Column{{Name: "a", Type: ColumnType_COLUMN_TYPE_STRING, MaxLength: 4, Nullable: true}},
			PrimaryKey: []string{"a"}, PrimaryKind: IndexKind_INDEX_KIND_ORDERED, Indexes: []*Index{{Name: "i", Columns: []string{"a"}, Unique: true}}}},
		&StatusResponse{Node: "n", LastLsn: 5, Tables: []*TableStatus{{Name: "t", Rows: 1}}, Standbys: []*StandbyStatus{{Name: "s"}}},
		&ScanResponse{Rows: []*Row{row, row}, More: true, ResumeKey: vals[1:2]},
		&FetchImageRequest{Lsn: 9, Id: 0xdeadbeef, Offset: 1 << 40},
		&FetchImageResponse{Image: &ImageInfo{Lsn: 9, Id: 7, Epoch: 2, Bytes: 1 << 30, Rows: 5}, Offset: 64, Data: []byte("chunk"), Crc32C: 0x01020304},
	}
}

// TestCodecMatchesProto: what the codec writes, protobuf reads back the
// same, and the other way round; messages of other packages pass through.
func TestCodecMatchesProto(t *testing.T) {
	c := encoding.GetCodecV2("proto")
	if _, ok := c.(codec); !ok {
		t.Fatalf("the registered codec is %T", c)
	}
	for _, m := range append(samples(), &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}) {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(data.Materialize(), back); err != nil || !proto.Equal(m, back) {
			t.Fatalf("%T: codec then proto: %v %v", m, back, err)
		}
		data.Free()
		std, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back = m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(std)}, back); err != nil || !proto.Equal(m, back) {
			t.Fatalf("%T: proto then codec: %v %v", m, back, err)
		}
	}
}

// FuzzUnmarshal feeds arbitrary bytes, as a client or node could send
// them, to the generated decoders: they must not panic, and what they
// accept protobuf's own decoder must accept and read the same. They may be
// stricter: a known field with the wrong wire type is an error to them and
// an unknown field to protobuf, and they drop unknown fields inside
// well-known types and skip malformed unknown fields that protobuf rejects. They are laxer in one way: they do not
// check that strings are UTF-8, so the server checks string values itself.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range samples() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range samples() {
			vt := m.ProtoReflect().New().Interface()
			std := m.ProtoReflect().New().Interface()
			errVT := vt.(vtMessage).UnmarshalVT(data)
			errStd := proto.Unmarshal(data, std)
			if errVT != nil {
				continue
			}
			if notUTF8(errStd) {
				continue // the generated decoder does not check UTF-8; the server does (server/convert.go)
			}
			dropUnknown(vt.ProtoReflect())
			if errStd != nil {
				// Only malformed unknown fields may differ: what the
				// generated decoder read must be valid protobuf.
				known, err := proto.Marshal(vt)
				if notUTF8(err) {
					continue
				}
				if err != nil {
					t.Fatalf("%T: the generated decoder read what protobuf cannot write: %v", m, err)
				}
				if errStd = proto.Unmarshal(known, std); errStd != nil {
					t.Fatalf("%T: the generated decoder accepts what protobuf rejects (%v)", m, errStd)
				}
			}
			dropUnknown(std.ProtoReflect())
			if !proto.Equal(vt, std) {
				t.Fatalf("%T: decoded differently:\n%v\n%v", m, vt, std)
			}
		}
	})
}

// dropUnknown clears the unknown fields of m and the messages in it: the
// generated decoders keep those of this package's messages but not of the
// well-known types inside them (Timestamp, Duration).
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				dropUnknown(v.List().Get(i).Message())
			}
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			dropUnknown(v.Message())
		}
		return true
	})
}

func notUTF8(err error) bool { return err != nil && strings.Contains(err.Error(), "invalid UTF-8") }
