package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/schollz/progressbar/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/internal/secure"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/replica"
	"github.com/mmdb/mmdb/server"
)

const imageUsage = `usage: mmdbd image <command> [flags]

commands:
  fetch    save a node's current image to a file (a backup), with progress;
           an interrupted fetch resumes where it stopped when run again
  restore  make an image file the database of an empty data_dir
  verify   check every checksum of an image file and describe it

Run "mmdbd image <command> -h" for a command's flags.
`

// imageCmd runs the image commands.
func imageCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, imageUsage)
		return errUsage
	}
	switch args[0] {
	case "fetch":
		return imageFetch(args[1:], stdout, stderr)
	case "restore":
		return imageRestore(args[1:], stdout, stderr)
	case "verify":
		return imageVerify(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if _, err := fmt.Fprint(stdout, imageUsage); err != nil {
			return fmt.Errorf("print the usage: %w", err)
		}
		return errHelp
	}
	fmt.Fprintf(stderr, "mmdbd image: unknown command %q\n\n%s", args[0], imageUsage)
	return errUsage
}

// imageFetch saves a node's image to a file. The bytes go to FILE.part
// first; a fetch that finds one resumes it. Only a whole, checked image
// is renamed to FILE.
func imageFetch(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mmdbd image fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	given := fs.String("from", "", "the node's `host:port` (default: -config's listen address, else "+defaultAddr+")")
	out := fs.String("out", "", "the image `file` to write (required)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	cf := addConnFlags(fs, true)
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	from, err := cf.addr(*given)
	if err != nil {
		return err
	}
	dial, err := cf.credentials(from)
	if err != nil {
		return err
	}
	if err := required(stderr, "out", *out); err != nil {
		return err
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists; remove it or choose another -out", *out)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cf.plaintext() && secure.ServesTLS(ctx, from) {
		return errServesTLS(from)
	}
	part := *out + ".part"
	logger := hclog.New(&hclog.LoggerOptions{Name: "mmdbd", Level: hclog.Warn, Output: stderr})
	start := time.Now()
	r, err := fetchPart(ctx, from, dial, part, *quiet, stderr, logger)
	got := r.got
	if grpcstatus.Code(err) == codes.FailedPrecondition && r.info.Name != (checkpoint.ImageID{}) {
		if _, verr := checkpoint.Verify(vfs.Default, part); verr == nil {
			err = nil // the part was whole already
		}
	}
	if grpcstatus.Code(err) == codes.FailedPrecondition && r.info.Name != (checkpoint.ImageID{}) {
		fmt.Fprintf(stderr, "%s no longer has the image %s began (%v); fetching a new one\n", from, part, err)
		if err = os.Remove(part); err == nil {
			r, err = fetchPart(ctx, from, dial, part, *quiet, stderr, logger)
			got += r.got
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "interrupted; run the same command again to resume from %s\n", part)
		}
		return err
	}
	img, err := checkpoint.Verify(vfs.Default, part)
	if err != nil {
		return fmt.Errorf("the fetched image is damaged (remove %s and fetch again): %w", part, err)
	}
	if err := os.Rename(part, *out); err != nil {
		return fmt.Errorf("rename %s to %s: %w", part, *out, err)
	}
	if err := vfs.Default.SyncDir(filepath.Dir(*out)); err != nil {
		return fmt.Errorf("sync the directory of %s: %w", *out, err)
	}
	// The rate is of this run's bytes, over this run's time.
	d := time.Since(start)
	_, err = fmt.Fprintf(stdout, "image at LSN %d, epoch %d: %s, %d rows, %d bytes; fetched %d bytes in %s (%.0f MB/s), resumed %d times\n",
		img.LSN, r.info.Epoch, *out, img.Rows, img.Bytes, got, d.Round(time.Millisecond), float64(got)/1e6/d.Seconds(), r.resumes)
	return err
}

// fetched is what fetchPart did.
type fetched struct {
	// info describes the image: as the node did, or, until it does, as
	// the part's header does (its name and epoch).
	info replica.ImageInfo
	got  int64 // the bytes received
	// resumes counts how often the transfer went on from where one
	// stopped: from the part an earlier run left, and after each break.
	resumes int
}

// fetchPart fetches the image of the node at addr into part, going on
// from what part holds if it holds the start of an image, and syncs it.
// It says what it did, even with an error.
func fetchPart(ctx context.Context, addr string, dial []grpc.DialOption, part string, quiet bool, stderr io.Writer, logger hclog.Logger) (fetched, error) {
	var r fetched
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return r, fmt.Errorf("open %s: %w", part, err)
	}
	opts := replica.FetchOptions{Logger: logger, DialOptions: dial}
	if r.info, opts.Offset, err = partial(f); err != nil {
		return r, errors.Join(err, f.Close())
	}
	opts.Resume = r.info.Name
	if opts.Offset > 0 {
		r.resumes++
		fmt.Fprintf(stderr, "resuming %s at byte %d\n", part, opts.Offset)
	}
	err = replica.Fetch(ctx, addr, opts, func(st *replica.ImageStream) error {
		r.info = st.Info()
		defer func() { r.resumes += st.Resumes() }()
		var w io.Writer = io.NewOffsetWriter(f, opts.Offset)
		if !quiet {
			bar := progressbar.NewOptions64(r.info.Size,
				progressbar.OptionSetWriter(stderr),
				progressbar.OptionSetDescription(fmt.Sprintf("image at LSN %d", r.info.Name.LSN)),
				progressbar.OptionShowBytes(true),
				progressbar.OptionThrottle(200*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
			)
			if err := bar.Set64(opts.Offset); err != nil {
				return fmt.Errorf("progress bar: %w", err)
			}
			w = io.MultiWriter(w, bar)
		}
		n, err := io.Copy(w, st)
		r.got += n
		if err != nil {
			return fmt.Errorf("write %s: %w", part, err)
		}
		return nil
	})
	// Synced whatever came of the fetch: a part an earlier run left
	// unsynced may be whole already (imageFetch then keeps it as it is).
	if serr := f.Sync(); serr != nil {
		err = errors.Join(err, fmt.Errorf("sync %s: %w", part, serr))
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close %s: %w", part, cerr))
	}
	return r, err
}

// partial returns the image a partly fetched file holds the start of (its
// name and epoch, from its header), and how much of it; nothing (and
// truncates the file) if it holds less than a whole header.
func partial(f *os.File) (replica.ImageInfo, int64, error) {
	st, err := f.Stat()
	if err != nil {
		return replica.ImageInfo{}, 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	b := make([]byte, image.HeaderSize)
	if st.Size() >= image.HeaderSize {
		if _, err := f.ReadAt(b, 0); err != nil {
			return replica.ImageInfo{}, 0, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		if h, err := image.DecodeHeader(b); err == nil {
			return replica.ImageInfo{Name: checkpoint.ImageID{LSN: h.LSN, ID: h.ID()}, Epoch: h.Epoch}, st.Size(), nil
		}
	}
	if err := f.Truncate(0); err != nil {
		return replica.ImageInfo{}, 0, fmt.Errorf("truncate %s: %w", f.Name(), err)
	}
	return replica.ImageInfo{}, 0, nil
}

// imageRestore installs an image file in an empty data dir.
func imageRestore(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mmdbd image restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "the image `file` (required)")
	load := configFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(stderr, "in", *in); err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	cfg.FromImage = *in
	img, err := server.Restore(cfg, nodeLogger(cfg, stderr))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "restored the image at LSN %d (%d rows) into %s; mmdbd serve starts from it\n", img.LSN, img.Rows, img.Path)
	return err
}

// imageVerify checks an image file.
func imageVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mmdbd image verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "the image `file` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(stderr, "in", *in); err != nil {
		return err
	}
	img, err := checkpoint.Verify(vfs.Default, *in)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: a whole image at LSN %d, %d rows, %d bytes\n", *in, img.LSN, img.Rows, img.Bytes)
	return err
}

// required fails with a usage error when a required flag is missing.
func required(stderr io.Writer, name, value string) error {
	if value == "" {
		fmt.Fprintf(stderr, "-%s is required\n", name)
		return errUsage
	}
	return nil
}
