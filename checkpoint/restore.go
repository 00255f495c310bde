package checkpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// ErrNoImage is returned, wrapped, when the directory holds images but
// none of them is whole, or none loads: the node refuses to start rather
// than guess.
var ErrNoImage = errors.New("checkpoint: no valid image")

// Image describes the image in a slot.
type Image struct {
	Slot  int    // 0 or 1; -1 for none
	Path  string // the file
	LSN   uint64 // 0 when the slot holds no whole image (Inspect)
	Bytes int64
	Rows  uint64
}

// Slots is what the two slots hold: the newest whole image and the other
// slot's (an older image, or none when it is empty or not whole). Inspect
// checks only an image's ends; the Newest a Checkpointer starts from has
// loaded in full, but the Older has not been read until a checkpoint
// replaces it.
type Slots struct {
	Newest Image
	Older  Image
	// Lost is the newest image Inspect found damaged whose header still
	// names its LSN (LSN zero: none): its commits must come from the
	// other image and the log, or a start would lose them. Unreadable
	// names a damaged image whose header does not say.
	Lost       Image
	Unreadable string
	// History is the epoch history the Newest image carries, once
	// Restart has loaded it (nil: none).
	History []image.Stretch
}

func noImage(slot int) Image { return Image{Slot: slot} }

// slotPath returns the file of slot i in dir.
func slotPath(dir string, i int) string { return filepath.Join(dir, slotNames[i]) }

// slotNames are the files of the two slots.
var slotNames = [2]string{"image-a.mmdb", "image-b.mmdb"}

const tempSuffix = vfs.TempSuffix

// Inspect checks both slots in dir, and removes an image left
// half-written by a crash. It checks what tells a whole image from one a
// crash or a partial copy broke, cheaply: the header, and the end frame,
// which must be the file's last bytes (image.CheckEnds). Damage in
// between is found by Load, which checks every frame as it reads, and
// Restart then falls back to the other slot. Inspect fails with
// ErrNoImage when images exist but none passes, and finds no image at
// all in an empty or missing dir.
func Inspect(fs vfs.FS, dir string, logger hclog.Logger) (Slots, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	names, err := fs.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Slots{}, fmt.Errorf("checkpoint: list %s: %w", dir, err)
	}
	present := [2]bool{}
	for _, n := range names {
		switch {
		case strings.HasSuffix(n, tempSuffix):
			p := filepath.Join(dir, n)
			if err := fs.Remove(p); err != nil {
				return Slots{}, fmt.Errorf("checkpoint: remove the unfinished image %s: %w", p, err)
			}
			logger.Info("removed an image a checkpoint did not finish", "file", p)
		case n == slotNames[0]:
			present[0] = true
		case n == slotNames[1]:
			present[1] = true
		}
	}
	imgs := [2]Image{noImage(0), noImage(1)}
	var damage []error
	lost, unreadable := Image{}, ""
	for i := range imgs {
		if !present[i] {
			continue
		}
		img, err := checkEnds(fs, slotPath(dir, i))
		if err != nil {
			damage = append(damage, err)
			logger.Warn("a checkpoint image is damaged; it will not be used", "file", slotPath(dir, i), "error", err)
			if lsn, ok := headerLSN(fs, slotPath(dir, i)); !ok {
				unreadable = slotPath(dir, i)
			} else if lsn > lost.LSN {
				lost = Image{Path: slotPath(dir, i), LSN: lsn, Slot: i}
			}
			continue
		}
		img.Slot = i
		imgs[i] = img
	}
	switch {
	case imgs[0].LSN == 0 && imgs[1].LSN == 0 && len(damage) > 0:
		return Slots{}, fmt.Errorf("%w in %s: %w", ErrNoImage, dir, errors.Join(damage...))
	case imgs[1].LSN > imgs[0].LSN:
		return Slots{Newest: imgs[1], Older: imgs[0], Lost: lost, Unreadable: unreadable}, nil
	}
	return Slots{Newest: imgs[0], Older: imgs[1], Lost: lost, Unreadable: unreadable}, nil
}

// headerLSN returns the LSN the header of the image at path names, if
// the header is whole.
func headerLSN(fs vfs.FS, path string) (uint64, bool) {
	var lsn uint64
	err := withFile(fs, path, func(f vfs.File, size int64) error {
		var hb [image.HeaderSize]byte
		if _, err := f.ReadAt(hb[:], 0); err != nil {
			return err
		}
		h, err := image.DecodeHeader(hb[:])
		lsn = h.LSN
		return err
	})
	return lsn, err == nil
}

// errWouldLose marks a fallback refused because it would lose commits.
var errWouldLose = errors.New("checkpoint: refusing to start from the older image")

// Restart restores a node's database the way a start does: from the
// newest whole image in dir (Inspect) and the log after it, which opts
// describes (Restore and Recovered are set here; opts.FS should be fs).
// If that image does not load after all (a frame with a bad checksum, a
// row that breaks its table, a read error), the older image and the log
// after it are tried, with a warning; the damaged slot then counts as
// empty, so that the next checkpoint replaces it. If the older image and
// the log after it do not reach the newest image's LSN (the log is gone,
// or the node keeps none), the start is refused with nothing changed: the
// operator decides whether to lose those commits (move the newest image
// away) or repair it. The same holds for an image Inspect found damaged
// (Slots.Lost) whose header names a newer LSN than the image used, and,
// on a node without a log (or with none yet), for one whose header is
// unreadable. It
// returns the store and what the slots hold, for the Checkpointer.
func Restart(fs vfs.FS, dir string, opts durability.Options, logger hclog.Logger) (*durability.Store, Slots, error) {
	if fs == nil {
		fs = vfs.Default
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	slots, err := Inspect(fs, dir, logger)
	if err != nil {
		return nil, slots, err
	}
	if slots.Unreadable != "" {
		logged, err := logging.HasSegments(fs, opts.Dirs)
		if err != nil {
			return nil, slots, fmt.Errorf("checkpoint: %w", err)
		}
		if opts.Level == durability.NoLog || !logged {
			return nil, slots, fmt.Errorf("%w (%s, LSN %d): %s is damaged past telling its LSN, so it may hold newer commits, and a node without a log cannot replay them: move it away to start from the other image",
				errWouldLose, slots.Newest.Path, slots.Newest.LSN, slots.Unreadable)
		}
	}
	// What a damaged image held must come from the image used and the
	// log after it (up to where the log is cut, if it is), as for an
	// image that does not load (below).
	reach := slots.Lost.LSN
	if opts.StopAfter > 0 {
		reach = min(reach, opts.StopAfter)
	}
	if reach > slots.Newest.LSN {
		used, lost := slots.Newest, slots.Lost
		opts.Recovered = func(rec durability.Recovery) error {
			if rec.LastLSN < reach {
				return fmt.Errorf("%w: the damaged image %s held commits up to LSN %d, and %s (LSN %d) and the log after it reach only LSN %d: starting would lose the commits in between",
					errWouldLose, lost.Path, lost.LSN, used.Path, used.LSN, rec.LastLSN)
			}
			return nil
		}
	}
	var stale []string // images past where the log is cut
	if opts.StopAfter > 0 && slots.Newest.LSN > opts.StopAfter {
		// The log is cut after StopAfter: an image past it holds what is
		// cut, and the next checkpoint overwrites it.
		if slots.Older.LSN > opts.StopAfter {
			return nil, slots, fmt.Errorf("%w in %s at or below LSN %d, where the log is to be cut (the images are at %d and %d): the node must be imaged again",
				ErrNoImage, dir, opts.StopAfter, slots.Newest.LSN, slots.Older.LSN)
		}
		logger.Warn("the newest checkpoint image is past where the log is cut; starting from the older one", "image", slots.Newest.Path,
			"lsn", slots.Newest.LSN, "cut-after", opts.StopAfter, "older-lsn", slots.Older.LSN)
		stale, slots = append(stale, slots.Newest.Path), Slots{Newest: slots.Older, Older: noImage(slots.Newest.Slot), Lost: slots.Lost}
	}
	if opts.StopAfter > 0 && slots.Lost.LSN > opts.StopAfter {
		// A damaged image past the cut goes with what is cut: a later
		// start, without the cut, would ask the log to reach it.
		stale = append(stale, slots.Lost.Path)
	}
	var loaded []image.Stretch // the history of the image open loaded
	open := func(img Image) (*durability.Store, bool, error) {
		loadFailed := false
		if img.LSN != 0 {
			opts.Restore = func(db *mem.DB) (uint64, error) {
				h, hist, err := Load(fs, img.Path, db, logger)
				loadFailed = err != nil
				loaded = hist
				return h.LSN, err
			}
		}
		store, err := durability.Open(opts)
		return store, loadFailed, err
	}
	store, loadFailed, err := open(slots.Newest)
	switch {
	case err == nil && len(stale) > 0:
		// Gone before anything can load it again: it holds records the
		// log no longer has, at LSNs that new records take.
		for _, path := range stale {
			if err := vfs.RemoveDurable(fs, path); err != nil {
				return nil, slots, errors.Join(fmt.Errorf("checkpoint: %w", err), store.Close())
			}
		}
		slots.History = loaded
		return store, slots, nil
	case err == nil || !loadFailed:
		slots.History = loaded
		return store, slots, err
	case slots.Older.LSN == 0:
		return nil, slots, fmt.Errorf("%w in %s: the newest image does not load and there is no older one: %w", ErrNoImage, dir, err)
	}
	logger.Warn("the newest checkpoint image does not load; starting from the older one and the log after it",
		"image", slots.Newest.Path, "lsn", slots.Newest.LSN, "error", err, "older", slots.Older.Path, "older-lsn", slots.Older.LSN)
	runtime.GC() // the half-loaded database is garbage
	// A checkpoint's image holds only commits already in the log, so the
	// log after the older image reaches the newest's LSN, unless part of
	// it is gone; then the broken image held commits nothing else does,
	// and the next checkpoint would overwrite it. That is checked before
	// the log is opened for writing, so a refused start changes nothing.
	reach = max(reach, slots.Newest.LSN)
	opts.Recovered = func(rec durability.Recovery) error {
		if rec.LastLSN < reach {
			return fmt.Errorf("%w: the newest image (%s, LSN %d) does not load (%w), and the older image and the log after it reach only LSN %d, short of %d: starting would lose the commits in between",
				errWouldLose, slots.Newest.Path, slots.Newest.LSN, err, rec.LastLSN, reach)
		}
		return nil
	}
	store, loadFailed, err2 := open(slots.Older)
	switch {
	case err2 != nil && loadFailed:
		return nil, slots, fmt.Errorf("%w in %s: neither image loads: %w", ErrNoImage, dir, errors.Join(err, err2))
	case errors.Is(err2, errWouldLose):
		return nil, slots, err2
	case err2 != nil:
		return nil, slots, fmt.Errorf("checkpoint: the newest image does not load (%w), and the log after the older one does not replay: %w", err, err2)
	}
	return store, Slots{Newest: slots.Older, Older: noImage(slots.Newest.Slot), History: loaded}, nil
}

// withFile opens path and calls fn with it and its size, then closes it.
func withFile(fs vfs.FS, path string, fn func(f vfs.File, size int64) error) error {
	f, err := fs.Open(path)
	if err != nil {
		return fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	size, err := f.Size()
	if err != nil {
		err = fmt.Errorf("checkpoint: size of %s: %w", path, err)
	} else {
		err = fn(f, size)
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("checkpoint: close %s: %w", path, cerr))
	}
	return err
}

// newReader starts reading the image in f.
func newReader(f vfs.File, size int64) (*image.Reader, error) {
	r, err := image.NewReader(bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: %w", f.Name(), err)
	}
	return r, nil
}

// Verify reads a whole image file, checking every checksum (without
// decompressing), and describes it.
func Verify(fs vfs.FS, path string) (Image, error) {
	var img Image
	err := withFile(fs, path, func(f vfs.File, size int64) error {
		r, err := newReader(f, size)
		if err != nil {
			return err
		}
		for {
			_, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("checkpoint: %s: %w", path, err)
			}
		}
		if r.Offset() != size {
			return fmt.Errorf("checkpoint: %s: %w: %d bytes follow the end frame at offset %d", path, image.ErrCorrupt, size-r.Offset(), r.Offset())
		}
		img = Image{Path: path, LSN: r.Header().LSN, Bytes: size, Rows: r.Totals().Rows}
		return nil
	})
	return img, err
}

// checkEnds describes the image at path if its ends are good
// (image.CheckEnds).
func checkEnds(fs vfs.FS, path string) (Image, error) {
	var img Image
	err := withFile(fs, path, func(f vfs.File, size int64) error {
		h, totals, err := image.CheckEnds(f, size)
		if err != nil {
			return fmt.Errorf("checkpoint: %s: %w", path, err)
		}
		img = Image{Path: path, LSN: h.LSN, Bytes: size, Rows: totals.Rows}
		return nil
	})
	return img, err
}

// Load loads the image at path into db, an empty database, and returns
// its header and the epoch history it carries (nil: none). Frames are decoded and their rows stored on all cores; the
// indexes are built at the end (mem.Loader).
func Load(fs vfs.FS, path string, db *mem.DB, logger hclog.Logger) (image.Header, []image.Stretch, error) {
	var (
		h    image.Header
		hist []image.Stretch
	)
	err := withFile(fs, path, func(f vfs.File, size int64) error {
		var err error
		h, hist, err = LoadFrom(bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20), path, size, db, logger)
		return err
	})
	return h, hist, err
}

// LoadFrom loads the image r reads (what names it in messages; size is
// its length, if known, for progress) into db, an empty database, as
// Load does, and returns its header and the epoch history it carries
// (nil: none). It logs progress every 2 s.
func LoadFrom(r io.Reader, what string, size int64, db *mem.DB, logger hclog.Logger) (image.Header, []image.Stretch, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	start := time.Now()
	ir, err := image.NewReader(r)
	if err != nil {
		return image.Header{}, nil, fmt.Errorf("checkpoint: %s: %w", what, err)
	}
	progress := func() {
		logger.Info("loading the image", "from", what, "read-bytes", ir.Offset(), "bytes", size, "rows", ir.Totals().Rows)
	}
	if err := load(ir, db, progress); err != nil {
		return image.Header{}, nil, fmt.Errorf("checkpoint: load %s: %w", what, err)
	}
	if size > 0 && ir.Offset() != size {
		return image.Header{}, nil, fmt.Errorf("checkpoint: %s: %w: the image ends at offset %d of %d", what, image.ErrCorrupt, ir.Offset(), size)
	}
	h, totals, d := ir.Header(), ir.Totals(), time.Since(start)
	logger.Info("loaded the image", "from", what, "lsn", h.LSN, "tables", totals.Tables, "schema", schemaName(h), "rows", totals.Rows,
		"bytes", ir.Offset(), "duration", d, "mb-per-s", fmt.Sprintf("%.0f", float64(ir.Offset())/1e6/d.Seconds()))
	return h, ir.History(), nil
}

// schemaName is how logs name an image's schema: its header's schema sum,
// or "unknown" in a version 1 image.
func schemaName(h image.Header) string {
	if h.Version == 1 {
		return "unknown"
	}
	return fmt.Sprintf("%016x", h.Schema)
}

// load reads r's frames into db: tables as they come, rows on a worker
// per core; progress is called every progressEvery while it reads. The
// first frame that fails ends the load: the rest of a damaged image is
// neither read nor loaded (a restart falls back to the older image), and
// the error is that frame's.
func load(r *image.Reader, db *mem.DB, progress func()) error {
	h := r.Header()
	l, err := db.Load(h.LSN, h.NextTable)
	if err != nil {
		return err
	}
	tables := map[uint32]*mem.Table{}
	work := make(chan image.Frame, runtime.GOMAXPROCS(0))
	var (
		wg       sync.WaitGroup
		once     sync.Once
		failed   = make(chan struct{}) // closed at the first failed frame
		firstErr error                 // its error, set before failed is closed
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for fr := range work {
				select {
				case <-failed:
					continue // drain what was handed out before the failure
				default:
				}
				if err := loadRows(l, tables[fr.Table], fr, &buf); err != nil {
					once.Do(func() { firstErr = err; close(failed) })
				}
			}
		}()
	}
	err = readFrames(r, l, tables, work, failed, progress)
	close(work)
	wg.Wait()
	if err := errors.Join(firstErr, err); err != nil {
		return err
	}
	return l.Finish()
}

// progressEvery is how often a long load logs how far it is.
const progressEvery = 2 * time.Second

// readFrames creates the tables of r's table frames and hands its rows
// frames to work, until the end of the image or until failed is closed
// (a worker failed: its error is the load's).
func readFrames(r *image.Reader, l *mem.Loader, tables map[uint32]*mem.Table, work chan<- image.Frame, failed <-chan struct{}, progress func()) error {
	last := time.Now()
	for {
		select {
		case <-failed:
			return nil
		default:
		}
		if time.Since(last) >= progressEvery {
			progress()
			last = time.Now()
		}
		fr, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if fr.Kind == image.FrameRows {
			select {
			case work <- fr:
			case <-failed:
				return nil
			}
			continue
		}
		def, err := mem.DecodeTableDef(fr.Stored)
		if err == nil && def.ID != fr.Table {
			err = fmt.Errorf("%w: the definition of table %d says id %d", mem.ErrCorrupt, fr.Table, def.ID)
		}
		if err != nil {
			return fmt.Errorf("frame at offset %d: %w", fr.Offset, err)
		}
		t, err := l.CreateTable(def)
		if err != nil {
			return fmt.Errorf("frame at offset %d: %w", fr.Offset, err)
		}
		tables[fr.Table] = t // the workers read it only after the rows frames that follow
	}
}

func loadRows(l *mem.Loader, t *mem.Table, fr image.Frame, buf *[]byte) error {
	p, err := fr.Payload(*buf)
	if err != nil {
		return err
	}
	*buf = p
	return fr.Rows(p, func(row []byte) error {
		if err := l.AddRow(t, row); err != nil {
			return fmt.Errorf("frame at offset %d: %w", fr.Offset, err)
		}
		return nil
	})
}

// Install makes the image r reads the first image in dir, the checkpoint
// directory of a data dir that holds no database yet (mmdbd image
// restore, serve -from-image, bootstrap_from): the node then starts from
// it and logs what follows. The image is checked as it is copied (every
// checksum, the end frame's counts, nothing after it) and made durable
// as a checkpoint's is: a temporary file, synced, renamed into place, the
// directory synced.
func Install(fs vfs.FS, dir string, r io.Reader) (Image, error) {
	slots, err := Inspect(fs, dir, nil)
	if err != nil && !errors.Is(err, ErrNoImage) {
		return Image{}, err
	}
	if err != nil || slots.Newest.LSN != 0 {
		return Image{}, fmt.Errorf("checkpoint: %s already holds images; restore into a data dir without a database", dir)
	}
	path := slotPath(dir, 0)
	var img Image
	err = writeSlot(fs, dir, path, func(f vfs.File) error {
		var err error
		img, err = copyImage(f, r)
		return err
	}, nil)
	if err != nil {
		return Image{}, err
	}
	img.Path = path
	return img, nil
}

// copyImage copies the image r reads into f, checking it on the way.
func copyImage(f vfs.File, r io.Reader) (Image, error) {
	bw := bufio.NewWriterSize(&fileWriter{f: f}, 1<<20)
	ir, err := image.NewReader(io.TeeReader(r, bw))
	if err != nil {
		return Image{}, fmt.Errorf("checkpoint: install %s: %w", f.Name(), err)
	}
	for {
		if _, err = ir.Next(); err != nil {
			break
		}
	}
	if !errors.Is(err, io.EOF) {
		return Image{}, fmt.Errorf("checkpoint: install %s: %w", f.Name(), err)
	}
	n, err := io.Copy(io.Discard, r)
	switch {
	case err != nil:
		return Image{}, fmt.Errorf("checkpoint: install %s: read past the end frame: %w", f.Name(), err)
	case n > 0:
		return Image{}, fmt.Errorf("checkpoint: install %s: %w: %d bytes follow the end frame at offset %d", f.Name(), image.ErrCorrupt, n, ir.Offset())
	}
	if err := bw.Flush(); err != nil {
		return Image{}, fmt.Errorf("checkpoint: install %s: %w", f.Name(), err)
	}
	return Image{Slot: 0, LSN: ir.Header().LSN, Bytes: ir.Offset(), Rows: ir.Totals().Rows}, nil
}

// RemoveImages removes both image slots in dir (a node that reloads from
// another node's image replaces its own), and syncs dir.
func RemoveImages(fs vfs.FS, dir string) error {
	for i := range slotNames {
		if err := fs.Remove(slotPath(dir, i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("checkpoint: remove %s: %w", slotPath(dir, i), err)
		}
	}
	if err := fs.SyncDir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("checkpoint: sync %s: %w", dir, err)
	}
	return nil
}
