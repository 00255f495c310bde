package mmdbv1

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto" // registers the codec this one falls back to
	"google.golang.org/grpc/mem"
)

// The gRPC codec for this package's messages. protoc-gen-go-vtproto
// generates marshal, unmarshal and size code for every message here
// (mmdb_vtproto.pb.go), which skips the reflection the generic protobuf
// runtime spends on oneofs such as Value's kind; on a Get it roughly
// halves the time spent encoding and decoding. The wire format is plain
// protobuf either way. Messages of other packages (health, reflection)
// go to gRPC's own protobuf codec.
//
// Registering it replaces the "proto" codec for the whole process, so any
// program importing this package uses it; it is a drop-in for the messages
// it does not know. One difference: the generated decoders do not check
// that strings are valid UTF-8, as protobuf's do, so the server checks the
// string values it stores (server/convert.go).

// vtMessage is what the generated code adds to each message.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dst []byte) (int, error)
	UnmarshalVT(data []byte) error
}

type codec struct{ fallback encoding.CodecV2 }

func init() {
	fallback := encoding.GetCodecV2(grpcproto.Name)
	if fallback == nil {
		panic("mmdbv1: gRPC's protobuf codec is not registered")
	}
	encoding.RegisterCodecV2(codec{fallback: fallback})
}

func (codec) Name() string { return grpcproto.Name }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("mmdbv1: marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT(*buf); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("mmdbv1: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes into v. The generated decoder copies strings and
// bytes out of data, so the buffer can go back to its pool at once.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := m.UnmarshalVT(buf.ReadOnlyData()); err != nil {
		return fmt.Errorf("mmdbv1: unmarshal %T: %w", v, err)
	}
	return nil
}
