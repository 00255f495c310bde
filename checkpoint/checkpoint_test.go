package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

var (
	dirs    = []string{"/data/log/0", "/data/log/1"}
	ckptDir = "/data/checkpoint"
)

// node is a store with its checkpointer, on a MemFS.
type node struct {
	fs    *vfs.MemFS
	store *durability.Store
	ckpt  *checkpoint.Checkpointer
}

// open restarts a node on fs the way the server does: the newest valid
// image, then the log after it.
func open(t *testing.T, fs *vfs.MemFS) (*node, error) {
	t.Helper()
	opts := durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: dirs, SegmentSize: 4 << 10}
	s, slots, err := checkpoint.Restart(fs, ckptDir, opts, nil)
	if err != nil {
		return nil, err
	}
	return &node{fs: fs, store: s, ckpt: checkpoint.New(s.DB(), s, slots, checkpoint.Options{FS: fs, Dir: ckptDir})}, nil
}

// openNode opens a node on fs, failing the test if it cannot, and closes
// its store when the test ends.
func openNode(t *testing.T, fs *vfs.MemFS) *node {
	t.Helper()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.store.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func (n *node) wait(lsn uint64) error {
	return n.store.Wait(context.Background(), lsn, durability.FsyncLog)
}

// run has the bank's writers commit while checkpoints are taken one
// after another, until the writers are done or the file system fails. It
// returns the acknowledged markers and the checkpoints written.
func (n *node) run(b banktest.Bank, round, workers, each int) (map[string]bool, []checkpoint.Result) {
	stop := make(chan struct{})
	var results []checkpoint.Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := n.ckpt.Run(context.Background())
			if err != nil {
				return
			}
			if !res.Skipped {
				results = append(results, res)
			}
		}
	}()
	acked := banktest.Run(n.store.DB(), b, round, workers, each, n.wait, nil)
	close(stop)
	wg.Wait()
	return acked, results
}

// TestCrashAtEveryOperation: fsync-log under concurrent writers with
// checkpoints written back to back (so log segments are released too),
// the file system crashed at its k-th operation for every k, keeping a
// random part of what was not synced: the restart from the newest valid
// image and the log after it has every acknowledged commit, no partial
// transaction and no rolled-back one, and survives a second round.
func TestCrashAtEveryOperation(t *testing.T) {
	var images, released int
	k := 1
	for ; ; k++ {
		fs := vfs.NewMemFS()
		n, err := open(t, fs)
		if err != nil {
			t.Fatal(err)
		}
		b := banktest.Setup(t, n.store.DB(), n.wait)
		fs.CrashAfter(k)
		acked, results := n.run(b, 0, 4, 40)
		crashed := n.store.Close() != nil
		for _, r := range results {
			images++
			released += r.Released.Segments
		}
		after := fs.Crash(rand.New(rand.NewPCG(uint64(k), 3)))
		n2, err := open(t, after)
		if err != nil {
			t.Fatalf("k=%d: restart: %v", k, err)
		}
		banktest.Check(t, n2.store.DB(), acked, fmt.Sprintf("k=%d", k))
		more, _ := n2.run(banktest.Of(t, n2.store.DB()), 1, 2, 10)
		maps.Copy(more, acked)
		n3, err := open(t, after.Crash(nil))
		if err != nil {
			t.Fatalf("k=%d: second restart: %v", k, err)
		}
		banktest.Check(t, n3.store.DB(), more, fmt.Sprintf("k=%d, second crash", k))
		if !crashed {
			break
		}
	}
	t.Logf("crashed at each of %d operations; %d images written, %d log segments released", k-1, images, released)
	if images < 100 || released == 0 {
		t.Fatalf("the workload wrote %d images and released %d segments: too few to test them", images, released)
	}
}

// damage is a way to damage an image file.
type damage struct {
	name string
	do   func(t *testing.T, fs *vfs.MemFS, path string)
}

var damages = []damage{
	{"truncated", func(t *testing.T, fs *vfs.MemFS, path string) {
		f := openFile(t, fs, path)
		size, _ := f.Size()
		if err := f.Truncate(size * 2 / 3); err != nil {
			t.Fatal(err)
		}
		closeFile(t, f)
	}},
	{"bit flip", func(t *testing.T, fs *vfs.MemFS, path string) {
		f := openFile(t, fs, path)
		size, _ := f.Size()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, size/2); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x10
		if _, err := f.WriteAt(b, size/2); err != nil {
			t.Fatal(err)
		}
		closeFile(t, f)
	}},
	{"a row that breaks its table", breakRow},
	{"bad header", func(t *testing.T, fs *vfs.MemFS, path string) {
		f := openFile(t, fs, path)
		if _, err := f.WriteAt([]byte("NOTANIMG"), 0); err != nil {
			t.Fatal(err)
		}
		closeFile(t, f)
	}},
}

// breakRow rewrites the image at path with its first row cut short:
// every checksum is good, but it does not load.
func breakRow(t *testing.T, fs *vfs.MemFS, path string) {
	t.Helper()
	f := openFile(t, fs, path)
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	r, err := image.NewReader(io.NewSectionReader(f, 0, size))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w, err := image.NewWriter(&out, r.Header(), r.History())
	if err != nil {
		t.Fatal(err)
	}
	broken := false
	for {
		fr, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		payload, err := fr.Payload(nil)
		if err != nil {
			t.Fatal(err)
		}
		if fr.Kind == image.FrameTable {
			err = w.Table(fr.Table, payload)
		} else {
			err = fr.Rows(payload, func(row []byte) error {
				if !broken {
					broken, row = true, row[:len(row)-1]
				}
				return w.Row(fr.Table, row)
			})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil || !broken {
		t.Fatalf("rewrite %s: %v (a row broken: %v)", path, err, broken)
	}
	closeFile(t, f)
	if err := fs.Remove(path); err != nil {
		t.Fatal(err)
	}
	f, err = fs.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(out.Bytes(), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	closeFile(t, f)
}

func openFile(t *testing.T, fs *vfs.MemFS, path string) vfs.File {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func closeFile(t *testing.T, f vfs.File) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the bytes of the file at path.
func readFile(t *testing.T, fs *vfs.MemFS, path string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fs, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile replaces the file at path with b, durably.
func writeFile(t *testing.T, fs *vfs.MemFS, path string, b []byte) {
	t.Helper()
	if err := vfs.WriteFile(fs, path, b); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedImage: with the newest image damaged (truncated, a flipped
// bit, a bad header) the restart falls back to the older image and the
// log after it and loses nothing; with both damaged it refuses, naming
// both files.
func TestDamagedImage(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			fs := vfs.NewMemFS()
			n, err := open(t, fs)
			if err != nil {
				t.Fatal(err)
			}
			b := banktest.Setup(t, n.store.DB(), n.wait)
			acked := banktest.Run(n.store.DB(), b, 0, 2, 300, n.wait, nil)
			older := mustCheckpoint(t, n)
			maps.Copy(acked, banktest.Run(n.store.DB(), b, 1, 2, 300, n.wait, nil))
			// A table created after the older image comes back from the log.
			if _, err := n.store.DB().CreateTable(mem.TableDef{Name: "later", Columns: []mem.ColumnDef{{Name: "k", Type: mem.TypeInt64}}, PrimaryKey: []string{"k"}}); err != nil {
				t.Fatal(err)
			}
			newest := mustCheckpoint(t, n)
			maps.Copy(acked, banktest.Run(n.store.DB(), b, 2, 2, 300, n.wait, nil))
			third := mustCheckpoint(t, n) // releases the log up to newest's LSN; older's slot now holds third
			if third.Released.Segments == 0 {
				t.Fatalf("the third checkpoint released no log")
			}
			if err := n.store.Close(); err != nil {
				t.Fatal(err)
			}
			if third.Image.Path != older.Image.Path || newest.Image.Path == third.Image.Path {
				t.Fatalf("slots: %s, %s, %s: not ping-pong", older.Image.Path, newest.Image.Path, third.Image.Path)
			}
			d.do(t, fs, third.Image.Path)
			n2, err := open(t, fs)
			if err != nil {
				t.Fatalf("restart with the newest image damaged: %v", err)
			}
			banktest.Check(t, n2.store.DB(), acked, "fallen back to the older image")
			if _, err := n2.store.DB().Table("later"); err != nil {
				t.Fatal(err)
			}
			if n2.ckpt.LSN() != newest.Image.LSN {
				t.Fatalf("restored from the image at LSN %d, want %d", n2.ckpt.LSN(), newest.Image.LSN)
			}
			if err := n2.store.Close(); err != nil {
				t.Fatal(err)
			}
			d.do(t, fs, newest.Image.Path)
			_, err = open(t, fs)
			if !errors.Is(err, checkpoint.ErrNoImage) || !strings.Contains(err.Error(), filepath.Base(newest.Image.Path)) || !strings.Contains(err.Error(), filepath.Base(third.Image.Path)) {
				t.Fatalf("restart with both images damaged: %v", err)
			}
		})
	}
}

// TestImageThatDoesNotLoadIsReplaced: after a restart that fell back
// from a newest image that passed its checksums but did not load, the
// next checkpoint goes into that image's slot, not over the image the
// node restarted from, and the restart after it loses nothing.
func TestImageThatDoesNotLoadIsReplaced(t *testing.T) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	b := banktest.Setup(t, n.store.DB(), n.wait)
	acked := banktest.Run(n.store.DB(), b, 0, 2, 200, n.wait, nil)
	older := mustCheckpoint(t, n)
	maps.Copy(acked, banktest.Run(n.store.DB(), b, 1, 2, 200, n.wait, nil))
	newest := mustCheckpoint(t, n)
	maps.Copy(acked, banktest.Run(n.store.DB(), b, 2, 2, 200, n.wait, nil))
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	breakRow(t, fs, newest.Image.Path)
	n2, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	if n2.ckpt.LSN() != older.Image.LSN {
		t.Fatalf("restarted from the image at LSN %d, want the older one's %d", n2.ckpt.LSN(), older.Image.LSN)
	}
	banktest.Check(t, n2.store.DB(), acked, "fallen back from an image that does not load")
	maps.Copy(acked, banktest.Run(n2.store.DB(), b, 3, 2, 200, n2.wait, nil))
	next := mustCheckpoint(t, n2)
	if next.Image.Path != newest.Image.Path {
		t.Fatalf("the checkpoint after the fallback went to %s, over the image restarted from; want %s", next.Image.Path, newest.Image.Path)
	}
	if err := n2.store.Close(); err != nil {
		t.Fatal(err)
	}
	n3, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := n3.store.Close(); err != nil {
			t.Error(err)
		}
	}()
	if n3.ckpt.LSN() != next.Image.LSN {
		t.Fatalf("restarted from the image at LSN %d, want %d", n3.ckpt.LSN(), next.Image.LSN)
	}
	banktest.Check(t, n3.store.DB(), acked, "after the checkpoint that replaced the broken image")
}

// TestFallbackThatWouldLoseCommits: on a no-log node with a data dir
// (no log after the older image), a newest image that is damaged, found
// so at a load (a bit flip, a bad row) or before (truncated, a bad
// header), is not replaced by the older one: the start refuses, saying
// what it would lose, and leaves both images alone; so does a start at a
// level with a log that has none yet (a no-log node restarted as
// fsync-log). A damaged older image stops nothing when the header says it
// is older.
func TestFallbackThatWouldLoseCommits(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) { fallbackThatWouldLoseCommits(t, d) })
	}
}

func fallbackThatWouldLoseCommits(t *testing.T, d damage) {
	fs := vfs.NewMemFS()
	opts := durability.Options{FS: fs, Level: durability.NoLog}
	s, slots, err := checkpoint.Restart(fs, ckptDir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{fs: fs, store: s, ckpt: checkpoint.New(s.DB(), s, slots, checkpoint.Options{FS: fs, Dir: ckptDir})}
	noWait := func(uint64) error { return nil }
	b := banktest.Setup(t, s.DB(), noWait)
	banktest.Run(s.DB(), b, 0, 2, 50, noWait, nil)
	older := mustCheckpoint(t, n)
	banktest.Run(s.DB(), b, 1, 2, 50, noWait, nil)
	newest := mustCheckpoint(t, n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, fs, newest.Image.Path)
	d.do(t, fs, newest.Image.Path)
	damaged := readFile(t, fs, newest.Image.Path)
	want := fmt.Sprintf("reach only LSN %d", older.Image.LSN)
	if d.name == "bad header" {
		want = "damaged past telling its LSN"
	}
	for _, o := range []durability.Options{opts, {FS: fs, Level: durability.FsyncLog, Dirs: []string{"/log"}}} {
		_, _, err = checkpoint.Restart(fs, ckptDir, o, nil)
		if err == nil || errors.Is(err, checkpoint.ErrNoImage) || !strings.Contains(err.Error(), filepath.Base(newest.Image.Path)) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: restart that would lose the commits after LSN %d: %v", o.Level, older.Image.LSN, err)
		}
	}
	again, err := checkpoint.Inspect(fs, ckptDir, nil)
	if err != nil || again.Older.Path != older.Image.Path && again.Newest.Path != older.Image.Path || !bytes.Equal(readFile(t, fs, newest.Image.Path), damaged) {
		t.Fatalf("the images after the refused start: %+v, %v", again, err)
	}
	if d.name != "truncated" {
		return
	}
	// The same damage to the older image: the newest is used.
	writeFile(t, fs, newest.Image.Path, before)
	d.do(t, fs, older.Image.Path)
	s, _, err = checkpoint.Restart(fs, ckptDir, opts, nil)
	if err != nil || s.DB().LastLSN() != newest.Image.LSN {
		t.Fatalf("restart with the older image damaged: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustCheckpoint(t *testing.T, n *node) checkpoint.Result {
	t.Helper()
	res, err := n.ckpt.Run(context.Background())
	if err != nil || res.Skipped {
		t.Fatalf("checkpoint: %+v, %v", res, err)
	}
	return res
}

// TestRestartReplaysOnlyAfterTheImage: a restart loads the image and
// replays only the records after it; a checkpoint with nothing new is
// skipped.
func TestRestartReplaysOnlyAfterTheImage(t *testing.T) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	b := banktest.Setup(t, n.store.DB(), n.wait)
	acked := banktest.Run(n.store.DB(), b, 0, 2, 100, n.wait, nil)
	img := mustCheckpoint(t, n)
	if res, err := n.ckpt.Run(context.Background()); err != nil || !res.Skipped || res.Image.LSN != img.Image.LSN {
		t.Fatalf("a checkpoint with nothing new: %+v, %v", res, err)
	}
	if st := n.ckpt.Stats(); st.Written != 1 || st.Skipped != 1 || st.Failed != 0 || st.LastDuration != img.Duration || st.Newest != img.Image {
		t.Fatalf("stats %+v after one image written (%+v) and one skipped", st, img)
	}
	tx := n.store.DB().Begin()
	if err := tx.Insert(b.Mark, []mem.Value{mem.String("after-image")}); err != nil {
		t.Fatal(err)
	}
	lsn, err := tx.Commit()
	if err != nil || n.wait(lsn) != nil {
		t.Fatal(err)
	}
	acked["after-image"] = true
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	n2, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	banktest.Check(t, n2.store.DB(), acked, "restart")
	if rec := n2.store.Recovery(); rec.Records != 1 || rec.LastLSN != lsn {
		t.Fatalf("recovery replayed %d records to LSN %d; want 1, to %d", rec.Records, rec.LastLSN, lsn)
	}
}

// failedLog is a log that never makes anything durable.
type failedLog struct{ *durability.Store }

func (failedLog) Durable(context.Context, uint64) error { return errors.New("the log failed") }

// TestImageWaitsForTheLog: an image whose commits the log cannot make
// durable never becomes an image: the slot stays empty.
func TestImageWaitsForTheLog(t *testing.T) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	banktest.Setup(t, n.store.DB(), n.wait)
	c := checkpoint.New(n.store.DB(), failedLog{n.store}, checkpoint.Slots{}, checkpoint.Options{FS: fs, Dir: ckptDir})
	if _, err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "the log failed") {
		t.Fatalf("a checkpoint ahead of a failed log: %v", err)
	}
	if st := c.Stats(); st.Failed != 1 || st.Written != 0 || st.Newest.LSN != 0 {
		t.Fatalf("stats after a failed checkpoint: %+v", st)
	}
	if slots, err := checkpoint.Inspect(fs, ckptDir, nil); err != nil || slots.Newest.LSN != 0 {
		t.Fatalf("after it: %+v, %v", slots, err)
	}
}

// TestRestartCutsTheLog: a start told to stop after an LSN between the
// two images starts from the older image, replays the log to that LSN,
// removes the newest image (it holds what is cut), whole or damaged, and
// a later start without the cut finds exactly that database and what
// followed it. A cut below both images is refused.
func TestRestartCutsTheLog(t *testing.T) {
	t.Run("whole", func(t *testing.T) { restartCutsTheLog(t, false) })
	t.Run("damaged", func(t *testing.T) { restartCutsTheLog(t, true) })
}

func restartCutsTheLog(t *testing.T, damaged bool) {
	fs := vfs.NewMemFS()
	n, err := open(t, fs)
	if err != nil {
		t.Fatal(err)
	}
	b := banktest.Setup(t, n.store.DB(), n.wait)
	banktest.Run(n.store.DB(), b, 0, 2, 100, n.wait, nil)
	older := mustCheckpoint(t, n)
	banktest.Run(n.store.DB(), b, 1, 2, 100, n.wait, nil)
	cut := n.store.DB().LastLSN()
	want, err := digest.Of(n.store.DB())
	if err != nil {
		t.Fatal(err)
	}
	banktest.Run(n.store.DB(), b, 2, 2, 100, n.wait, nil)
	newest := mustCheckpoint(t, n)
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	if damaged {
		damages[0].do(t, fs, newest.Image.Path) // truncated: its header still names its LSN
	}
	opts := durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: dirs, SegmentSize: 4 << 10, StopAfter: older.Image.LSN - 1}
	if _, _, err := checkpoint.Restart(fs, ckptDir, opts, nil); !damaged && !errors.Is(err, checkpoint.ErrNoImage) {
		t.Fatalf("a cut below both images: %v", err)
	}
	opts.StopAfter = cut
	s, slots, err := checkpoint.Restart(fs, ckptDir, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := digest.Of(s.DB()); err != nil || !got.Equal(want) {
		t.Fatalf("after the cut: %v, want %v (%v)", got, want, err)
	}
	if slots.Newest.LSN != older.Image.LSN {
		t.Fatalf("started from the image at %d, want the older one at %d", slots.Newest.LSN, older.Image.LSN)
	}
	if _, err := fs.Open(newest.Image.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the image past the cut is still there: %v", err)
	}
	acked := banktest.Run(s.DB(), banktest.Of(t, s.DB()), 3, 1, 10, func(lsn uint64) error {
		return s.Wait(context.Background(), lsn, durability.FsyncLog)
	}, nil)
	after, err := digest.Of(s.DB())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := openNode(t, fs)
	if got, err := digest.Of(n2.store.DB()); err != nil || !got.Equal(after) {
		t.Fatalf("restarted after the cut: %v, want %v (%v)", got, after, err)
	}
	banktest.Check(t, n2.store.DB(), acked, "after the cut and a restart")
}

// TestTriggers: the background checkpoints (Start) write an image every
// Interval once there is something new, and, with LogBytes, once the log
// has grown that much since the last image, not before.
func TestTriggers(t *testing.T) {
	written := func(t *testing.T, c *checkpoint.Checkpointer, want int64, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); c.Stats().Written < want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %+v, want %d images written", within, c.Stats(), want)
			}
		}
	}
	t.Run("interval", func(t *testing.T) {
		fs := vfs.NewMemFS()
		n := openNode(t, fs)
		c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: fs, Dir: ckptDir, Interval: 50 * time.Millisecond})
		c.Start()
		defer c.Stop()
		time.Sleep(300 * time.Millisecond)
		if st := c.Stats(); st.Written != 0 {
			t.Fatalf("images of an empty database: %+v", st)
		}
		banktest.Setup(t, n.store.DB(), n.wait)
		written(t, c, 1, 5*time.Second)
		// Setup commits three times: an image may come between them,
		// and the next interval's catches up.
		for deadline := time.Now().Add(5 * time.Second); c.Stats().Newest.LSN != n.store.DB().LastLSN(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the newest image is at LSN %d, the database at %d", c.Stats().Newest.LSN, n.store.DB().LastLSN())
			}
		}
	})
	t.Run("log bytes", func(t *testing.T) {
		fs := vfs.NewMemFS()
		n := openNode(t, fs)
		b := banktest.Setup(t, n.store.DB(), n.wait)
		c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: fs, Dir: ckptDir, LogBytes: 64 << 10})
		c.Start()
		defer c.Stop()
		grown := func() int64 { return n.store.LogStats().StoredBytes }
		from, round := grown(), 0
		// grow commits until the log has grown by bytes since from (each
		// round's markers are new, so each transfer commits).
		grow := func(bytes int64) {
			for ; grown()-from < bytes; round++ {
				if round > 10000 {
					t.Fatalf("the log grew %d bytes in %d rounds", grown()-from, round)
				}
				banktest.Run(n.store.DB(), b, round, 1, 20, n.wait, nil)
			}
		}
		grow(32 << 10)
		time.Sleep(1500 * time.Millisecond) // the loop looks once a second
		if st := c.Stats(); st.Written != 0 {
			t.Fatalf("an image after %d bytes of log, with LogBytes 64 KiB: %+v", grown()-from, st)
		}
		grow(64 << 10)
		written(t, c, 1, 5*time.Second)
	})
	// The Interval counts from when a checkpoint began: one that took
	// longer than the Interval is followed at once by the next.
	t.Run("interval from the start", func(t *testing.T) {
		n := openNode(t, vfs.NewMemFS())
		b := banktest.Setup(t, n.store.DB(), n.wait)
		gate := &gatedFS{MemFS: n.fs, dir: ckptDir, held: make(chan struct{}), open: make(chan struct{})}
		c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: gate, Dir: ckptDir, Interval: time.Second})
		c.Start()
		defer c.Stop()
		<-gate.held
		time.Sleep(1500 * time.Millisecond) // the first image takes longer than the Interval
		banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
		close(gate.open)
		opened := time.Now()
		written(t, c, 2, 5*time.Second)
		if took := time.Since(opened); took > 700*time.Millisecond {
			t.Fatalf("the next image came %s after the first ended, which began more than an Interval (1s) before", took)
		}
	})
	// A checkpoint the node runs itself (mmdbd checkpoint) counts as the
	// last one too: the next background one comes an Interval after it.
	t.Run("a node's run counts", func(t *testing.T) {
		n := openNode(t, vfs.NewMemFS())
		b := banktest.Setup(t, n.store.DB(), n.wait)
		c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: n.fs, Dir: ckptDir, Interval: 2 * time.Second})
		started := time.Now()
		c.Start()
		defer c.Stop()
		time.Sleep(time.Second)
		if _, err := c.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		banktest.Run(n.store.DB(), b, 0, 1, 20, n.wait, nil)
		time.Sleep(time.Until(started.Add(2500 * time.Millisecond)))
		if st := c.Stats(); st.Written != 1 {
			t.Fatalf("%s after Start, with a Run 1s after it and an Interval of 2s: %+v, want the Run's image alone", time.Since(started), st)
		}
		written(t, c, 2, 5*time.Second)
	})
}

// gatedFS holds the first write to a file under dir until open is
// closed, saying so on held: an image whose writing stalls.
// stalled starts a checkpoint of n's database, with ctx, that stalls in
// its image until gate.open is closed, and returns once it does: its
// Checkpointer, the gate, and the channel its Run's error comes on.
func stalled(ctx context.Context, n *node) (*checkpoint.Checkpointer, *gatedFS, <-chan error) {
	gate := &gatedFS{MemFS: n.fs, dir: ckptDir, held: make(chan struct{}), open: make(chan struct{})}
	c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: gate, Dir: ckptDir})
	ran := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx)
		ran <- err
	}()
	<-gate.held
	return c, gate, ran
}

type gatedFS struct {
	*vfs.MemFS
	dir  string
	held chan struct{}
	open chan struct{}
	once sync.Once
}

func (g *gatedFS) Create(name string) (vfs.File, error) {
	f, err := g.MemFS.Create(name)
	if err != nil || !strings.HasPrefix(name, g.dir) {
		return f, err
	}
	return &gatedFile{File: f, fs: g}, nil
}

type gatedFile struct {
	vfs.File
	fs *gatedFS
}

func (f *gatedFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.once.Do(func() {
		close(f.fs.held)
		<-f.fs.open
	})
	return f.File.WriteAt(p, off)
}

// TestCheckpointDoesNotBlockCommits: while an image is being written,
// and stalls, commits go on, to rows it has yet to reach too, and return
// quickly; the image then holds the database as of its start, not the
// commits made during it, and the old versions it kept for them are a
// small fraction of it (SPEC 5: checkpoints do not stop the world).
// fillTable creates a table the image writes first (when it is created
// first), large enough to take many writes, of many rows: an image stalls
// in it (gatedFS).
func fillTable(t *testing.T, db *mem.DB) *mem.Table {
	t.Helper()
	fill, err := db.CreateTable(mem.TableDef{Name: "fill", Columns: []mem.ColumnDef{
		{Name: "id", Type: mem.TypeInt64}, {Name: "pad", Type: mem.TypeBytes, MaxLen: 200},
	}, PrimaryKey: []string{"id"}, PrimaryKind: mem.Ordered})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range int64(20) {
		tx := db.Begin()
		for j := range int64(1000) {
			pad := make([]byte, 200)
			for k := range pad {
				pad[k] = byte(r.Uint32()) // incompressible: the image takes many writes
			}
			if err := tx.Insert(fill, []mem.Value{mem.Int64(i*1000 + j), mem.Bytes(pad)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return fill
}

func TestCheckpointDoesNotBlockCommits(t *testing.T) {
	fs := vfs.NewMemFS()
	n := openNode(t, fs)
	db := n.store.DB()
	fill := fillTable(t, db)
	b := banktest.Setup(t, db, n.wait)
	banktest.Run(db, b, 0, 2, 100, n.wait, nil)
	before, err := digest.Of(n.store.DB())
	if err != nil {
		t.Fatal(err)
	}
	at := n.store.DB().LastLSN()
	gate := &gatedFS{MemFS: fs, dir: ckptDir, held: make(chan struct{}), open: make(chan struct{})}
	c := checkpoint.New(n.store.DB(), n.store, checkpoint.Slots{}, checkpoint.Options{FS: gate, Dir: ckptDir})
	done := make(chan error, 1)
	var res checkpoint.Result
	go func() {
		var err error
		res, err = c.Run(context.Background())
		done <- err
	}()
	// While the image stalls in fill (the first table, by id), commits
	// change the bank and fill's last rows, which it has not reached. A
	// watchdog opens the gate and fails the test should they block.
	<-gate.held
	var open sync.Once
	release := func() { open.Do(func() { close(gate.open) }) }
	defer release()
	type outcome struct {
		slowest time.Duration
		err     error
	}
	commits := make(chan outcome, 1)
	go func() {
		var o outcome
		for i := range 200 {
			start := time.Now()
			lsn, err := b.Transfer(db, int64(i%2), int64(1-i%2), 1, fmt.Sprint("during-", i))
			if err == nil {
				tx := db.Begin()
				if err = tx.Upsert(fill, []mem.Value{mem.Int64(19999 - int64(i)), mem.Bytes([]byte("changed"))}); err == nil {
					lsn, err = tx.Commit()
				} else {
					tx.Rollback()
				}
			}
			if err == nil {
				err = n.wait(lsn)
			}
			if err != nil {
				o.err = fmt.Errorf("commit %d while the image stalls: %w", i, err)
				break
			}
			o.slowest = max(o.slowest, time.Since(start))
		}
		commits <- o
	}()
	var slowest time.Duration
	select {
	case o := <-commits:
		if o.err != nil {
			t.Fatal(o.err)
		}
		slowest = o.slowest
	case <-time.After(30 * time.Second):
		release()
		t.Fatal("commits did not get through in 30 s while the image stalled")
	}
	if slowest > 500*time.Millisecond {
		t.Fatalf("a commit took %s while the image stalled", slowest)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The old versions it kept are those of the rows changed while it
	// ran, a small fraction of the database.
	if res.Image.LSN != at || res.KeptBytes == 0 || res.KeptBytes > res.Image.Bytes/10 {
		t.Fatalf("the image: %+v (the database was at LSN %d when it began)", res, at)
	}
	loaded := mem.Open(mem.Options{})
	if _, _, err := checkpoint.Load(fs, res.Image.Path, loaded, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := digest.Of(loaded); err != nil || !got.Equal(before) {
		t.Fatalf("the image holds %s, the database held %s when it began: %v", got, before, err)
	}
	t.Logf("slowest commit while the image stalled: %s; the snapshot kept %d bytes of old versions", slowest, res.KeptBytes)
}
