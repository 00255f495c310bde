package logging

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// ErrCorrupt is returned, wrapped with the file and offset, for damage
// that is not a torn tail: a bad block followed by a good one, a missing
// segment, records out of order.
var ErrCorrupt = errors.New("logging: corrupt log")

// Tail is where a channel's valid data ends: the last segment read and
// the offset after its last good block. Torn says the bytes from there on
// are a torn write (a crash in the middle of the last write), which
// recovery truncates.
type Tail struct {
	Seq    uint64
	Offset int64
	Torn   bool
}

// channelReader reads one channel's records in LSN order, block by block.
type channelReader struct {
	fs   vfs.FS
	dir  string
	segs []uint64
	i    int // index in segs of the segment being read

	f    vfs.File
	size int64
	seq  uint64
	off  int64

	dec     record.Decoder
	recs    []record.Record
	next    int
	last    uint64 // LSN of the last record returned
	synced  int64  // the most any block read from this segment says was synced
	prevEnd int64  // where the previous segment's data ended; -1 before the first
	tail    Tail
	done    bool
}

func newChannelReader(fs vfs.FS, dir string) (*channelReader, error) {
	segs, err := listSegments(fs, dir)
	if err != nil {
		return nil, err
	}
	for i := 1; i < len(segs); i++ {
		if segs[i] != segs[i-1]+1 {
			return nil, fmt.Errorf("%w: %s: segment %s is missing (found %s and %s)", ErrCorrupt, dir, SegmentName(segs[i-1]+1), SegmentName(segs[i-1]), SegmentName(segs[i]))
		}
	}
	return &channelReader{fs: fs, dir: dir, segs: segs, prevEnd: -1}, nil
}

func (r *channelReader) name() string { return filepath.Join(r.dir, SegmentName(r.seq)) }

// next returns the channel's next record; ok is false at the end of its
// valid data.
func (r *channelReader) nextRecord() (rec record.Record, ok bool, err error) {
	for r.next >= len(r.recs) {
		if r.done {
			return record.Record{}, false, nil
		}
		if err := r.readBlock(); err != nil {
			return record.Record{}, false, err
		}
	}
	rec = r.recs[r.next]
	r.next++
	r.last = rec.LSN
	return rec, true, nil
}

// readBlock reads the next block into r.recs, moving through segments;
// at the end of the data it sets r.done and r.tail.
func (r *channelReader) readBlock() error {
	r.recs, r.next = nil, 0
	for !r.done {
		if r.f == nil {
			if r.i == len(r.segs) {
				r.done = true
				return nil
			}
			if err := r.openSegment(); err != nil {
				return err
			}
			continue // r.done is set if its header was torn
		}
		if r.off+record.BlockHeaderSize > r.size {
			if err := r.endSegment(); err != nil {
				return err
			}
			continue
		}
		hdr := make([]byte, record.BlockHeaderSize)
		if _, err := r.f.ReadAt(hdr, r.off); err != nil {
			return fmt.Errorf("logging: read %s at %d: %w", r.name(), r.off, err)
		}
		h, err := record.DecodeBlockHeader(hdr)
		if errors.Is(err, record.ErrEnd) {
			if err := r.endOfData(); err != nil {
				return err
			}
			continue
		}
		if err == nil && r.off+h.Size() > r.size {
			err = fmt.Errorf("%w: a block of %d bytes passes the end of the file", record.ErrCorrupt, h.Size())
		}
		var recs []record.Record
		if err == nil {
			payload := make([]byte, h.Stored)
			if _, err = r.f.ReadAt(payload, r.off+record.BlockHeaderSize); err == nil {
				recs, err = r.dec.Block(r.seq, hdr, h, payload)
			}
		}
		if err != nil {
			return r.badBlock(err)
		}
		if len(recs) == 0 { // a marker
			r.synced = max(r.synced, int64(h.Synced))
			r.off += h.Size()
			r.tail = Tail{Seq: r.seq, Offset: r.off}
			continue
		}
		if recs[0].LSN <= r.last {
			return fmt.Errorf("%w: %s at offset %d: LSN %d after %d", ErrCorrupt, r.name(), r.off, recs[0].LSN, r.last)
		}
		r.recs = recs
		r.synced = max(r.synced, int64(h.Synced))
		r.off += h.Size()
		r.tail = Tail{Seq: r.seq, Offset: r.off}
		return nil
	}
	return nil
}

// openSegment opens segs[i] and checks its header. A damaged header on
// the last segment, with nothing valid after it, is a torn creation.
func (r *channelReader) openSegment() error {
	r.seq = r.segs[r.i]
	f, err := r.fs.Open(r.name())
	if err != nil {
		return fmt.Errorf("logging: open %s: %w", r.name(), err)
	}
	size, err := f.Size()
	if err != nil {
		return errors.Join(fmt.Errorf("logging: size of %s: %w", r.name(), err), f.Close())
	}
	r.f, r.size, r.off, r.synced = f, size, 0, 0
	hdr := make([]byte, record.SegmentHeaderSize)
	var h record.SegmentHeader
	if _, err = f.ReadAt(hdr, 0); err == nil {
		if h, err = record.DecodeSegmentHeader(hdr); err == nil && h.Seq != r.seq {
			err = fmt.Errorf("%w: the header says segment %d", record.ErrCorrupt, h.Seq)
		}
	}
	if err != nil {
		return r.badBlock(fmt.Errorf("segment header: %w", err))
	}
	// The previous segment was synced whole, to PrevEnd, before this one
	// was created: its data must have ended exactly there.
	if h.PrevEnd != 0 && r.prevEnd >= 0 && uint64(r.prevEnd) != h.PrevEnd {
		return fmt.Errorf("%w: %s: its data ends at offset %d, but %s says it was synced to offset %d", ErrCorrupt,
			filepath.Join(r.dir, SegmentName(r.seq-1)), r.prevEnd, r.name(), h.PrevEnd)
	}
	r.off = record.SegmentHeaderSize
	r.tail = Tail{Seq: r.seq, Offset: r.off}
	return nil
}

// endOfData handles a zero block header: the end of the segment's data,
// unless proven otherwise. In a segment with a successor, the successor's
// PrevEnd checks the end (openSegment). In the last segment, a valid block
// further on whose synced field passes this offset proves the zeros a
// lost synced block: corruption. Valid blocks further on that prove
// nothing were written after the last sync and are a torn tail.
func (r *channelReader) endOfData() error {
	if r.i == len(r.segs)-1 {
		found, synced, err := r.validBlocksAfter()
		if err != nil {
			return err
		}
		if w := max(r.synced, synced); r.off < w {
			return fmt.Errorf("%w: %s at offset %d: a blank block header where the segment was synced to offset %d", ErrCorrupt, r.name(), r.off, w)
		}
		if found {
			r.tail = Tail{Seq: r.seq, Offset: r.off, Torn: true}
			r.done = true
			return r.closeCurrent()
		}
	}
	return r.endSegment()
}

// endSegment closes the segment read to its end and moves to the next.
func (r *channelReader) endSegment() error {
	r.prevEnd = r.off
	err := r.f.Close()
	r.f = nil
	r.i++
	if err != nil {
		return fmt.Errorf("logging: close %s: %w", r.name(), err)
	}
	return nil
}

// badBlock decides what a block (or segment header) that does not decode
// at r.off is: corruption, which stops recovery, or a torn tail, where the
// channel's data ends.
//
// The writer syncs a segment's preallocation and header before its blocks
// and a whole segment before starting the next, and each block (markers
// included) records how much of its segment was synced when it was
// written (segmentWriter). So the bad block is corruption if a later
// segment exists, or if a valid block of this segment (before or after
// it) says the bytes at r.off were synced. Past that proof, a torn write shows as zeros: the
// segment was zero-filled and synced before the block was written, and a
// sector the crash did not keep reads back as it was synced (lostSector).
// So the bad block is torn if it shows a lost sector, and corruption
// otherwise.
func (r *channelReader) badBlock(cause error) error {
	name, off := r.name(), r.off
	if r.i < len(r.segs)-1 {
		later := filepath.Join(r.dir, SegmentName(r.segs[r.i+1]))
		return fmt.Errorf("%w: %s at offset %d: %v (the segment was synced whole before %s was created)", ErrCorrupt, name, off, cause, later)
	}
	_, synced, err := r.validBlocksAfter()
	if err != nil {
		return err
	}
	if w := max(r.synced, synced); off < w {
		return fmt.Errorf("%w: %s at offset %d: %v (the segment was synced to offset %d)", ErrCorrupt, name, off, cause, w)
	}
	torn, err := r.lostSector()
	if err != nil {
		return err
	}
	if !torn {
		return fmt.Errorf("%w: %s at offset %d: %v (past the synced data, but not a torn write: no sector of it is blank)", ErrCorrupt, name, off, cause)
	}
	r.tail = Tail{Seq: r.seq, Offset: off, Torn: true}
	r.done = true
	return r.closeCurrent()
}

// lostSector reports whether the bad block at r.off shows a sector the
// crash did not keep. Such a sector reads back as it was last synced:
// zeros from the block's first byte in it onwards (the bytes before, in
// the block's first sector, belong to earlier, synced blocks). So the
// block is torn if, in its first sector, its own bytes are all zero, or
// if a later sector it spans is zero from its start to the end of the
// sector. The block's extent comes from its header when that is
// plausible, else it is taken to be one sector (or, at offset 0, the
// segment header).
//
// A block that is corrupt, and also happens to hold such zeros where a
// sector boundary falls, is taken for torn; the zeros would have to be in
// the compressed payload, or make up the block's last bytes.
func (r *channelReader) lostSector() (bool, error) {
	end := r.off + vfs.SectorSize
	if r.off == 0 {
		end = record.SegmentHeaderSize
	} else if hdr, err := readAt(r.f, r.off, record.BlockHeaderSize); err == nil {
		if h, err := record.DecodeBlockHeader(hdr); err == nil {
			end = r.off + h.Size()
		}
	}
	end = min(end, r.size)
	if end <= r.off {
		return true, nil // nothing of it is in the file
	}
	first := r.off / vfs.SectorSize * vfs.SectorSize
	last := min((end+vfs.SectorSize-1)/vfs.SectorSize*vfs.SectorSize, r.size)
	data, err := readAt(r.f, first, int(last-first))
	if err != nil {
		return false, err
	}
	if record.Blank(data[r.off-first : min(first+vfs.SectorSize, end)-first]) {
		return true, nil
	}
	for sec := first + vfs.SectorSize; sec < last; sec += vfs.SectorSize {
		if record.Blank(data[sec-first : min(sec+vfs.SectorSize, last)-first]) {
			return true, nil
		}
	}
	return false, nil
}

func readAt(f vfs.File, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("logging: read %s at %d: %w", f.Name(), off, err)
	}
	return b, nil
}

func (r *channelReader) closeCurrent() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	if err != nil {
		return fmt.Errorf("logging: close %s: %w", r.name(), err)
	}
	return nil
}

// validBlocksAfter searches the rest of the current segment, past r.off,
// for valid blocks, and returns whether it found any and the most their
// synced fields say.
func (r *channelReader) validBlocksAfter() (found bool, synced int64, err error) {
	data, err := readAll(r.fs, r.name())
	if err != nil {
		return false, 0, err
	}
	found, synced = scan(data, r.off+1, r.seq)
	return found, synced, nil
}

// scan looks for valid blocks of segment seq starting anywhere in data at
// or after from, and returns whether it found any and the most their
// synced fields say.
func scan(data []byte, from int64, seq uint64) (found bool, synced int64) {
	var dec record.Decoder
	defer dec.Close()
	for p := from; p+record.BlockHeaderSize <= int64(len(data)); p++ {
		h, err := record.DecodeBlockHeader(data[p:])
		if err != nil || p+h.Size() > int64(len(data)) {
			continue
		}
		if _, err := dec.Block(seq, data[p:], h, data[p+record.BlockHeaderSize:p+h.Size()]); err == nil {
			found, synced = true, max(synced, int64(h.Synced))
		}
	}
	return found, synced
}

func readAll(fs vfs.FS, name string) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("logging: open %s: %w", name, err)
	}
	size, err := f.Size()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("logging: size of %s: %w", name, err), f.Close())
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, errors.Join(fmt.Errorf("logging: read %s: %w", name, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("logging: close %s: %w", name, err)
	}
	return data, nil
}

// Reader reads the records of all channels merged in LSN order, from the
// first LSN after a given one, and stops at the first gap (SPEC 3): a LSN
// that no channel holds ends recovery, because no later commit may be
// acknowledged while an earlier one is missing.
type Reader struct {
	chans []*channelReader
	heads []*record.Record // each channel's next record; nil when done
	want  uint64           // the next LSN to return
	after uint64
}

// NewReader reads the channels in dirs, skipping records with LSNs up to
// and including after (those an image already holds).
func NewReader(fs vfs.FS, dirs []string, after uint64) (*Reader, error) {
	r := &Reader{want: after + 1, after: after}
	for _, d := range dirs {
		c, err := newChannelReader(fs, d)
		if err != nil {
			return nil, err
		}
		r.chans = append(r.chans, c)
		r.heads = append(r.heads, nil)
	}
	for i := range r.chans {
		if err := r.advance(i); err != nil {
			return nil, errors.Join(err, r.Close())
		}
	}
	return r, nil
}

func (r *Reader) advance(i int) error {
	rec, ok, err := r.chans[i].nextRecord()
	if err != nil {
		return err
	}
	r.heads[i] = nil
	if ok {
		r.heads[i] = &rec
	}
	return nil
}

// Next returns the next record in LSN order; ok is false at the end of
// the log or at the first gap. The record's body is valid until the next
// call.
func (r *Reader) Next() (rec record.Record, ok bool, err error) {
	for {
		min := -1
		for i, h := range r.heads {
			if h != nil && (min < 0 || h.LSN < r.heads[min].LSN) {
				min = i
			}
		}
		if min < 0 || r.heads[min].LSN > r.want {
			return record.Record{}, false, nil
		}
		rec = *r.heads[min]
		if rec.LSN < r.want && rec.LSN > r.after {
			return record.Record{}, false, fmt.Errorf("%w: LSN %d is in two channels", ErrCorrupt, rec.LSN)
		}
		rec.Body = append([]byte(nil), rec.Body...) // the channel's buffer moves on
		if err := r.advance(min); err != nil {
			return record.Record{}, false, err
		}
		if rec.LSN < r.want {
			continue // held by the image
		}
		r.want++
		return rec, true, nil
	}
}

// Last returns the LSN of the last record returned (or the starting
// point, before any).
func (r *Reader) Last() uint64 { return r.want - 1 }

// Tails returns where each channel's valid data ends, once Next has
// returned false. A channel whose records past a gap were not read has
// its tail where reading stopped.
func (r *Reader) Tails() []Tail {
	tails := make([]Tail, len(r.chans))
	for i, c := range r.chans {
		tails[i] = c.tail
	}
	return tails
}

// Close releases the readers' resources.
func (r *Reader) Close() error {
	var errs []error
	for _, c := range r.chans {
		c.dec.Close()
		errs = append(errs, c.closeCurrent())
	}
	return errors.Join(errs...)
}
