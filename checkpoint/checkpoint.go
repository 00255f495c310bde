// Package checkpoint gives the database a disk image (SPEC 5): it writes
// consistent images while commits go on, keeps two of them in ping-pong
// slots, releases the log they make redundant, and restarts a node from
// the newest valid one. The image format is package image.
//
// # Technique
//
// A checkpoint takes a mem.Snapshot: the engine fixes the LSN C (commits
// pause for an instant) and the scan then reads each table page by page
// as of C, while commits go on; a commit that changes a row the scan has
// not reached yet keeps a copy of the version the snapshot needs
// (copy-on-write versions). So the image holds exactly the commits <= C,
// and the extra memory is only the rows changed ahead of the scan.
//
// # Slots
//
// Two files, image-a.mmdb and image-b.mmdb, in the checkpoint directory.
// A checkpoint writes the slot that does not hold the newest image, under
// a temporary name; it syncs the file, renames it into place and syncs the
// directory. Only then is it an image: a crash at any point leaves the
// newest image as it was, and the other slot holds either its old image
// or the new one, whole. The log is then released up to the older
// image's LSN, not the new one's, so that the older image plus the log
// still restores the database if the newest turns out damaged.
//
// # Restart
//
// Inspect checks both slots' headers and end frames, which is enough to
// tell a whole image from one a crash cut short, and picks the newest
// whole image; a damaged one is skipped with a warning, and when images
// exist but none is whole the node refuses to start (ErrNoImage). Load
// fills the engine from it, on all cores, checking every frame; the
// durability package then replays the log after its LSN, on all cores
// too. Restart does all of that, as a node's start: if the newest image
// does not load (damage inside, or a row that breaks its table), it warns
// and starts from the older one, and the next checkpoint replaces the
// broken one.
//
// # Serving images
//
// A Shelf holds the images a node streams to others (package replica):
// on a node with a data dir the newest slot's file, opened after a
// checkpoint brings it up to date (Current); on a diskless node an image
// encoded in memory from a snapshot (Encode). It keeps each for a while
// after its last reader, so a broken transfer resumes on the same bytes.
// Install makes a received image the first checkpoint of an empty data
// dir; LoadFrom loads one straight from a stream.
package checkpoint

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/semaphore"

	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// Log is what a checkpoint needs of the node's redo log
// (durability.Store): how much it has written, waiting until an image's
// commits are durable in it, and releasing what an image makes
// redundant.
type Log interface {
	LogStats() logging.Stats
	Durable(ctx context.Context, lsn uint64) error
	Release(upto uint64, keep int64) (logging.Released, error)
}

// Options configure a Checkpointer.
type Options struct {
	FS  vfs.FS // nil means vfs.Default
	Dir string // the slots' directory
	// Interval and LogBytes start a checkpoint when that long has passed,
	// or the log has grown by that much, since the last one began, be it
	// one of these or a Run of the node's (zero: never).
	Interval time.Duration
	LogBytes int64
	// RetainLogBytes is log_retention_bytes: the log kept past the older
	// image, for standbys.
	RetainLogBytes int64
	// Epochs is the node's epoch history, which its images record (nil:
	// epoch 0, no history).
	Epochs Epochs
	Logger hclog.Logger
}

// Epochs is what an image records of the epoch history of the node it is
// made on (replica.Epochs).
type Epochs interface {
	// Image returns the history up to an LSN (the stretches that start
	// at or below it), or nil when the node cannot say.
	Image(lsn uint64) []image.Stretch
	// At returns the epoch of the record at an LSN.
	At(lsn uint64) uint64
}

// newHeader is the header of an image of sn made now, and the history it
// carries: the history epochs gives for its LSN, whose last stretch names
// the header's epoch (without one, At's; without epochs, none and epoch
// 0), and sn's tables, which encode writes in the same order.
func newHeader(sn *mem.Snapshot, epochs Epochs) (image.Header, []image.Stretch) {
	h := image.Header{LSN: sn.LSN(), NextTable: sn.NextTableID(), Created: time.Now().UnixNano()}
	var hist []image.Stretch
	if epochs != nil {
		hist = epochs.Image(h.LSN)
		if len(hist) > 0 {
			h.Epoch = hist[len(hist)-1].Epoch
		} else {
			h.Epoch = epochs.At(h.LSN)
		}
	}
	for _, def := range sn.Tables() {
		h.Tables++
		h.Schema = image.SchemaSum(h.Schema, def.ID, def.AppendBinary(nil))
	}
	return h, hist
}

// Result says what a checkpoint did.
type Result struct {
	Image    Image
	Skipped  bool          // nothing was committed since the newest image
	Duration time.Duration // how long it took
	// KeptBytes is the most memory the snapshot held in old row versions,
	// sampled after each table: the checkpoint's extra memory.
	KeptBytes int64
	Released  logging.Released
}

// Checkpointer writes checkpoints of a database, one at a time.
type Checkpointer struct {
	opts Options
	db   *mem.DB
	log  Log

	// mu is held for a whole checkpoint (lock, unlock): a semaphore of
	// one, so that Run waits for a running checkpoint only while its
	// context lasts.
	mu    *semaphore.Weighted
	slots Slots // guarded by mu
	// frozen says Freeze was called: no more checkpoints. Run reads it
	// under mu; Thaw, which a promotion calls, need not wait for a
	// running checkpoint to clear it.
	frozen atomic.Bool

	statsMu sync.Mutex // not mu: Status and metrics read stats without waiting for a checkpoint
	stats   Stats      // guarded by statsMu
	// since is when the last checkpoint began, and the log's size then,
	// or Start's time and size: what Interval and LogBytes count from.
	// Guarded by statsMu.
	since mark

	loopMu sync.Mutex         // guards stop, done and closed: Start, Stop, Close and Thaw may come from different goroutines
	stop   context.CancelFunc // ends the background loop and its checkpoint
	done   chan struct{}      // closed when the loop has returned
	closed bool               // Close was called: the loop never starts again
}

// New returns a Checkpointer for db, whose slots hold what Inspect found.
// log may be nil (a node without one).
func New(db *mem.DB, log Log, slots Slots, opts Options) *Checkpointer {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Checkpointer{opts: opts, db: db, log: log, mu: semaphore.NewWeighted(1), slots: slots, stats: Stats{Newest: slots.Newest}}
}

// lock takes mu, waiting for a running checkpoint.
func (c *Checkpointer) lock() { _ = c.mu.Acquire(context.Background(), 1) } // Background never ends

// lockContext takes mu, waiting for a running checkpoint until ctx ends.
func (c *Checkpointer) lockContext(ctx context.Context) error {
	if err := c.mu.Acquire(ctx, 1); err != nil {
		return fmt.Errorf("checkpoint: waiting for the checkpoint under way: %w", err)
	}
	return nil
}

func (c *Checkpointer) unlock() { c.mu.Release(1) }

// Stats count what a Checkpointer did since it was made, for metrics.
type Stats struct {
	// Run's results. Cancelled counts checkpoints whose context ended
	// while they ran (their caller gave up, Freeze, Stop): no fault of
	// the node's, unlike Failed.
	Written, Skipped, Cancelled, Failed int64
	LastDuration                        time.Duration // how long the last image written took; zero before one
	Newest                              Image         // the newest image (LSN zero: none)
}

// Stats returns the counts, without waiting for a running checkpoint.
func (c *Checkpointer) Stats() Stats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return c.stats
}

// LSN returns the LSN of the newest image; zero if there is none.
func (c *Checkpointer) LSN() uint64 { return c.Stats().Newest.LSN }

// ErrFrozen is returned by Run after Freeze.
var ErrFrozen = errors.New("checkpoint: checkpoints are stopped until the node restarts")

// Freeze stops the background loop and waits for a running checkpoint;
// from then on Run refuses (ErrFrozen): the images on disk stay as they
// are until the node restarts (a node about to cut its log or reload),
// or until Thaw.
func (c *Checkpointer) Freeze() {
	c.Stop()
	c.frozen.Store(true)
	c.lock() // a checkpoint under way ends first; the next sees frozen
	c.unlock()
}

// Thaw undoes Freeze, for a node whose log is no longer to be cut nor
// reloaded (it was promoted instead): Run writes images again, and the
// background loop starts again. It reports whether the checkpoints were
// frozen, without waiting for a running checkpoint.
func (c *Checkpointer) Thaw() bool {
	was := c.frozen.Swap(false)
	if was {
		c.Start()
	}
	return was
}

// Run writes a checkpoint now, after any running one, unless nothing was
// committed since the newest image. If ctx ends while it waits for a
// running one, it returns ctx's error (wrapped), having run none.
func (c *Checkpointer) Run(ctx context.Context) (Result, error) {
	if err := c.lockContext(ctx); err != nil {
		return Result{}, err
	}
	defer c.unlock()
	begun := c.now()
	res, err := c.run(ctx)
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	if err == nil {
		c.since = begun
	}
	switch {
	case err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		c.stats.Cancelled++
	case err != nil:
		c.stats.Failed++
	case res.Skipped:
		c.stats.Skipped++
	default:
		c.stats.Written++
		c.stats.LastDuration, c.stats.Newest = res.Duration, res.Image
	}
	return res, err
}

// run is Run's checkpoint; the caller holds mu.
func (c *Checkpointer) run(ctx context.Context) (Result, error) {
	if c.frozen.Load() {
		return Result{}, ErrFrozen
	}
	start := time.Now()
	sn := c.db.Snapshot()
	defer sn.Close()
	if sn.LSN() == 0 || sn.LSN() == c.slots.Newest.LSN {
		return Result{Image: c.slots.Newest, Skipped: true}, nil
	}
	slot := 0
	if c.slots.Newest.LSN != 0 && c.slots.Newest.Slot == 0 {
		slot = 1
	}
	res := Result{Image: Image{Slot: slot, Path: slotPath(c.opts.Dir, slot), LSN: sn.LSN()}}
	if err := c.write(ctx, sn, &res); err != nil {
		return Result{}, err
	}
	older := c.slots.Newest
	c.slots = Slots{Newest: res.Image, Older: older}
	res.Duration = time.Since(start)
	if c.log != nil {
		// The older image and the log after it must still restore the
		// database should the new image prove damaged.
		rel, err := c.log.Release(older.LSN, c.opts.RetainLogBytes)
		if err != nil {
			c.opts.Logger.Warn("could not release the log the images hold; it stays on disk", "error", err)
		}
		res.Released = rel
	}
	c.opts.Logger.Info("checkpoint written", "file", res.Image.Path, "lsn", res.Image.LSN, "rows", res.Image.Rows,
		"bytes", res.Image.Bytes, "duration", res.Duration, "mb-per-s", fmt.Sprintf("%.0f", float64(res.Image.Bytes)/1e6/res.Duration.Seconds()),
		"kept-bytes", res.KeptBytes, "released-segments", res.Released.Segments)
	return res, nil
}

// write writes the snapshot into res.Image's slot (writeSlot), once the
// log holds its commits durably.
func (c *Checkpointer) write(ctx context.Context, sn *mem.Snapshot, res *Result) error {
	fill := func(f vfs.File) error { return c.fill(ctx, f, sn, res) }
	var ready func() error
	if c.log != nil {
		// The image may hold commits the log has not made durable yet.
		// It becomes an image only once they are: else a crash could
		// leave it ahead of the log, and the older image plus the log
		// could no longer stand in for it.
		ready = func() error {
			if err := c.log.Durable(ctx, sn.LSN()); err != nil {
				return fmt.Errorf("checkpoint: the log did not make LSN %d durable: %w", sn.LSN(), err)
			}
			return nil
		}
	}
	return writeSlot(c.opts.FS, c.opts.Dir, res.Image.Path, fill, ready)
}

// writeSlot makes path, in dir, a file fill writes, so that a crash
// leaves either the old file or the whole new one (vfs.ReplaceFile): it
// is renamed into place only once ready (if set) approves.
func writeSlot(fs vfs.FS, dir, path string, fill func(f vfs.File) error, ready func() error) error {
	if err := vfs.MkdirDurable(fs, dir); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := vfs.ReplaceFile(fs, path, fill, ready); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// fill writes the snapshot's image into f.
func (c *Checkpointer) fill(ctx context.Context, f vfs.File, sn *mem.Snapshot, res *Result) error {
	return fillImage(ctx, f, sn, c.opts.Epochs, &res.Image, &res.KeptBytes)
}

// fillImage writes the snapshot's image into f and records its size and
// rows in img; kept is as encode's.
func fillImage(ctx context.Context, f vfs.File, sn *mem.Snapshot, epochs Epochs, img *Image, kept *int64) error {
	bw := bufio.NewWriterSize(&fileWriter{f: f}, 1<<20)
	h, hist := newHeader(sn, epochs)
	w, err := encode(ctx, bw, sn, h, hist, kept)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err) // the callers say "checkpoint"
	}
	img.Bytes, img.Rows = w.Size(), w.Totals().Rows
	return nil
}

// WriteImage writes an image of db as of now to path, while commits go
// on, and makes it durable: a node's database set aside for its
// operator, who can start a node from it (serve -from-image), with the
// history of epochs (as Options.Epochs).
func WriteImage(ctx context.Context, fs vfs.FS, path string, db *mem.DB, epochs Epochs) (Image, error) {
	sn := db.Snapshot()
	defer sn.Close()
	if sn.LSN() == 0 {
		return Image{}, ErrEmpty
	}
	img := Image{Path: path, LSN: sn.LSN()}
	fill := func(f vfs.File) error { return fillImage(ctx, f, sn, epochs, &img, nil) }
	if err := writeSlot(fs, filepath.Dir(path), path, fill, nil); err != nil {
		return Image{}, err
	}
	return img, nil
}

// cancelCheckRows is how many rows an image is written between looks at
// whether its checkpoint was cancelled.
const cancelCheckRows = 4096

// encode writes the snapshot's image, with header h and history hist, to
// out. If kept is not nil, it records the most memory the snapshot held
// in old row versions, sampled after each table.
func encode(ctx context.Context, out io.Writer, sn *mem.Snapshot, h image.Header, hist []image.Stretch, kept *int64) (*image.Writer, error) {
	w, err := image.NewWriter(out, h, hist)
	if err != nil {
		return nil, err
	}
	defs := sn.Tables()
	for _, def := range defs {
		if err := w.Table(def.ID, def.AppendBinary(nil)); err != nil {
			return nil, err
		}
	}
	n := 0
	for _, def := range defs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := sn.Scan(def.ID, func(r mem.Record) error {
			// A table may take seconds: a Freeze or Stop must not wait
			// for all of it.
			if n++; n%cancelCheckRows == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			return w.Row(def.ID, r.Encoded())
		})
		if err != nil {
			return nil, fmt.Errorf("table %q: %w", def.Name, err)
		}
		if kept != nil {
			*kept = max(*kept, sn.KeptBytes())
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w, nil
}

// fileWriter writes a vfs.File from the start, in order.
type fileWriter struct {
	f   vfs.File
	off int64
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := w.f.WriteAt(b, w.off)
	if err != nil {
		return n, fmt.Errorf("write %s at %d: %w", w.f.Name(), w.off, err)
	}
	w.off += int64(n)
	return n, nil
}

// mark is a moment in the checkpoints' schedule: a time, and the log's
// size then.
type mark struct {
	at    time.Time
	bytes int64
}

// now returns the mark of now.
func (c *Checkpointer) now() mark { return mark{time.Now(), c.logBytes()} }

// Start runs checkpoints in the background on Options.Interval and
// Options.LogBytes, counted from now, until Stop or Close.
func (c *Checkpointer) Start() {
	c.loopMu.Lock()
	defer c.loopMu.Unlock()
	if c.stop != nil || c.closed {
		return
	}
	var ctx context.Context
	ctx, c.stop = context.WithCancel(context.Background())
	c.done = make(chan struct{})
	since := c.now()
	c.statsMu.Lock()
	c.since = since
	c.statsMu.Unlock()
	go c.loop(ctx)
}

// Stop stops the background checkpoints, waiting for a running one.
func (c *Checkpointer) Stop() {
	c.loopMu.Lock()
	defer c.loopMu.Unlock()
	c.stopLoop()
}

// Close stops the background checkpoints for good, at shutdown: a Start
// or Thaw after it starts none. Run still writes one.
func (c *Checkpointer) Close() {
	c.loopMu.Lock()
	defer c.loopMu.Unlock()
	c.closed = true
	c.stopLoop()
}

// stopLoop ends the loop, if it runs; the caller holds loopMu.
func (c *Checkpointer) stopLoop() {
	if c.stop == nil {
		return
	}
	c.stop()
	<-c.done
	c.stop = nil
}

// loop starts a checkpoint when one is due (Interval since the last one
// began, LogBytes more log since then), until ctx ends. It looks when the
// Interval is up and, with LogBytes, at least once a second. A failed
// checkpoint is retried after a pause, and logged.
func (c *Checkpointer) loop(ctx context.Context) {
	defer close(c.done)
	t := time.NewTimer(time.Hour) // each round resets it
	defer t.Stop()
	var retry time.Time // after a failure, not before then
	for {
		c.statsMu.Lock()
		since := c.since
		c.statsMu.Unlock()
		wait := time.Duration(math.MaxInt64)
		if c.opts.LogBytes > 0 {
			wait = time.Second
		}
		if c.opts.Interval > 0 {
			wait = min(wait, time.Until(since.at.Add(c.opts.Interval)))
		}
		t.Reset(max(wait, time.Until(retry), 0))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.statsMu.Lock()
		since = c.since // a Run of the node's meanwhile counts
		c.statsMu.Unlock()
		due := (c.opts.Interval > 0 && time.Since(since.at) >= c.opts.Interval) || (c.opts.LogBytes > 0 && c.logBytes()-since.bytes >= c.opts.LogBytes)
		if !due {
			continue
		}
		if _, err := c.Run(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.opts.Logger.Error("checkpoint failed; retrying in 10s", "error", err)
			retry = time.Now().Add(checkpointRetry)
		}
	}
}

// checkpointRetry is the pause after a failed background checkpoint.
const checkpointRetry = 10 * time.Second

// logBytes returns what the log has written so far (zero without one).
func (c *Checkpointer) logBytes() int64 {
	if c.log == nil {
		return 0
	}
	return c.log.LogStats().StoredBytes
}

// Dir returns the checkpoint directory within a data directory.
func Dir(dataDir string) string { return filepath.Join(dataDir, "checkpoint") }
