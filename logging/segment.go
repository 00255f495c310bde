// Package logging is mmdb's redo log: commit records grouped into
// checksummed, compressed blocks (package record), written to segment
// files in one or more channel directories, and read back in LSN order for
// recovery. It knows nothing of tables; the engine hands it encoded redo
// records.
package logging

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// segmentSuffix ends a segment file's name; the name before it is the
// segment's seq in 16 hex digits, so names sort in seq order. A segment
// being created has tempSuffix after that until it is complete; a
// segment recovery set aside for damage has voidSuffix.
const (
	segmentSuffix = ".log"
	tempSuffix    = ".tmp"
	voidSuffix    = ".void"
)

// SegmentName returns the file name of segment seq.
func SegmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentSuffix) }

// listSegments returns the seqs of the segments in dir, in order. Other
// files are ignored; a missing directory holds no segments.
func listSegments(fs vfs.FS, dir string) ([]uint64, error) {
	names, err := fs.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("logging: list %s: %w", dir, err)
	}
	var seqs []uint64
	for _, n := range names {
		hex, ok := strings.CutSuffix(n, segmentSuffix)
		if !ok || len(hex) != 16 {
			continue
		}
		seq, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	return seqs, nil
}

// HasSegments reports whether any of dirs holds a segment: whether a log
// exists there.
func HasSegments(fs vfs.FS, dirs []string) (bool, error) {
	for _, d := range dirs {
		segs, err := listSegments(fs, d)
		if err != nil || len(segs) > 0 {
			return len(segs) > 0, err
		}
	}
	return false, nil
}

// errNoRoom marks a full disk met while making a new segment, before it
// is in place (creating, preallocating, writing and syncing its header
// under its temporary name, renaming it): the only place the log can
// meet one, and one it recovers from (Log.flush), since the segment
// before is whole and synced and the new one is removed.
var errNoRoom = errors.New("no room for a new segment")

// noRoom marks err, met making a new segment, with errNoRoom if it is a
// full disk.
func noRoom(err error) error {
	if vfs.NoSpace(err) {
		return fmt.Errorf("%w: %w", errNoRoom, err)
	}
	return err
}

// segmentWriter appends blocks to a channel's segments, starting a new
// preallocated segment when the current one is full. The channel's
// flusher owns it, except that with Mapped a commit may copy its own block
// in (Log.Append) under the log's lock, and only while nothing of the
// channel is queued or in flight at the flusher. So the flusher writes,
// starts segments and closes them without the lock (commits are kept out
// by what it holds in flight), and syncs (syncTo) without it while
// commits copy in past the offset it syncs to.
//
// Invariants, which recovery relies on to tell a torn tail from
// corruption: every byte of w.f before w.synced is durable; a new
// segment's preallocation, header and name are durable before any block is
// written to it; and a segment is synced in full before the next is
// created. So a valid block in a later segment proves the earlier ones
// whole, and a block's synced field proves the bytes before it whole.
type segmentWriter struct {
	fs       vfs.FS
	dir      string
	channel  uint32
	channels uint32
	size     int64        // bytes preallocated per segment
	opened   bool         // the next segment is the first since the log was opened
	last     uint64       // the highest LSN in the channel's kept records: the next segment's base
	mapped   bool         // blocks are copied into a mapping of the segment (mmap-log)
	prefill  hclog.Logger // Options.Prefill: told why a spare was not made; nil without Prefill
	spare    *spare       // the next segment's file, being made ahead (Options.Prefill)

	f       vfs.File
	m       vfs.Mapping // the current segment's mapping, when mapped
	seq     uint64
	end     int64  // the current segment's size: w.size, or more for one large block
	off     int64  // where the next block goes
	synced  int64  // bytes of the segment known durable
	prevEnd uint64 // where the previous segment's data ended (0: there is none)
	buf     []byte
}

// newSegmentWriter returns a writer for channel (of channels) in dir,
// whose existing data ends at tail; recovery kept the records up to LSN
// base. Its first segment, which start creates, follows tail's and voids
// what the channel holds past tail or above base, or above tail.Void
// when an opening now set aside voided more (record.FlagOpened), or when
// recovery set the whole channel aside (Tail).
func newSegmentWriter(fs vfs.FS, dir string, channel, channels uint32, size int64, tail Tail, base uint64) *segmentWriter {
	if tail.Void != 0 || tail.Corrupt && tail.Seq == 0 {
		base = min(base, tail.Void)
	}
	return &segmentWriter{fs: fs, dir: dir, channel: channel, channels: channels, size: size,
		opened: true, last: base, seq: tail.Seq, off: tail.Offset, prevEnd: uint64(tail.Offset)}
}

// start creates the writer's first segment. Until it has, the writer's
// seq and off are where tail's data ends.
func (w *segmentWriter) start() error { return w.rotate(0) }

// started reports whether start has created the writer's first segment.
func (w *segmentWriter) started() bool { return !w.opened }

// write encodes b's records as one block and appends it, starting a new
// segment first if the block does not fit the current one. It returns the
// block's size.
func (w *segmentWriter) write(b *record.Builder, enc *record.Encoder) (int, error) {
	if n, err := w.writeIfRoom(b, enc); n != 0 || err != nil {
		return n, err
	}
	// The raw payload plus a header bounds the block however it encodes
	// (compression is kept only when it saves), so the new segment fits it.
	if err := w.rotate(int64(b.Len() + record.BlockHeaderSize)); err != nil {
		return 0, err
	}
	n, err := w.writeIfRoom(b, enc)
	if n == 0 && err == nil {
		err = fmt.Errorf("logging: a %d-byte block does not fit new segment %s of %d bytes", len(w.buf), SegmentName(w.seq), w.end)
	}
	return n, err
}

// writeIfRoom encodes b's records as one block and appends it if it fits
// the current segment; it returns the block's size, or 0 when it does not
// fit (or there is no segment) and nothing was written.
func (w *segmentWriter) writeIfRoom(b *record.Builder, enc *record.Encoder) (int, error) {
	if w.f == nil {
		return 0, nil
	}
	var err error
	if w.buf, err = enc.Append(w.buf[:0], w.seq, uint32(w.synced), b); err != nil {
		return 0, err
	}
	if w.off+int64(len(w.buf)) > w.end {
		return 0, nil
	}
	if err := w.put(w.buf); err != nil {
		return 0, err
	}
	w.last = max(w.last, b.Last())
	return len(w.buf), nil
}

// put appends b to the current segment.
func (w *segmentWriter) put(b []byte) error {
	if w.m != nil {
		if err := w.m.Copy(w.off, b); err != nil {
			return fmt.Errorf("logging: %w", err)
		}
	} else if _, err := w.f.WriteAt(b, w.off); err != nil {
		return fmt.Errorf("logging: write %s at %d: %w", w.f.Name(), w.off, err)
	}
	w.off += int64(len(b))
	if w.prefill != nil && w.spare == nil && w.off > w.end/2 {
		w.makeSpare()
	}
	return nil
}

// marker appends a marker block recording how much of the segment is
// synced, so that recovery can prove the last group whole even when no
// block follows it. It is not synced itself; if it is lost, recovery
// falls back on its other evidence.
func (w *segmentWriter) marker() error {
	if w.f == nil || w.off+record.BlockHeaderSize > w.end {
		return nil // the next segment's header will say where this one ended
	}
	w.buf = record.AppendMarker(w.buf[:0], w.seq, uint32(w.synced))
	return w.put(w.buf)
}

// sync makes everything written durable.
func (w *segmentWriter) sync() error {
	if w.synced == w.off {
		return nil
	}
	if err := w.syncTo(w.off); err != nil {
		return err
	}
	w.synced = w.off
	return nil
}

// syncTo makes the current segment's first off bytes durable (at least:
// without a mapping, all of it). It does not touch the writer's state, so
// with Mapped the log runs it outside its lock while commits copy blocks
// past off; the caller then records the sync in synced.
func (w *segmentWriter) syncTo(off int64) error {
	if w.f == nil {
		return nil
	}
	var err error
	if w.m != nil {
		err = w.m.Flush(off)
	} else {
		err = w.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("logging: sync %s: %w", w.f.Name(), err)
	}
	return nil
}

// rotate syncs and closes the current segment and starts the next, large
// enough for a block of need bytes. The new segment is preallocated and
// given its header under a temporary name, synced, and then renamed into
// place, so a segment file under its own name always has a whole header.
func (w *segmentWriter) rotate(need int64) error {
	if w.f != nil {
		w.prevEnd = uint64(w.off)
	}
	if err := w.close(); err != nil {
		return err
	}
	seq := w.seq + 1
	name := filepath.Join(w.dir, SegmentName(seq))
	tmp := name + tempSuffix
	h := record.SegmentHeader{Channel: w.channel, Channels: w.channels, Seq: seq, PrevEnd: w.prevEnd, Base: w.last, Flags: record.FlagBound}
	if w.opened {
		h.Flags = record.FlagOpened
	}
	if w.mapped {
		h.Flags |= record.FlagMapped
	}
	size := w.size
	if w.opened && w.prefill != nil {
		// The first segment since the log opened has no spare: a small
		// one, so that the next, filled ahead, comes soon.
		size = min(size, firstPrefilled)
	}
	size = max(size, record.SegmentHeaderSize+need)
	f, err := w.takeSpare(size)
	if err != nil {
		return err
	}
	if f == nil {
		if f, err = w.fs.Create(tmp); err != nil {
			// No room for the file itself (its inode, a directory block)
			// is a full disk, as for its preallocation.
			return fmt.Errorf("logging: create segment %s: %w", tmp, noRoom(err))
		}
		if err := f.Allocate(size); err != nil {
			return errors.Join(fmt.Errorf("logging: preallocate %d bytes for %s: %w", size, tmp, noRoom(err)), f.Close(), w.fs.Remove(tmp))
		}
	}
	if _, err := f.WriteAt(record.AppendSegmentHeader(nil, h), 0); err != nil {
		return errors.Join(fmt.Errorf("logging: write the header of %s: %w", tmp, noRoom(err)), f.Close(), w.fs.Remove(tmp))
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("logging: sync the header of %s: %w", tmp, noRoom(err)), f.Close(), w.fs.Remove(tmp))
	}
	if err := w.fs.Rename(tmp, name); err != nil {
		return errors.Join(fmt.Errorf("logging: rename %s to %s: %w", tmp, name, noRoom(err)), f.Close(), w.fs.Remove(tmp))
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return errors.Join(fmt.Errorf("logging: sync directory %s: %w", w.dir, err), f.Close())
	}
	if w.mapped {
		// Every byte is preallocated, so writing through the mapping
		// cannot meet a full disk (which would be SIGBUS).
		if w.m, err = f.Map(size); err != nil {
			return errors.Join(fmt.Errorf("logging: map %s: %w", name, err), f.Close())
		}
	}
	w.f, w.seq, w.end, w.off, w.synced, w.opened = f, seq, size, record.SegmentHeaderSize, record.SegmentHeaderSize, false
	return nil
}

// A spare is the next segment's file, made under the segment's temporary
// name once the current one is half full (Options.Prefill): a goroutine
// writes zeros over all of it and syncs them. Then the segment's blocks are
// allocated and written on disk before any record goes there, and a
// commit's fdatasync carries the records alone. A segment preallocated
// with fallocate instead has unwritten extents (ext4, xfs): the first
// write into each makes it a written one, a change of metadata that the
// fdatasync after it must commit to the file system's journal, which
// costs a third of the sync's time and CPU on our disk
// (docs/benchmarks.md).
//
// The spare is made only where the file system has room for two
// segments besides, so that a disk filling up is met by a new segment
// (the log's one recoverable full disk) and not by checkpoints or the
// spare. A spare not finished when its segment is needed is stopped and
// removed, and the segment is preallocated as without Prefill; so is one
// that failed.
type spare struct {
	name string
	size int64
	stop atomic.Bool
	done chan struct{} // closed once the goroutine has finished, with f or err set
	f    vfs.File      // the filled, synced file
	err  error         // why there is no f
}

// firstPrefilled bounds the size of the first segment since the log
// opened, with Prefill: the segment before the first spare.
const firstPrefilled = 4 << 20

// spareChunk is how many zeros a spare's goroutine writes and syncs at
// once, and between its looks at whether to stop.
const spareChunk = 1 << 20

// errStopped says a spare was needed before it was finished.
var errStopped = errors.New("needed before it was finished")

// makeSpare starts making the file of the segment after the current one
// (with Prefill).
func (w *segmentWriter) makeSpare() {
	s := &spare{name: filepath.Join(w.dir, SegmentName(w.seq+1)+tempSuffix), size: w.size, done: make(chan struct{})}
	w.spare = s
	go s.fill(w.fs, w.dir)
}

// fill makes the spare's file.
func (s *spare) fill(fs vfs.FS, dir string) {
	defer close(s.done)
	free, err := fs.Free(dir)
	if err != nil {
		s.err = err
		return
	}
	if free < 3*s.size {
		s.err = fmt.Errorf("%d bytes free on the file system, under three segments of %d", free, s.size)
		return
	}
	f, err := fs.Create(s.name)
	if err != nil {
		s.err = err
		return
	}
	zeros := make([]byte, spareChunk)
	for off := int64(0); off < s.size && err == nil; off += spareChunk {
		if s.stop.Load() {
			err = errStopped
			break
		}
		if _, err = f.WriteAt(zeros[:min(spareChunk, s.size-off)], off); err == nil {
			// A chunk at a time: one sync of the whole file held the
			// log's own syncs up behind it (up to 25 ms for 64 MiB on
			// our test VM, against 4-8 ms so), and a switch that needs
			// the spare waits for one chunk's sync at the most.
			err = f.Sync()
		}
	}
	if err != nil {
		s.err = errors.Join(err, f.Close(), fs.Remove(s.name))
		return
	}
	s.f = f
}

// takeSpare returns the spare's file, under the next segment's temporary
// name, if it is finished and holds size bytes; otherwise (nil) it
// stops the spare and removes it. The error is one met removing it.
func (w *segmentWriter) takeSpare(size int64) (vfs.File, error) {
	s := w.stopSpare()
	switch {
	case s == nil:
		return nil, nil
	case s.f == nil:
		w.prefill.Debug("the next segment was not made ahead", "file", s.name, "error", s.err)
		return nil, nil
	case s.size < size:
		return nil, w.removeSpare(s)
	}
	return s.f, nil
}

// dropSpare stops the spare, if any, and removes its file.
func (w *segmentWriter) dropSpare() error {
	if s := w.stopSpare(); s != nil && s.f != nil {
		return w.removeSpare(s)
	}
	return nil
}

// removeSpare closes and removes a finished spare's file.
func (w *segmentWriter) removeSpare(s *spare) error {
	if err := errors.Join(s.f.Close(), w.fs.Remove(s.name)); err != nil {
		return fmt.Errorf("logging: remove the spare segment %s: %w", s.name, err)
	}
	return nil
}

// stopSpare stops the spare's goroutine, if it still runs, and returns
// the spare, which the writer no longer holds.
func (w *segmentWriter) stopSpare() *spare {
	s := w.spare
	if s != nil {
		w.spare = nil
		s.stop.Store(true)
		<-s.done
	}
	return s
}

// close syncs and closes the current segment, if any.
func (w *segmentWriter) close() error {
	if w.f == nil {
		return nil
	}
	err := w.sync()
	if w.m != nil {
		if uerr := w.m.Unmap(); uerr != nil && err == nil {
			err = fmt.Errorf("logging: unmap %s: %w", w.f.Name(), uerr)
		}
		w.m = nil
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("logging: close %s: %w", w.f.Name(), cerr)
	}
	w.f = nil
	return err
}

// RemoveSegments removes every segment of the log in dirs (a node that
// reloads from an image starts a new log), and syncs each directory.
func RemoveSegments(fs vfs.FS, dirs []string) error {
	for _, d := range dirs {
		segs, err := listSegments(fs, d)
		if err != nil {
			return err
		}
		for _, seq := range segs {
			name := filepath.Join(d, SegmentName(seq))
			if err := fs.Remove(name); err != nil {
				return fmt.Errorf("logging: remove %s: %w", name, err)
			}
		}
		if len(segs) > 0 {
			if err := fs.SyncDir(d); err != nil {
				return fmt.Errorf("logging: sync %s: %w", d, err)
			}
		}
	}
	return nil
}
