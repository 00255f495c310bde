package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/secure"
	redolog "github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	"github.com/mmdb/mmdb/replica"
)

// imageKeep is how long a node keeps an image it served after the last
// stream reading it ends, for a broken transfer to resume on it;
// imageFresh how long it serves an image to new transfers while commits
// go on, rather than make a new one for each.
const (
	imageKeep  = 5 * time.Minute
	imageFresh = 30 * time.Second
)

// progressEvery is how often a node that loads an image over the network
// logs how far it is.
const progressEvery = 2 * time.Second

// newShelf returns the shelf of images the node serves: the newest
// checkpoint image (written first if anything is new) on a node with a
// data dir, where a transfer may resume on an image no longer kept while
// a slot holds it (after a restart); an image encoded in memory on a
// diskless one.
func (s *Server) newShelf() *checkpoint.Shelf {
	opts := checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) {
			return checkpoint.Encode(ctx, s.db, s.epochs)
		},
		LSN: s.db.LastLSN, Fresh: imageFresh, Keep: imageKeep, Logger: s.log.Named("image"),
	}
	if s.ckpt != nil {
		opts.Source, opts.Find = s.ckpt.Current, s.ckpt.Find
	}
	return checkpoint.NewShelf(opts)
}

// fetchBootstrap fetches the image of bootstrap_from, the node at addr,
// and hands the stream to use. A node without TLS stops at once when
// addr serves TLS (secure.ServesTLS), where the fetch would retry gRPC's
// "error reading server preface" for a minute.
func (sec *security) fetchBootstrap(addr string, opts replica.FetchOptions, use func(*replica.ImageStream) error) error {
	if sec.kp == nil && secure.ServesTLS(context.Background(), addr) {
		return fmt.Errorf("%s serves TLS and this node has no tls block: give it tls.cert_file, tls.key_file and tls.ca_file", addr)
	}
	opts.DialOptions = append(opts.DialOptions, sec.dial(addr))
	return replica.Fetch(context.Background(), addr, opts, use)
}

// bootstrap loads the image of the node at addr into db, an empty
// database, while it arrives, takes the epoch history it came with, and
// returns its LSN: how a diskless node starts (bootstrap_from).
func bootstrap(addr string, sec *security, db *mem.DB, epochs *replica.Epochs, logger hclog.Logger) (uint64, error) {
	var lsn uint64
	start := time.Now()
	err := sec.fetchBootstrap(addr, replica.FetchOptions{Logger: logger, ProgressEvery: progressEvery}, func(st *replica.ImageStream) error {
		logger.Info("loading the image of another node", "from", addr, "lsn", st.Info().Name.LSN, "bytes", st.Info().Size, "rows", st.Info().Rows)
		h, hist, err := checkpoint.LoadFrom(bufio.NewReaderSize(st, 1<<20), addr, st.Info().Size, db, logger)
		if err != nil {
			return err
		}
		if given := st.Epochs(); len(given) > 0 {
			hist = given // the source's history now, which an image it made before it took another's may lack
		}
		if err := imageHistory(epochs, hist); err != nil {
			return err
		}
		lsn = h.LSN
		d := time.Since(start)
		logger.Info("bootstrapped from another node's image", "from", addr, "lsn", lsn, "bytes", st.Info().Size,
			"resumes", st.Resumes(), "duration", d, "mb-per-s", fmt.Sprintf("%.0f", float64(st.Info().Size)/1e6/d.Seconds()))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("server: bootstrap_from %s: %w", addr, err)
	}
	return lsn, nil
}

// imageHistory makes hist, the epoch history an image came with, the
// node's: a later primary whose log parts from it at or below the image's
// LSN is then refused (replica.Diverged), where records taken on trust
// (server.New, without one) would be taken to agree with any. The node
// follows no one yet (replica.Epochs.FromImage): one configured as a
// primary (a copy of another node's database) starts as one. A re-image,
// which replaces a standby's database with its primary's, takes the
// history as followed instead (reimage).
func imageHistory(epochs *replica.Epochs, hist []replica.EpochStart) error {
	if len(hist) == 0 {
		return nil
	}
	if err := epochs.FromImage(hist); err != nil {
		return fmt.Errorf("server: take the image's epoch history: %w", err)
	}
	return nil
}

// seed gives a data dir that holds no database its first image: the
// -from-image file, or the image of the bootstrap_from node. A data dir
// that holds a database keeps it: bootstrap_from is for the first start,
// and -from-image refuses to replace a database.
func seed(cfg *conf.Config, sec *security, epochs *replica.Epochs, logger hclog.Logger) error {
	if cfg.FromImage == "" && cfg.BootstrapFrom == "" {
		return nil
	}
	empty, err := noDatabase(cfg)
	switch {
	case err != nil:
		return err
	case !empty && cfg.FromImage != "":
		return fmt.Errorf("server: -from-image %s: data_dir %s already holds a database (checkpoint images or log); a node starts from an image only in a data_dir without one", cfg.FromImage, cfg.DataDir)
	case !empty:
		logger.Info("data_dir holds a database; bootstrap_from is only for a first start", "data-dir", cfg.DataDir, "bootstrap-from", cfg.BootstrapFrom)
		return nil
	case cfg.FromImage != "":
		_, err := installFile(cfg, logger)
		return err
	}
	err = sec.fetchBootstrap(cfg.BootstrapFrom, replica.FetchOptions{Logger: logger, ProgressEvery: progressEvery}, func(st *replica.ImageStream) error {
		// The history first: a crash before the image is in place leaves
		// no database, and the next start seeds again.
		if err := imageHistory(epochs, st.Epochs()); err != nil {
			return err
		}
		img, err := checkpoint.Install(vfs.Default, checkpoint.Dir(cfg.DataDir), bufio.NewReaderSize(st, 1<<20))
		if err == nil {
			logger.Info("installed another node's image as the first checkpoint", "from", cfg.BootstrapFrom, "lsn", img.LSN, "file", img.Path,
				"bytes", img.Bytes, "rows", img.Rows, "resumes", st.Resumes())
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("server: bootstrap_from %s: %w", cfg.BootstrapFrom, err)
	}
	return nil
}

// noDatabase reports whether cfg's data dir holds neither a checkpoint
// image nor log (nor says it keeps one), as a start would see it: a
// temporary file left by a crash is no image (Inspect removes it),
// damaged images are a database (the start refuses it, saying why).
func noDatabase(cfg *conf.Config) (bool, error) {
	slots, err := checkpoint.Inspect(vfs.Default, checkpoint.Dir(cfg.DataDir), nil)
	switch {
	case errors.Is(err, checkpoint.ErrNoImage):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("server: %w", err)
	case slots.Newest.LSN != 0:
		return false, nil
	}
	logged, err := redolog.HasSegments(vfs.Default, cfg.LogDirs())
	if err != nil {
		return false, fmt.Errorf("server: %w", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, loggedFile)); err == nil {
		logged = true // its log is missing (checkLogged)
	}
	return !logged, nil
}

// installFile installs cfg.FromImage as the first image of cfg's data dir.
func installFile(cfg *conf.Config, logger hclog.Logger) (checkpoint.Image, error) {
	f, err := os.Open(cfg.FromImage)
	if err != nil {
		return checkpoint.Image{}, fmt.Errorf("server: %w", err)
	}
	img, err := checkpoint.Install(vfs.Default, checkpoint.Dir(cfg.DataDir), bufio.NewReaderSize(f, 1<<20))
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("server: close %s: %w", cfg.FromImage, cerr))
	}
	if err != nil {
		return checkpoint.Image{}, fmt.Errorf("server: -from-image %s: %w", cfg.FromImage, err)
	}
	logger.Info("installed an image as the first checkpoint", "image", cfg.FromImage, "lsn", img.LSN, "file", img.Path, "bytes", img.Bytes, "rows", img.Rows)
	return img, nil
}

// Restore makes the image file cfg.FromImage the database of cfg's data
// dir, which must hold none, without starting the node (mmdbd image
// restore): the next start loads it.
func Restore(cfg *conf.Config, logger hclog.Logger) (checkpoint.Image, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.DataDir == "" {
		return checkpoint.Image{}, errors.New("server: restore needs a data_dir (a diskless node starts from an image with serve -from-image)")
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return checkpoint.Image{}, err
	}
	img, err := func() (checkpoint.Image, error) {
		empty, err := noDatabase(cfg)
		if err == nil && !empty {
			err = fmt.Errorf("server: data_dir %s already holds a database (checkpoint images or log); restore into a data_dir without one", cfg.DataDir)
		}
		if err != nil {
			return checkpoint.Image{}, err
		}
		return installFile(cfg, logger)
	}()
	if cerr := lock.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("server: unlock data_dir: %w", cerr))
	}
	return img, err
}

// loadFile loads cfg.FromImage into db on a diskless node, which takes
// the epoch history it carries.
func loadFile(path string, epochs *replica.Epochs, logger hclog.Logger) func(db *mem.DB) (uint64, error) {
	return func(db *mem.DB) (uint64, error) {
		h, hist, err := checkpoint.Load(vfs.Default, path, db, logger)
		if err == nil {
			err = imageHistory(epochs, hist)
		}
		if err != nil {
			return 0, fmt.Errorf("server: -from-image: %w", err)
		}
		return h.LSN, nil
	}
}

// restoreWith returns how a node without a data dir fills its empty
// database before serving: from -from-image or bootstrap_from, or not
// at all.
func restoreWith(cfg *conf.Config, sec *security, epochs *replica.Epochs, logger hclog.Logger) func(db *mem.DB) (uint64, error) {
	switch {
	case cfg.FromImage != "":
		return loadFile(cfg.FromImage, epochs, logger)
	case cfg.BootstrapFrom != "":
		return func(db *mem.DB) (uint64, error) { return bootstrap(cfg.BootstrapFrom, sec, db, epochs, logger) }
	}
	return nil
}
