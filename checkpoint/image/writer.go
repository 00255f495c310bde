package image

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
)

// rowsFrameBytes bounds a rows frame's raw payload: large enough that the
// compressor sees patterns and frame headers cost nothing, small enough
// that a loader can spread frames over its cores.
const rowsFrameBytes = 256 << 10

// Writer writes an image to an io.Writer: NewWriter writes the header,
// Table each table's definition, Row the rows (a table's rows one after
// another), Close the end frame. It does not buffer beyond one frame; wrap
// a file in a bufio.Writer.
type Writer struct {
	w       io.Writer
	h       Header
	schema  uint64 // SchemaSum of the tables written
	lsn     uint64
	off     int64
	tables  map[uint32]bool
	done    map[uint32]bool // tables whose rows are all written
	started bool            // rows have begun
	table   uint32          // the table whose rows are being written
	rows    []byte          // its rows frame being filled
	count   uint32          // its rows
	comp    []byte          // compressed payloads
	totals  Totals
	err     error
}

// NewWriter writes h and the history frame (hist: the node's epoch
// history up to h.LSN, or none) and returns a Writer for the rest. The
// tables written must be those h names (Tables, Schema), in the same
// order. A header of an older version (h.Version) writes no history.
func NewWriter(w io.Writer, h Header, hist []Stretch) (*Writer, error) {
	iw := &Writer{w: w, h: h, lsn: h.LSN, tables: map[uint32]bool{}, done: map[uint32]bool{}}
	if h.LSN == 0 {
		return nil, fmt.Errorf("image: an image at LSN 0")
	}
	old := h.Version != 0 && h.Version < 3
	if old && len(hist) > 0 {
		return nil, fmt.Errorf("image: a version %d image holds no epoch history", h.Version)
	}
	if err := checkHistory(hist, h); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := iw.write(AppendHeader(nil, h)); err != nil {
		return nil, err
	}
	if !old {
		if err := iw.frameOut(FrameHistory, 0, uint32(len(hist)), appendHistory(nil, hist)); err != nil {
			return nil, err
		}
	}
	return iw, nil
}

// Size returns the bytes written so far.
func (w *Writer) Size() int64 { return w.off }

// Table writes a table's definition (mem.TableDef.AppendBinary). All
// tables come before any row.
func (w *Writer) Table(id uint32, def []byte) error {
	switch {
	case w.err != nil:
		return w.err
	case w.started:
		return fmt.Errorf("image: table %d defined after rows", id)
	case w.tables[id]:
		return fmt.Errorf("image: table %d defined twice", id)
	}
	w.tables[id] = true
	w.totals.Tables++
	w.schema = SchemaSum(w.schema, id, def)
	return w.frameOut(FrameTable, id, 0, def)
}

// checkSchema says whether the tables written are those the header
// names; the first row or Close checks, once all are written.
func (w *Writer) checkSchema() error {
	if w.totals.Tables != w.h.Tables || w.schema != w.h.Schema {
		return fmt.Errorf("image: %d tables written with schema sum %016x, and the header names %d with %016x", w.totals.Tables, w.schema, w.h.Tables, w.h.Schema)
	}
	return nil
}

// Row adds a row (mem's encoding) of table, which Table defined; a
// table's rows come one after another.
func (w *Writer) Row(table uint32, row []byte) error {
	if w.err != nil {
		return w.err
	}
	if table != w.table || !w.started {
		if err := w.flushRows(); err != nil {
			return err
		}
		if w.started {
			w.done[w.table] = true
		}
		if !w.tables[table] || w.done[table] {
			return fmt.Errorf("image: rows of table %d, which is not defined or whose rows were already written", table)
		}
		if !w.started {
			if err := w.checkSchema(); err != nil {
				return err
			}
		}
		w.table, w.started = table, true
	}
	w.rows = binary.AppendUvarint(w.rows, uint64(len(row)))
	w.rows = append(w.rows, row...)
	w.count++
	if len(w.rows) >= rowsFrameBytes {
		return w.flushRows()
	}
	return nil
}

// flushRows writes the rows frame being filled, if any.
func (w *Writer) flushRows() error {
	if w.count == 0 {
		return nil
	}
	w.totals.RowFrames++
	w.totals.Rows += uint64(w.count)
	err := w.frameOut(FrameRows, w.table, w.count, w.rows)
	w.rows, w.count = w.rows[:0], 0
	return err
}

// Close writes the end frame. It does not close the underlying writer.
func (w *Writer) Close() error {
	if err := w.flushRows(); err != nil {
		return err
	}
	if w.err != nil {
		return w.err
	}
	if err := w.checkSchema(); err != nil {
		return err
	}
	err := w.frameOut(FrameEnd, 0, 0, appendTotals(nil, w.totals))
	if err == nil {
		w.err = fmt.Errorf("image: the image is closed")
	}
	return err
}

// Totals returns what was written.
func (w *Writer) Totals() Totals { return w.totals }

// frameOut writes one frame, compressing rows when that pays.
func (w *Writer) frameOut(kind uint8, table, count uint32, payload []byte) error {
	if len(payload) > MaxFrameBytes {
		return fmt.Errorf("image: a frame of %d bytes, past the limit of %d", len(payload), MaxFrameBytes)
	}
	h := frameHeader{kind: kind, codec: CodecNone, table: table, count: count, raw: uint32(len(payload))}
	stored := payload
	if kind == FrameRows {
		if w.comp = s2.Encode(w.comp[:cap(w.comp)], payload); len(w.comp) < len(payload) {
			stored, h.codec = w.comp, CodecS2
		}
	}
	h.stored = uint32(len(stored))
	var hdr [FrameHeaderSize]byte
	putFrameHeader(hdr[:], h)
	binary.LittleEndian.PutUint32(hdr[:], frameCRC(w.lsn, w.off, hdr[:], stored))
	if err := w.write(hdr[:]); err != nil {
		return err
	}
	return w.write(stored)
}

func (w *Writer) write(b []byte) error {
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("image: write at offset %d: %w", w.off, err)
		return w.err
	}
	w.off += int64(len(b))
	return nil
}
