package replica

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/durability"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

func randomRecords(r *rand.Rand, first uint64, n, size int) []durability.Record {
	recs := make([]durability.Record, n)
	for i := range recs {
		body := make([]byte, 1+r.IntN(size))
		for j := range body {
			body[j] = byte(r.IntN(4)) // compressible
		}
		recs[i] = durability.Record{LSN: first + uint64(i), Body: body}
	}
	return recs
}

// TestBatchRoundTrip: batches split into pieces of every size come back
// whole, compressed or not.
func TestBatchRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var enc batchEncoder
	for _, maxData := range []int{1, 7, 100, 4096, 1 << 20} {
		for _, n := range []int{1, 2, 50} {
			recs := randomRecords(r, 10, n, 3000)
			if n == 1 {
				recs[0].Body = recs[0].Body[:1] // too small to compress
			}
			msgs, err := enc.encode(recs, 3, 99, maxData)
			if err != nil {
				t.Fatal(err)
			}
			var dec batchDecoder
			var got []Shipped
			for i, m := range msgs {
				// Each piece goes through the wire format, as it would.
				b, err := proto.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				var back pb.LogBatch
				if err := proto.Unmarshal(b, &back); err != nil {
					t.Fatal(err)
				}
				out, err := dec.add(&back)
				if err != nil {
					t.Fatalf("maxData %d, %d records, piece %d: %v", maxData, n, i, err)
				}
				if (out != nil) != (i == len(msgs)-1) {
					t.Fatalf("piece %d of %d gave %d records", i, len(msgs), len(out))
				}
				got = out
			}
			if len(got) != n {
				t.Fatalf("%d records back, want %d", len(got), n)
			}
			for i, s := range got {
				if s.LSN != recs[i].LSN || !bytes.Equal(s.Body, recs[i].Body) {
					t.Fatalf("record %d: LSN %d, %d bytes; want %d, %d bytes", i, s.LSN, len(s.Body), recs[i].LSN, len(recs[i].Body))
				}
			}
		}
	}
}

// FuzzLogBatch feeds the decoder pieces (each a uvarint length and a
// LogBatch) as a sender might send them, with the checksum made right
// when the first byte says so, so damage past the checksum is reached
// too. It must never panic, and whatever it accepts must hold exactly
// the records the batch says, in order.
func FuzzLogBatch(f *testing.F) {
	var enc batchEncoder
	r := rand.New(rand.NewPCG(3, 4))
	for _, maxData := range []int{64, 1 << 20} {
		msgs, err := enc.encode(randomRecords(r, 5, 3, 300), 0, 7, maxData)
		if err != nil {
			f.Fatal(err)
		}
		seed := []byte{0}
		for _, m := range msgs {
			b, _ := proto.Marshal(m)
			seed = binary.AppendUvarint(seed, uint64(len(b)))
			seed = append(seed, b...)
		}
		f.Add(seed)
		seed[0] = 1
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		fix, in := in[0]&1 == 1, in[1:]
		var dec batchDecoder
		for len(in) > 0 {
			n, w := binary.Uvarint(in)
			if w <= 0 || n > uint64(len(in)-w) {
				return
			}
			var b pb.LogBatch
			if proto.Unmarshal(in[w:w+int(n)], &b) != nil {
				return
			}
			in = in[w+int(n):]
			if fix {
				b.Crc32C = batchCRC(b.FirstLsn, b.Count, b.Epoch, b.RawBytes, b.Compressed, b.Data)
			}
			recs, err := dec.add(&b)
			if err != nil {
				return
			}
			if recs == nil {
				continue
			}
			if len(recs) != int(b.Count) {
				t.Fatalf("%d records from a batch of %d", len(recs), b.Count)
			}
			for i, rec := range recs {
				if rec.LSN != b.FirstLsn+uint64(i) {
					t.Fatalf("record %d has LSN %d in a batch from %d", i, rec.LSN, b.FirstLsn)
				}
			}
		}
	})
}
