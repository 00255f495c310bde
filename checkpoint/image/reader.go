package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
)

// Frame is one frame of an image, as stored: Payload decodes it.
type Frame struct {
	Kind   uint8
	Table  uint32
	Count  int    // rows in a FrameRows frame
	Offset int64  // where the frame starts in the image
	Stored []byte // the payload as stored; the frame owns it
	codec  uint8
	raw    int
}

// Payload returns the frame's decoded payload, in dst if it is large
// enough.
func (f Frame) Payload(dst []byte) ([]byte, error) {
	if f.codec == CodecNone {
		return f.Stored, nil
	}
	if cap(dst) < f.raw {
		dst = make([]byte, f.raw)
	}
	if n, err := s2.DecodedLen(f.Stored); err != nil || n != f.raw {
		return nil, fmt.Errorf("%w: frame at offset %d: its payload decodes to %d bytes, not %d (%v)", ErrCorrupt, f.Offset, n, f.raw, err)
	}
	out, err := s2.Decode(dst[:f.raw], f.Stored)
	if err != nil {
		return nil, fmt.Errorf("%w: frame at offset %d: %v", ErrCorrupt, f.Offset, err)
	}
	return out, nil
}

// Rows calls fn with each row of a FrameRows frame's decoded payload.
// The row is valid only during the call.
func (f Frame) Rows(payload []byte, fn func(row []byte) error) error {
	for i := 0; i < f.Count; i++ {
		n, k := binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)-k) {
			return fmt.Errorf("%w: frame at offset %d: row %d of %d runs past the payload", ErrCorrupt, f.Offset, i, f.Count)
		}
		if err := fn(payload[k : k+int(n) : k+int(n)]); err != nil {
			return err
		}
		payload = payload[k+int(n):]
	}
	if len(payload) != 0 {
		return fmt.Errorf("%w: frame at offset %d: %d bytes after its %d rows", ErrCorrupt, f.Offset, len(payload), f.Count)
	}
	return nil
}

// Reader reads an image's frames in order, checking each frame's
// checksum and that the frames make a whole image: tables before rows,
// the tables the header names, rows only of defined tables, and an end
// frame whose totals match.
type Reader struct {
	r      io.Reader
	h      Header
	hist   []Stretch
	off    int64
	tables map[uint32]bool
	rows   bool   // a rows frame was read
	schema uint64 // SchemaSum of the table frames read
	seen   Totals
	done   bool
}

// NewReader reads and checks the image header and the history frame.
func NewReader(r io.Reader) (*Reader, error) {
	b := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, readErr(err, 0, "the header")
	}
	h, err := DecodeHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%w (at offset 0)", err)
	}
	ir := &Reader{r: r, h: h, off: HeaderSize, tables: map[uint32]bool{}}
	if h.Version < 3 {
		return ir, nil
	}
	f, _, err := ir.frame()
	if err != nil {
		return nil, err
	}
	if f.Kind == FrameHistory && f.codec == CodecNone {
		ir.hist, err = decodeHistory(f.Stored, f.Count)
		if err == nil {
			err = checkHistory(ir.hist, h)
		}
	} else {
		err = fmt.Errorf("a frame of kind %d, codec %d where the history frame belongs", f.Kind, f.codec)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: frame at offset %d: %v", ErrCorrupt, f.Offset, err)
	}
	return ir, nil
}

// Header returns the image's header.
func (r *Reader) Header() Header { return r.h }

// History returns the epoch history the image carries: the stretches of
// its node's log up to its LSN, or nil when that node could not say or
// the image is older than version 3.
func (r *Reader) History() []Stretch { return r.hist }

// Offset returns how far the reader has read.
func (r *Reader) Offset() int64 { return r.off }

// Totals returns what the frames read so far hold.
func (r *Reader) Totals() Totals { return r.seen }

// readErr describes a failed read at off: the image ending early is
// damage, anything else an I/O error.
func readErr(err error, off int64, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the image ends at offset %d, in %s (truncated)", ErrCorrupt, off, what)
	}
	return fmt.Errorf("image: read %s at offset %d: %w", what, off, err)
}

// Next returns the next table or rows frame; after the end frame, checked
// against what was read, it returns io.EOF.
func (r *Reader) Next() (Frame, error) {
	if r.done {
		return Frame{}, io.EOF
	}
	f, h, err := r.frame()
	if err != nil {
		return Frame{}, err
	}
	if err := r.account(f, h); err != nil {
		return Frame{}, fmt.Errorf("%w: frame at offset %d: %v", ErrCorrupt, f.Offset, err)
	}
	if f.Kind == FrameEnd {
		r.done = true
		return Frame{}, io.EOF
	}
	return f, nil
}

// frame reads the next frame and checks its checksum.
func (r *Reader) frame() (Frame, frameHeader, error) {
	var hdr [FrameHeaderSize]byte
	off := r.off
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return Frame{}, frameHeader{}, readErr(err, off, "a frame header")
	}
	h, err := decodeFrameHeader(hdr[:])
	if err != nil {
		return Frame{}, h, fmt.Errorf("%w: frame at offset %d: %v", ErrCorrupt, off, err)
	}
	stored := make([]byte, h.stored)
	if _, err := io.ReadFull(r.r, stored); err != nil {
		return Frame{}, h, readErr(err, off+FrameHeaderSize, "a frame payload")
	}
	if crc := binary.LittleEndian.Uint32(hdr[:]); crc != frameCRC(r.h.LSN, off, hdr[:], stored) {
		return Frame{}, h, fmt.Errorf("%w: frame at offset %d: checksum mismatch", ErrCorrupt, off)
	}
	r.off += FrameHeaderSize + int64(h.stored)
	return Frame{Kind: h.kind, Table: h.table, Count: int(h.count), Offset: off, Stored: stored, codec: h.codec, raw: int(h.raw)}, h, nil
}

// account checks a frame against those before it and counts it.
func (r *Reader) account(f Frame, h frameHeader) error {
	if f.Kind == FrameHistory {
		return errors.New("a history frame after the first frame")
	}
	if f.Kind == FrameTable {
		switch {
		case r.rows:
			return fmt.Errorf("table %d defined after rows", f.Table)
		case r.tables[f.Table]:
			return fmt.Errorf("table %d defined twice", f.Table)
		case f.Count != 0 || h.codec != CodecNone:
			return fmt.Errorf("a table frame with %d rows, codec %d", f.Count, h.codec)
		}
		r.tables[f.Table] = true
		r.seen.Tables++
		r.schema = SchemaSum(r.schema, f.Table, f.Stored)
		return nil
	}
	// At the first other frame, the table frames are all read.
	if !r.rows && r.h.Version > 1 && (r.seen.Tables != r.h.Tables || r.schema != r.h.Schema) {
		return fmt.Errorf("%d table definitions with schema sum %016x, and the header names %d with %016x", r.seen.Tables, r.schema, r.h.Tables, r.h.Schema)
	}
	switch f.Kind {
	case FrameRows:
		if !r.tables[f.Table] {
			return fmt.Errorf("rows of table %d, which is not defined", f.Table)
		}
		if f.Count == 0 {
			return errors.New("a rows frame without rows")
		}
		r.rows = true
		r.seen.RowFrames++
		r.seen.Rows += uint64(f.Count)
	case FrameEnd:
		if h.codec != CodecNone || len(f.Stored) != endPayloadSize {
			return fmt.Errorf("an end frame of %d bytes, codec %d", len(f.Stored), h.codec)
		}
		if t := decodeTotals(f.Stored); t != r.seen {
			return fmt.Errorf("the end frame counts %+v, the image holds %+v", t, r.seen)
		}
	}
	return nil
}

// endFrameSize is the end frame's size: it ends every image.
const endFrameSize = FrameHeaderSize + endPayloadSize

// CheckEnds checks the two ends of an image of size bytes: its header,
// and the end frame, which is the file's last bytes and whose checksum
// binds it to that offset and to the header's LSN. An image that passes
// is whole as written (not cut short, not extended, not another image's
// tail), which a crash or a partial copy would break; damage in between
// is found only by reading the frames (Reader), which a load does. It
// returns the header and what the end frame counts.
func CheckEnds(r io.ReaderAt, size int64) (Header, Totals, error) {
	if size < HeaderSize+endFrameSize {
		return Header{}, Totals{}, fmt.Errorf("%w: %d bytes, too short for an image", ErrCorrupt, size)
	}
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(io.NewSectionReader(r, 0, HeaderSize), hb[:]); err != nil {
		return Header{}, Totals{}, readErr(err, 0, "the header")
	}
	h, err := DecodeHeader(hb[:])
	if err != nil {
		return Header{}, Totals{}, err
	}
	off := size - endFrameSize
	var eb [endFrameSize]byte
	if _, err := io.ReadFull(io.NewSectionReader(r, off, endFrameSize), eb[:]); err != nil {
		return Header{}, Totals{}, readErr(err, off, "the end frame")
	}
	fh, err := decodeFrameHeader(eb[:])
	switch {
	case err != nil:
		return Header{}, Totals{}, fmt.Errorf("%w: no end frame at offset %d: %v", ErrCorrupt, off, err)
	case fh.kind != FrameEnd || fh.codec != CodecNone || fh.stored != endPayloadSize:
		return Header{}, Totals{}, fmt.Errorf("%w: no end frame at offset %d (a frame of kind %d, %d bytes)", ErrCorrupt, off, fh.kind, fh.stored)
	case binary.LittleEndian.Uint32(eb[:]) != frameCRC(h.LSN, off, eb[:FrameHeaderSize], eb[FrameHeaderSize:]):
		return Header{}, Totals{}, fmt.Errorf("%w: the end frame at offset %d: checksum mismatch", ErrCorrupt, off)
	}
	t := decodeTotals(eb[FrameHeaderSize:])
	if h.Version > 1 && t.Tables != h.Tables {
		return Header{}, Totals{}, fmt.Errorf("%w: the end frame counts %d tables, the header %d", ErrCorrupt, t.Tables, h.Tables)
	}
	return h, t, nil
}
