package replica_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// fakeNode is a node that answers every FetchImage with the messages it
// was given (each a uvarint length and a FetchImageResponse), however
// wrong, then ends the stream.
type fakeNode struct{ msgs [][]byte }

func (n *fakeNode) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("not a unary node")
}

func (n *fakeNode) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return &fakeStream{ctx: ctx, msgs: n.msgs}, nil
}

type fakeStream struct {
	ctx  context.Context
	msgs [][]byte
}

func (s *fakeStream) Header() (metadata.MD, error) { return nil, nil }
func (s *fakeStream) Trailer() metadata.MD         { return nil }
func (s *fakeStream) CloseSend() error             { return nil }
func (s *fakeStream) Context() context.Context     { return s.ctx }
func (s *fakeStream) SendMsg(any) error            { return nil }
func (s *fakeStream) RecvMsg(m any) error {
	if len(s.msgs) == 0 {
		return io.EOF
	}
	b := s.msgs[0]
	s.msgs = s.msgs[1:]
	return proto.Unmarshal(b, m.(proto.Message))
}

// FuzzImageStream: whatever a node sends, an ImageStream neither panics
// nor hangs, hands out no more than the image's size, and hands out only
// chunks that passed their checks.
func FuzzImageStream(f *testing.F) {
	data := []byte("an image's bytes")
	seed := func(ms ...*pb.FetchImageResponse) []byte {
		var out []byte
		for _, m := range ms {
			b, err := proto.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			out = append(binary.AppendUvarint(out, uint64(len(b))), b...)
		}
		return out
	}
	info := &pb.ImageInfo{Lsn: 3, Id: 9, Bytes: uint64(len(data)), Rows: 1}
	f.Add(seed(&pb.FetchImageResponse{Image: info, Data: data, Crc32C: replica.ChunkCRC(9, 0, data)}))
	f.Add(seed(&pb.FetchImageResponse{Image: info, Data: data[:5], Crc32C: replica.ChunkCRC(9, 0, data[:5])},
		&pb.FetchImageResponse{Offset: 5, Data: data[5:], Crc32C: replica.ChunkCRC(9, 5, data[5:])}))
	f.Add(seed(&pb.FetchImageResponse{Image: info, Data: data, Crc32C: 1}))
	f.Fuzz(func(t *testing.T, in []byte) {
		node := &fakeNode{}
		for len(in) > 0 {
			n, k := binary.Uvarint(in)
			if k <= 0 || n > uint64(len(in)-k) {
				break
			}
			node.msgs = append(node.msgs, in[k:k+int(n)])
			in = in[k+int(n):]
		}
		st, err := replica.OpenImage(context.Background(), node, replica.FetchOptions{Patience: time.Millisecond, Backoff: time.Microsecond})
		if err != nil {
			return
		}
		defer st.Close()
		got, err := io.ReadAll(st)
		if int64(len(got)) > st.Info().Size {
			t.Fatalf("read %d bytes of an image of %d", len(got), st.Info().Size)
		}
		if err == nil && int64(len(got)) != st.Info().Size {
			t.Fatalf("read %d bytes of an image of %d without an error", len(got), st.Info().Size)
		}
		// Chunks of image 9 that pass their checksums are data's.
		if st.Info().Name.ID == 9 && !bytes.HasPrefix(data, got) {
			t.Fatalf("read %q from chunks of an image whose bytes are %q", got, data)
		}
	})
}

// FuzzOpenEpochs feeds OpenEpochs any EPOCHS file: it opens a history
// that holds (starting at LSN 1, epochs and starts not falling, an epoch
// repeated only in another incarnation) or fails, and a history it opens
// is kept again as it was read: Observe of a newer epoch rewrites the
// file, which opens to the same history.
func FuzzOpenEpochs(f *testing.F) {
	f.Add([]byte("0 1 0\n"))
	f.Add([]byte("0 1 0\n1 120 3f2a\nseen 4\n"))
	f.Add([]byte("0 1 0\n0 50 9\n2 90 b\n"))
	f.Add([]byte("0 2 0\n"))
	f.Add([]byte("seen x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := vfs.NewMemFS()
		if err := fs.MkdirAll("/d"); err != nil {
			t.Fatal(err)
		}
		if err := vfs.WriteFile(fs, "/d/EPOCHS", data); err != nil {
			t.Fatal(err)
		}
		e, err := replica.OpenEpochs(fs, "/d")
		if err != nil {
			return
		}
		hist := e.History()
		if len(hist) == 0 || hist[0].Start != 1 {
			t.Fatalf("%q opened to %v", data, hist)
		}
		for i := 1; i < len(hist); i++ {
			a, b := hist[i-1], hist[i]
			if b.Epoch < a.Epoch || b.Start < a.Start || b.Epoch == a.Epoch && b.Incarnation == a.Incarnation {
				t.Fatalf("%q opened to %v", data, hist)
			}
		}
		next := max(e.Seen(), e.Current()) + 1
		if next == 0 {
			return // no epoch is newer
		}
		if err := e.Observe(next); err != nil {
			t.Fatal(err)
		}
		again, err := replica.OpenEpochs(fs, "/d")
		if err != nil || !slices.Equal(again.History(), hist) || again.Seen() != next {
			t.Fatalf("%q: kept again, %v seen %d reopens to %v seen %d: %v", data, hist, next, again.History(), again.Seen(), err)
		}
	})
}

// idleNode sends the image's description with its first chunk, then
// chunks without bytes at the next offset, forever; a stream opened
// again (resuming there) gets the description with no bytes, then the
// same.
type idleNode struct {
	fakeNode
	first  *pb.FetchImageResponse
	opened bool
}

func (n *idleNode) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	first := n.first
	off := uint64(len(first.GetData()))
	if n.opened {
		first = &pb.FetchImageResponse{Image: first.GetImage(), Offset: off, Crc32C: replica.ChunkCRC(first.GetImage().GetId(), off, nil)}
	}
	n.opened = true
	return &idleStream{fakeStream: fakeStream{ctx: ctx}, first: first,
		empty: &pb.FetchImageResponse{Offset: off, Crc32C: replica.ChunkCRC(first.GetImage().GetId(), off, nil)}}, nil
}

type idleStream struct {
	fakeStream
	first, empty *pb.FetchImageResponse
	sent         bool
}

func (s *idleStream) RecvMsg(m any) error {
	if !s.sent {
		s.sent = true
		proto.Merge(m.(proto.Message), s.first)
		return nil
	}
	proto.Merge(m.(proto.Message), s.empty)
	return nil
}

// TestImageStreamGivesUpOnEmptyChunks: a node that goes on sending chunks
// without bytes (a faulty or hostile one) brings the transfer no nearer
// its end: it is a broken transfer, which the stream gives up on after
// Patience, not a loop that never ends.
func TestImageStreamGivesUpOnEmptyChunks(t *testing.T) {
	data := []byte("an image's bytes")
	node := &idleNode{first: &pb.FetchImageResponse{Image: &pb.ImageInfo{Lsn: 3, Id: 9, Bytes: uint64(len(data)), Rows: 1}, Data: data[:5], Crc32C: replica.ChunkCRC(9, 0, data[:5])}}
	st, err := replica.OpenImage(context.Background(), node, replica.FetchOptions{Patience: 200 * time.Millisecond, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(st)
		read <- err
	}()
	select {
	case err := <-read:
		if err == nil || !strings.Contains(err.Error(), "no bytes") {
			t.Fatalf("a node sending empty chunks: %v, want the transfer given up", err)
		}
	case <-time.After(20 * time.Second):
		st.Close()
		t.Fatal("a node sending empty chunks kept the reader looping")
	}
}
