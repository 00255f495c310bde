package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/semaphore"

	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// ErrEmpty is returned when an image is asked of a database in which
// nothing was ever committed: there is nothing to image.
var ErrEmpty = errors.New("checkpoint: nothing has been committed, so there is no image")

// ErrImageGone is returned, wrapped, when a transfer asks to resume an
// image the shelf no longer keeps.
var ErrImageGone = errors.New("checkpoint: the image is no longer kept")

// ImageID names one image: its LSN and its header's checksum
// (image.Header.ID), which tells apart two images at the same LSN.
type ImageID struct {
	LSN uint64
	ID  uint32
}

// Served is an image held for streaming: fixed bytes, readable at any
// offset, that stay readable while held even after a checkpoint replaces
// the slot's file.
type Served struct {
	Header image.Header
	Size   int64
	Rows   uint64
	r      io.ReaderAt
	close  func() error
}

// Name returns the image's ImageID.
func (s *Served) Name() ImageID { return ImageID{LSN: s.Header.LSN, ID: s.Header.ID()} }

// ReadAt reads the image's bytes at off.
func (s *Served) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }

// ShelfOptions configure a Shelf.
type ShelfOptions struct {
	// Source makes a current image: Checkpointer.Current on a node with a
	// data dir, Encode on one without.
	Source func(ctx context.Context) (*Served, error)
	// LSN, if set, returns the database's last LSN: while a kept image
	// has it, nothing is newer and Get serves that image without Source.
	LSN func() uint64
	// Fresh is how long after it was made an image is served to new
	// transfers even if the database has moved on since: any image is
	// consistent, and a node that follows the log goes on from its LSN.
	// It bounds how often a busy node makes images for fetches.
	Fresh time.Duration
	// Keep is how long an image stays after its last stream ends, for a
	// broken transfer to resume on the same bytes.
	Keep time.Duration
	// Find, if set, opens an image the shelf does not keep (it expired,
	// or the node restarted since it was served) that is still where
	// Source found it: Checkpointer.Find, a slot that holds it. Nil, nil:
	// none does. It gives up when ctx ends.
	Find   func(ctx context.Context, id ImageID) (*Served, error)
	Logger hclog.Logger
}

// maxIdle bounds the images a shelf keeps that no stream reads: making a
// new one drops the oldest idle ones beyond it.
const maxIdle = 2

// Shelf keeps the images a node is serving. A transfer that breaks
// resumes with the image's name, and gets the very bytes it was reading
// as long as the image is kept: while a stream reads it, and for Keep
// after the last one ends, unless newer idle images push it out
// (maxIdle). A kept image costs its size in memory (a node without a
// data dir) or on disk (a slot file a newer checkpoint replaced stays
// open). Images are made one at a time.
type Shelf struct {
	opts   ShelfOptions
	making *semaphore.Weighted // held while Source runs; waited for only while a caller's context lasts
	mu     sync.Mutex
	images map[ImageID]*shelved
	closed bool
}

// shelved is a kept image and its bookkeeping, guarded by Shelf.mu.
type shelved struct {
	img   *Served
	made  time.Time
	refs  int         // streams reading it
	timer *time.Timer // drops it once unused for Keep
	gen   uint64      // counts the timers set, so a stale one does nothing
}

// NewShelf returns an empty Shelf.
func NewShelf(opts ShelfOptions) *Shelf {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Shelf{opts: opts, making: semaphore.NewWeighted(1), images: map[ImageID]*shelved{}}
}

// Get returns the image named id, or, when id is zero, a current image:
// a kept one if nothing was committed since it or it is Fresh, else a
// new one from Source. An image named that the shelf no longer keeps is
// looked for with Find. The caller Puts it back when its stream ends.
func (s *Shelf) Get(ctx context.Context, id ImageID) (*Served, error) {
	if id != (ImageID{}) {
		return s.named(ctx, id)
	}
	if err := s.making.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("checkpoint: waiting for the image another fetch is making: %w", err)
	}
	defer s.making.Release(1)
	if img := s.current(); img != nil {
		return img, nil
	}
	img, err := s.opts.Source(ctx)
	if err != nil {
		return nil, err
	}
	return s.keep(img, time.Now())
}

// named returns, held, the image named id: kept, or found again (Find).
func (s *Shelf) named(ctx context.Context, id ImageID) (*Served, error) {
	s.mu.Lock()
	e, ok := s.images[id]
	if ok && !s.closed {
		s.hold(e)
		s.mu.Unlock()
		return e.img, nil
	}
	s.mu.Unlock()
	gone := fmt.Errorf("%w: image %d/%08x (a newer one may be fetched from the start)", ErrImageGone, id.LSN, id.ID)
	if s.opts.Find == nil {
		return nil, gone
	}
	img, err := s.opts.Find(ctx, id)
	if err != nil {
		return nil, errors.Join(gone, err)
	}
	if img == nil {
		return nil, gone
	}
	s.opts.Logger.Info("serving again an image no longer kept, found where it was made", "lsn", id.LSN)
	// As old as its header says, not new: Fresh must not serve it to new
	// transfers for being found.
	return s.keep(img, time.Unix(0, img.Header.Created))
}

// keep shelves img, newly opened and made at made, and returns it held;
// an image of the same name kept already is served instead, and img
// closed.
func (s *Shelf) keep(img *Served, made time.Time) (*Served, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.Join(errors.New("checkpoint: the node is shutting down"), img.close())
	}
	e, ok := s.images[img.Name()]
	if ok {
		// The same image, opened twice: serve the kept one.
		if err := img.close(); err != nil {
			return nil, fmt.Errorf("checkpoint: close image %d: %w", img.Header.LSN, err)
		}
	} else {
		e = &shelved{img: img, made: made}
		s.images[img.Name()] = e
	}
	s.hold(e)
	s.trim()
	return e.img, nil
}

// current returns, held, the newest kept image if it is at the
// database's last LSN or still fresh.
func (s *Shelf) current() *Served {
	s.mu.Lock()
	defer s.mu.Unlock()
	var newest *shelved
	for _, e := range s.images {
		if newest == nil || e.img.Header.LSN > newest.img.Header.LSN {
			newest = e
		}
	}
	if newest == nil || s.closed {
		return nil
	}
	if time.Since(newest.made) < s.opts.Fresh || (s.opts.LSN != nil && newest.img.Header.LSN == s.opts.LSN()) {
		s.hold(newest)
		return newest.img
	}
	return nil
}

// trim drops the oldest idle images beyond maxIdle; s.mu is held.
func (s *Shelf) trim() {
	var idle []*shelved
	for _, e := range s.images {
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *shelved) int { return a.made.Compare(b.made) })
	for len(idle) > maxIdle {
		s.drop(idle[0])
		idle = idle[1:]
	}
}

// drop closes an idle image and forgets it; s.mu is held.
func (s *Shelf) drop(e *shelved) {
	if e.timer != nil {
		e.timer.Stop()
	}
	delete(s.images, e.img.Name())
	if err := e.img.close(); err != nil {
		s.opts.Logger.Warn("could not close a served image", "lsn", e.img.Header.LSN, "error", err)
	}
}

// hold counts a stream reading e; s.mu is held.
func (s *Shelf) hold(e *shelved) {
	e.refs++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// Put ends a stream's use of img; once no stream uses it, it is dropped
// after Keep.
func (s *Shelf) Put(img *Served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.images[img.Name()]
	if !ok || e.img != img {
		return // dropped at Close
	}
	e.refs--
	if e.refs == 0 && !s.closed {
		e.gen++
		gen := e.gen
		e.timer = time.AfterFunc(s.opts.Keep, func() { s.expire(e, gen) })
	}
}

// expire drops e if the timer that fired is its latest and no stream
// took the image up again since it was set.
func (s *Shelf) expire(e *shelved, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.gen != gen || e.refs > 0 || s.closed || s.images[e.img.Name()] != e {
		return
	}
	s.drop(e)
}

// Close drops every image. Call it once no stream reads any.
func (s *Shelf) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for name, e := range s.images {
		if e.timer != nil {
			e.timer.Stop()
		}
		if err := e.img.close(); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint: close image %d: %w", name.LSN, err))
		}
		delete(s.images, name)
	}
	return errors.Join(errs...)
}

// Current writes a checkpoint if anything was committed since the newest
// image, then opens the newest image for streaming (a Shelf's Source on
// a node with a data dir).
func (c *Checkpointer) Current(ctx context.Context) (*Served, error) {
	if _, err := c.Run(ctx); err != nil {
		return nil, err
	}
	if err := c.lockContext(ctx); err != nil {
		return nil, err
	}
	defer c.unlock()
	if c.slots.Newest.LSN == 0 {
		return nil, ErrEmpty
	}
	// Opened under mu, so no checkpoint replaces the file meanwhile; once
	// open, the file outlives its replacement.
	return openServed(c.opts.FS, c.slots.Newest)
}

// Find opens for streaming the image named id if one of the slots still
// holds it (a Shelf's Find): a transfer that broke resumes on it after
// the node restarted, unless two checkpoints have replaced it since.
// Nil, nil: neither slot does. A checkpoint under way (which may replace
// a slot) is waited for only while ctx lasts: a resuming transfer's
// caller gives up.
func (c *Checkpointer) Find(ctx context.Context, id ImageID) (*Served, error) {
	if err := c.lockContext(ctx); err != nil {
		return nil, err
	}
	defer c.unlock()
	for _, img := range []Image{c.slots.Newest, c.slots.Older} {
		if img.LSN == 0 || img.LSN != id.LSN {
			continue
		}
		served, err := openServed(c.opts.FS, img)
		if err != nil {
			return nil, err
		}
		if served.Name() == id {
			return served, nil
		}
		if err := served.close(); err != nil {
			return nil, fmt.Errorf("checkpoint: close %s: %w", img.Path, err)
		}
	}
	return nil, nil
}

// openServed opens the image in a slot for streaming.
func openServed(fs vfs.FS, img Image) (*Served, error) {
	f, err := fs.Open(img.Path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", img.Path, err)
	}
	b := make([]byte, image.HeaderSize)
	_, err = f.ReadAt(b, 0)
	var h image.Header
	if err == nil {
		h, err = image.DecodeHeader(b)
	}
	if err == nil && h.LSN != img.LSN {
		err = fmt.Errorf("%w: the header says LSN %d, the slot held %d", image.ErrCorrupt, h.LSN, img.LSN)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("checkpoint: %s: %w", img.Path, err), f.Close())
	}
	return &Served{Header: h, Size: img.Bytes, Rows: img.Rows, r: f, close: f.Close}, nil
}

// Encode writes an image of db as of now into memory (a Shelf's Source
// on a node without a data dir), while commits go on, with the history
// of epochs (as Options.Epochs).
func Encode(ctx context.Context, db *mem.DB, epochs Epochs) (*Served, error) {
	sn := db.Snapshot()
	defer sn.Close()
	if sn.LSN() == 0 {
		return nil, ErrEmpty
	}
	h, hist := newHeader(sn, epochs)
	buf := &memImage{}
	w, err := encode(ctx, buf, sn, h, hist, nil)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: image in memory: %w", err)
	}
	return &Served{Header: h, Size: buf.size, Rows: w.Totals().Rows, r: buf, close: func() error { return nil }}, nil
}

// memImage is an image in memory, in blocks, so it grows without copying
// and without one huge allocation.
type memImage struct {
	blocks [][]byte
	size   int64
}

const memBlockBytes = 1 << 20

func (m *memImage) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(m.blocks) == 0 || len(m.blocks[len(m.blocks)-1]) == memBlockBytes {
			m.blocks = append(m.blocks, make([]byte, 0, memBlockBytes))
		}
		last := &m.blocks[len(m.blocks)-1]
		k := min(len(p), memBlockBytes-len(*last))
		*last = append(*last, p[:k]...)
		p = p[k:]
	}
	m.size += int64(n)
	return n, nil
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("checkpoint: read an image at offset %d", off)
	}
	n := 0
	for n < len(p) && off < m.size {
		b := m.blocks[off/memBlockBytes][off%memBlockBytes:]
		k := copy(p[n:], b)
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
