package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/internal/digest"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
)

// bankDB returns a no-log database holding a bank after some transfers.
func bankDB(t *testing.T) *mem.DB {
	t.Helper()
	s, err := durability.Open(durability.Options{Level: durability.NoLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	b := banktest.Setup(t, s.DB(), noWait)
	banktest.Run(s.DB(), b, 0, 2, 200, noWait, nil)
	return s.DB()
}

func noWait(uint64) error { return nil }

func mustDigest(t *testing.T, db *mem.DB) digest.Digest {
	t.Helper()
	d, err := digest.Of(db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// bytesOf reads a served image whole.
func bytesOf(t *testing.T, img *checkpoint.Served) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(img, 0, img.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncodeLoad: an image encoded in memory loads into a database equal
// to the source at the image's LSN, even as the source moves on.
func TestEncodeLoad(t *testing.T) {
	db := bankDB(t)
	want := mustDigest(t, db)
	hist := []image.Stretch{{Epoch: 0, Start: 1}, {Epoch: 7, Start: 2, Incarnation: 5}, {Epoch: 9, Start: want.LSN + 1, Incarnation: 3}}
	img, err := checkpoint.Encode(context.Background(), db, testEpochs{hist: hist})
	if err != nil {
		t.Fatal(err)
	}
	banktest.Run(db, banktest.Of(t, db), 1, 2, 50, noWait, nil) // after the image
	raw := bytesOf(t, img)
	if int64(len(raw)) != img.Size || img.Header.LSN != want.LSN || img.Header.Epoch != 7 {
		t.Fatalf("image of %d bytes at LSN %d, epoch %d; want %d bytes at %d, epoch 7", len(raw), img.Header.LSN, img.Header.Epoch, img.Size, want.LSN)
	}
	var (
		loaded     image.Header
		loadedHist []image.Stretch
	)
	s, err := durability.Open(durability.Options{Level: durability.NoLog, Restore: func(db *mem.DB) (uint64, error) {
		h, hist, err := checkpoint.LoadFrom(bytes.NewReader(raw), "the test image", int64(len(raw)), db, nil)
		loaded, loadedHist = h, hist
		return h.LSN, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if loaded.Epoch != 7 || !slices.Equal(loadedHist, hist[:2]) {
		t.Fatalf("the loaded image names epoch %d with history %v; want epoch 7, history %v", loaded.Epoch, loadedHist, hist[:2])
	}
	if got := mustDigest(t, s.DB()); !got.Equal(want) {
		t.Fatalf("loaded %s\nwant %s", got, want)
	}
	if _, _, err := checkpoint.LoadFrom(bytes.NewReader(append(raw, 0)), "the test image", int64(len(raw))+1, mem.Open(mem.Options{}), nil); !errors.Is(err, image.ErrCorrupt) {
		t.Fatalf("an image shorter than its stated size: %v", err)
	}
	if _, err := checkpoint.Encode(context.Background(), mem.Open(mem.Options{}), nil); !errors.Is(err, checkpoint.ErrEmpty) {
		t.Fatalf("an image of an empty database: %v", err)
	}
}

// TestLoadUsesEveryCore: loading an image runs a worker per core (SPEC 5:
// loading uses all cores). They are counted among the goroutines while
// the load waits for the image's last byte, when all are running.
func TestLoadUsesEveryCore(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	img, err := checkpoint.Encode(context.Background(), bankDB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := bytesOf(t, img)
	r, w := io.Pipe()
	loaded := make(chan error, 1)
	go func() {
		_, _, err := checkpoint.LoadFrom(r, "the test image", int64(len(raw)), mem.Open(mem.Options{}), nil)
		loaded <- err
	}()
	if _, err := w.Write(raw[:len(raw)-1]); err != nil {
		t.Fatal(err)
	}
	workers := 0
	for deadline := time.Now().Add(2 * time.Second); workers < 4 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		workers = goroutinesStartedBy("github.com/mmdb/mmdb/checkpoint.load")
	}
	if _, err := w.Write(raw[len(raw)-1:]); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(w.Close(), <-loaded); err != nil {
		t.Fatal(err)
	}
	if workers != 4 {
		t.Fatalf("a load on 4 cores ran %d workers", workers)
	}
}

// goroutinesStartedBy counts the goroutines that function started.
func goroutinesStartedBy(function string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "\ncreated by "+function+" in goroutine ")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestShelf: a shelf serves the kept image while nothing is newer,
// resumes by name while the image is kept, and drops it Keep after its
// last reader.
func TestShelf(t *testing.T) {
	db := bankDB(t)
	made := 0
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) {
			made++
			return checkpoint.Encode(ctx, db, nil)
		},
		LSN:  db.LastLSN,
		Keep: 50 * time.Millisecond,
	})
	defer func() {
		if err := shelf.Close(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	a, err := shelf.Get(ctx, checkpoint.ImageID{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := shelf.Get(ctx, checkpoint.ImageID{})
	if err != nil || b != a || made != 1 {
		t.Fatalf("a second image with nothing new: same %v, made %d, %v", b == a, made, err)
	}
	shelf.Put(b)
	banktest.Run(db, banktest.Of(t, db), 1, 1, 5, noWait, nil)
	c, err := shelf.Get(ctx, checkpoint.ImageID{})
	if err != nil || c == a || made != 2 || c.Header.LSN <= a.Header.LSN {
		t.Fatalf("an image after new commits: new %v, made %d, %v", c != a, made, err)
	}
	shelf.Put(c)
	r, err := shelf.Get(ctx, a.Name())
	if err != nil || r != a {
		t.Fatalf("resume the first image: %v", err)
	}
	shelf.Put(r)
	shelf.Put(a)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := shelf.Get(ctx, a.Name())
		if errors.Is(err, checkpoint.ErrImageGone) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("the first image is still kept long after its readers: %v", err)
		}
		shelf.Put(a)
		time.Sleep(200 * time.Millisecond) // longer than Keep, so the image goes
	}
	if _, err := shelf.Get(ctx, checkpoint.ImageID{LSN: 1, ID: 2}); !errors.Is(err, checkpoint.ErrImageGone) {
		t.Fatalf("an image never served: %v", err)
	}
}

// TestShelfBounds: a fresh image is served though commits went on, and
// making an image drops all but the two newest idle ones.
func TestShelfBounds(t *testing.T) {
	db := bankDB(t)
	fresh := time.Hour
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) { return checkpoint.Encode(ctx, db, nil) },
		LSN:    db.LastLSN, Fresh: fresh, Keep: time.Hour,
	})
	defer shelf.Close()
	ctx := context.Background()
	get := func() *checkpoint.Served {
		img, err := shelf.Get(ctx, checkpoint.ImageID{})
		if err != nil {
			t.Fatal(err)
		}
		shelf.Put(img)
		return img
	}
	first := get()
	banktest.Run(db, banktest.Of(t, db), 1, 1, 5, noWait, nil)
	if again := get(); again != first {
		t.Fatal("a fresh image was not served again after new commits")
	}
	shelf = checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) { return checkpoint.Encode(ctx, db, nil) },
		LSN:    db.LastLSN, Keep: time.Hour,
	})
	defer shelf.Close()
	var made []*checkpoint.Served
	for round := 2; round < 6; round++ {
		banktest.Run(db, banktest.Of(t, db), round, 1, 5, noWait, nil)
		made = append(made, get())
	}
	for i, img := range made {
		_, err := shelf.Get(ctx, img.Name())
		if kept := err == nil; kept != (i >= len(made)-3) { // two idle, and the newest, held when made
			t.Fatalf("image %d of %d: kept %v (%v)", i+1, len(made), kept, err)
		}
		if err == nil {
			shelf.Put(img)
		}
	}
}

// TestCurrentOutlivesItsSlot: the image Current opened stays readable,
// byte for byte, after later checkpoints replace its slot's file.
func TestCurrentOutlivesItsSlot(t *testing.T) {
	fs := vfs.NewMemFS()
	n := openNode(t, fs)
	b := banktest.Setup(t, n.store.DB(), n.wait)
	if _, err := n.ckpt.Current(context.Background()); err != nil {
		t.Fatal(err)
	}
	banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
	img, err := n.ckpt.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if img.Header.LSN != n.store.DB().LastLSN() || img.Header.LSN != n.ckpt.LSN() {
		t.Fatalf("current image at LSN %d; the database is at %d, the newest image at %d", img.Header.LSN, n.store.DB().LastLSN(), n.ckpt.LSN())
	}
	before := bytesOf(t, img)
	for round := 1; round <= 2; round++ { // both slots rewritten
		banktest.Run(n.store.DB(), b, round, 1, 20, n.wait, nil)
		mustCheckpoint(t, n)
	}
	if after := bytesOf(t, img); !bytes.Equal(before, after) {
		t.Fatal("the served image changed when checkpoints replaced its slot")
	}
}

// TestResumeAfterRestart: a transfer of a node's image that broke can
// resume on the same bytes after the node restarted, which emptied its
// shelf: its Find opens the image again from the slot that holds it,
// the newest or, after one more checkpoint, the older one. Two
// checkpoints later neither slot holds it, and the resume is refused
// (ErrImageGone) rather than served other bytes. Before, a restart lost
// every transfer in progress.
func TestResumeAfterRestart(t *testing.T) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	b := banktest.Setup(t, n.store.DB(), n.wait)
	banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
	img, err := n.ckpt.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := bytesOf(t, img)
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, fs)
	b = banktest.Of(t, n.store.DB())
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{Source: n.ckpt.Current, Find: n.ckpt.Find, LSN: n.store.DB().LastLSN, Keep: time.Hour})
	defer func() {
		if err := shelf.Close(); err != nil {
			t.Error(err)
		}
	}()
	for round := 1; round <= 3; round++ {
		again, err := shelf.Get(context.Background(), img.Name())
		if round == 3 {
			if !errors.Is(err, checkpoint.ErrImageGone) {
				t.Fatalf("resume once two checkpoints replaced both slots: %v, want ErrImageGone", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("resume after the restart and %d more checkpoints: %v", round-1, err)
		}
		if got := bytesOf(t, again); !bytes.Equal(got, want) {
			t.Fatalf("resume after %d more checkpoints: other bytes", round-1)
		}
		shelf.Put(again)
		if err := shelf.Close(); err != nil { // forget it: only the slots have it now
			t.Fatal(err)
		}
		shelf = checkpoint.NewShelf(checkpoint.ShelfOptions{Source: n.ckpt.Current, Find: n.ckpt.Find, LSN: n.store.DB().LastLSN, Keep: time.Hour})
		banktest.Run(n.store.DB(), b, round, 1, 5, n.wait, nil)
		mustCheckpoint(t, n)
	}
}

// testEpochs gives images the stretches of hist that start at or below
// their LSN, or, with hist nil, none and the epoch at gives.
type testEpochs struct {
	hist []image.Stretch
	at   func(lsn uint64) uint64
}

func (e testEpochs) Image(lsn uint64) []image.Stretch {
	var out []image.Stretch
	for _, st := range e.hist {
		if st.Start <= lsn {
			out = append(out, st)
		}
	}
	return out
}

func (e testEpochs) At(lsn uint64) uint64 { return e.at(lsn) }

// TestImageNamesItsEpoch: a checkpoint's image names, in its header, the
// epoch of the record at its LSN (Options.Epochs), as a served image
// and as a file, for a node that cannot give its history.
func TestImageNamesItsEpoch(t *testing.T) {
	fs := vfs.NewMemFS()
	n := openNode(t, fs)
	b := banktest.Setup(t, n.store.DB(), n.wait)
	banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
	epochAt := func(lsn uint64) uint64 { return 3 + lsn%5 }
	c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: fs, Dir: ckptDir, Epochs: testEpochs{at: epochAt}})
	img, err := c.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lsn := n.store.DB().LastLSN()
	if img.Header.LSN != lsn || img.Header.Epoch != epochAt(lsn) {
		t.Fatalf("the image at LSN %d names epoch %d; want LSN %d, epoch %d", img.Header.LSN, img.Header.Epoch, lsn, epochAt(lsn))
	}
	slots, err := checkpoint.Inspect(fs, ckptDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.Open(slots.Newest.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := image.NewReader(io.NewSectionReader(f, 0, slots.Newest.Bytes))
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.LSN != lsn || h.Epoch != epochAt(lsn) {
		t.Fatalf("the file %s names LSN %d, epoch %d; want %d, %d", slots.Newest.Path, h.LSN, h.Epoch, lsn, epochAt(lsn))
	}
}

// TestInstall: an image installed into an empty checkpoint directory is
// the one a restart loads; a damaged image, or a directory that already
// holds images, is refused and leaves nothing behind.
func TestInstall(t *testing.T) {
	db := bankDB(t)
	want := mustDigest(t, db)
	img, err := checkpoint.Encode(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := bytesOf(t, img)
	fs := vfs.NewMemFS()
	for name, bad := range map[string][]byte{
		"a flipped bit":     flip(raw, len(raw)/2),
		"a truncated image": raw[:len(raw)-1],
		"trailing bytes":    append(append([]byte{}, raw...), 1),
		"not an image":      []byte("hello"),
	} {
		if _, err := checkpoint.Install(fs, ckptDir, bytes.NewReader(bad)); !errors.Is(err, image.ErrCorrupt) {
			t.Fatalf("install %s: %v", name, err)
		}
		if names, _ := fs.ReadDir(ckptDir); len(names) != 0 {
			t.Fatalf("install %s left %q", name, names)
		}
	}
	got, err := checkpoint.Install(fs, ckptDir, bytes.NewReader(raw))
	if err != nil || got.LSN != want.LSN || got.Bytes != int64(len(raw)) {
		t.Fatalf("install: %+v, %v", got, err)
	}
	fs = fs.Crash(nil) // installed means durable
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	if d := mustDigest(t, n.store.DB()); !d.Equal(want) {
		t.Fatalf("restart from the installed image: %s\nwant %s", d, want)
	}
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Install(fs, ckptDir, bytes.NewReader(raw)); err == nil || !strings.Contains(err.Error(), "already holds images") {
		t.Fatalf("install over an image: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 1
	return c
}

// TestFoundImageIsNotFresh: an image a transfer resumes on after the
// node restarted (found again in its slot) is as old as when it was
// made, not when it was found: a new transfer that comes meanwhile gets
// a current image, not that one for Fresh after the resume. Before, it
// got the resumed image, however old, and followed the log from there.
func TestFoundImageIsNotFresh(t *testing.T) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	banktest.Setup(t, n.store.DB(), n.wait)
	old, err := n.ckpt.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, fs)
	banktest.Run(n.store.DB(), banktest.Of(t, n.store.DB()), 1, 1, 5, n.wait, nil)
	const fresh = 200 * time.Millisecond
	time.Sleep(2 * fresh) // the old image is past Fresh
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{Source: n.ckpt.Current, Find: n.ckpt.Find, LSN: n.store.DB().LastLSN, Fresh: fresh, Keep: time.Hour})
	defer func() {
		if err := shelf.Close(); err != nil {
			t.Error(err)
		}
	}()
	resumed, err := shelf.Get(context.Background(), old.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer shelf.Put(resumed)
	img, err := shelf.Get(context.Background(), checkpoint.ImageID{})
	if err != nil {
		t.Fatal(err)
	}
	defer shelf.Put(img)
	if img.Header.LSN != n.store.DB().LastLSN() {
		t.Fatalf("a new transfer got the image at LSN %d (the one resumed is at %d), the database is at %d", img.Header.LSN, old.Header.LSN, n.store.DB().LastLSN())
	}
}

// TestShelfWaitGivesUp: a fetch that comes while another makes the
// current image waits for it only while its own context lasts.
func TestShelfWaitGivesUp(t *testing.T) {
	db := bankDB(t)
	entered, release := make(chan struct{}), make(chan struct{})
	shelf := checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) {
			close(entered)
			<-release
			return checkpoint.Encode(ctx, db, nil)
		},
		LSN:  db.LastLSN,
		Keep: time.Minute,
	})
	defer func() {
		if err := shelf.Close(); err != nil {
			t.Error(err)
		}
	}()
	first := make(chan error, 1)
	go func() {
		img, err := shelf.Get(context.Background(), checkpoint.ImageID{})
		if err == nil {
			shelf.Put(img)
		}
		first <- err
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() {
		_, err := shelf.Get(ctx, checkpoint.ImageID{})
		second <- err
	}()
	select {
	case err := <-second:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a fetch whose context ended while another made the image: %v, want its context's error", err)
		}
	case <-time.After(10 * time.Second): // a failure detector, not a wait
		close(release)
		<-first
		<-second
		t.Fatal("a fetch whose context ended waited on for the image another made")
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}
