package logging

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/logging/record"
	"github.com/mmdb/mmdb/logging/vfs"
)

// Options configure a Log.
type Options struct {
	// FS is the file system; nil means vfs.Default.
	FS vfs.FS
	// Dirs are the channels' directories, one per channel.
	Dirs []string
	// SegmentSize is the bytes preallocated per segment; zero means 64 MiB.
	SegmentSize int64
	// Prefill makes each channel write the next segment's zeros once
	// the current one is half full, so that syncs into it need no change
	// of the file system's metadata (see spare), and makes the first
	// segment since opening at most 4 MiB; without it, a segment is
	// preallocated with fallocate when it starts. It writes every
	// segment twice, and is of no use on a file system that writes
	// every change to a new place (btrfs, zfs).
	Prefill bool
	// Compression of blocks (record.S2 unless set otherwise; record.None to
	// turn it off) and the smallest payload worth compressing (zero means
	// 512 bytes).
	Compression   record.Compression
	NoCompression bool
	MinCompress   int
	MaxBlockBytes int           // a block's raw payload, unless one record is larger; zero means 256 KiB
	Epoch         uint64        // stamped on every record, until SetEpoch
	SlowSync      time.Duration // syncs slower than this are logged; zero means 100ms
	Logger        hclog.Logger
	// StartLSN and Tails come from recovery (Reader.Last and
	// Reader.Finish): the last LSN it kept, which the first record
	// follows, and where each channel's data ends. Nil Tails say the
	// directories hold no log yet.
	StartLSN uint64
	Tails    []Tail
	// Mapped writes blocks by copying them into memory-mapped segments
	// (mmap-log) and syncs them every SyncInterval (zero: only when a
	// segment is full, or when Wait asks), instead of after every group.
	Mapped       bool
	SyncInterval time.Duration
	// OnSync, if set, is called by a channel's flusher after each sync
	// that wrote to disk, with the records it made durable (the group)
	// and how long the sync took: for metrics, so it must be quick.
	OnSync func(records int, took time.Duration)
}

// MaxRecordBytes is the largest record the log takes: one to a block.
const MaxRecordBytes = record.MaxBlockSize - 3*binary.MaxVarintLen64

// ErrTooLarge is returned, wrapped, for a record over MaxRecordBytes.
var ErrTooLarge = errors.New("logging: record too large")

// Log is the redo log: each commit's encoded redo record is appended
// (Append, from the engine's commit hook, which the durability package
// provides) and the server waits until the record is written (WaitWritten:
// it survives the process's crash) or durable (Wait: it survives the
// machine's) before acknowledging.
//
// Commits go to the channels round-robin, so each channel holds every
// n-th LSN, in order. Each channel has a flusher goroutine that takes all
// the records waiting for it and writes them as one or more blocks with
// write(2), then one fdatasync (fsync-log). That is a group commit, whose
// size grows by itself with the load, since records queue while the
// flusher works.
//
// With Mapped (mmap-log), Append itself copies the record into the
// channel's mapped segment as a block of its own, under the log's lock, so
// the record is written when Append returns and the commit waits for no
// other goroutine; the flusher only syncs (msync) now and then. (The copy
// can take a page fault under the lock: the first store to a fresh page
// of the segment, or to a page an msync has just written back.) A record
// goes through the flusher instead, queued as above, when it does not fit
// the segment (the flusher starts the next one: that may meet a full disk
// or take milliseconds), when it is large enough to be worth compressing,
// or when records of its channel are already queued (order within a
// channel is LSN order).
//
// Invariant (under mu): every assigned LSN is written on its channel, or
// in exactly one channel's pending list, or in flight at its flusher;
// written is the largest LSN such that every LSN up to it is written on
// its channel, and durable the largest such that every LSN up to it is
// synced.
type Log struct {
	opts  Options
	log   hclog.Logger
	chans []*channel

	mu       sync.Mutex
	epoch    uint64                        // stamped on the records appended
	last     uint64                        // the last LSN assigned
	written  uint64                        // see the invariant
	durable  uint64                        // see the invariant
	syncReq  uint64                        // Mapped: the largest LSN a Wait needs synced
	advanced chan struct{}                 // closed when written or durable advances, the log fails or a channel finds its disk full, if watched
	watched  bool                          // a waiter holds advanced
	err      error                         // the first write or sync failure: the log takes no more commits
	full     error                         // why the last channel to find its disk full did; Append refuses records while nfull > 0
	nfull    int                           // channels whose disk was full at their last try
	next     int                           // the channel the next commit goes to
	tap      func(lsn uint64, body []byte) // if set, given a copy of each record appended (Tap)
	closing  bool
	done     sync.WaitGroup

	// shownWritten and shownDurable mirror written and durable for the
	// lock-free WrittenLSN and DurableLSN (every read checks them); stored
	// under mu.
	shownWritten, shownDurable atomic.Uint64
}

// channel is one directory's writer and the records waiting for it.
type channel struct {
	l        *Log
	id       int
	w        *segmentWriter
	enc      record.Encoder
	kick     chan struct{}
	pending  []pendingRecord // guarded by l.mu
	inflight uint64          // the smallest LSN the flusher holds, not yet written; 0: none (guarded by l.mu)
	unsynced uint64          // the smallest LSN written but not synced; 0: none (guarded by l.mu)
	syncing  bool            // the flusher is syncing; LSNs written meanwhile go to after (guarded by l.mu)
	after    uint64          // the smallest LSN written since the sync began; 0: none (guarded by l.mu)
	opening  opening         // what the channel's opening segment voids: set by Open
	one      record.Builder  // Mapped: a commit's own block (guarded by l.mu)
	raw      record.Encoder  // Mapped: encodes one-record blocks, uncompressed (guarded by l.mu)
	full     bool            // its disk was full at the last try (guarded by l.mu)
	stats    Stats           // guarded by l.mu
	synced   int64           // stats.Records as of the last sync, to count a group (guarded by l.mu)
	// end is where the data of the segment being written ended when the
	// lock last saw it (guarded by l.mu; the flusher moves the writer's
	// offset without the lock): Release counts that segment's log by it.
	end struct {
		seq uint64
		off int64
	}
}

// Stats count what a log has written, for metrics and benchmarks.
type Stats struct {
	Records     int64 // records written
	Syncs       int64 // group syncs
	RawBytes    int64 // record bytes before compression
	StoredBytes int64 // bytes written in blocks, headers included
	SyncTime    time.Duration
}

// Stats returns the counts of all channels.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s Stats
	for _, c := range l.chans {
		s.add(c.stats)
	}
	return s
}

func (s *Stats) add(o Stats) {
	s.Records += o.Records
	s.Syncs += o.Syncs
	s.RawBytes += o.RawBytes
	s.StoredBytes += o.StoredBytes
	s.SyncTime += o.SyncTime
}

type pendingRecord struct {
	lsn   uint64
	epoch uint64
	body  []byte
}

// Open starts a log after what recovery read. Segments past damage that
// recovery was told to ignore are renamed with the suffix .void for the
// operator; each channel's last segment is cut at its torn tail and
// synced; then each channel starts a new segment (record.FlagOpened) that
// voids what the channel holds past its tail or above StartLSN, so
// records that followed a gap can never be mistaken for the new records
// with their LSNs. A disk with no room for a new segment does not stop
// Open: the log opens full (Append refuses with ErrFull) until a
// channel's flusher finds room.
func Open(opts Options) (*Log, error) {
	if len(opts.Dirs) == 0 {
		return nil, errors.New("logging: no channel directories")
	}
	if opts.Tails != nil && len(opts.Tails) != len(opts.Dirs) {
		return nil, fmt.Errorf("logging: %d tails for %d channels", len(opts.Tails), len(opts.Dirs))
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	if opts.Compression == record.None && !opts.NoCompression {
		opts.Compression = record.S2
	}
	if opts.MinCompress <= 0 {
		opts.MinCompress = 512
	}
	if opts.MaxBlockBytes <= 0 {
		opts.MaxBlockBytes = 256 << 10
	}
	if opts.MaxBlockBytes > record.MaxBlockSize/2 || opts.SegmentSize > math.MaxUint32 {
		return nil, fmt.Errorf("logging: MaxBlockBytes %d (at most %d) or SegmentSize %d (at most 4 GiB) too large", opts.MaxBlockBytes, record.MaxBlockSize/2, opts.SegmentSize)
	}
	if opts.SlowSync <= 0 {
		opts.SlowSync = 100 * time.Millisecond
	}
	l := &Log{opts: opts, log: opts.Logger, epoch: opts.Epoch, last: opts.StartLSN, written: opts.StartLSN, durable: opts.StartLSN, advanced: make(chan struct{})}
	l.shownWritten.Store(opts.StartLSN)
	l.shownDurable.Store(opts.StartLSN)
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	fail := func(err error) (*Log, error) {
		for _, c := range l.chans {
			err = errors.Join(err, c.w.close(), c.w.dropSpare())
		}
		return nil, err
	}
	tails := opts.Tails
	if tails == nil {
		tails = make([]Tail, len(opts.Dirs))
	}
	for i, dir := range opts.Dirs {
		if err := prepareDir(opts.FS, dir, tails[i]); err != nil {
			return fail(err)
		}
		c := &channel{l: l, id: i, kick: make(chan struct{}, 1),
			w: newSegmentWriter(opts.FS, dir, uint32(i), uint32(len(opts.Dirs)), opts.SegmentSize, tails[i], opts.StartLSN)}
		c.w.mapped = opts.Mapped
		if opts.Prefill {
			c.w.prefill = l.log.Named("prefill")
		}
		c.enc = record.Encoder{Compression: opts.Compression, MinCompress: opts.MinCompress}
		if opts.NoCompression {
			c.enc.Compression = record.None
		}
		l.chans = append(l.chans, c)
		c.opening = opening{seq: c.w.seq, base: c.w.last} // what start's header says
		if err := c.w.start(); err != nil {
			if !errors.Is(err, errNoRoom) {
				return fail(err)
			}
			// A disk too full for the new segment: the log opens as
			// one that filled, refusing records until its flusher finds
			// room for the segment (which comes before any record).
			c.full = true
			l.nfull++
			l.full = fmt.Errorf("%w: %w", ErrFull, err)
			l.log.Error("the disk is full: commits are refused until space is freed", "channel", c.id, "error", err)
		}
		c.noteEnd() // no flusher runs yet
	}
	for _, c := range l.chans {
		l.done.Add(1)
		go c.flushLoop()
	}
	return l, nil
}

// prepareDir makes a channel's directory durable, removes segments left
// half-created by a crash, sets aside the segments after tail when tail
// says damage was ignored, and checks that tail is where the directory's
// segments end.
func prepareDir(fs vfs.FS, dir string, tail Tail) error {
	if err := vfs.MkdirDurable(fs, dir); err != nil {
		return err
	}
	names, err := fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("logging: list %s: %w", dir, err)
	}
	changed := false
	for _, n := range names {
		if strings.HasSuffix(n, segmentSuffix+tempSuffix) {
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("logging: remove %s: %w", filepath.Join(dir, n), err)
			}
			changed = true
		}
	}
	segs, err := listSegments(fs, dir)
	if err != nil {
		return err
	}
	for _, seq := range segs {
		if seq <= tail.Seq {
			continue
		}
		if !tail.Corrupt {
			return fmt.Errorf("logging: %s holds segment %s, past the recovered tail in %s: the log must be read (Reader) before it is opened", dir, SegmentName(seq), SegmentName(tail.Seq))
		}
		name := filepath.Join(dir, SegmentName(seq))
		// A unique name: an earlier set-aside copy of this seq stays.
		if err := fs.Rename(name, fmt.Sprintf("%s.%d%s", name, time.Now().UnixNano(), voidSuffix)); err != nil {
			return fmt.Errorf("logging: set aside %s: %w", name, err)
		}
		changed = true
	}
	if len(segs) > 0 && segs[len(segs)-1] < tail.Seq || len(segs) == 0 && tail.Seq != 0 {
		return fmt.Errorf("logging: %s has no segment %s, where the recovered tail is", dir, SegmentName(tail.Seq))
	}
	// Recovery replayed what the last segment holds, synced or not (after
	// a process crash the page cache still has it): make it durable, torn
	// bytes cut off, before the new segment says where its data ends.
	if tail.Seq != 0 {
		size := int64(-1)
		if tail.Torn {
			size = tail.Offset
		}
		if err := syncSegment(fs, filepath.Join(dir, SegmentName(tail.Seq)), size); err != nil {
			return err
		}
	}
	if changed {
		if err := fs.SyncDir(dir); err != nil {
			return fmt.Errorf("logging: sync directory %s: %w", dir, err)
		}
	}
	return nil
}

// syncSegment makes segment file name durable, first cutting it to size
// bytes unless size is negative.
func syncSegment(fs vfs.FS, name string, size int64) error {
	f, err := fs.Open(name)
	if err != nil {
		return fmt.Errorf("logging: open %s: %w", name, err)
	}
	if size >= 0 {
		err = f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return errors.Join(fmt.Errorf("logging: sync %s (cut to %d): %w", name, size, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("logging: close %s: %w", name, err)
	}
	return nil
}

// Append assigns the next LSN to a record and writes it (Mapped) or
// queues a copy of it on a channel; it does not keep body. It does not
// wait; Wait does. LSNs are
// assigned in the order Append calls return, with no gaps.
func (l *Log) Append(body []byte) (uint64, error) { return l.append(body, nil, true) }

// AppendIf is Append, but refuses the record with admit's error, if admit
// (when set) returns one, under the lock that assigns LSNs: once a change
// that makes admit refuse is done, and LastLSN has returned, no record
// gets an LSN past the one LastLSN returned.
func (l *Log) AppendIf(body []byte, admit func() error) (uint64, error) {
	return l.append(body, admit, true)
}

// AppendUntapped is Append without the tap (Tap): the caller hands the
// record on itself, if it must (a standby's, once it has applied it).
func (l *Log) AppendUntapped(body []byte) (uint64, error) { return l.append(body, nil, false) }

func (l *Log) append(body []byte, admit func() error, tap bool) (uint64, error) {
	if len(body) > MaxRecordBytes {
		return 0, fmt.Errorf("%w: a record of %d bytes; the most is %d", ErrTooLarge, len(body), MaxRecordBytes)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	if l.closing {
		return 0, ErrClosed
	}
	if l.nfull > 0 {
		// Refused before it has an LSN: the commit aborts cleanly. The
		// flushers retry and clear this once space is found.
		return 0, l.full
	}
	if admit != nil {
		if err := admit(); err != nil {
			return 0, err
		}
	}
	l.last++
	lsn := l.last
	c := l.chans[l.next]
	l.next = (l.next + 1) % len(l.chans)
	if l.opts.Mapped {
		copied, err := c.copyIn(lsn, body)
		if err != nil {
			l.last, l.next = lsn-1, c.id // nothing has this LSN
			l.fail(c, err)
			l.advance()
			return 0, l.err
		}
		if copied {
			l.advance()
			if tap && l.tap != nil {
				l.tap(lsn, slices.Clone(body))
			}
			return lsn, nil
		}
	}
	kept := slices.Clone(body)
	c.pending = append(c.pending, pendingRecord{lsn: lsn, epoch: l.epoch, body: kept})
	c.poke()
	if tap && l.tap != nil {
		l.tap(lsn, kept) // the flusher only reads it
	}
	return lsn, nil
}

// Tap makes the log hand every record appended from now on (but by
// AppendUntapped), with its LSN, to the function start returns, which
// start makes knowing the last LSN assigned before: the records it is
// given follow that one with no gap but those. The function is called
// under the log's lock, in LSN order, with a copy of the record that it
// may keep but must not modify. A tap replaces the one before.
func (l *Log) Tap(start func(last uint64) func(lsn uint64, body []byte)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tap = start(l.last)
}

// copyIn writes the record at lsn into the channel's mapped segment as a
// block of its own, unless records of the channel are queued or in flight
// before it, it is large enough to be worth compressing, or the block does
// not fit the segment; it reports whether it did. The caller holds mu.
func (c *channel) copyIn(lsn uint64, body []byte) (bool, error) {
	if len(c.pending) > 0 || c.inflight != 0 {
		return false, nil
	}
	c.one.Reset()
	if err := c.one.Add(lsn, c.l.epoch, body); err != nil {
		return false, err
	}
	if c.enc.Compression != record.None && c.one.Len() >= c.enc.MinCompress {
		return false, nil
	}
	n, err := c.w.writeIfRoom(&c.one, &c.raw)
	if n == 0 || err != nil {
		return false, err
	}
	c.stats.add(Stats{Records: 1, RawBytes: int64(c.one.Len()), StoredBytes: int64(n)})
	c.wrote(lsn)
	c.noteEnd()
	return true, nil
}

// noteEnd records where the data of the segment being written ends
// (channel.end); the caller holds mu, and is the flusher or keeps it out
// (copyIn).
func (c *channel) noteEnd() { c.end.seq, c.end.off = c.w.seq, c.w.off }

// wrote notes that the channel has written the records from lsn on, not
// yet synced; the caller holds mu.
func (c *channel) wrote(lsn uint64) {
	switch {
	case c.syncing:
		if c.after == 0 {
			c.after = lsn
		}
	case c.unsynced == 0:
		c.unsynced = lsn
	}
}

// Wait returns when lsn is durable, when the log has failed (with the
// failure), when the disk is full and lsn waits on a record the disk has
// no room for (with an error wrapping ErrFull), or when ctx ends. With
// Mapped, it has the flushers sync now rather than at their next
// interval.
func (l *Log) Wait(ctx context.Context, lsn uint64) error {
	l.askSync(lsn)
	return l.wait(ctx, lsn, &l.durable, false)
}

// WaitWritten returns when lsn is written (it survives a crash of the
// process, not of the machine), or as Wait does on a failure, a full
// disk or the end of ctx.
func (l *Log) WaitWritten(ctx context.Context, lsn uint64) error {
	return l.wait(ctx, lsn, &l.written, false)
}

// Follow is Wait, or WaitWritten with written, but it waits on through a
// full disk, until the records are written once space is freed: for a
// reader that follows the log, such as a standby's sender, rather than a
// commit that must answer.
func (l *Log) Follow(ctx context.Context, lsn uint64, written bool) error {
	if written {
		return l.wait(ctx, lsn, &l.written, true)
	}
	l.askSync(lsn)
	return l.wait(ctx, lsn, &l.durable, true)
}

// askSync has the flushers of a Mapped log sync up to lsn now rather
// than at their next interval.
func (l *Log) askSync(lsn uint64) {
	if !l.opts.Mapped {
		return
	}
	l.mu.Lock()
	if l.durable < lsn && l.syncReq < lsn && !l.closing {
		l.syncReq = lsn
		for _, c := range l.chans {
			c.poke() // under mu: Close closes kick only after closing is set
		}
	}
	l.mu.Unlock()
}

func (l *Log) wait(ctx context.Context, lsn uint64, mark *uint64, throughFull bool) error {
	for {
		l.mu.Lock()
		at, err, advanced := *mark, l.err, l.advanced
		if at < lsn && err == nil && !throughFull && l.heldBack(lsn) {
			err = l.full
		}
		if at < lsn && err == nil {
			l.watched = true
		}
		l.mu.Unlock()
		if at >= lsn {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// heldBack reports whether lsn waits on a record that a channel whose
// disk is full has not written: one at or before lsn, as the written
// and durable LSNs advance only past records written. The caller holds
// mu.
func (l *Log) heldBack(lsn uint64) bool {
	if l.nfull == 0 {
		return false
	}
	for _, c := range l.chans {
		if u := c.unwritten(); c.full && u != 0 && u <= lsn {
			return true
		}
	}
	return false
}

// unwritten returns the channel's smallest LSN not yet written, in flight
// or queued; 0: none. The caller holds l.mu.
func (c *channel) unwritten() uint64 {
	if c.inflight != 0 {
		return c.inflight
	}
	if len(c.pending) > 0 {
		return c.pending[0].lsn
	}
	return 0
}

// poke wakes the channel's flusher.
func (c *channel) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// DurableLSN returns the durable LSN. It takes no lock.
func (l *Log) DurableLSN() uint64 { return l.shownDurable.Load() }

// SetEpoch stamps the records appended from now on with epoch.
func (l *Log) SetEpoch(epoch uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch = epoch
}

// WrittenLSN returns the largest LSN that, with all before it, is
// written (it survives a crash of the process). It takes no lock.
func (l *Log) WrittenLSN() uint64 { return l.shownWritten.Load() }

// LastLSN returns the last LSN assigned.
func (l *Log) LastLSN() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Close stops taking commits, writes and syncs what is queued, and
// closes the segments.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return errors.New("logging: the log is already closed")
	}
	l.closing = true
	l.mu.Unlock()
	for _, c := range l.chans {
		close(c.kick)
	}
	l.done.Wait()
	var errs []error
	for _, c := range l.chans {
		errs = append(errs, c.w.close(), c.w.dropSpare())
		c.enc.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(append(errs, l.err)...)
}

// RetryFull is how often a channel whose disk is full tries again: Append
// refuses with ErrFull until one finds space.
const RetryFull = 200 * time.Millisecond

// flushLoop writes and syncs the channel's records until the log closes.
// While the disk is full it retries every RetryFull; with Mapped and a
// SyncInterval it syncs on that interval.
func (c *channel) flushLoop() {
	defer c.l.done.Done()
	var spare []pendingRecord
	var retry, tick <-chan time.Time
	if c.full { // Open found no room for the channel's first segment
		retry = time.After(RetryFull)
	}
	if c.l.opts.Mapped && c.l.opts.SyncInterval > 0 {
		t := time.NewTicker(c.l.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		syncNow := false
		select {
		case _, ok := <-c.kick:
			if !ok {
				c.flush(spare, true) // what came in while closing
				return
			}
		case <-retry:
		case <-tick:
			syncNow = true
		}
		var full bool
		spare, full = c.flush(spare, syncNow)
		retry = nil
		if full {
			retry = time.After(RetryFull)
		}
	}
}

// flush takes the channel's pending records and writes them, then syncs
// what the channel has written if it must: always without Mapped, else
// when syncNow or a Wait asks. It returns the emptied slice for reuse, and
// whether the disk was full.
//
// A full disk (ENOSPC, from creating a segment: blocks go into
// preallocated space) does not fail the log: the records not written go
// back to the front of the queue, Append refuses new ones, and the next
// try resumes. A channel that Open could not start (no room for its first
// segment) starts here, before it can hold any record.
func (c *channel) flush(spare []pendingRecord, syncNow bool) ([]pendingRecord, bool) {
	l := c.l
	l.mu.Lock()
	batch := c.pending
	c.pending = spare[:0]
	if l.err != nil {
		l.mu.Unlock()
		return batch[:0], false
	}
	if len(batch) > 0 {
		c.inflight = batch[0].lsn
	}
	l.mu.Unlock()

	var st Stats
	written := 0
	var err error
	switch {
	case len(batch) > 0:
		st, written, err = c.write(batch)
	case !c.w.started():
		err = c.w.start() // Open found no room for it
	}
	l.mu.Lock()
	c.stats.add(st)
	c.inflight = 0
	if written > 0 {
		c.wrote(batch[0].lsn)
	}
	c.noteEnd()
	full := errors.Is(err, errNoRoom) && !l.closing
	switch {
	case full:
		if !c.full {
			c.full = true
			l.nfull++
			l.log.Error("the disk is full: commits are refused until space is freed", "channel", c.id, "error", err)
			l.wake() // the waits on records it holds back give up (heldBack)
		}
		l.full = fmt.Errorf("%w: %w", ErrFull, err)
		// A new slice: batch's array goes back to the caller as spare.
		c.pending = append(append(make([]pendingRecord, 0, len(batch)-written+len(c.pending)), batch[written:]...), c.pending...)
		batch = batch[:written]
	case err != nil:
		l.fail(c, err)
	case c.full:
		c.full = false
		l.nfull--
		l.log.Info("the disk has space again", "channel", c.id)
	}
	sync := l.err == nil && c.unsynced != 0 && (!l.opts.Mapped || syncNow || l.syncReq >= c.unsynced)
	off, records := c.w.off, c.stats.Records
	c.syncing = sync
	l.advance()
	l.mu.Unlock()

	if sync {
		c.sync(off, records)
	}
	clear(batch) // drop the bodies
	return batch[:0], full
}

// sync makes the channel's first off bytes of its current segment durable
// and records that with a marker block; they hold the channel's first
// records records. With Mapped, commits may copy blocks past off
// meanwhile: those stay unsynced (c.after). When a segment switch has
// synced everything already, there is nothing to do but note it.
func (c *channel) sync(off, records int64) {
	l := c.l
	var err error
	var took time.Duration
	fresh := off != c.w.synced // the flusher alone sets synced
	if fresh {
		start := time.Now()
		err = c.w.syncTo(off)
		took = time.Since(start)
		if took > l.opts.SlowSync {
			l.log.Warn("slow log sync", "channel", c.id, "duration", took)
		}
	}
	group := int64(0)
	l.mu.Lock()
	c.syncing = false
	if err == nil && l.err == nil {
		c.unsynced, c.after = c.after, 0
		if fresh {
			c.w.synced = off
			c.stats.add(Stats{Syncs: 1, SyncTime: took})
			group = records - c.synced
			err = c.w.marker()
			c.noteEnd()
		}
		c.synced = records
	}
	if err != nil {
		l.fail(c, err)
	}
	l.advance()
	l.mu.Unlock()
	if group > 0 && err == nil && l.opts.OnSync != nil {
		l.opts.OnSync(int(group), took) // outside mu: commits need not wait for it
	}
}

// Refusing returns the error Append refuses records with now: one
// wrapping ErrFailed once the log failed, or ErrFull while a channel's
// disk is full; nil while it takes them.
func (l *Log) Refusing() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.err != nil:
		return l.err
	case l.nfull > 0:
		return l.full
	}
	return nil
}

// ErrFailed is returned, wrapped, by a log that failed to write or sync:
// it takes no more records.
var ErrFailed = errors.New("logging: the log failed")

// ErrFull is returned, wrapped with the ENOSPC met, by Append while the
// log's disk is full, and by a wait on a record that the full disk holds
// back: that record is not lost, and is written once space is freed and
// the flusher tries again, unless the process stops first.
var ErrFull = errors.New("logging: the disk is full")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("logging: the log is closed")

// fail records the log's first failure; the caller holds mu.
func (l *Log) fail(c *channel, err error) {
	if l.err == nil {
		l.err = fmt.Errorf("%w: %w", ErrFailed, err)
		l.log.Error("the redo log failed; commits are refused", "channel", c.id, "error", err)
	}
}

// write writes a batch as blocks. On a full disk it returns how many of
// the batch's first records it wrote before.
func (c *channel) write(batch []pendingRecord) (Stats, int, error) {
	var st Stats
	var b record.Builder
	written, inBlock := 0, 0 // records written in full blocks; records in b
	put := func() error {
		n, err := c.w.write(&b, &c.enc)
		if err != nil {
			return err
		}
		st.RawBytes += int64(b.Len())
		st.StoredBytes += int64(n)
		written += inBlock
		st.Records = int64(written)
		b.Reset()
		inBlock = 0
		return nil
	}
	for _, r := range batch {
		if b.Len() > 0 && b.Len()+len(r.body) > c.l.opts.MaxBlockBytes {
			if err := put(); err != nil {
				return st, written, err
			}
		}
		if err := b.Add(r.lsn, r.epoch, r.body); err != nil {
			return st, written, err
		}
		inBlock++
	}
	return st, written, put()
}

// advance recomputes the written and durable LSNs and wakes the waiters;
// the caller holds mu. After a failure they stay where they were: the
// failed records are neither pending nor in flight, but not written.
func (l *Log) advance() {
	if l.err != nil {
		l.wake()
		return
	}
	w := l.last
	for _, c := range l.chans {
		if u := c.unwritten(); u != 0 {
			w = min(w, u-1)
		}
	}
	d := w
	for _, c := range l.chans {
		if c.unsynced != 0 {
			d = min(d, c.unsynced-1)
		}
	}
	if w > l.written || d > l.durable {
		l.written, l.durable = max(l.written, w), max(l.durable, d)
		l.shownWritten.Store(l.written)
		l.shownDurable.Store(l.durable)
		l.wake()
	}
}

// wake wakes the waiters, if any; the caller holds mu.
func (l *Log) wake() {
	if l.watched {
		close(l.advanced)
		l.advanced = make(chan struct{})
		l.watched = false
	}
}

// NewReader returns a reader of the records the log has written after
// LSN after (see Reader.Next), read from its files while it goes on
// writing them: a standby's sender catching up from the log. A write in
// progress past the records written is neither damage nor the end of
// the log to it. The log may release segments meanwhile: the reader then
// fails, or starts past after+1 (ErrReleased).
func (l *Log) NewReader(after uint64) (*Reader, error) {
	openings := make([]opening, len(l.chans))
	for i, c := range l.chans {
		openings[i] = c.opening
	}
	return newReader(ReaderOptions{FS: l.opts.FS, Dirs: l.opts.Dirs, After: after}, l.WrittenLSN, openings)
}
