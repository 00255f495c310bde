package logging

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// ErrCorrupt is returned, wrapped with the file and offset, for damage
// that is not a torn tail: a bad block followed by a good one, a missing
// segment, records out of order.
var ErrCorrupt = errors.New("logging: corrupt log")

// ErrReleased is returned, wrapped with ErrCorrupt, when a reader is to
// start after an LSN whose following records were in segments that are
// gone: released after an image (Log.Release), or lost; or were never in
// the log, which began after an image's LSN. Recovery, which
// needs them, finds the log corrupt; a primary catching up a standby
// finds that the standby needs an image instead.
var ErrReleased = errors.New("logging: the segments holding the records asked for are gone")

// ErrMismatch is returned, wrapped, when the log in the directories is
// not the one the configuration describes: another channel count, a
// channel's directory missing or in another's place.
var ErrMismatch = errors.New("logging: the log does not match its configuration")

// Tail is where a channel's valid data ends: the last segment read and
// the offset after its last good block. Torn says the bytes from there on
// are a torn write (a crash in the middle of the last write), which
// recovery truncates. Corrupt says reading stopped at damage that
// recovery was told to ignore (Err): the bytes from there on, and the
// channel's later segments, are set aside. Void, if not zero, bounds the
// records of the tail's segment that recovery read: an opening of the log
// in a later segment, set aside with it, voided those above it, and the
// next opening must go on voiding them (Open). When the damage sets aside
// the whole channel (Corrupt with Seq 0), Void is the LSN the log was read
// after, zero included: the channel keeps no record, and its next opening
// bounds its records by that LSN, not by the LSN recovery reached on the
// other channels, which would read as a log begun after a later image.
type Tail struct {
	Seq     uint64
	Offset  int64
	Torn    bool
	Corrupt bool
	Err     error
	Void    uint64
}

// channelReader reads one channel's records in LSN order, block by block.
//
// Before reading it decodes every segment's header: a segment's data ends
// where its successor's header says (prevEnd), and the first segment of
// each opening of the log voids the records above its base in the
// segments before it (record.FlagOpened).
//
// A live reader reads a log that is being written (Log.NewReader). Its
// last segment's end is not known, and what follows its last whole block
// may be a write in progress: a block not yet written or half written, a
// marker whose synced field passes where the reader found zeros, a
// segment not yet listed. So it judges nothing there: it stops (stalled)
// at whatever it cannot read, damage or not, and refresh later reads on
// from there, with fresh bytes and segments. Whether what stopped it was
// damage is for the Reader to tell: it is when a record the log has
// written is still missing after a refresh.
type channelReader struct {
	fs     vfs.FS
	dir    string
	ignore bool // stop at corruption instead of failing (recovery_ignore_corruption)
	segs   []uint64
	ends   []int64  // ends[i]: where segs[i]'s data ends; -1 for the last segment
	voids  []uint64 // voids[i]: records of segs[i] above it are void
	mapped bool     // the last segment was written through a mapping (record.FlagMapped)
	cut    bool     // segments after the last of segs were dropped for damage
	cutErr error    // why
	found  bool     // the directory held segments
	listed int      // how many, counting those not needed after the image
	i      int      // index in segs of the segment being read

	// live says the log is being written (see above); stall says why a
	// live reader stopped where it is (nil while it reads); channel and
	// channels check the headers of the segments it lists later.
	live              bool
	stall             error
	channel, channels int

	f    vfs.File
	size int64
	seq  uint64
	off  int64
	// win holds the segment's bytes from offset winOff: blocks are read
	// out of it, and it is refilled with one large read when a block
	// passes its end.
	win    []byte
	winOff int64

	dec    record.Decoder
	recs   []record.Record
	recsAt int64 // where the block recs came from begins, in segment seq
	next   int
	last   uint64 // LSN of the last record kept
	synced int64  // the most any block read from this segment says was synced
	tail   Tail
	done   bool
}

func newChannelReader(fs vfs.FS, dir string, channel, channels int, ignore bool, after uint64) (*channelReader, error) {
	segs, err := listSegments(fs, dir)
	if err != nil {
		return nil, err
	}
	r := &channelReader{fs: fs, dir: dir, ignore: ignore, found: len(segs) > 0, listed: len(segs), channel: channel, channels: channels}
	segs = neededSegments(fs, dir, segs, after)
	var hdrs []record.SegmentHeader
	cutVoid := uint64(math.MaxUint64)
	for i, seq := range segs {
		if i > 0 && seq != segs[i-1]+1 {
			err = fmt.Errorf("%w: %s: segment %s is missing (found %s and %s)", ErrCorrupt, dir, SegmentName(segs[i-1]+1), SegmentName(segs[i-1]), SegmentName(seq))
		} else {
			var h record.SegmentHeader
			h, err = readSegmentHeader(fs, dir, seq)
			if err == nil && (int(h.Channel) != channel || int(h.Channels) != channels) {
				return nil, fmt.Errorf("%w: %s belongs to channel %d of a log with %d channels, but its directory is configured as channel %d of %d: restore the log_channels setting the log was written with",
					ErrMismatch, filepath.Join(dir, SegmentName(seq)), h.Channel, h.Channels, channel, channels)
			}
			if err == nil && i > 0 && h.PrevEnd == 0 {
				err = fmt.Errorf("%w: %s does not say where %s ended", ErrCorrupt, filepath.Join(dir, SegmentName(seq)), SegmentName(segs[i-1]))
			}
			switch bound, ok := h.Bound(); {
			case err != nil || i != 0:
			case seq != 1 && (!ok || bound > after):
				err = fmt.Errorf("%w: %w: %s: the segments before it are gone, but they held records up to LSN %d and the log is read from LSN %d (the image they were removed for is missing?)",
					ErrCorrupt, ErrReleased, filepath.Join(dir, SegmentName(seq)), bound, after+1)
			case ok && bound > after:
				// The log's first segment: its base is the LSN the log
				// was first opened after (an image's), and it never held
				// the records up to it.
				err = fmt.Errorf("%w: %w: %s: the log begins after LSN %d (it was started from an image) and is read from LSN %d (the image is missing?)",
					ErrCorrupt, ErrReleased, filepath.Join(dir, SegmentName(seq)), bound, after+1)
			}
			hdrs = append(hdrs, h)
		}
		if err != nil {
			// Only damage is ignored: a segment that cannot be read now
			// (an I/O error, a permission) is no reason to set it aside.
			if !ignore || !errors.Is(err, ErrCorrupt) {
				return nil, err
			}
			// Read up to the damage; the rest is set aside. The openings
			// recorded past the damage still void what they voided.
			r.cut, r.cutErr = true, err
			for _, later := range segs[i:] {
				if h, err := readSegmentHeader(fs, dir, later); err == nil && h.Opened() {
					cutVoid = min(cutVoid, h.Base)
				}
			}
			segs, hdrs = segs[:i], hdrs[:i]
			break
		}
	}
	r.segs = segs
	if len(hdrs) > 0 {
		r.mapped = hdrs[len(hdrs)-1].Mapped()
	}
	r.ends = make([]int64, len(segs))
	r.voids = make([]uint64, len(segs))
	void := cutVoid
	for i := len(segs) - 1; i >= 0; i-- {
		r.voids[i], r.ends[i] = void, -1
		if i+1 < len(segs) {
			r.ends[i] = int64(hdrs[i+1].PrevEnd)
		}
		if hdrs[i].Opened() {
			void = min(void, hdrs[i].Base)
		}
	}
	return r, nil
}

// neededSegments drops from segs (a channel's segments, in order) those
// that hold no record past LSN after: the ones before the last segment
// whose header bounds its predecessors' records at or below after
// (SegmentHeader.Bound). A checkpoint removes such segments, oldest first,
// so what is left of them, and any hole their removal left, is not read.
// A header that cannot be read stops the search; reading from the start
// then reports it.
func neededSegments(fs vfs.FS, dir string, segs []uint64, after uint64) []uint64 {
	for i := len(segs) - 1; i > 0; i-- {
		h, err := readSegmentHeader(fs, dir, segs[i])
		if err != nil {
			break
		}
		if bound, ok := h.Bound(); ok && bound <= after {
			return segs[i:]
		}
	}
	return segs
}

// readSegmentHeader reads and decodes the header of segment seq in dir.
func readSegmentHeader(fs vfs.FS, dir string, seq uint64) (record.SegmentHeader, error) {
	name := filepath.Join(dir, SegmentName(seq))
	f, err := fs.Open(name)
	if err != nil {
		return record.SegmentHeader{}, fmt.Errorf("logging: open %s: %w", name, err)
	}
	b, err := readAt(f, 0, record.SegmentHeaderSize)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("logging: close %s: %w", name, cerr)
	}
	if err != nil {
		return record.SegmentHeader{}, err
	}
	h, err := record.DecodeSegmentHeader(b)
	if err == nil && h.Seq != seq {
		err = fmt.Errorf("%w: the header says segment %d", record.ErrCorrupt, h.Seq)
	}
	switch {
	case errors.Is(err, record.ErrVersion):
		// Not damage: recovery_ignore_corruption must not set aside
		// what a newer build wrote.
		return record.SegmentHeader{}, fmt.Errorf("logging: %s: %w (a newer build wrote it: start the node with that build)", name, err)
	case err != nil:
		return record.SegmentHeader{}, fmt.Errorf("%w: %s at offset 0: segment header: %v", ErrCorrupt, name, err)
	}
	return h, nil
}

func (r *channelReader) name() string { return filepath.Join(r.dir, SegmentName(r.seq)) }

// nextRecord returns the channel's next record; ok is false at the end of
// its valid data.
func (r *channelReader) nextRecord() (rec record.Record, ok bool, err error) {
	for r.next >= len(r.recs) {
		if r.done || r.stall != nil {
			return record.Record{}, false, nil
		}
		if err := r.readBlock(); err != nil {
			if r.live && errors.Is(err, ErrCorrupt) {
				r.stall = err // see channelReader; refresh reads on
				continue
			}
			if !r.ignore || !errors.Is(err, ErrCorrupt) {
				return record.Record{}, false, err
			}
			// Stop here; the rest of the channel is set aside.
			r.tail = Tail{Seq: r.seq, Offset: r.off, Corrupt: true, Err: err}
			r.recs, r.done = nil, true
			if err := r.closeCurrent(); err != nil {
				return record.Record{}, false, err
			}
		}
	}
	rec = r.recs[r.next]
	r.next++
	r.last = rec.LSN
	return rec, true, nil
}

// readBlock reads the next block into r.recs (without its void records),
// moving through segments; at the end of the data it sets r.done and
// r.tail.
func (r *channelReader) readBlock() error {
	r.recs, r.next = nil, 0
	for !r.done {
		if r.f == nil {
			if r.i == len(r.segs) {
				if r.live {
					return fmt.Errorf("%w: %s holds no segment yet", ErrCorrupt, r.dir)
				}
				r.done = true
				return nil
			}
			if err := r.openSegment(); err != nil {
				return err
			}
			continue
		}
		end := r.ends[r.i]
		if end >= 0 && r.off == end {
			if err := r.endSegment(); err != nil {
				return err
			}
			continue
		}
		if end >= 0 && r.off > end {
			return fmt.Errorf("%w: %s: its data runs to offset %d, past offset %d, where %s says it ended", ErrCorrupt, r.name(), r.off, end, SegmentName(r.segs[r.i+1]))
		}
		if r.off+record.BlockHeaderSize > r.size {
			if end >= 0 {
				return fmt.Errorf("%w: %s: its data ends at offset %d (the end of the file), but %s says it ended at offset %d", ErrCorrupt, r.name(), r.off, SegmentName(r.segs[r.i+1]), end)
			}
			if r.live {
				return fmt.Errorf("%w: %s: its data reaches the end of the file at offset %d, and no later segment is listed", ErrCorrupt, r.name(), r.off)
			}
			if err := r.endSegment(); err != nil {
				return err
			}
			continue
		}
		hdr, err := r.bytesAt(r.off, record.BlockHeaderSize)
		if err != nil {
			return err
		}
		h, err := record.DecodeBlockHeader(hdr)
		if errors.Is(err, record.ErrEnd) && r.live && end < 0 {
			return fmt.Errorf("%w: %s at offset %d: a blank block header", ErrCorrupt, r.name(), r.off)
		}
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
			var block []byte
			if block, err = r.bytesAt(r.off, int(h.Size())); err != nil {
				return err
			}
			recs, err = r.dec.Block(r.seq, block[:record.BlockHeaderSize], h, block[record.BlockHeaderSize:])
		}
		if err != nil && r.live && end < 0 {
			return fmt.Errorf("%w: %s at offset %d: %v", ErrCorrupt, r.name(), r.off, err)
		}
		if err != nil {
			return r.badBlock(err)
		}
		r.synced = max(r.synced, int64(h.Synced))
		if len(recs) > 0 && recs[0].LSN <= r.last {
			return fmt.Errorf("%w: %s at offset %d: LSN %d after %d", ErrCorrupt, r.name(), r.off, recs[0].LSN, r.last)
		}
		r.recsAt = r.off
		r.off += h.Size()
		r.tail = Tail{Seq: r.seq, Offset: r.off}
		for len(recs) > 0 && recs[len(recs)-1].LSN > r.voids[r.i] {
			recs = recs[:len(recs)-1]
		}
		if len(recs) > 0 {
			r.recs = recs
			return nil
		}
	}
	return nil
}

// openSegment opens segs[i]; its header was checked when the reader was
// made.
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
	r.f, r.size, r.off, r.synced = f, size, record.SegmentHeaderSize, 0
	r.win = r.win[:0]
	r.tail = Tail{Seq: r.seq, Offset: r.off}
	return nil
}

// endOfData handles a zero block header: the end of the last segment's
// data, unless proven otherwise. (In an earlier segment it is damage: its
// successor's header says where its data ends.) A valid block further on
// whose synced field passes this offset proves the zeros a lost synced
// block: corruption. Valid blocks further on that prove nothing were
// written after the last sync and are a torn tail.
func (r *channelReader) endOfData() error {
	if end := r.ends[r.i]; end >= 0 {
		return fmt.Errorf("%w: %s at offset %d: a blank block header, but %s says the segment's data ended at offset %d", ErrCorrupt, r.name(), r.off, SegmentName(r.segs[r.i+1]), end)
	}
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
	return r.endSegment()
}

// endSegment closes the segment read to its end and moves to the next.
func (r *channelReader) endSegment() error {
	err := r.f.Close()
	r.f = nil
	r.i++
	if err != nil {
		return fmt.Errorf("logging: close %s: %w", r.name(), err)
	}
	return nil
}

// refresh has a live reader that stalled read on from where it stopped:
// it forgets the bytes it read ahead and the segment's size, and lists
// the segments created since, whose headers say where the segments
// before them ended.
func (r *channelReader) refresh() error {
	r.stall = nil
	r.win = r.win[:0]
	if r.f != nil {
		size, err := r.f.Size()
		if err != nil {
			return fmt.Errorf("logging: size of %s: %w", r.name(), err)
		}
		r.size = size
	}
	segs, err := listSegments(r.fs, r.dir)
	if err != nil {
		return err
	}
	if n := len(r.segs); n > 0 && len(segs) > 0 && segs[0] > r.segs[n-1]+1 {
		// Release removes segments oldest first, and never the one being
		// written: the one read last is gone, and the next with it.
		return fmt.Errorf("%w: %w: %s: segments %s to %s were released while they were read (an image holds their records)",
			ErrCorrupt, ErrReleased, r.dir, SegmentName(r.segs[n-1]+1), SegmentName(segs[0]-1))
	}
	for _, seq := range segs {
		n := len(r.segs)
		if n > 0 && seq <= r.segs[n-1] {
			continue // read already, or released since
		}
		if n > 0 && seq != r.segs[n-1]+1 {
			return fmt.Errorf("%w: %s: segment %s is missing (found %s and %s)", ErrCorrupt, r.dir, SegmentName(r.segs[n-1]+1), SegmentName(r.segs[n-1]), SegmentName(seq))
		}
		h, err := readSegmentHeader(r.fs, r.dir, seq)
		if err != nil {
			return err
		}
		name := filepath.Join(r.dir, SegmentName(seq))
		if int(h.Channel) != r.channel || int(h.Channels) != r.channels {
			return fmt.Errorf("%w: %s belongs to channel %d of a log with %d channels, not to channel %d of %d", ErrMismatch, name, h.Channel, h.Channels, r.channel, r.channels)
		}
		if n > 0 {
			if h.PrevEnd == 0 {
				return fmt.Errorf("%w: %s does not say where %s ended", ErrCorrupt, name, SegmentName(r.segs[n-1]))
			}
			r.ends[n-1] = int64(h.PrevEnd)
		}
		if h.Opened() { // the log was opened again: see newChannelReader
			for i := range r.voids {
				r.voids[i] = min(r.voids[i], h.Base)
			}
		}
		r.segs, r.ends, r.voids = append(r.segs, seq), append(r.ends, -1), append(r.voids, math.MaxUint64)
		r.mapped = h.Mapped()
	}
	return nil
}

// badBlock decides what a block that does not decode at r.off is:
// corruption, which stops recovery, or a torn tail, where the channel's
// data ends.
//
// The writer syncs a segment's preallocation and header before its blocks
// and a whole segment before starting the next, and each block (markers
// included) records how much of its segment was synced when it was
// written (segmentWriter). So the bad block is corruption if it lies
// before where the next segment's header says this one ended, or if a
// valid block of this segment (before or after it) says the bytes at
// r.off were synced. Past that proof, a torn write shows as zeros: the
// segment was zero-filled and synced before the block was written, and a
// sector the crash did not keep reads back as it was synced (lostSector).
// So the bad block is torn if it shows a lost sector, and corruption
// otherwise. A mapped segment (mmap-log) has no such evidence: the kernel
// writes its pages back whenever and in whatever order it likes, an msync
// included, and a page can go out while a block is being copied into it,
// so past the proof a power loss can leave any mix of old and new sectors
// with valid blocks after them. There a bad block past the proof is torn.
func (r *channelReader) badBlock(cause error) error {
	name, off := r.name(), r.off
	if end := r.ends[r.i]; end >= 0 {
		return fmt.Errorf("%w: %s at offset %d: %v (%s says this segment was synced to offset %d)", ErrCorrupt, name, off, cause, SegmentName(r.segs[r.i+1]), end)
	}
	_, synced, err := r.validBlocksAfter()
	if err != nil {
		return err
	}
	if w := max(r.synced, synced); off < w {
		return fmt.Errorf("%w: %s at offset %d: %v (the segment was synced to offset %d)", ErrCorrupt, name, off, cause, w)
	}
	torn := r.mapped
	if !torn {
		if torn, err = r.lostSector(); err != nil {
			return err
		}
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
// plausible, else it is taken to be one sector.
//
// A block that is corrupt, and also happens to hold such zeros where a
// sector boundary falls, is taken for torn; the zeros would have to be in
// the compressed payload, or make up the block's last bytes.
func (r *channelReader) lostSector() (bool, error) {
	end := r.off + vfs.SectorSize
	if hdr, err := readAt(r.f, r.off, record.BlockHeaderSize); err == nil {
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

// readAhead is how much of a segment one read brings into the window.
const readAhead = 1 << 20

// bytesAt returns n bytes of the current segment at offset off, which
// the caller has checked lie within the file. They are valid until the
// next call: the window they come from is refilled in place.
func (r *channelReader) bytesAt(off int64, n int) ([]byte, error) {
	if off < r.winOff || off+int64(n) > r.winOff+int64(len(r.win)) {
		m := int(min(max(int64(n), readAhead), r.size-off))
		if cap(r.win) < m {
			r.win = make([]byte, m)
		}
		k, err := r.f.ReadAt(r.win[:m], off)
		r.win, r.winOff = r.win[:k], off
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("logging: read %s at %d: %w", r.name(), off, err)
		}
		if k < n {
			return nil, fmt.Errorf("logging: read %s at %d: %d bytes, the file shrank under the reader", r.name(), off, k)
		}
	}
	return r.win[off-r.winOff : off-r.winOff+int64(n)], nil
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
	data, err := vfs.ReadFile(r.fs, r.name())
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
		if data[p] == 0 {
			// An all-zero header is never a block, so skip the headers
			// that would start in a run of zeros: the preallocated rest
			// of a segment is tens of MiB of them.
			nz := nonZero(data[p:])
			if nz < 0 {
				break
			}
			p += max(0, int64(nz)-(record.BlockHeaderSize-1))
		}
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

// nonZero returns the index of the first byte of b that is not zero, or
// -1; it compares eight bytes at a time.
func nonZero(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}

// Reader reads the records of all channels merged in LSN order, from the
// first LSN after a given one, and stops at the first gap (SPEC 3): a LSN
// that no channel holds ends recovery, because no later commit may be
// acknowledged while an earlier one is missing.
type Reader struct {
	chans []*channelReader
	heads []record.Record // each channel's next record, if has says so
	has   []bool
	// taken is the channel whose head Next returned last (-1: none): it
	// moves on at the next call, so that the record stays valid until
	// then.
	taken int
	want  uint64 // the next LSN to return
	after uint64
	gap   bool // Next stopped where a channel held a later LSN
	// written, for a reader of a live log (Log.NewReader), returns the
	// log's written LSN: the records up to it are in the files, whole.
	written func() uint64
	// from is where the record Next returned last was: its block's
	// segment file and offset, to name if another channel holds it too.
	from struct {
		c   int
		seq uint64
		at  int64
	}
}

// ReaderOptions say what a Reader reads.
type ReaderOptions struct {
	FS   vfs.FS   // nil means vfs.Default
	Dirs []string // the channels' directories, in channel order
	// After skips the records with LSNs up to and including it (those an
	// image already holds).
	After uint64
	// IgnoreCorruption makes a channel's data end at corruption instead of
	// failing (recovery_ignore_corruption); the Tail says so.
	IgnoreCorruption bool
}

// NewReader reads the log in opts.Dirs. Every directory must hold
// segments of the same log, written with as many channels as there are
// directories, or none may.
func NewReader(opts ReaderOptions) (*Reader, error) { return newReader(opts, nil, nil) }

// opening is a live log's opening of a channel (Log.Open): its segment
// seq+1, with record.FlagOpened, voids the records above base in the
// segments up to seq.
type opening struct{ seq, base uint64 }

// newReader is NewReader, of a live log if written is set (Reader.written)
// that opened its channels with openings. A live reader voids what each
// opening does itself, as the opening segment may not be written yet (a
// log opened on a full disk): the records it voids would otherwise be
// read as the log's, which gives their LSNs to new records.
func newReader(opts ReaderOptions, written func() uint64, openings []opening) (*Reader, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	r := &Reader{want: opts.After + 1, after: opts.After, taken: -1, written: written}
	var empty, full []string
	for i, d := range opts.Dirs {
		c, err := newChannelReader(opts.FS, d, i, len(opts.Dirs), opts.IgnoreCorruption, opts.After)
		if err != nil {
			return nil, err
		}
		c.live = written != nil
		if openings != nil {
			for j, seq := range c.segs {
				if seq <= openings[i].seq {
					c.voids[j] = min(c.voids[j], openings[i].base)
				}
			}
		}
		if c.found {
			full = append(full, d)
		} else {
			empty = append(empty, d)
		}
		r.chans = append(r.chans, c)
		r.heads, r.has = append(r.heads, record.Record{}), append(r.has, false)
	}
	for i := range r.chans {
		if err := r.advance(i); err != nil {
			return nil, errors.Join(err, r.Close())
		}
	}
	// Open starts every channel's first segment before it takes records,
	// so directories without segments are a crash during the first
	// opening only when the others hold nothing but that first segment.
	if len(empty) > 0 {
		for i, c := range r.chans {
			if c.found && (r.has[i] || c.listed != 1 || c.cut) {
				return nil, errors.Join(fmt.Errorf("%w: the channel directories %q hold no segments, but %q do: a directory is missing or log_channels changed", ErrMismatch, empty, full), r.Close())
			}
		}
	}
	return r, nil
}

func (r *Reader) advance(i int) error {
	rec, ok, err := r.chans[i].nextRecord()
	if err != nil {
		return err
	}
	r.heads[i], r.has[i] = rec, ok
	return nil
}

// Next returns the next record in LSN order; ok is false at the end of
// the log or at the first gap. The record's body is valid until the next
// call.
//
// Reading a live log (Log.NewReader), ok is false once Next has returned
// every record the log has written, and later calls return those written
// since. A record the log has written is there, whole, so one that
// cannot be read is damage (ErrCorrupt); what the reader meets past the
// records written (a write in progress) is not.
func (r *Reader) Next() (rec record.Record, ok bool, err error) {
	if r.taken >= 0 {
		if err := r.advance(r.taken); err != nil {
			return record.Record{}, false, err
		}
		r.taken = -1
	}
	refreshed := false
	for {
		min := -1
		for i := range r.heads {
			if r.has[i] && (min < 0 || r.heads[i].LSN < r.heads[min].LSN) {
				min = i
			}
		}
		if (min < 0 || r.heads[min].LSN > r.want) && r.written != nil {
			// Read after the log said it had written want, the files hold
			// it: one refresh finds it unless the log is damaged.
			switch {
			case r.want > r.written():
				return record.Record{}, false, nil // not written yet
			case refreshed:
				return record.Record{}, false, r.missing()
			}
			if err := r.refresh(); err != nil {
				return record.Record{}, false, err
			}
			refreshed = true
			continue
		}
		if min < 0 || r.heads[min].LSN > r.want {
			r.gap = min >= 0
			return record.Record{}, false, nil
		}
		rec = r.heads[min]
		if rec.LSN < r.want && rec.LSN > r.after {
			c := r.chans[min]
			where := fmt.Sprintf("%s at offset %d", c.name(), c.recsAt)
			if f := r.from; rec.LSN == r.want-1 && f.c != min {
				where += fmt.Sprintf(" and %s at offset %d", filepath.Join(r.chans[f.c].dir, SegmentName(f.seq)), f.at)
			}
			return record.Record{}, false, fmt.Errorf("%w: LSN %d is in two channels: %s", ErrCorrupt, rec.LSN, where)
		}
		if rec.LSN < r.want {
			// Held by the image.
			if err := r.advance(min); err != nil {
				return record.Record{}, false, err
			}
			continue
		}
		r.want++
		r.taken = min
		r.from.c, r.from.seq, r.from.at = min, r.chans[min].seq, r.chans[min].recsAt
		return rec, true, nil
	}
}

// refresh has the channels of a live log that stalled read on.
func (r *Reader) refresh() error {
	for i, c := range r.chans {
		if r.has[i] {
			continue
		}
		if err := c.refresh(); err != nil {
			return err
		}
		if err := r.advance(i); err != nil {
			return err
		}
	}
	return nil
}

// missing returns the error for a live log that lacks r.want, which it
// has written: where each channel stands, and why those that stopped did.
func (r *Reader) missing() error {
	var where []string
	for i, c := range r.chans {
		switch {
		case r.has[i]:
			where = append(where, fmt.Sprintf("%s holds LSN %d next", c.dir, r.heads[i].LSN))
		case c.stall != nil:
			where = append(where, c.stall.Error())
		default:
			where = append(where, fmt.Sprintf("%s ends at %s offset %d", c.dir, SegmentName(c.seq), c.off))
		}
	}
	return fmt.Errorf("%w: LSN %d is written, but no channel holds it: %s", ErrCorrupt, r.want, strings.Join(where, "; "))
}

// Last returns the LSN of the last record returned (or the starting
// point, before any).
func (r *Reader) Last() uint64 { return r.want - 1 }

// Gap reports whether Next stopped at a gap (a channel holds a later
// LSN) rather than at the end of the log.
func (r *Reader) Gap() bool { return r.gap }

// Finish reads every channel to the end of its data, checking the
// records past the point where Next stopped (they will be voided when the
// log is opened again), and returns where each channel's data ends. Call
// it once Next has returned false.
func (r *Reader) Finish() ([]Tail, error) {
	tails := make([]Tail, len(r.chans))
	r.taken = -1
	for i, c := range r.chans {
		for {
			_, ok, err := c.nextRecord()
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
		}
		r.heads[i], r.has[i] = record.Record{}, false
		tails[i] = c.tail
		if c.cut { // however the kept segments ended, the rest is set aside
			tails[i].Corrupt, tails[i].Err = true, c.cutErr
		}
		if at := slices.Index(c.segs, c.tail.Seq); at >= 0 && c.voids[at] != math.MaxUint64 {
			tails[i].Void = c.voids[at]
		}
		if c.cut && len(c.segs) == 0 {
			tails[i].Void = r.after // set aside whole: see Tail
		}
	}
	return tails, nil
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
