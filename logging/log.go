package logging

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
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
	// Compression of blocks (record.S2 unless set otherwise; record.None to
	// turn it off) and the smallest payload worth compressing (zero means
	// 512 bytes).
	Compression   record.Compression
	NoCompression bool
	MinCompress   int
	MaxBlockBytes int           // a block's raw payload; zero means 256 KiB
	Epoch         uint64        // stamped on every record
	SlowSync      time.Duration // syncs slower than this are logged; zero means 100ms
	Logger        hclog.Logger
	StartLSN      uint64 // the last LSN recovered; the first record gets the next
}

// Log is the redo log for the fsync-log level: each commit's encoded redo
// record is appended (Append, from the engine's commit hook, which the
// durability package provides) and the server waits (Wait) until the
// record is durable before acknowledging.
//
// Commits go to the channels round-robin, so each channel holds every
// n-th LSN, in order. Each channel has a flusher goroutine that takes all
// the records waiting for it, writes them as one or more blocks and syncs
// once: a group commit, whose size grows by itself with the load, since
// records queue while a sync runs.
//
// Invariant (under mu): every assigned LSN above durable is in exactly one
// channel's pending list or in flight at its flusher; durable is the
// largest LSN such that every LSN up to it is synced on its channel.
type Log struct {
	opts  Options
	log   hclog.Logger
	chans []*channel

	mu       sync.Mutex
	last     uint64        // the last LSN assigned
	durable  uint64        // see the invariant
	advanced chan struct{} // closed when durable advances or the log fails
	err      error         // the first write or sync failure: the log takes no more commits
	next     int           // the channel the next commit goes to
	closing  bool
	done     sync.WaitGroup
}

// channel is one directory's writer and the records waiting for it.
type channel struct {
	l        *Log
	id       int
	w        *segmentWriter
	enc      record.Encoder
	kick     chan struct{}
	pending  []pendingRecord // guarded by l.mu
	inflight uint64          // the smallest LSN the flusher holds; 0: none (guarded by l.mu)
	stats    Stats           // guarded by l.mu
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
		s.Records += c.stats.Records
		s.Syncs += c.stats.Syncs
		s.RawBytes += c.stats.RawBytes
		s.StoredBytes += c.stats.StoredBytes
		s.SyncTime += c.stats.SyncTime
	}
	return s
}

type pendingRecord struct {
	lsn  uint64
	body []byte
}

// Open starts a log whose channels begin new segments after the ones
// already in their directories; recovery has read those (Reader) and the
// caller passes the last LSN it recovered as StartLSN.
func Open(opts Options) (*Log, error) {
	if len(opts.Dirs) == 0 {
		return nil, errors.New("logging: no channel directories")
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
	l := &Log{opts: opts, log: opts.Logger, last: opts.StartLSN, durable: opts.StartLSN, advanced: make(chan struct{})}
	if l.log == nil {
		l.log = hclog.NewNullLogger()
	}
	for i, dir := range opts.Dirs {
		// The directory must survive a crash with the segments in it.
		if err := durableDir(opts.FS, dir); err != nil {
			return nil, err
		}
		segs, err := listSegments(opts.FS, dir)
		if err != nil {
			return nil, err
		}
		next := uint64(1)
		if len(segs) > 0 {
			next = segs[len(segs)-1] + 1
		}
		c := &channel{l: l, id: i, w: newSegmentWriter(opts.FS, dir, uint32(i), opts.SegmentSize, next), kick: make(chan struct{}, 1)}
		c.enc = record.Encoder{Compression: opts.Compression, MinCompress: opts.MinCompress}
		if opts.NoCompression {
			c.enc.Compression = record.None
		}
		l.chans = append(l.chans, c)
	}
	for _, c := range l.chans {
		l.done.Add(1)
		go c.flushLoop()
	}
	return l, nil
}

// Append assigns the next LSN to a record and queues it on a channel; the
// log owns body from then on. It does not wait; Wait does. LSNs are
// assigned in the order Append calls return, with no gaps.
func (l *Log) Append(body []byte) (uint64, error) {
	if len(body) > l.opts.MaxBlockBytes {
		return 0, fmt.Errorf("logging: a record of %d bytes; the most is %d", len(body), l.opts.MaxBlockBytes)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	if l.closing {
		return 0, errors.New("logging: the log is closed")
	}
	l.last++
	lsn := l.last
	c := l.chans[l.next]
	l.next = (l.next + 1) % len(l.chans)
	c.pending = append(c.pending, pendingRecord{lsn: lsn, body: body})
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return lsn, nil
}

// Wait returns when lsn is durable, when the log has failed (with the
// failure), or when ctx ends.
func (l *Log) Wait(ctx context.Context, lsn uint64) error {
	for {
		l.mu.Lock()
		durable, err, advanced := l.durable, l.err, l.advanced
		l.mu.Unlock()
		if durable >= lsn {
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

// DurableLSN returns the durable LSN.
func (l *Log) DurableLSN() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durable
}

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
		errs = append(errs, c.w.close())
		c.enc.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(append(errs, l.err)...)
}

// flushLoop writes and syncs the channel's records until the log closes.
func (c *channel) flushLoop() {
	defer c.l.done.Done()
	var spare []pendingRecord
	for range c.kick {
		spare = c.flush(spare)
	}
	c.flush(spare) // what came in while closing
}

// flush takes the channel's pending records, writes them and syncs; it
// returns the emptied slice for reuse.
func (c *channel) flush(spare []pendingRecord) []pendingRecord {
	l := c.l
	l.mu.Lock()
	batch := c.pending
	c.pending = spare[:0]
	if len(batch) == 0 || l.err != nil {
		l.mu.Unlock()
		return batch[:0]
	}
	c.inflight = batch[0].lsn
	l.mu.Unlock()

	st, err := c.write(batch)
	l.mu.Lock()
	defer l.mu.Unlock()
	c.inflight = 0
	c.stats.Records += st.Records
	c.stats.Syncs += st.Syncs
	c.stats.RawBytes += st.RawBytes
	c.stats.StoredBytes += st.StoredBytes
	c.stats.SyncTime += st.SyncTime
	if err != nil && l.err == nil {
		l.err = err
		l.log.Error("the redo log failed; commits are refused", "channel", c.id, "error", err)
	}
	l.advance()
	clear(batch) // drop the bodies
	return batch[:0]
}

// write writes a batch as blocks and syncs them once.
func (c *channel) write(batch []pendingRecord) (Stats, error) {
	var st Stats
	var b record.Builder
	put := func() error {
		n, err := c.w.write(&b, &c.enc)
		if err != nil {
			return err
		}
		st.RawBytes += int64(b.Len())
		st.StoredBytes += int64(n)
		b.Reset()
		return nil
	}
	for _, r := range batch {
		if b.Len() > 0 && b.Len()+len(r.body) > c.l.opts.MaxBlockBytes {
			if err := put(); err != nil {
				return st, err
			}
		}
		if err := b.Add(r.lsn, c.l.opts.Epoch, r.body); err != nil {
			return st, err
		}
	}
	if err := put(); err != nil {
		return st, err
	}
	start := time.Now()
	err := c.w.sync()
	st.SyncTime = time.Since(start)
	if st.SyncTime > c.l.opts.SlowSync {
		c.l.log.Warn("slow log sync", "channel", c.id, "duration", st.SyncTime, "records", len(batch))
	}
	if err == nil {
		st.Records, st.Syncs = int64(len(batch)), 1
		err = c.w.marker()
	}
	return st, err
}

// advance recomputes the durable LSN and wakes the waiters; the caller
// holds mu. After a failure the durable LSN stays where it was: the
// failed records are neither pending nor in flight, but not durable.
func (l *Log) advance() {
	if l.err != nil {
		close(l.advanced)
		l.advanced = make(chan struct{})
		return
	}
	d := l.last
	for _, c := range l.chans {
		if c.inflight != 0 {
			d = min(d, c.inflight-1)
		}
		if len(c.pending) > 0 {
			d = min(d, c.pending[0].lsn-1)
		}
	}
	if d > l.durable {
		l.durable = d
		close(l.advanced)
		l.advanced = make(chan struct{})
	}
}
