package logging

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// Released says what Release removed.
type Released struct {
	Segments int
	Bytes    int64
}

// Release removes the segments the log no longer needs once a durable
// image holds every record up to LSN upto. A channel's segments before
// the last one whose header bounds its predecessors' records at or below
// upto (record.SegmentHeader.Bound) hold nothing a recovery from that
// image reads (Reader skips them the same way), so they may go; the
// segment being written always stays. They are removed oldest first, and
// only while the segments left in all channels hold at least keep bytes
// of log: log_retention_bytes, the log kept for standbys that are behind
// (the log a segment holds, not its preallocated size).
// Oldest is by the records a segment holds (the bound the headers after
// it set), not by its seq: a standby reads every channel from its LSN on,
// so the log kept is of use only as far back as every channel reaches,
// and the channels' seqs drift apart when one gets the larger records.
//
// Removal needs no crash safety of its own: a segment whose removal a
// crash undid is skipped by the next recovery like any other not needed.
func (l *Log) Release(upto uint64, keep int64) (Released, error) {
	type channelSegs struct {
		dir    string
		segs   []uint64
		sizes  []int64  // the files' sizes: what removing them frees
		logged []int64  // the log they hold: what counts towards keep
		drop   int      // segs[:drop] may go
		bounds []uint64 // bounds[j]: segs[j] holds no record above it (that is not void)
	}
	// Where each channel's segment being written ends, before the
	// segments are listed: one the channel starts after this counts for
	// nothing.
	ends := make([]struct {
		seq uint64
		off int64
	}, len(l.chans))
	l.mu.Lock()
	for i, c := range l.chans {
		ends[i] = c.end
	}
	l.mu.Unlock()
	var chans []channelSegs
	var total int64 // the log the segments left hold
	for i, dir := range l.opts.Dirs {
		segs, err := listSegments(l.opts.FS, dir)
		if err != nil {
			return Released{}, err
		}
		c := channelSegs{dir: dir, segs: segs}
		c.drop = len(segs) - len(neededSegments(l.opts.FS, dir, segs, upto))
		// hdrs[j] is segs[j+1]'s header, if it reads.
		hdrs := make([]*record.SegmentHeader, max(len(segs)-1, 0))
		for j := range hdrs {
			if h, err := readSegmentHeader(l.opts.FS, dir, segs[j+1]); err == nil {
				hdrs[j] = &h
			}
		}
		c.bounds = make([]uint64, c.drop)
		bound := upto
		for j := c.drop - 1; j >= 0; j-- {
			if hdrs[j] != nil {
				if b, ok := hdrs[j].Bound(); ok {
					bound = min(bound, b)
				}
			}
			c.bounds[j] = bound
		}
		for j, seq := range segs {
			n, err := fileSize(l.opts.FS, filepath.Join(dir, SegmentName(seq)))
			if err != nil {
				return Released{}, err
			}
			// A segment is preallocated: its log ends where the next
			// one's header says, or, in the one being written, where the
			// writer is (one it began since counts for nothing).
			logged := int64(0)
			switch {
			case j < len(hdrs):
				logged = n
				if hdrs[j] != nil && hdrs[j].PrevEnd > record.SegmentHeaderSize && int64(hdrs[j].PrevEnd) <= n {
					logged = int64(hdrs[j].PrevEnd) - record.SegmentHeaderSize
				}
			case seq == ends[i].seq:
				logged = max(ends[i].off-record.SegmentHeaderSize, 0)
			}
			c.sizes, c.logged = append(c.sizes, n), append(c.logged, logged)
			total += logged
		}
		chans = append(chans, c)
	}
	var rel Released
	next := make([]int, len(chans)) // chans[i].segs[:next[i]] are gone
	for {
		// The candidate of all channels holding the oldest records.
		pick := -1
		for i, c := range chans {
			if j := next[i]; j < c.drop && (pick < 0 || c.bounds[j] < chans[pick].bounds[next[pick]]) {
				pick = i
			}
		}
		if pick < 0 || total-chans[pick].logged[next[pick]] < keep {
			break
		}
		c, j := &chans[pick], next[pick]
		name := filepath.Join(c.dir, SegmentName(c.segs[j]))
		if err := l.opts.FS.Remove(name); err != nil {
			return rel, fmt.Errorf("logging: release %s: %w", name, err)
		}
		next[pick]++
		total -= c.logged[j]
		rel.Segments++
		rel.Bytes += c.sizes[j]
	}
	for i, c := range chans {
		if next[i] == 0 {
			continue
		}
		if err := l.opts.FS.SyncDir(c.dir); err != nil {
			return rel, fmt.Errorf("logging: sync directory %s: %w", c.dir, err)
		}
	}
	if rel.Segments > 0 {
		l.log.Info("released log segments an image holds", "segments", rel.Segments, "bytes", rel.Bytes, "up-to-lsn", upto, "kept-bytes", total)
	}
	return rel, nil
}

// fileSize returns the size of file name.
func fileSize(fs vfs.FS, name string) (int64, error) {
	f, err := fs.Open(name)
	if err != nil {
		return 0, fmt.Errorf("logging: open %s: %w", name, err)
	}
	n, err := f.Size()
	if err != nil {
		return 0, errors.Join(fmt.Errorf("logging: size of %s: %w", name, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("logging: close %s: %w", name, err)
	}
	return n, nil
}
