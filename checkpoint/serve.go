package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

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

	refs  int         // streams reading it; guarded by Shelf.mu
	timer *time.Timer // drops it once unused for Shelf's keep
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
	// Keep is how long an image stays after its last stream ends, for a
	// broken transfer to resume on the same bytes.
	Keep   time.Duration
	Logger hclog.Logger
}

// Shelf keeps the images a node is serving. A transfer that breaks
// resumes with the image's name, and gets the very bytes it was reading
// as long as the image is kept: while a stream reads it, and for Keep
// after the last one ends. A kept image costs its size in memory (a
// node without a data dir) or on disk (a slot file a newer checkpoint
// replaced stays open).
type Shelf struct {
	opts   ShelfOptions
	mu     sync.Mutex
	images map[ImageID]*Served
	closed bool
}

// NewShelf returns an empty Shelf.
func NewShelf(opts ShelfOptions) *Shelf {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Shelf{opts: opts, images: map[ImageID]*Served{}}
}

// Get returns the image named id, or, when id is zero, a current image:
// a kept one if nothing was committed since it, else a new one from
// Source. The caller Puts it back when its stream ends.
func (s *Shelf) Get(ctx context.Context, id ImageID) (*Served, error) {
	if id != (ImageID{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		img, ok := s.images[id]
		if !ok || s.closed {
			return nil, fmt.Errorf("%w: image %d/%08x (a newer one may be fetched from the start)", ErrImageGone, id.LSN, id.ID)
		}
		s.hold(img)
		return img, nil
	}
	if img := s.current(); img != nil {
		return img, nil
	}
	img, err := s.opts.Source(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.Join(errors.New("checkpoint: the node is shutting down"), img.close())
	}
	if have, ok := s.images[img.Name()]; ok {
		// The same image, opened twice: serve the kept one.
		if err := img.close(); err != nil {
			return nil, fmt.Errorf("checkpoint: close image %d: %w", img.Header.LSN, err)
		}
		img = have
	}
	s.images[img.Name()] = img
	s.hold(img)
	return img, nil
}

// current returns, held, a kept image at the database's last LSN.
func (s *Shelf) current() *Served {
	if s.opts.LSN == nil {
		return nil
	}
	lsn := s.opts.LSN()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, img := range s.images {
		if img.Header.LSN == lsn && !s.closed {
			s.hold(img)
			return img
		}
	}
	return nil
}

// hold counts a stream reading img; s.mu is held.
func (s *Shelf) hold(img *Served) {
	img.refs++
	if img.timer != nil {
		img.timer.Stop()
		img.timer = nil
	}
}

// Put ends a stream's use of img; once no stream uses it, it is dropped
// after Keep.
func (s *Shelf) Put(img *Served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img.refs--
	if img.refs == 0 && !s.closed {
		img.timer = time.AfterFunc(s.opts.Keep, func() { s.expire(img) })
	}
}

// expire drops img if no stream took it up again.
func (s *Shelf) expire(img *Served) {
	s.mu.Lock()
	if img.refs > 0 || s.images[img.Name()] != img || s.closed {
		s.mu.Unlock()
		return
	}
	delete(s.images, img.Name())
	s.mu.Unlock()
	if err := img.close(); err != nil {
		s.opts.Logger.Warn("could not close a served image", "lsn", img.Header.LSN, "error", err)
	}
}

// Close drops every image. Call it once no stream reads any.
func (s *Shelf) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for name, img := range s.images {
		if img.timer != nil {
			img.timer.Stop()
		}
		if err := img.close(); err != nil {
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots.Newest.LSN == 0 {
		return nil, ErrEmpty
	}
	// Opened under mu, so no checkpoint replaces the file meanwhile; once
	// open, the file outlives its replacement.
	return openServed(c.opts.FS, c.slots.Newest)
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
// on a node without a data dir), while commits go on.
func Encode(ctx context.Context, db *mem.DB, epoch uint64) (*Served, error) {
	sn := db.Snapshot()
	defer sn.Close()
	if sn.LSN() == 0 {
		return nil, ErrEmpty
	}
	h := image.Header{LSN: sn.LSN(), Epoch: epoch, NextTable: sn.NextTableID(), Created: time.Now().UnixNano()}
	buf := &memImage{}
	w, err := encode(ctx, buf, sn, h, nil)
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
