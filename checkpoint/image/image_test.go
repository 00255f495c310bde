package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

// testImage is an image's content: tables and their rows.
type testImage struct {
	h      Header
	hist   []Stretch
	tables []uint32
	defs   map[uint32][]byte
	rows   map[uint32][][]byte
}

func randomImage(seed uint64, tables, rows int) testImage {
	r := rand.New(rand.NewPCG(seed, 7))
	im := testImage{h: Header{LSN: 1 + r.Uint64N(1e9), Epoch: r.Uint64N(9), NextTable: uint64(tables + 1), Created: r.Int64()},
		defs: map[uint32][]byte{}, rows: map[uint32][][]byte{}}
	if seed%3 != 0 { // else a node that could not say
		im.hist = []Stretch{{Epoch: 0, Start: 1}}
		for i := r.IntN(4); i > 0; i-- {
			last := im.hist[len(im.hist)-1]
			im.hist = append(im.hist, Stretch{Epoch: last.Epoch + r.Uint64N(2), Start: last.Start + r.Uint64N(im.h.LSN-last.Start+1), Incarnation: r.Uint64() | 1})
		}
		im.h.Epoch = im.hist[len(im.hist)-1].Epoch
	}
	for t := 1; t <= tables; t++ {
		id := uint32(t * 3)
		im.tables = append(im.tables, id)
		im.defs[id] = []byte(fmt.Sprintf("table-%d", id))
		for i := 0; i < r.IntN(rows+1); i++ {
			// Compressible rows, with some random bytes.
			row := bytes.Repeat([]byte{byte(i)}, r.IntN(300))
			row = append(row, byte(r.Uint32()), byte(r.Uint32()))
			im.rows[id] = append(im.rows[id], row)
		}
	}
	im.nameSchema()
	return im
}

// nameSchema makes the header name the image's tables, as a writer's
// does, in the current version.
func (im *testImage) nameSchema() {
	im.h.Tables, im.h.Schema, im.h.Version = 0, 0, Version
	for _, id := range im.tables {
		im.h.Tables++
		im.h.Schema = SchemaSum(im.h.Schema, id, im.defs[id])
	}
}

func (im testImage) encode(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, im.h, im.hist)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range im.tables {
		if err := w.Table(id, im.defs[id]); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range im.tables {
		for _, row := range im.rows[id] {
			if err := w.Row(id, row); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(buf.Len()) {
		t.Fatalf("Size %d, wrote %d", w.Size(), buf.Len())
	}
	return buf.Bytes()
}

// decode reads an image back into a testImage.
func decode(b []byte) (testImage, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return testImage{}, err
	}
	im := testImage{h: r.Header(), hist: r.History(), defs: map[uint32][]byte{}, rows: map[uint32][][]byte{}}
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return im, nil
		}
		if err != nil {
			return testImage{}, err
		}
		p, err := f.Payload(nil)
		if err != nil {
			return testImage{}, err
		}
		switch f.Kind {
		case FrameTable:
			im.tables = append(im.tables, f.Table)
			im.defs[f.Table] = p
		case FrameRows:
			err = f.Rows(p, func(row []byte) error {
				im.rows[f.Table] = append(im.rows[f.Table], bytes.Clone(row))
				return nil
			})
		}
		if err != nil {
			return testImage{}, err
		}
	}
}

func sameImage(a, b testImage) error {
	if a.h != b.h {
		return fmt.Errorf("header %+v, want %+v", b.h, a.h)
	}
	if !slices.Equal(a.hist, b.hist) {
		return fmt.Errorf("history %v, want %v", b.hist, a.hist)
	}
	if fmt.Sprint(a.tables) != fmt.Sprint(b.tables) {
		return fmt.Errorf("tables %v, want %v", b.tables, a.tables)
	}
	for _, id := range a.tables {
		if !bytes.Equal(a.defs[id], b.defs[id]) || len(a.rows[id]) != len(b.rows[id]) {
			return fmt.Errorf("table %d: %d rows, want %d", id, len(b.rows[id]), len(a.rows[id]))
		}
		for i := range a.rows[id] {
			if !bytes.Equal(a.rows[id][i], b.rows[id][i]) {
				return fmt.Errorf("table %d row %d differs", id, i)
			}
		}
	}
	return nil
}

func TestRoundTrip(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rows := 3000
		if seed%4 == 0 {
			rows = 30000 // tables of several frames
		}
		im := randomImage(seed, int(seed%5), rows)
		got, err := decode(im.encode(t))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := sameImage(im, got); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// TestImagesAreCompressed: an image of compressible rows, several
// frames of them, is much smaller than the rows' raw bytes (SPEC 5:
// images are compressed).
func TestImagesAreCompressed(t *testing.T) {
	im := testImage{h: Header{LSN: 1, NextTable: 2}, tables: []uint32{1},
		defs: map[uint32][]byte{1: []byte("subscriber")}, rows: map[uint32][][]byte{}}
	raw := 0
	for i := range 50000 {
		row := fmt.Appendf(nil, "id=%08d;imsi=26201%010d;zone=%d;state=attached;", i, 7*i, i%9)
		im.rows[1] = append(im.rows[1], row)
		raw += len(row)
	}
	im.nameSchema()
	if size := len(im.encode(t)); size > raw/2 {
		t.Fatalf("an image of %d bytes of rows takes %d bytes: want under half", raw, size)
	}
}

// TestEveryDamageIsFound flips one bit at every offset of an image, and
// truncates it at every length: each must fail with ErrCorrupt, never
// read back as an image.
func TestEveryDamageIsFound(t *testing.T) {
	im := randomImage(3, 3, 40)
	b := im.encode(t)
	for off := range b {
		d := bytes.Clone(b)
		d[off] ^= 1 << (off % 8)
		if _, err := decode(d); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit flipped at offset %d of %d: %v", off, len(b), err)
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := decode(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(b), err)
		}
	}
}

// TestCheckEnds: an image passes with the reader's totals; cut short at
// any length, extended, or with a bit flipped in its header or end frame
// it fails with ErrCorrupt. (Damage in between is the reader's to find.)
func TestCheckEnds(t *testing.T) {
	im := randomImage(3, 3, 40)
	b := im.encode(t)
	h, tot, err := CheckEnds(bytes.NewReader(b), int64(len(b)))
	if err != nil || h != im.h {
		t.Fatalf("a whole image: %+v, %v", h, err)
	}
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := r.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if tot != r.Totals() {
		t.Fatalf("CheckEnds counts %+v, the reader %+v", tot, r.Totals())
	}
	for n := 0; n < len(b); n++ {
		if _, _, err := CheckEnds(bytes.NewReader(b[:n]), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut to %d of %d bytes: %v", n, len(b), err)
		}
	}
	long := append(bytes.Clone(b), make([]byte, 7)...)
	if _, _, err := CheckEnds(bytes.NewReader(long), int64(len(long))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("extended: %v", err)
	}
	for _, off := range append(rangeOf(0, HeaderSize), rangeOf(len(b)-endFrameSize, len(b))...) {
		d := bytes.Clone(b)
		d[off] ^= 1 << (off % 8)
		if _, _, err := CheckEnds(bytes.NewReader(d), int64(len(d))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit flipped at offset %d of %d: %v", off, len(b), err)
		}
	}
}

func rangeOf(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// FuzzCheckEnds: any bytes either fail with ErrCorrupt or end in an end
// frame that the reader, if it reads them as one whole image, agrees
// with.
func FuzzCheckEnds(f *testing.F) {
	for seed := uint64(0); seed < 4; seed++ {
		f.Add(randomImage(seed, int(seed), 20).encode(f))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, tot, err := CheckEnds(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("CheckEnds passed, the reader refuses the header: %v", err)
		}
		for {
			if _, err := r.Next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return // damage in between: the reader's to find
			}
		}
		if r.Offset() != int64(len(b)) {
			return // an end frame inside, bytes after it: the load's to find
		}
		if r.Header() != h || r.Totals() != tot {
			t.Fatalf("CheckEnds: %+v %+v; the reader: %+v %+v, ending at %d of %d", h, tot, r.Header(), r.Totals(), r.Offset(), len(b))
		}
	})
}

// TestFramesAreBoundToTheirPlace: a frame moved within an image, or taken
// from another image, fails its checksum.
func TestFramesAreBoundToTheirPlace(t *testing.T) {
	a := randomImage(5, 2, 5)
	b := a
	b.h.LSN++
	ea, eb := a.encode(t), b.encode(t)
	mixed := append(bytes.Clone(ea[:HeaderSize+10]), eb[HeaderSize+10:]...)
	if _, err := decode(mixed); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("frames of another image: %v", err)
	}
}

func TestWriterRefusesDisorder(t *testing.T) {
	w, err := NewWriter(io.Discard, Header{LSN: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Row(1, []byte("x")); err == nil {
		t.Fatal("rows of an undefined table")
	}
	two := Header{LSN: 1, Tables: 2, Schema: SchemaSum(SchemaSum(0, 1, nil), 2, nil)}
	w, _ = NewWriter(io.Discard, two, nil)
	if err := w.Table(1, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Row(1, []byte("a")); err == nil {
		t.Fatal("rows before all the tables the header names")
	}
	w, _ = NewWriter(io.Discard, two, nil)
	if err := w.Table(2, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Table(1, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("the header's tables in another order")
	}
	w, _ = NewWriter(io.Discard, two, nil)
	for _, step := range []error{w.Table(1, nil), w.Table(2, nil), w.Row(1, []byte("a")), w.Row(2, []byte("b"))} {
		if step != nil {
			t.Fatal(step)
		}
	}
	if err := w.Row(1, []byte("c")); err == nil {
		t.Fatal("a table's rows after another's")
	}
	if err := w.Table(3, nil); err == nil {
		t.Fatal("a table after rows")
	}
	if _, err := NewWriter(io.Discard, Header{}, nil); err == nil {
		t.Fatal("an image at LSN 0")
	}
}

// TestHeaderNamesTheSchema: a reader checks the table frames against the
// schema the header names (an image whose header names other tables is
// corrupt, though every checksum holds), and still reads a version 1
// image, whose header names none.
func TestHeaderNamesTheSchema(t *testing.T) {
	im := randomImage(3, 3, 10)
	b := im.encode(t)
	reheader := func(b []byte, version uint32, tables uint32, schema uint64) []byte {
		b = bytes.Clone(b)
		binary.LittleEndian.PutUint32(b[8:], version)
		binary.LittleEndian.PutUint32(b[48:], tables)
		binary.LittleEndian.PutUint64(b[52:], schema)
		binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
		return b
	}
	for _, c := range []struct {
		what   string
		tables uint32
		schema uint64
	}{
		{"another schema", im.h.Tables, im.h.Schema ^ 1},
		{"one table more", im.h.Tables + 1, im.h.Schema},
		{"one table less", im.h.Tables - 1, im.h.Schema},
	} {
		if _, err := decode(reheader(b, Version, c.tables, c.schema)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s in the header: %v", c.what, err)
		}
	}
	if _, _, err := CheckEnds(bytes.NewReader(reheader(b, Version, im.h.Tables+1, im.h.Schema)), int64(len(b))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("CheckEnds with one table more in the header: %v", err)
	}
	v2 := im
	v2.h.Version, v2.hist = 2, nil // no history frame, which version 1 has neither
	v1 := reheader(v2.encode(t), 1, 0, 0)
	old, err := decode(v1)
	if err != nil {
		t.Fatalf("a version 1 image: %v", err)
	}
	if old.h.Version != 1 || old.h.Tables != 0 {
		t.Fatalf("a version 1 image's header: %+v", old.h)
	}
	// A header read encodes to its bytes, so its ID is its writer's
	// (the image stream names an image by it).
	for _, img := range [][]byte{b, v1} {
		h, err := DecodeHeader(img)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(AppendHeader(nil, h), img[:HeaderSize]) || h.ID() != binary.LittleEndian.Uint32(img[60:]) {
			t.Fatalf("a version %d header does not encode to the bytes it was read from", h.Version)
		}
	}
	old.nameSchema()
	old.hist = im.hist
	if err := sameImage(im, old); err != nil {
		t.Fatalf("a version 1 image: %v", err)
	}
	if _, err := decode(reheader(v1, 1, im.h.Tables, im.h.Schema)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version 1 header with a schema: %v", err)
	}
	if _, err := decode(reheader(b, Version+1, im.h.Tables, im.h.Schema)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version from the future: %v", err)
	}
}

// FuzzReader: any bytes either fail to read with ErrCorrupt or are an
// image that, written again, reads back the same.
func FuzzReader(f *testing.F) {
	for seed := uint64(0); seed < 4; seed++ {
		f.Add(randomImage(seed, int(seed), 20).encode(f))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		im, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		im.nameSchema() // a version 1 image is written again in this version
		again, err := decode(im.encode(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := sameImage(im, again); err != nil {
			t.Fatalf("a decoded image written again: %v", err)
		}
	})
}

// TestHistory: the epoch history an image carries reads back as written
// (none included); a writer refuses, and a reader finds corrupt, one that
// does not fit the image (not from LSN 1, out of order, past the image's
// LSN, ending in another epoch than its header's) or a history frame
// anywhere but first; a version 2 image, which has none, reads with none.
func TestHistory(t *testing.T) {
	im := randomImage(4, 2, 10)
	im.h.LSN, im.h.Epoch = 100, 3
	for _, hist := range [][]Stretch{nil, {{Epoch: 3, Start: 1}}, {{Epoch: 0, Start: 1}, {Epoch: 3, Start: 50, Incarnation: 9}, {Epoch: 3, Start: 100, Incarnation: 11}}} {
		im.hist = hist
		got, err := decode(im.encode(t))
		if err != nil {
			t.Fatalf("history %v: %v", hist, err)
		}
		if err := sameImage(im, got); err != nil {
			t.Fatalf("history %v: %v", hist, err)
		}
	}
	// raw writes an image with hist as its history frame, unchecked, and
	// another frame first if early.
	raw := func(hist []Stretch, early bool) []byte {
		var buf bytes.Buffer
		w := &Writer{w: &buf, h: im.h, lsn: im.h.LSN, tables: map[uint32]bool{}, done: map[uint32]bool{}}
		if err := w.write(AppendHeader(nil, im.h)); err != nil {
			t.Fatal(err)
		}
		if early {
			if err := w.Table(im.tables[0], im.defs[im.tables[0]]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.frameOut(FrameHistory, 0, uint32(len(hist)), appendHistory(nil, hist)); err != nil {
			t.Fatal(err)
		}
		for _, id := range im.tables[len(w.tables):] {
			if err := w.Table(id, im.defs[id]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if _, err := decode(raw([]Stretch{{Epoch: 3, Start: 1}}, false)); err != nil {
		t.Fatalf("a good history written raw: %v", err)
	}
	for _, c := range []struct {
		what string
		hist []Stretch
	}{
		{"not from LSN 1", []Stretch{{Epoch: 3, Start: 2}}},
		{"starts out of order", []Stretch{{Epoch: 0, Start: 1}, {Epoch: 2, Start: 60}, {Epoch: 3, Start: 50}}},
		{"epochs out of order", []Stretch{{Epoch: 4, Start: 1}, {Epoch: 3, Start: 50}}},
		{"past the image's LSN", []Stretch{{Epoch: 0, Start: 1}, {Epoch: 3, Start: 101}}},
		{"another epoch than the header's", []Stretch{{Epoch: 0, Start: 1}, {Epoch: 2, Start: 50}}},
	} {
		if _, err := NewWriter(io.Discard, im.h, c.hist); err == nil {
			t.Errorf("the writer takes a history %s", c.what)
		}
		if _, err := decode(raw(c.hist, false)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a history %s: %v", c.what, err)
		}
	}
	if _, err := decode(raw([]Stretch{{Epoch: 3, Start: 1}}, true)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a history frame after a table frame: %v", err)
	}
	v2 := im
	v2.h.Version, v2.hist = 2, nil
	got, err := decode(v2.encode(t))
	if err != nil || got.hist != nil {
		t.Fatalf("a version 2 image: history %v, %v", got.hist, err)
	}
	if _, err := NewWriter(io.Discard, v2.h, []Stretch{{Epoch: 3, Start: 1}}); err == nil {
		t.Fatal("a version 2 writer takes a history")
	}
}
