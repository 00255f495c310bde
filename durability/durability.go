// Package durability gives a node its durability level (SPEC 4): it
// recovers the database from the redo log at start, then plugs into the
// engine as its commit hook (mem.CommitLog) and makes each commit wait
// for what its level promises before the server acknowledges it.
//
//   - no-log: nothing is written. Commits get their LSN from a counter
//     and their records stay in an in-memory ring (Ring), for replication.
//   - mmap-log: records go to the redo log, whose channels copy them into
//     memory-mapped, preallocated segments and msync those every
//     MmapSyncInterval; a commit waits until its record is copied (most
//     by the commit's own Append; the channel's flusher copies those that
//     need a new segment, compression or a place behind queued records),
//     so it survives a crash of the process.
//   - fsync-log: records go to the redo log (package logging); a commit
//     waits for its group's fdatasync.
//
// A transaction may ask for a stronger level than the node's, never for
// a weaker one than the node's floor (Check); asking for a level that
// writes a log on a node that keeps none is refused before the commit.
//
// A standby's Store refuses local commits (ErrStandby) and takes the
// primary's records through Replicate instead, which logs each at its
// own level and applies it. A Store with a Ring keeps its recent records
// there, in LSN order, for the standbys it ships to: its commits as it
// makes them (a node with a log: as the log takes them, logging.Log.Tap),
// and a standby's records once it has applied them, so that a propagator
// relays only what it has applied. A node with a log keeps one from Open
// with Options.RingBytes, or from KeepRing on.
package durability

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// Level is a durability level, weakest first.
type Level int8

// The levels.
const (
	NoLog Level = iota
	MmapLog
	FsyncLog
)

var levelNames = []string{"no-log", "mmap-log", "fsync-log"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("level(%d)", l)
	}
	return levelNames[l]
}

// ParseLevel returns the level a config or request names.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("durability: unknown level %q (no-log, mmap-log or fsync-log)", s)
}

// ErrLevel is returned, wrapped, for a level a transaction may not ask
// for on this node.
var ErrLevel = errors.New("durability: level not available")

// ErrStandby is returned, as a *StandbyError, for a commit on a standby.
var ErrStandby = errors.New("durability: this node is a standby")

// StandbyError refuses a commit on a standby and names its primary: the
// node's name and where clients reach it (both empty while no primary
// has reached the standby).
type StandbyError struct {
	Name, Addr string
}

func (e *StandbyError) Error() string {
	if e.Addr == "" {
		return ErrStandby.Error() + ", and no primary has reached it yet: writes go to the primary"
	}
	return fmt.Sprintf("%v: writes go to the primary, %s at %s", ErrStandby, e.Name, e.Addr)
}

func (e *StandbyError) Unwrap() error { return ErrStandby }

// ErrReplica is returned, wrapped, when a replicated record cannot be
// taken: it does not follow the last one, or the store failed earlier.
var ErrReplica = errors.New("durability: replication")

// Options configure a Store.
type Options struct {
	FS    vfs.FS // nil means vfs.Default
	Level Level  // the node's level: what a commit waits for by default
	Floor Level  // the weakest level a transaction may ask for
	// Dirs are the log's channel directories. Empty means no log at all
	// (a diskless node): there is nothing to recover, and Level must be
	// NoLog.
	Dirs []string
	// IgnoreCorruption makes recovery keep what precedes corruption and
	// set the rest aside instead of refusing to start.
	IgnoreCorruption bool
	// SegmentSize is the log's segment size; zero means the log's default.
	SegmentSize int64
	// Prefill is logging.Options.Prefill: each segment's zeros are
	// written ahead, while the one before fills.
	Prefill bool
	// MmapSyncInterval is how often mmap-log syncs its mappings; zero
	// means only when a segment is full (or a commit asks for fsync-log).
	MmapSyncInterval time.Duration
	// OnSync is the log's logging.Options.OnSync: told of each group
	// sync, for metrics.
	OnSync func(records int, took time.Duration)
	// RingBytes bounds the recent records kept in memory for standbys
	// (Ring). A no-log node always keeps them (zero means 64 MiB); a node
	// with a log keeps none when it is zero, until KeepRing.
	RingBytes int64
	// Standby opens the store refusing local commits (SetPrimary).
	Standby bool
	Epoch   uint64
	Logger  hclog.Logger
	// Restore, when set, fills the new, empty database from an image
	// before the log is read, and returns the image's LSN (zero: there
	// was none); recovery then replays the log after it.
	Restore func(db *mem.DB) (uint64, error)
	// StopAfter, when not zero, stops recovery after that LSN even if the
	// log goes on: the records past it are set aside when the log opens
	// (a standby whose log diverged from its new primary's truncates it
	// so). Open fails unless recovery reaches it.
	StopAfter uint64
	// Recovered, when set, is called once the log is replayed, before it
	// is opened for new commits (which truncates a torn tail and sets
	// aside what recovery ignored); an error stops Open with nothing on
	// disk changed.
	Recovered func(Recovery) error
}

// Recovery says what recovery did.
type Recovery struct {
	Records  int64         // records replayed
	Bytes    int64         // their encoded size
	LastLSN  uint64        // the last LSN replayed
	Duration time.Duration // how long it took
	Stop     string        // why it stopped
}

// Store is a node's database with its durability: the engine, and the log
// or ring behind it.
type Store struct {
	opts Options
	db   *mem.DB
	log  *logging.Log // nil for NoLog
	// ring is nil while a node with a log keeps none. A no-log node's
	// takes its records under mu; a log's takes its commits from the log
	// (logging.Log.Tap), and replicated records under mu, once applied.
	ring     atomic.Pointer[Ring]
	mu       sync.Mutex // NoLog: orders LSNs into the ring
	last     uint64     // NoLog: the last LSN assigned (guarded by mu)
	broken   error      // a replicated record was logged but did not apply (guarded by mu)
	recovery Recovery
	// primary is nil on a primary; on a standby it names the primary
	// (empty while none is known), and commits are refused.
	primary atomic.Pointer[StandbyError]
	// held, on a primary, is why it takes no commits yet (Hold).
	held  atomic.Pointer[error]
	admit func() error // Writable, under the log's lock
}

// Open recovers the database from the log in opts.Dirs and opens the log
// for new commits, at the node's level.
func Open(opts Options) (*Store, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Floor > opts.Level {
		return nil, fmt.Errorf("durability: floor %s is stronger than the level %s", opts.Floor, opts.Level)
	}
	if len(opts.Dirs) == 0 && opts.Level != NoLog {
		return nil, fmt.Errorf("durability: %s needs log directories", opts.Level)
	}
	if opts.RingBytes <= 0 && opts.Level == NoLog {
		opts.RingBytes = 64 << 20
	}
	s := &Store{opts: opts}
	if opts.Standby {
		s.primary.Store(&StandbyError{})
	}
	s.db = mem.Open(mem.Options{Log: s, Logger: opts.Logger.Named("mem")})
	var image uint64
	if opts.Restore != nil {
		var err error
		if image, err = opts.Restore(s.db); err != nil {
			return nil, fmt.Errorf("durability: %w", err)
		}
		s.recovery.LastLSN = image
	}
	var tails []logging.Tail
	setAside := false // records past the point recovery reached
	if len(opts.Dirs) > 0 {
		var err error
		if tails, setAside, err = s.recover(image); err != nil {
			return nil, err
		}
	}
	if opts.StopAfter > 0 && s.recovery.LastLSN != opts.StopAfter {
		return nil, fmt.Errorf("durability: recovery was to stop after LSN %d, and reached only %d (%s)", opts.StopAfter, s.recovery.LastLSN, s.recovery.Stop)
	}
	if opts.Recovered != nil {
		if err := opts.Recovered(s.recovery); err != nil {
			return nil, fmt.Errorf("durability: %w", err)
		}
	}
	s.last = s.recovery.LastLSN
	logOpts := logging.Options{
		FS: opts.FS, Dirs: opts.Dirs, SegmentSize: opts.SegmentSize, Prefill: opts.Prefill, Epoch: opts.Epoch,
		Logger: opts.Logger.Named("log"), StartLSN: s.recovery.LastLSN, Tails: tails,
		Mapped: opts.Level == MmapLog, SyncInterval: opts.MmapSyncInterval, OnSync: opts.OnSync,
	}
	if opts.Level == NoLog {
		if setAside {
			// This node's commits reuse the LSNs of the records past
			// the gap (or the corruption, or StopAfter): an image of them
			// followed by a replay of those records would mix two
			// histories. Opening the log voids them for good.
			log, err := logging.Open(logOpts)
			if err == nil {
				err = log.Close()
			}
			if err != nil {
				return nil, fmt.Errorf("durability: void the log past LSN %d: %w", s.recovery.LastLSN, err)
			}
		}
		s.ring.Store(NewRing(opts.RingBytes, s.last))
		return s, nil
	}
	log, err := logging.Open(logOpts)
	if err != nil {
		return nil, fmt.Errorf("durability: open the log: %w", err)
	}
	if setAside && opts.StopAfter > 0 {
		if refused := log.Refusing(); refused != nil {
			// Its opening, which voids the records past StopAfter, is
			// not written yet (a full disk): the next start, told
			// nothing, would read them.
			return nil, errors.Join(fmt.Errorf("durability: cut the log after LSN %d: %w", opts.StopAfter, refused), log.Close())
		}
	}
	s.log = log
	s.admit = s.Writable
	if opts.RingBytes > 0 {
		s.KeepRing(opts.RingBytes)
	}
	return s, nil
}

// recover replays the log after LSN image (what a loaded image holds)
// into the database and returns where each channel's data ends, and
// whether records past the point it reached remain (after a gap, a
// corruption it ignored, or StopAfter).
func (s *Store) recover(image uint64) ([]logging.Tail, bool, error) {
	start := time.Now()
	r, err := logging.NewReader(logging.ReaderOptions{FS: s.opts.FS, Dirs: s.opts.Dirs, IgnoreCorruption: s.opts.IgnoreCorruption, After: image})
	if err != nil {
		return nil, false, fmt.Errorf("durability: recovery: %w", err)
	}
	rec := &s.recovery
	if err := s.replay(r); err != nil {
		return nil, false, errors.Join(err, r.Close())
	}
	rec.LastLSN = r.Last() // the record past StopAfter, when replay stopped there
	if s.opts.StopAfter > 0 {
		rec.LastLSN = min(rec.LastLSN, s.opts.StopAfter)
	}
	gap := r.Gap()
	past := gap || r.Last() > rec.LastLSN
	tails, err := r.Finish()
	if err = errors.Join(err, r.Close()); err != nil {
		return nil, false, fmt.Errorf("durability: recovery: %w", err)
	}
	rec.Duration = time.Since(start)
	rec.Stop = "the end of the log"
	switch {
	case s.opts.StopAfter > 0 && rec.LastLSN == s.opts.StopAfter:
		rec.Stop = fmt.Sprintf("LSN %d, where it was told to stop; the records after it are set aside", rec.LastLSN)
	case gap:
		rec.Stop = fmt.Sprintf("a gap: no channel holds LSN %d", rec.LastLSN+1)
	}
	for i, t := range tails {
		switch {
		case t.Corrupt:
			past = true
			s.opts.Logger.Error("recovery ignored corruption (recovery_ignore_corruption); the rest of the channel is set aside",
				"channel", i, "dir", s.opts.Dirs[i], "error", t.Err)
			rec.Stop += fmt.Sprintf("; ignored corruption in channel %d", i)
		case t.Torn:
			s.opts.Logger.Info("recovery found a torn tail and truncates it", "channel", i, "segment", logging.SegmentName(t.Seq), "offset", t.Offset)
			rec.Stop += fmt.Sprintf("; a torn tail in channel %d", i)
		}
	}
	s.opts.Logger.Info("recovered the log", "after-image-lsn", image, "records", rec.Records, "bytes", rec.Bytes, "duration", rec.Duration,
		"last-lsn", rec.LastLSN, "stopped-at", rec.Stop)
	return tails, past, nil
}

// replay applies the records r reads to the database, on every core
// (mem.Replayer).
func (s *Store) replay(r *logging.Reader) error {
	rp := s.db.NewReplayer()
	rec := &s.recovery
	var redo mem.Redo // each record in turn; Add copies it
	for {
		lr, ok, err := r.Next()
		if err != nil {
			err = fmt.Errorf("durability: recovery after LSN %d: %w", r.Last(), err)
			return errors.Join(err, rp.Close())
		}
		if !ok || s.opts.StopAfter > 0 && lr.LSN > s.opts.StopAfter {
			break
		}
		err = redo.Decode(lr.Body)
		if err == nil {
			err = rp.Add(lr.LSN, &redo)
		}
		if err != nil {
			// A worker's failure comes back from Close as well.
			if cerr := rp.Close(); cerr != nil && !errors.Is(err, cerr) {
				err = errors.Join(err, cerr)
			}
			return fmt.Errorf("durability: recovery: replay LSN %d: %w", lr.LSN, err)
		}
		rec.Records++
		rec.Bytes += int64(len(lr.Body))
	}
	if err := rp.Close(); err != nil {
		return fmt.Errorf("durability: recovery: replay: %w", err)
	}
	return nil
}

// Commit is the engine's commit hook (mem.CommitLog): it encodes the
// record and hands it to the log (and through it to the ring, if the
// node keeps one), or to the ring on a no-log node. A standby refuses it.
func (s *Store) Commit(r *mem.Redo) (uint64, error) {
	if err := s.Writable(); err != nil {
		return 0, err
	}
	if s.log == nil {
		return s.commitRing(r)
	}
	// The log copies the record, so the encoding buffer is reused. It
	// checks again, under the lock that gives LSNs, that the node has not
	// become a standby meanwhile (SetPrimary).
	buf := encodeBufs.Get().(*[]byte)
	*buf = r.AppendBinary((*buf)[:0])
	lsn, err := s.log.AppendIf(*buf, s.admit)
	if cap(*buf) <= maxPooledBuf {
		encodeBufs.Put(buf)
	}
	return lsn, err
}

// commitRing commits into a no-log node's ring under mu, which gives
// LSNs in the order the ring takes them.
func (s *Store) commitRing(r *mem.Redo) (uint64, error) {
	body := r.AppendBinary(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Writable(); err != nil { // it may have become a standby meanwhile
		return 0, err
	}
	s.last++
	s.ring.Load().Add(s.last, body)
	return s.last, nil
}

// KeepRing makes a node with a log keep the records it logs from now on
// in a ring of maxBytes, for standbys (a standby behind it catches up
// from the log's files first), if it keeps none yet. A no-log node always
// keeps one.
func (s *Store) KeepRing(maxBytes int64) {
	if s.log == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ring.Load() != nil {
		return
	}
	s.log.Tap(func(last uint64) func(lsn uint64, body []byte) {
		ring := NewRing(maxBytes, last)
		s.ring.Store(ring)
		return ring.Add // the log's copy, which the ring may keep
	})
}

// SetPrimary makes the store refuse commits as a standby of the primary
// named name, which clients reach at addr (both empty while unknown).
// A commit is refused or given its LSN under mu (no-log) or the log's
// lock, so none is given one once SetPrimary has returned (Settle waits
// for those given one before).
func (s *Store) SetPrimary(name, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.primary.Store(&StandbyError{Name: name, Addr: addr})
	if s.log != nil {
		s.log.LastLSN() // waits out an append that was admitted before
	}
}

// Settle waits until every commit given an LSN is installed in the
// database: after SetPrimary, the database then changes no more but
// through Replicate.
func (s *Store) Settle(ctx context.Context) error {
	s.mu.Lock()
	want := s.last
	if s.log != nil {
		want = s.log.LastLSN()
	}
	s.mu.Unlock()
	if err := s.WaitApplied(ctx, want); err != nil {
		return err
	}
	// The highest LSN given may be installed while a lower one still
	// installs.
	s.db.Drain()
	return nil
}

// WaitApplied waits until the database has installed every commit up to
// lsn (a standby: applied it), or ctx ends, or the store is broken (a
// replicated record it logged did not apply).
func (s *Store) WaitApplied(ctx context.Context, lsn uint64) error {
	for s.db.LastLSN() < lsn {
		s.mu.Lock()
		broken := s.broken
		s.mu.Unlock()
		if broken != nil {
			return broken
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("durability: wait for the commits up to LSN %d to be installed (at %d): %w", lsn, s.db.LastLSN(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Writable returns nil on a primary that takes commits; on a standby the
// *StandbyError (ErrStandby) its commits get, naming the primary: a write
// can be refused with it before it runs on the standby's data, whose
// answer (a missing row, a taken key) would not be the primary's; and on
// a held primary the error it was held with (Hold).
func (s *Store) Writable() error {
	if p := s.primary.Load(); p != nil {
		return p
	}
	if h := s.held.Load(); h != nil {
		return *h
	}
	return nil
}

// Refusing returns why a primary refuses commits now: it is held (Hold),
// or its log's disk is full, or its log failed; nil while it takes them,
// and on a standby.
func (s *Store) Refusing() error {
	if s.primary.Load() != nil {
		return nil
	}
	if h := s.held.Load(); h != nil {
		return *h
	}
	if s.log != nil {
		return s.log.Refusing()
	}
	return nil
}

// Hold makes a primary refuse commits with err until Lead: it cannot
// begin its stretch of the epoch history yet, and no record may be
// logged before that stretch is kept.
func (s *Store) Hold(err error) { s.held.Store(&err) }

// Standby reports whether the store refuses commits, and names the
// primary they go to (empty while unknown).
func (s *Store) Standby() (name, addr string, ok bool) {
	if p := s.primary.Load(); p != nil {
		return p.Name, p.Addr, true
	}
	return "", "", false
}

// Replicate takes a record the primary committed at lsn, which must
// follow the last one here: it logs body (the encoding of r) at the
// node's level, applies r, visible to readers when it returns, then keeps
// it in the ring, if the node keeps one. It does not wait for the log. A
// record that is logged but does not apply leaves the store broken: it
// takes no more, and a restart would stop at that record, so the node
// must be imaged again.
// Calls must not overlap (one applier makes them, in LSN order).
func (s *Store) Replicate(lsn uint64, body []byte, r *mem.Redo) error {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return s.broken
	}
	if want := s.db.LastLSN() + 1; lsn != want {
		s.mu.Unlock()
		return fmt.Errorf("%w: LSN %d does not follow this node's last, %d", ErrReplica, lsn, want-1)
	}
	if s.log != nil {
		got, err := s.log.AppendUntapped(body)
		if err == nil && got != lsn {
			s.broken = fmt.Errorf("%w: the log put replicated LSN %d at %d", ErrReplica, lsn, got)
			err = s.broken
		}
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("durability: log replicated LSN %d: %w", lsn, err)
		}
	} else {
		s.last = lsn
	}
	s.mu.Unlock()
	// Applied outside mu: Apply takes the engine's gate, which a schema
	// change holds while it commits through mu.
	err := s.db.Apply(lsn, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && s.log != nil:
		s.broken = fmt.Errorf("%w: LSN %d is logged but does not apply, and this node must be imaged again: %w", ErrReplica, lsn, err)
		return s.broken
	case err != nil:
		s.last = lsn - 1
		return fmt.Errorf("%w: apply LSN %d: %w", ErrReplica, lsn, err)
	}
	// A ring that KeepRing started since the record was logged begins
	// after it.
	if ring := s.ring.Load(); ring != nil && lsn > ring.Last() {
		ring.Add(lsn, slices.Clone(body))
	}
	return nil
}

// encodeBufs holds buffers for encoding redo records; buffers grown past
// maxPooledBuf (a bulk load's records) are left to the collector.
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledBuf = 64 << 10

// DB returns the database.
func (s *Store) DB() *mem.DB { return s.db }

// Recovery returns what recovery did at Open.
func (s *Store) Recovery() Recovery { return s.recovery }

// Level returns the node's level.
func (s *Store) Level() Level { return s.opts.Level }

// Ring returns the ring of recent records: a no-log node's, or that of a
// node with a log and Options.RingBytes, or since KeepRing; nil
// otherwise. Once there, it stays.
func (s *Store) Ring() *Ring { return s.ring.Load() }

// Check says whether a transaction may ask for level: not weaker than the
// floor, and not a level that writes a log on a node that keeps none.
func (s *Store) Check(level Level) error {
	switch {
	case level < NoLog || level > FsyncLog:
		return fmt.Errorf("%w: unknown level %d", ErrLevel, level)
	case level < s.opts.Floor:
		return fmt.Errorf("%w: %s is weaker than this node's durability_floor %s", ErrLevel, level, s.opts.Floor)
	case level > NoLog && s.log == nil:
		return fmt.Errorf("%w: %s needs a redo log, and this node runs %s", ErrLevel, level, s.opts.Level)
	}
	return nil
}

// Wait returns once the commit at lsn meets level (checked with Check
// before the commit), or with the log's failure, or with an error
// wrapping logging.ErrFull when the log's disk is full and holds that
// commit's record back, or when ctx ends.
func (s *Store) Wait(ctx context.Context, lsn uint64, level Level) error {
	switch {
	case level == NoLog || s.log == nil:
		return nil
	case level == MmapLog:
		return s.log.WaitWritten(ctx, lsn)
	}
	return s.log.Wait(ctx, lsn)
}

// Meets reports whether the commit at lsn already meets level, so that
// Wait would return at once.
func (s *Store) Meets(lsn uint64, level Level) bool { return s.met(level) >= lsn }

// met returns the largest LSN up to which every commit meets level.
func (s *Store) met(level Level) uint64 {
	switch {
	case level == NoLog || s.log == nil:
		return math.MaxUint64 // a no-log commit meets its level once committed
	case level == MmapLog:
		return s.log.WrittenLSN()
	}
	return s.log.DurableLSN()
}

// Durable waits until every commit up to lsn is durable in the log (it
// syncs an mmap-log's mappings); without a log it returns at once.
func (s *Store) Durable(ctx context.Context, lsn uint64) error {
	return s.Wait(ctx, lsn, FsyncLog)
}

// SetEpoch stamps the records logged from now on with epoch.
func (s *Store) SetEpoch(epoch uint64) {
	if s.log != nil {
		s.log.SetEpoch(epoch)
	}
}

// Lead makes the store take commits again, as a primary.
func (s *Store) Lead() {
	s.held.Store(nil)
	s.primary.Store(nil)
}

// ReadLog returns a reader of the log's records after LSN after, for a
// standby behind what the ring holds; nil without a log. It reads the
// records the log has written while the log goes on writing
// (logging.Log.NewReader), so the caller may read on as Shippable
// advances; the log may release segments meanwhile (the reader then
// fails, or starts past after+1).
func (s *Store) ReadLog(after uint64) (*logging.Reader, error) {
	if s.log == nil {
		return nil, nil
	}
	r, err := s.log.NewReader(after)
	if err != nil {
		return nil, fmt.Errorf("durability: read the log after LSN %d: %w", after, err)
	}
	return r, nil
}

// Shippable returns the largest LSN up to which every commit meets the
// node's level: what may go to a standby, which must never hold a record
// its primary could lose in a crash its level survives. On a standby (a
// propagator relays) it is also no further than the node has applied.
func (s *Store) Shippable() uint64 {
	at := s.met(s.opts.Level)
	if s.primary.Load() != nil {
		at = min(at, s.db.LastLSN())
	}
	return at
}

// WaitShippable returns once Shippable has reached lsn, or with the log's
// failure, or when ctx ends. Unlike Wait, it waits on through a full
// disk.
func (s *Store) WaitShippable(ctx context.Context, lsn uint64) error {
	if s.opts.Level != NoLog && s.log != nil {
		if err := s.log.Follow(ctx, lsn, s.opts.Level == MmapLog); err != nil {
			return err
		}
	}
	if s.primary.Load() != nil {
		return s.WaitApplied(ctx, lsn)
	}
	return nil
}

// DurableLSN returns the largest LSN that, with all before it, is durable
// in the log; zero on a node without one.
func (s *Store) DurableLSN() uint64 {
	if s.log == nil {
		return 0
	}
	return s.log.DurableLSN()
}

// LogStats returns the log's counts (zero without a log).
func (s *Store) LogStats() logging.Stats {
	if s.log == nil {
		return logging.Stats{}
	}
	return s.log.Stats()
}

// Release removes the log an image at LSN upto makes redundant, keeping
// at least keep bytes of it (logging.Log.Release); a node without a log
// has nothing to release.
func (s *Store) Release(upto uint64, keep int64) (logging.Released, error) {
	if s.log == nil {
		return logging.Released{}, nil
	}
	rel, err := s.log.Release(upto, keep)
	if err != nil {
		return rel, fmt.Errorf("durability: %w", err)
	}
	return rel, nil
}

// Close writes and syncs what the log holds and closes it.
func (s *Store) Close() error {
	if s.log == nil {
		return nil
	}
	if err := s.log.Close(); err != nil {
		return fmt.Errorf("durability: close the log: %w", err)
	}
	return nil
}
