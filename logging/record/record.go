// Package record is the redo log's on-disk format: segment headers, blocks
// and the records inside them. Everything here is part of the format;
// changing a constant or a layout needs a new Version.
//
// A channel's log is a sequence of segment files. Each begins with a
// segment header and continues with blocks; a segment is preallocated, so
// after the last block its bytes are zero (or, in a recycled segment, left
// over from its previous use).
//
// Segment header (SegmentHeaderSize bytes, little-endian):
//
//	+---------+---------+---------+---------+---------+----------+--------+--------+-------------+--------+
//	| magic   | version | channel | seq     | prevEnd | channels | flags  | base   | reserved    | crc32c |
//	| 8 bytes | uint32  | uint32  | uint64  | uint64  | uint32   | uint32 | uint64 | 12 bytes, 0 | uint32 |
//	+---------+---------+---------+---------+---------+----------+--------+--------+-------------+--------+
//	  0         8         12        16        24        32         36       40       48            60
//
// seq numbers a channel's segments from 1; channel is the channel's
// number and channels how many the log has. prevEnd is where the data of
// segment seq-1 ended, synced, when this one was created (0: there is no
// such segment), so recovery can prove that segment whole and knows where
// to stop reading it. flags bit 1 (FlagMapped) marks a segment mmap-log
// wrote through a mapping. flags bit 0 (FlagOpened) marks the first segment a
// channel started when the log was opened: recovery had kept the records
// up to LSN base, so records above base in the channel's earlier segments
// are void (they followed a gap), and the data of segment seq-1 ends at
// prevEnd (anything after it was a torn tail). flags bit 2 (FlagBound)
// says base, in a segment that is not opened, is the highest LSN the
// channel had written before it. So in an opened or bound segment, base
// bounds the channel's earlier segments: every record they hold that is
// not void has an LSN at or below it, and once an image holds LSN base
// they are no longer needed (a checkpoint removes them, and recovery
// after that image skips them). crc32c (Castagnoli) covers bytes 0 to 60.
//
// Block (BlockHeaderSize bytes of header, then the payload):
//
//	+--------+--------+--------+-------+----------+----------+--------+--------+---------+
//	| crc32c | stored | raw    | flags | reserved | firstLSN | count  | synced | payload |
//	| uint32 | uint32 | uint32 | uint8 | 3 bytes  | uint64   | uint32 | uint32 | stored  |
//	+--------+--------+--------+-------+----------+----------+--------+--------+---------+
//	  0        4        8        12      13         16         24       28       32
//
// stored is the payload's length in the file, raw its length once
// decompressed (equal to stored when flags says none). flags holds the
// compression: 0 none, 1 s2, 2 zstd. A marker block has no records
// (count, stored and raw all zero): the writer adds one after a sync when
// nothing else is waiting, so that its synced field records the sync.
// synced is how far into the segment
// the data was durable (synced) when the block was written: recovery uses
// it to tell a torn tail, which can only lie past it, from corruption of
// synced data. crc32c covers the segment's seq (8 bytes), header bytes 4
// to 32 and the stored payload: a block left over from a recycled
// segment's previous use fails its checksum, so it reads as garbage, not
// as data. A block header of all zeros ends the segment's data.
//
// The raw payload holds count records, one after another:
//
//	+--------------+---------------+-------------+------+
//	| lsn delta    | epoch         | body length | body |
//	| uvarint      | uvarint       | uvarint     |      |
//	+--------------+---------------+-------------+------+
//
// A record's LSN is the previous record's plus its delta (the first's
// delta is from firstLSN, so it is zero); deltas are positive, because a
// channel holds its records in LSN order, though not every LSN (other
// channels hold the rest). The body is a mem.Redo record, encoded.
package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Format constants.
const (
	// Version is the format version in every segment header.
	Version = 1
	// SegmentHeaderSize is the size of a segment header.
	SegmentHeaderSize = 64
	// BlockHeaderSize is the size of a block header.
	BlockHeaderSize = 32
	// MaxBlockSize bounds a block's raw and stored payload.
	MaxBlockSize = 16 << 20
)

// Magic begins every segment file.
var Magic = [8]byte{'M', 'M', 'D', 'B', 'L', 'O', 'G', '\n'}

// Compression is how a block's payload is stored.
type Compression uint8

// Compressions. The numbers are part of the format.
const (
	None Compression = 0
	S2   Compression = 1
	Zstd Compression = 2
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case S2:
		return "s2"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// Errors. Decoding errors wrap ErrCorrupt, but for a whole segment
// header of a format version this build does not read (a newer build
// wrote it), which is ErrVersion: no damage, and nothing to set aside;
// ErrEnd marks the zero header after a segment's last block.
var (
	ErrCorrupt = errors.New("record: corrupt log")
	ErrVersion = errors.New("record: a log format version this build does not read")
	ErrEnd     = errors.New("record: end of segment data")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Segment header flags. FlagOpened marks a channel's first segment after
// the log was opened (see the segment header). FlagMapped marks a segment
// written through a memory mapping (mmap-log), whose blocks are copied in
// whole but not synced one by one: a damaged block with nothing valid
// after it and past the synced data is a copy a crash cut short.
// FlagBound says base bounds the records of the channel's earlier
// segments (logs written before it have base only in opened segments).
const (
	FlagOpened = 1
	FlagMapped = 2
	FlagBound  = 4
)

// SegmentHeader is the first thing in a segment file.
type SegmentHeader struct {
	Channel  uint32
	Seq      uint64
	PrevEnd  uint64
	Channels uint32
	Flags    uint32
	Base     uint64
}

// Opened reports whether the segment was the first its channel started
// when the log was opened.
func (h SegmentHeader) Opened() bool { return h.Flags&FlagOpened != 0 }

// Bound returns the bound base sets on the records of the channel's
// earlier segments (see the segment header), and whether the header sets
// one: an opened segment's base always does, another's only with
// FlagBound.
func (h SegmentHeader) Bound() (uint64, bool) {
	return h.Base, h.Flags&(FlagOpened|FlagBound) != 0
}

// Mapped reports whether the segment was written through a mapping.
func (h SegmentHeader) Mapped() bool { return h.Flags&FlagMapped != 0 }

// AppendSegmentHeader appends h's encoding to dst.
func AppendSegmentHeader(dst []byte, h SegmentHeader) []byte {
	var b [SegmentHeaderSize]byte
	copy(b[0:8], Magic[:])
	binary.LittleEndian.PutUint32(b[8:], Version)
	binary.LittleEndian.PutUint32(b[12:], h.Channel)
	binary.LittleEndian.PutUint64(b[16:], h.Seq)
	binary.LittleEndian.PutUint64(b[24:], h.PrevEnd)
	binary.LittleEndian.PutUint32(b[32:], h.Channels)
	binary.LittleEndian.PutUint32(b[36:], h.Flags)
	binary.LittleEndian.PutUint64(b[40:], h.Base)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	return append(dst, b[:]...)
}

// DecodeSegmentHeader decodes a segment header.
func DecodeSegmentHeader(b []byte) (SegmentHeader, error) {
	if len(b) < SegmentHeaderSize {
		return SegmentHeader{}, fmt.Errorf("%w: segment header of %d bytes, want %d", ErrCorrupt, len(b), SegmentHeaderSize)
	}
	if !bytes.Equal(b[:8], Magic[:]) {
		return SegmentHeader{}, fmt.Errorf("%w: not a log segment (magic %q)", ErrCorrupt, b[:8])
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc32.Checksum(b[:60], castagnoli); got != want {
		return SegmentHeader{}, fmt.Errorf("%w: segment header checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != Version {
		return SegmentHeader{}, fmt.Errorf("%w: segment format version %d; this build reads %d", ErrVersion, v, Version)
	}
	if !Blank(b[48:60]) {
		return SegmentHeader{}, fmt.Errorf("%w: segment header reserved bytes are not zero", ErrCorrupt)
	}
	h := SegmentHeader{
		Channel:  binary.LittleEndian.Uint32(b[12:]),
		Seq:      binary.LittleEndian.Uint64(b[16:]),
		PrevEnd:  binary.LittleEndian.Uint64(b[24:]),
		Channels: binary.LittleEndian.Uint32(b[32:]),
		Flags:    binary.LittleEndian.Uint32(b[36:]),
		Base:     binary.LittleEndian.Uint64(b[40:]),
	}
	switch {
	case h.Flags&^(FlagOpened|FlagMapped|FlagBound) != 0:
		return SegmentHeader{}, fmt.Errorf("%w: segment header flags %#x", ErrCorrupt, h.Flags)
	case h.Channels == 0 || h.Channel >= h.Channels:
		return SegmentHeader{}, fmt.Errorf("%w: segment header says channel %d of %d", ErrCorrupt, h.Channel, h.Channels)
	case h.Seq == 0:
		return SegmentHeader{}, fmt.Errorf("%w: segment header says seq 0", ErrCorrupt)
	}
	return h, nil
}

// Record is one commit record.
type Record struct {
	LSN   uint64
	Epoch uint64
	Body  []byte
}

// Builder gathers records into a block's raw payload. The zero Builder is
// empty and ready.
type Builder struct {
	raw   []byte
	first uint64
	last  uint64
	count uint32
}

// Add appends a record. Its LSN must be above the previous one's.
func (b *Builder) Add(lsn, epoch uint64, body []byte) error {
	if b.count > 0 && lsn <= b.last {
		return fmt.Errorf("record: LSN %d after %d in one block", lsn, b.last)
	}
	if b.count == math.MaxUint32 || len(b.raw)+3*binary.MaxVarintLen64+len(body) > MaxBlockSize {
		return fmt.Errorf("record: the block is full (%d bytes, %d records)", len(b.raw), b.count)
	}
	delta := uint64(0)
	if b.count == 0 {
		b.first = lsn
	} else {
		delta = lsn - b.last
	}
	b.raw = binary.AppendUvarint(b.raw, delta)
	b.raw = binary.AppendUvarint(b.raw, epoch)
	b.raw = binary.AppendUvarint(b.raw, uint64(len(body)))
	b.raw = append(b.raw, body...)
	b.last = lsn
	b.count++
	return nil
}

// Last returns the LSN of the last record added (0 when empty).
func (b *Builder) Last() uint64 { return b.last }

// Len returns the raw payload's size so far.
func (b *Builder) Len() int { return len(b.raw) }

// Count returns the number of records added.
func (b *Builder) Count() int { return int(b.count) }

// Reset empties the builder, keeping its buffer.
func (b *Builder) Reset() { *b = Builder{raw: b.raw[:0]} }

// Encoder turns builders into blocks. It holds compressor state; use one
// per goroutine.
type Encoder struct {
	// Compression is tried on payloads of at least MinCompress bytes and
	// kept when it saves at least an eighth.
	Compression Compression
	MinCompress int

	zenc    *zstd.Encoder
	scratch []byte
}

// Append appends the block of b's records to dst, for the segment seq,
// whose first synced bytes are durable.
func (e *Encoder) Append(dst []byte, seq uint64, synced uint32, b *Builder) ([]byte, error) {
	if b.count == 0 {
		return dst, errors.New("record: an empty block")
	}
	payload, flags := b.raw, None
	if e.Compression != None && len(b.raw) >= e.MinCompress {
		var err error
		if e.scratch, err = e.compress(e.scratch[:0], b.raw); err != nil {
			return dst, err
		}
		if len(e.scratch) <= len(b.raw)-len(b.raw)/8 {
			payload, flags = e.scratch, e.Compression
		}
	}
	start := len(dst)
	var h [BlockHeaderSize]byte
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(b.raw)))
	h[12] = byte(flags)
	binary.LittleEndian.PutUint64(h[16:], b.first)
	binary.LittleEndian.PutUint32(h[24:], b.count)
	binary.LittleEndian.PutUint32(h[28:], synced)
	dst = append(dst, h[:]...)
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start:], blockCRC(seq, dst[start+4:start+BlockHeaderSize], payload))
	return dst, nil
}

// AppendMarker appends a marker block for segment seq: no records, only
// a header whose synced field says how much of the segment is durable.
func AppendMarker(dst []byte, seq uint64, synced uint32) []byte {
	start := len(dst)
	var h [BlockHeaderSize]byte
	binary.LittleEndian.PutUint32(h[28:], synced)
	dst = append(dst, h[:]...)
	binary.LittleEndian.PutUint32(dst[start:], blockCRC(seq, dst[start+4:start+BlockHeaderSize], nil))
	return dst
}

// Close releases the encoder's resources.
func (e *Encoder) Close() {
	if e.zenc != nil {
		_ = e.zenc.Close() // closing an encoder that only ran EncodeAll cannot fail
	}
}

func (e *Encoder) compress(dst, src []byte) ([]byte, error) {
	switch e.Compression {
	case S2:
		return s2.Encode(dst[:cap(dst)], src), nil
	case Zstd:
		if e.zenc == nil {
			var err error
			if e.zenc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1)); err != nil {
				return nil, fmt.Errorf("record: zstd encoder: %w", err)
			}
		}
		return e.zenc.EncodeAll(src, dst), nil
	}
	return nil, fmt.Errorf("record: unknown compression %v", e.Compression)
}

func blockCRC(seq uint64, header, payload []byte) uint32 {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	c := crc32.Update(0, castagnoli, s[:])
	c = crc32.Update(c, castagnoli, header)
	return crc32.Update(c, castagnoli, payload)
}

// BlockHeader is a decoded block header.
type BlockHeader struct {
	CRC         uint32
	Stored      uint32
	Raw         uint32
	Compression Compression
	FirstLSN    uint64
	Count       uint32
	Synced      uint32
}

// Size returns the whole block's size in the file.
func (h BlockHeader) Size() int64 { return BlockHeaderSize + int64(h.Stored) }

// DecodeBlockHeader decodes a block header; an all-zero header is ErrEnd.
// It checks the fields it can alone; the checksum needs the payload
// (Decoder.Block).
func DecodeBlockHeader(b []byte) (BlockHeader, error) {
	if len(b) < BlockHeaderSize {
		return BlockHeader{}, fmt.Errorf("%w: block header of %d bytes", ErrCorrupt, len(b))
	}
	b = b[:BlockHeaderSize]
	if Blank(b) {
		return BlockHeader{}, ErrEnd
	}
	h := BlockHeader{
		CRC:         binary.LittleEndian.Uint32(b[0:]),
		Stored:      binary.LittleEndian.Uint32(b[4:]),
		Raw:         binary.LittleEndian.Uint32(b[8:]),
		Compression: Compression(b[12]),
		FirstLSN:    binary.LittleEndian.Uint64(b[16:]),
		Count:       binary.LittleEndian.Uint32(b[24:]),
		Synced:      binary.LittleEndian.Uint32(b[28:]),
	}
	switch {
	case h.Compression > Zstd:
		return h, fmt.Errorf("%w: block compression %d", ErrCorrupt, b[12])
	case b[13] != 0 || b[14] != 0 || b[15] != 0:
		return h, fmt.Errorf("%w: block reserved bytes are not zero", ErrCorrupt)
	case h.Stored > MaxBlockSize || h.Raw > MaxBlockSize || (h.Count == 0) != (h.Raw == 0):
		return h, fmt.Errorf("%w: block of %d stored, %d raw bytes and %d records", ErrCorrupt, h.Stored, h.Raw, h.Count)
	case h.Compression == None && h.Stored != h.Raw:
		return h, fmt.Errorf("%w: uncompressed block with %d stored and %d raw bytes", ErrCorrupt, h.Stored, h.Raw)
	}
	return h, nil
}

// Blank reports whether b is all zeros, as a segment is where nothing was
// written (it is preallocated zero-filled) or where a crash lost a sector.
func Blank(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Decoder checks and decompresses blocks. It holds decompressor state;
// use one per goroutine.
type Decoder struct {
	zdec *zstd.Decoder
	raw  []byte
}

// Block checks a block's checksum against the segment seq it was read
// from, decompresses its payload and returns its records. The records'
// bodies alias stored or the decoder's buffer, valid until the next call.
func (d *Decoder) Block(seq uint64, header []byte, h BlockHeader, stored []byte) ([]Record, error) {
	if len(header) < BlockHeaderSize {
		return nil, fmt.Errorf("%w: block header of %d bytes", ErrCorrupt, len(header))
	}
	if uint32(len(stored)) != h.Stored {
		return nil, fmt.Errorf("%w: block payload of %d bytes, want %d", ErrCorrupt, len(stored), h.Stored)
	}
	if got := blockCRC(seq, header[4:BlockHeaderSize], stored); got != h.CRC {
		return nil, fmt.Errorf("%w: block checksum %08x, want %08x", ErrCorrupt, got, h.CRC)
	}
	raw, err := d.decompress(h, stored)
	if err != nil {
		return nil, err
	}
	return parseRecords(raw, h)
}

func (d *Decoder) decompress(h BlockHeader, stored []byte) ([]byte, error) {
	var raw []byte
	var err error
	switch h.Compression {
	case None:
		return stored, nil
	case S2:
		n, e := s2.DecodedLen(stored)
		if e != nil || n != int(h.Raw) {
			return nil, fmt.Errorf("%w: s2 block of %d bytes, header says %d (%v)", ErrCorrupt, n, h.Raw, e)
		}
		raw, err = s2.Decode(d.raw[:cap(d.raw)], stored)
	case Zstd:
		if d.zdec == nil {
			if d.zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxBlockSize)); err != nil {
				return nil, fmt.Errorf("record: zstd decoder: %w", err)
			}
		}
		raw, err = d.zdec.DecodeAll(stored, d.raw[:0])
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v block: %v", ErrCorrupt, h.Compression, err)
	}
	if len(raw) != int(h.Raw) {
		return nil, fmt.Errorf("%w: block decompressed to %d bytes, header says %d", ErrCorrupt, len(raw), h.Raw)
	}
	d.raw = raw
	return raw, nil
}

// Close releases the decoder's resources.
func (d *Decoder) Close() {
	if d.zdec != nil {
		d.zdec.Close()
	}
}

func parseRecords(raw []byte, h BlockHeader) ([]Record, error) {
	recs := make([]Record, 0, min(h.Count, 4096))
	lsn := h.FirstLSN
	for i := uint32(0); i < h.Count; i++ {
		var vals [3]uint64
		for j := range vals {
			v, n := binary.Uvarint(raw)
			if n <= 0 {
				return nil, fmt.Errorf("%w: record %d of %d: a truncated or overlong number", ErrCorrupt, i, h.Count)
			}
			vals[j], raw = v, raw[n:]
		}
		delta, epoch, size := vals[0], vals[1], vals[2]
		switch {
		case i == 0 && delta != 0:
			return nil, fmt.Errorf("%w: the first record's LSN delta is %d", ErrCorrupt, delta)
		case i > 0 && (delta == 0 || lsn > math.MaxUint64-delta):
			return nil, fmt.Errorf("%w: record %d: LSN delta %d after LSN %d", ErrCorrupt, i, delta, lsn)
		case size > uint64(len(raw)):
			return nil, fmt.Errorf("%w: record %d: body of %d bytes, %d left", ErrCorrupt, i, size, len(raw))
		}
		lsn += delta
		recs = append(recs, Record{LSN: lsn, Epoch: epoch, Body: raw[:size:size]})
		raw = raw[size:]
	}
	if len(raw) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the block's %d records", ErrCorrupt, len(raw), h.Count)
	}
	return recs, nil
}
