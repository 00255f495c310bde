package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func randomRecords(r *rand.Rand, n int) []Record {
	recs := make([]Record, n)
	lsn := 1 + r.Uint64N(1000)
	for i := range recs {
		body := make([]byte, r.IntN(300))
		for j := range body {
			body[j] = byte('a' + r.IntN(4)) // compressible, like rows
		}
		recs[i] = Record{LSN: lsn, Epoch: r.Uint64N(3), Body: body}
		lsn += 1 + r.Uint64N(5)
	}
	return recs
}

func build(t testing.TB, recs []Record) *Builder {
	t.Helper()
	var b Builder
	for _, rec := range recs {
		if err := b.Add(rec.LSN, rec.Epoch, rec.Body); err != nil {
			t.Fatal(err)
		}
	}
	return &b
}

// decodeOne decodes the single block at the start of data.
func decodeOne(d *Decoder, seq uint64, data []byte) ([]Record, int, error) {
	h, err := DecodeBlockHeader(data)
	if err != nil {
		return nil, 0, err
	}
	if int64(len(data)) < h.Size() {
		return nil, 0, fmt.Errorf("%w: short block", ErrCorrupt)
	}
	recs, err := d.Block(seq, data, h, data[BlockHeaderSize:h.Size()])
	return recs, int(h.Size()), err
}

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].LSN != b[i].LSN || a[i].Epoch != b[i].Epoch || !bytes.Equal(a[i].Body, b[i].Body) {
			return false
		}
	}
	return true
}

func TestBlockRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []Compression{None, S2, Zstd} {
		for _, n := range []int{1, 2, 50, 700} {
			recs := randomRecords(r, n)
			e := &Encoder{Compression: c, MinCompress: 64}
			data, err := e.Append([]byte("prefix"), 7, 64, build(t, recs))
			if err != nil {
				t.Fatal(err)
			}
			var d Decoder
			got, size, err := decodeOne(&d, 7, data[len("prefix"):])
			if err != nil {
				t.Fatalf("%v, %d records: %v", c, n, err)
			}
			if size != len(data)-len("prefix") || !sameRecords(got, recs) {
				t.Fatalf("%v, %d records: decoded %d records of %d bytes", c, n, len(got), size)
			}
			h, _ := DecodeBlockHeader(data[len("prefix"):])
			if c != None && n >= 50 && h.Compression != c {
				t.Errorf("%v, %d records: stored as %v (%d of %d bytes)", c, n, h.Compression, h.Stored, h.Raw)
			}
			d.Close()
		}
	}
}

// TestIncompressibleBlockIsStoredRaw: a block that compression would not
// make at least an eighth smaller is stored as it is (SPEC 3: compressed
// when that pays), and still decodes.
func TestIncompressibleBlockIsStoredRaw(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	body := make([]byte, 4000)
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	recs := []Record{{LSN: 1, Body: body}}
	for _, c := range []Compression{S2, Zstd} {
		e := &Encoder{Compression: c, MinCompress: 64}
		data, err := e.Append(nil, 7, 64, build(t, recs))
		if err != nil {
			t.Fatal(err)
		}
		h, err := DecodeBlockHeader(data)
		if err != nil || h.Compression != None || h.Stored != h.Raw {
			t.Fatalf("%v: random bytes stored as %v, %d of %d bytes: %v", c, h.Compression, h.Stored, h.Raw, err)
		}
		var d Decoder
		if got, _, err := decodeOne(&d, 7, data); err != nil || !sameRecords(got, recs) {
			t.Fatalf("%v: the raw block decodes to %d records: %v", c, len(got), err)
		}
		d.Close()
	}
}

// TestEveryBitFlipIsCaught flips each bit of a block in turn: the decoder
// must report corruption every time, never return different records.
func TestEveryBitFlipIsCaught(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, c := range []Compression{None, S2, Zstd} {
		recs := randomRecords(r, 20)
		e := &Encoder{Compression: c, MinCompress: 64}
		data, err := e.Append(nil, 9, 64, build(t, recs))
		if err != nil {
			t.Fatal(err)
		}
		var d Decoder
		for bit := 0; bit < 8*len(data); bit++ {
			bad := bytes.Clone(data)
			bad[bit/8] ^= 1 << (bit % 8)
			got, _, err := decodeOne(&d, 9, bad)
			if err == nil {
				t.Fatalf("%v: flipping bit %d went unnoticed (%d records)", c, bit, len(got))
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEnd) {
				t.Fatalf("%v: bit %d: %v", c, bit, err)
			}
		}
		d.Close()
	}
}

// TestStaleBlockFromAnotherSegment: a block read back under another
// segment's seq (as in a recycled file) fails its checksum.
func TestStaleBlockFromAnotherSegment(t *testing.T) {
	data, err := (&Encoder{}).Append(nil, 1, 64, build(t, randomRecords(rand.New(rand.NewPCG(5, 6)), 3)))
	if err != nil {
		t.Fatal(err)
	}
	var d Decoder
	if _, _, err := decodeOne(&d, 2, data); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a block of segment 1 read as segment 2's: %v", err)
	}
	if _, err := DecodeBlockHeader(make([]byte, BlockHeaderSize)); !errors.Is(err, ErrEnd) {
		t.Fatalf("a zero header: %v", err)
	}
}

func TestBuilderRules(t *testing.T) {
	var b Builder
	if err := b.Add(5, 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, lsn := range []uint64{5, 4} {
		if err := b.Add(lsn, 0, nil); err == nil {
			t.Errorf("LSN %d after 5 was accepted", lsn)
		}
	}
	if _, err := (&Encoder{}).Append(nil, 1, 64, &Builder{}); err == nil {
		t.Error("an empty block was encoded")
	}
	if err := b.Add(6, 0, make([]byte, MaxBlockSize)); err == nil {
		t.Error("a block past MaxBlockSize was accepted")
	}
}

func TestSegmentHeader(t *testing.T) {
	h := SegmentHeader{Channel: 3, Seq: 1 << 40, PrevEnd: 4096, Channels: 4, Flags: FlagOpened, Base: 77}
	b := AppendSegmentHeader(nil, h)
	if len(b) != SegmentHeaderSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := DecodeSegmentHeader(b)
	if err != nil || got != h {
		t.Fatalf("%+v %v", got, err)
	}
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x10
		if _, err := DecodeSegmentHeader(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	// Well-formed checksums over impossible fields.
	for _, bad := range []SegmentHeader{
		{Channel: 4, Seq: 1, Channels: 4},
		{Channel: 0, Seq: 1, Channels: 0},
		{Channel: 0, Seq: 0, Channels: 1},
		{Channel: 0, Seq: 1, Channels: 1, Flags: 8},
	} {
		if _, err := DecodeSegmentHeader(AppendSegmentHeader(nil, bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// FuzzBlock decodes arbitrary bytes as a block: errors are fine, panics
// are not, and whatever decodes must re-encode to the same records.
func FuzzBlock(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []Compression{None, S2, Zstd} {
		data, err := (&Encoder{Compression: c, MinCompress: 1}).Append(nil, 1, 64, build(f, randomRecords(r, 5)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(checkDecodes)
}

// checkDecodes decodes data as a block of segment 1: an error must be
// ErrCorrupt or ErrEnd, and records that decode must re-encode to the
// same records.
func checkDecodes(t *testing.T, data []byte) {
	var d Decoder
	defer d.Close()
	recs, _, err := decodeOne(&d, 1, data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEnd) {
			t.Fatalf("an error that is not ErrCorrupt: %v", err)
		}
		return
	}
	again, err := (&Encoder{}).Append(nil, 1, 64, build(t, recs))
	if err != nil {
		t.Fatal(err)
	}
	if back, _, err := decodeOne(&d, 1, again); err != nil || !sameRecords(back, recs) {
		t.Fatalf("re-encoded records differ: %v", err)
	}
}

// FuzzSegmentHeader decodes arbitrary bytes as a segment header.
func FuzzSegmentHeader(f *testing.F) {
	f.Add(AppendSegmentHeader(nil, SegmentHeader{Channel: 1, Seq: 2, Channels: 2, Flags: FlagOpened, Base: 9}))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeSegmentHeader(data)
		if err != nil {
			return
		}
		if again := AppendSegmentHeader(nil, h); !bytes.Equal(again, data[:SegmentHeaderSize]) {
			t.Fatalf("header %+v re-encodes differently", h)
		}
	})
}

// FuzzPayload seals arbitrary payloads with a valid checksum, so the
// fuzzer reaches decompression and record parsing.
func FuzzPayload(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []Compression{None, S2, Zstd} {
		data, err := (&Encoder{Compression: c, MinCompress: 1}).Append(nil, 1, 64, build(f, randomRecords(r, 4)))
		if err != nil {
			f.Fatal(err)
		}
		h, _ := DecodeBlockHeader(data)
		f.Add(uint8(c), h.Raw, h.Count, h.FirstLSN, data[BlockHeaderSize:])
	}
	f.Fuzz(func(t *testing.T, c uint8, raw, count uint32, first uint64, payload []byte) {
		var hdr [BlockHeaderSize]byte
		binary.LittleEndian.PutUint32(hdr[4:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(hdr[8:], raw)
		hdr[12] = c
		binary.LittleEndian.PutUint64(hdr[16:], first)
		binary.LittleEndian.PutUint32(hdr[24:], count)
		binary.LittleEndian.PutUint32(hdr[28:], 64)
		binary.LittleEndian.PutUint32(hdr[0:], blockCRC(1, hdr[4:], payload))
		checkDecodes(t, append(hdr[:], payload...))
	})
}
