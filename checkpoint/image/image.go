// Package image is the format of mmdb's database images: what a
// checkpoint writes to disk and what a node streams to another. An image
// holds the tables and rows of a consistent snapshot as of one LSN.
// Everything here is part of the format; changing a constant or a layout
// needs a new Version.
//
// An image is a header followed by frames:
//
//	image := header history-frame table-frame* rows-frame* end-frame
//
// (Images of versions 1 and 2, which a reader still takes, have no
// history frame.)
//
// Header (HeaderSize bytes, little-endian):
//
//	+---------+---------+--------+--------+--------+-----------+---------+--------+--------+--------+
//	| magic   | version | flags  | lsn    | epoch  | nextTable | created | tables | schema | crc32c |
//	| 8 bytes | uint32  | uint32 | uint64 | uint64 | uint64    | int64   | uint32 | uint64 | uint32 |
//	+---------+---------+--------+--------+--------+-----------+---------+--------+--------+--------+
//	  0         8         12       16       24       32          40        48       52       60
//
// lsn is the image's LSN C: it holds exactly the commits with LSN <= C.
// epoch is the epoch of the record at C (of the primary that wrote that
// record; 0 where the writer does not know it), nextTable the id the next
// new table gets (ids of dropped tables are never reused), created the
// time it was started (Unix nanoseconds). tables is the number of tables
// the image defines and schema names their definitions: the CRC-64 (ECMA)
// of each table frame's id (uint32) and payload, in the image's order
// (SchemaSum), so that two images with the same schema say so, and a
// reader checks the table frames against it. flags is zero. crc32c
// (Castagnoli) covers bytes 0 to 60. Version 1 images, which a reader
// still takes, have zeros for tables and schema and no such check.
//
// Frame (FrameHeaderSize bytes of header, then the payload):
//
//	+--------+--------+--------+----------+--------+--------+--------+--------+---------+
//	| crc32c | kind   | codec  | reserved | table  | count  | raw    | stored | payload |
//	| uint32 | uint8  | uint8  | 2 bytes  | uint32 | uint32 | uint32 | uint32 | stored  |
//	+--------+--------+--------+----------+--------+--------+--------+--------+---------+
//	  0        4        5        6          8        12       16       20       24
//
// kind is FrameHistory (the epoch history of the node the image was made
// on, up to the image's LSN: count stretches of three uint64s each, its
// epoch, the LSN it starts at and the incarnation of its primary, in LSN
// order, the first starting at LSN 1 and the last of the header's epoch;
// no stretches when the node could not say), FrameTable (the payload is
// a table definition, encoded as mem.TableDef.AppendBinary does; count is
// 0), FrameRows (count rows of
// table, each uvarint(len) followed by the row as mem encodes it) or
// FrameEnd (the last frame: uint32 tables, uint64 row frames, uint64 rows,
// for a reader to check it saw them all). codec says how the payload is
// stored: CodecNone, or CodecS2 (klauspost/compress s2 block format,
// used when it is smaller); raw is its length once decoded, stored its
// length in the image. crc32c covers the image's lsn (8 bytes), the
// frame's offset in the image (8 bytes), header bytes 4 to 24 and the
// stored payload, so a frame copied from another image or another place
// fails its check.
//
// The history frame comes first, then the table frames, then the rows of
// each table, then the end frame. The history is what lets a node started
// from the image (serve -from-image, mmdbd image restore) tell where a
// primary's log parts from the records it holds (SPEC 6). A reader can tell a damaged image (a bad checksum, a frame past
// the end of the file, no end frame) from a good one before loading it.
package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
)

// Format constants.
const (
	Magic           = "MMDBIMG\x00"
	Version         = 3
	HeaderSize      = 64
	FrameHeaderSize = 24
	// MaxFrameBytes bounds a frame's raw and stored payload, so a damaged
	// length cannot make a reader allocate without limit.
	MaxFrameBytes = 16 << 20
)

// Frame kinds.
const (
	FrameTable = 1
	FrameRows  = 2
	FrameEnd   = 3
	// FrameHistory, from version 3, is the first frame.
	FrameHistory = 4
)

// stretchSize is the size of one stretch in a history frame.
const stretchSize = 24

// Stretch is where a stretch of a primary's log began, in a node's epoch
// history: its first LSN, its epoch, and the incarnation of the primary
// within that epoch (replica.Epochs).
type Stretch struct {
	Epoch       uint64
	Start       uint64
	Incarnation uint64
}

// checkHistory checks a history an image of header h carries: none, or
// stretches in LSN order from LSN 1 with epochs not falling, the last
// starting at or below the image's LSN and of the epoch the header names.
func checkHistory(hist []Stretch, h Header) error {
	if len(hist) == 0 {
		return nil
	}
	if hist[0].Start != 1 {
		return fmt.Errorf("an epoch history starting at LSN %d, not 1", hist[0].Start)
	}
	for i := 1; i < len(hist); i++ {
		if a, b := hist[i-1], hist[i]; b.Start < a.Start || b.Epoch < a.Epoch {
			return fmt.Errorf("an epoch history with epoch %d at LSN %d after epoch %d at LSN %d", b.Epoch, b.Start, a.Epoch, a.Start)
		}
	}
	if last := hist[len(hist)-1]; last.Start > h.LSN || last.Epoch != h.Epoch {
		return fmt.Errorf("an epoch history ending with epoch %d at LSN %d, for an image at LSN %d of epoch %d", last.Epoch, last.Start, h.LSN, h.Epoch)
	}
	return nil
}

func appendHistory(dst []byte, hist []Stretch) []byte {
	for _, st := range hist {
		dst = binary.LittleEndian.AppendUint64(dst, st.Epoch)
		dst = binary.LittleEndian.AppendUint64(dst, st.Start)
		dst = binary.LittleEndian.AppendUint64(dst, st.Incarnation)
	}
	return dst
}

func decodeHistory(b []byte, count int) ([]Stretch, error) {
	if len(b) != count*stretchSize {
		return nil, fmt.Errorf("a history frame of %d stretches in %d bytes", count, len(b))
	}
	var hist []Stretch
	for ; len(b) > 0; b = b[stretchSize:] {
		hist = append(hist, Stretch{
			Epoch:       binary.LittleEndian.Uint64(b),
			Start:       binary.LittleEndian.Uint64(b[8:]),
			Incarnation: binary.LittleEndian.Uint64(b[16:]),
		})
	}
	return hist, nil
}

// Payload codecs.
const (
	CodecNone = 0
	CodecS2   = 1
)

// ErrCorrupt is returned, wrapped with the offset, for an image that is
// damaged or not an image at all.
var ErrCorrupt = errors.New("image: corrupt image")

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	ecma       = crc64.MakeTable(crc64.ECMA)
)

// Header is an image's header.
type Header struct {
	LSN       uint64
	Epoch     uint64
	NextTable uint64
	Created   int64  // Unix nanoseconds
	Tables    uint32 // the tables the image defines
	Schema    uint64 // SchemaSum of their definitions
	// Version is the format version the header was read in (a header
	// encodes in Version); in version 1, Tables and Schema are unknown,
	// and before version 3 there is no history frame.
	Version uint32
}

// SchemaSum adds a table frame (the table's id and its definition) to
// sum, the schema sum of the tables before it (zero before the first).
func SchemaSum(sum uint64, id uint32, def []byte) uint64 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], id)
	return crc64.Update(crc64.Update(sum, ecma, b[:]), ecma, def)
}

// AppendHeader appends h's encoding to dst, in h.Version (a header read
// from an image encodes to the bytes it was read from, so its ID is the
// one its writer gave it), or in Version when that is zero.
func AppendHeader(dst []byte, h Header) []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	v := h.Version
	if v == 0 {
		v = Version
	}
	binary.LittleEndian.PutUint32(b[8:], v)
	binary.LittleEndian.PutUint64(b[16:], h.LSN)
	binary.LittleEndian.PutUint64(b[24:], h.Epoch)
	binary.LittleEndian.PutUint64(b[32:], h.NextTable)
	binary.LittleEndian.PutUint64(b[40:], uint64(h.Created))
	binary.LittleEndian.PutUint32(b[48:], h.Tables)
	binary.LittleEndian.PutUint64(b[52:], h.Schema)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	return append(dst, b...)
}

// ID returns the checksum of h's encoding. With the LSN it names one
// image: two images at the same LSN differ in their creation time.
func (h Header) ID() uint32 {
	return binary.LittleEndian.Uint32(AppendHeader(nil, h)[HeaderSize-4:])
}

// DecodeHeader decodes an image header.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: a header of %d bytes, want %d", ErrCorrupt, len(b), HeaderSize)
	}
	b = b[:HeaderSize]
	if string(b[:8]) != Magic {
		return Header{}, fmt.Errorf("%w: no image magic", ErrCorrupt)
	}
	if crc := binary.LittleEndian.Uint32(b[60:]); crc != crc32.Checksum(b[:60], castagnoli) {
		return Header{}, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	v := binary.LittleEndian.Uint32(b[8:])
	if v < 1 || v > Version {
		return Header{}, fmt.Errorf("%w: format version %d, this build reads 1 to %d", ErrCorrupt, v, Version)
	}
	if f := binary.LittleEndian.Uint32(b[12:]); f != 0 {
		return Header{}, fmt.Errorf("%w: header flags %#x", ErrCorrupt, f)
	}
	h := Header{
		LSN:       binary.LittleEndian.Uint64(b[16:]),
		Epoch:     binary.LittleEndian.Uint64(b[24:]),
		NextTable: binary.LittleEndian.Uint64(b[32:]),
		Created:   int64(binary.LittleEndian.Uint64(b[40:])),
		Tables:    binary.LittleEndian.Uint32(b[48:]),
		Schema:    binary.LittleEndian.Uint64(b[52:]),
		Version:   v,
	}
	switch {
	case h.LSN == 0:
		return Header{}, fmt.Errorf("%w: image LSN 0", ErrCorrupt)
	case v == 1 && (h.Tables != 0 || h.Schema != 0):
		return Header{}, fmt.Errorf("%w: a version 1 header with its reserved bytes set", ErrCorrupt)
	}
	return h, nil
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	kind   uint8
	codec  uint8
	table  uint32
	count  uint32
	raw    uint32
	stored uint32
}

func putFrameHeader(b []byte, h frameHeader) {
	b[4], b[5], b[6], b[7] = h.kind, h.codec, 0, 0
	binary.LittleEndian.PutUint32(b[8:], h.table)
	binary.LittleEndian.PutUint32(b[12:], h.count)
	binary.LittleEndian.PutUint32(b[16:], h.raw)
	binary.LittleEndian.PutUint32(b[20:], h.stored)
}

func decodeFrameHeader(b []byte) (frameHeader, error) {
	h := frameHeader{
		kind:   b[4],
		codec:  b[5],
		table:  binary.LittleEndian.Uint32(b[8:]),
		count:  binary.LittleEndian.Uint32(b[12:]),
		raw:    binary.LittleEndian.Uint32(b[16:]),
		stored: binary.LittleEndian.Uint32(b[20:]),
	}
	switch {
	case h.kind < FrameTable || h.kind > FrameHistory:
		return h, fmt.Errorf("frame kind %d", h.kind)
	case h.codec > CodecS2:
		return h, fmt.Errorf("codec %d", h.codec)
	case b[6] != 0 || b[7] != 0:
		return h, errors.New("reserved bytes set")
	case h.raw > MaxFrameBytes || h.stored > MaxFrameBytes:
		return h, fmt.Errorf("a payload of %d bytes (%d stored), past the limit of %d", h.raw, h.stored, MaxFrameBytes)
	case h.codec == CodecNone && h.raw != h.stored:
		return h, fmt.Errorf("an uncompressed payload of %d bytes stored in %d", h.raw, h.stored)
	}
	return h, nil
}

// frameCRC is a frame's checksum: see the package doc.
func frameCRC(lsn uint64, off int64, hdr, payload []byte) uint32 {
	var pre [16]byte
	binary.LittleEndian.PutUint64(pre[:], lsn)
	binary.LittleEndian.PutUint64(pre[8:], uint64(off))
	crc := crc32.Update(0, castagnoli, pre[:])
	crc = crc32.Update(crc, castagnoli, hdr[4:FrameHeaderSize])
	return crc32.Update(crc, castagnoli, payload)
}

// endPayloadSize is the size of the end frame's payload.
const endPayloadSize = 20

// Totals is what an image holds, as its end frame records it.
type Totals struct {
	Tables    uint32
	RowFrames uint64
	Rows      uint64
}

func appendTotals(dst []byte, t Totals) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, t.Tables)
	dst = binary.LittleEndian.AppendUint64(dst, t.RowFrames)
	return binary.LittleEndian.AppendUint64(dst, t.Rows)
}

func decodeTotals(b []byte) Totals {
	return Totals{
		Tables:    binary.LittleEndian.Uint32(b),
		RowFrames: binary.LittleEndian.Uint64(b[4:]),
		Rows:      binary.LittleEndian.Uint64(b[12:]),
	}
}
