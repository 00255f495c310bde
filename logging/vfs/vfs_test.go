package vfs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestConformance runs the same operations on the real file system and
// on MemFS and expects the same results.
func TestConformance(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T) (FS, string){
		"os":  func(t *testing.T) (FS, string) { return Default, t.TempDir() },
		"mem": func(t *testing.T) (FS, string) { return NewMemFS(), "/data" },
	} {
		t.Run(name, func(t *testing.T) {
			fs, root := mk(t)
			dir := filepath.Join(root, "log", "ch0")
			must(t, fs.MkdirAll(dir))
			a := filepath.Join(dir, "a")
			f, err := fs.Create(a)
			must(t, err)
			if _, err := fs.Create(a); !errors.Is(err, os.ErrExist) {
				t.Fatalf("create twice: %v", err)
			}
			must(t, f.Allocate(4096))
			if n, err := f.Size(); err != nil || n != 4096 {
				t.Fatalf("size after allocate: %d %v", n, err)
			}
			if _, err := f.WriteAt([]byte("hello"), 10); err != nil {
				t.Fatal(err)
			}
			must(t, f.Sync())
			buf := make([]byte, 5)
			if _, err := f.ReadAt(buf, 10); err != nil || string(buf) != "hello" {
				t.Fatalf("read %q %v", buf, err)
			}
			if _, err := f.ReadAt(buf, 4094); err != io.EOF {
				t.Fatalf("read past the end: %v", err)
			}
			must(t, f.Truncate(12))
			if n, _ := f.Size(); n != 12 {
				t.Fatalf("size after truncate: %d", n)
			}
			must(t, f.Close())
			b := filepath.Join(dir, "b")
			must(t, fs.Rename(a, b))
			must(t, fs.SyncDir(dir))
			names, err := fs.ReadDir(dir)
			if err != nil || len(names) != 1 || names[0] != "b" {
				t.Fatalf("readdir: %v %v", names, err)
			}
			if _, err := fs.Open(a); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("open the old name: %v", err)
			}
			g, err := fs.Open(b)
			must(t, err)
			if _, err := g.ReadAt(buf[:2], 10); err != nil || string(buf[:2]) != "he" {
				t.Fatalf("read after rename: %q %v", buf[:2], err)
			}
			must(t, g.Close())
			must(t, fs.Remove(b))
			if names, _ := fs.ReadDir(dir); len(names) != 0 {
				t.Fatalf("readdir after remove: %v", names)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMemFSCrashKeepsOnlyWhatWasSynced: unsynced data and unsynced names
// are gone after a crash; synced ones stay.
func TestMemFSCrashKeepsOnlyWhatWasSynced(t *testing.T) {
	fs := NewMemFS()
	must(t, fs.MkdirAll("/d"))
	must(t, fs.SyncDir("/"))
	f, err := fs.Create("/d/synced")
	must(t, err)
	_, err = f.WriteAt([]byte("durable"), 0)
	must(t, err)
	must(t, f.Sync())
	must(t, fs.SyncDir("/d"))
	must(t, fs.MkdirAll("/d/unsynced-dir"))
	_, err = f.WriteAt([]byte(" and more"), 7)
	must(t, err)
	g, err := fs.Create("/d/unnamed") // synced data, name never synced
	must(t, err)
	_, err = g.WriteAt([]byte("lost"), 0)
	must(t, err)
	must(t, g.Sync())

	after := fs.Crash(nil)
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("a write after the crash: %v", err)
	}
	names, _ := after.ReadDir("/d")
	if len(names) != 1 || names[0] != "synced" {
		t.Fatalf("names after the crash: %v", names)
	}
	if _, err := after.ReadDir("/d/unsynced-dir"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a directory whose parent was not synced survived: %v", err)
	}
	h, err := after.Open("/d/synced")
	must(t, err)
	if n, _ := h.Size(); n != 7 {
		t.Fatalf("%d bytes survived, want the 7 synced", n)
	}
}

// TestMemFSTornWrites: with a random source, a crash keeps some unsynced
// sectors and not others, and never anything that was not written.
func TestMemFSTornWrites(t *testing.T) {
	kept, lost := map[int]bool{}, map[int]bool{}
	for seed := uint64(0); seed < 20; seed++ {
		fs := NewMemFS()
		f, err := fs.Create("/f")
		must(t, err)
		must(t, fs.SyncDir("/"))
		must(t, f.Allocate(8*SectorSize))
		must(t, f.Sync())
		data := bytes.Repeat([]byte{0xAB}, 8*SectorSize)
		_, err = f.WriteAt(data, 0)
		must(t, err)
		after := fs.Crash(rand.New(rand.NewPCG(seed, 0)))
		g, err := after.Open("/f")
		must(t, err)
		got := make([]byte, 8*SectorSize)
		if _, err := g.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for s := 0; s < 8; s++ {
			sector := got[s*SectorSize : (s+1)*SectorSize]
			switch {
			case bytes.Equal(sector, data[:SectorSize]):
				kept[s] = true
			case bytes.Equal(sector, make([]byte, SectorSize)):
				lost[s] = true
			default:
				t.Fatalf("seed %d sector %d is neither old nor new", seed, s)
			}
		}
	}
	if len(kept) != 8 || len(lost) != 8 {
		t.Fatalf("over 20 crashes each sector should be kept sometimes and lost sometimes: kept %v, lost %v", kept, lost)
	}
}

// TestMemFSCrashAfter: the k-th mutating operation and all after it fail.
func TestMemFSCrashAfter(t *testing.T) {
	fs := NewMemFS()
	f, err := fs.Create("/f")
	must(t, err)
	fs.CrashAfter(2)
	if _, err := f.WriteAt([]byte("a"), 0); err != nil {
		t.Fatalf("the first operation: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("the second operation: %v", err)
	}
	if _, err := fs.Create("/g"); !errors.Is(err, ErrCrashed) {
		t.Fatalf("after the crash: %v", err)
	}
}

// TestMemFSSpace: past its space, writes and allocations fail with ENOSPC.
func TestMemFSSpace(t *testing.T) {
	fs := NewMemFS()
	fs.SetSpace(1000)
	f, err := fs.Create("/f")
	must(t, err)
	must(t, f.Allocate(900))
	if err := f.Allocate(2000); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("allocate past the space: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, 200), 900); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("write past the space: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, 100), 800); err != nil {
		t.Fatalf("a write inside the allocation: %v", err)
	}
}

// TestSyncCallsTheSystem: on the real file system, File.Sync is an
// fdatasync of the file, and Mapping.Flush an msync (MS_SYNC) of the
// whole pages that hold the bytes asked for (SPEC 4: fsync-log's commit
// waits for fdatasync, mmap-log's flush writes the mappings out). The
// tests that write real files cannot see a missing call: the page cache
// keeps what they wrote through a crash of the process.
func TestSyncCallsTheSystem(t *testing.T) {
	realFdatasync, realMsync := fdatasync, msync
	t.Cleanup(func() { fdatasync, msync = realFdatasync, realMsync })
	var synced []int
	fdatasync = func(fd int) error {
		synced = append(synced, fd)
		return realFdatasync(fd)
	}
	type msyncCall struct {
		start *byte
		n     int
		flags int
	}
	var flushed []msyncCall
	msync = func(b []byte, flags int) error {
		flushed = append(flushed, msyncCall{&b[0], len(b), flags})
		return realMsync(b, flags)
	}

	f, err := Default.Create(filepath.Join(t.TempDir(), "segment"))
	must(t, err)
	page := int64(os.Getpagesize())
	must(t, f.Allocate(4*page))
	if _, err := f.WriteAt([]byte("record"), 0); err != nil {
		t.Fatal(err)
	}
	must(t, f.Sync())
	if fd := int(f.(osFile).f.Fd()); len(synced) != 1 || synced[0] != fd {
		t.Fatalf("Sync of the file with fd %d made fdatasync calls on %v", fd, synced)
	}

	m, err := f.Map(4 * page)
	must(t, err)
	must(t, m.Copy(page, []byte("record")))
	must(t, m.Flush(page+6))
	want := msyncCall{&m.(osMapping).m[0], int(2 * page), unix.MS_SYNC}
	if len(flushed) != 1 || flushed[0] != want {
		t.Fatalf("Flush of the first %d bytes made the msync calls %+v, want one of the mapping's first 2 pages: %+v", page+6, flushed, want)
	}
	must(t, m.Unmap())
	must(t, f.Close())
}

// TestInterruptedCallsAreRetried: an fallocate or fdatasync that a
// signal interrupts (EINTR) is made again, not reported as a failure:
// on tmpfs fallocate is interrupted by any signal, and a failed
// allocation or sync fails the log.
func TestInterruptedCallsAreRetried(t *testing.T) {
	realFallocate, realFdatasync := fallocate, fdatasync
	t.Cleanup(func() { fallocate, fdatasync = realFallocate, realFdatasync })
	var allocs, syncs int
	fallocate = func(fd int, mode uint32, off, n int64) error {
		if allocs++; allocs < 3 {
			return unix.EINTR
		}
		return realFallocate(fd, mode, off, n)
	}
	fdatasync = func(fd int) error {
		if syncs++; syncs < 3 {
			return unix.EINTR
		}
		return realFdatasync(fd)
	}
	f, err := Default.Create(filepath.Join(t.TempDir(), "segment"))
	must(t, err)
	must(t, f.Allocate(1<<16))
	must(t, f.Sync())
	if size, err := f.Size(); err != nil || size != 1<<16 || allocs != 3 || syncs != 3 {
		t.Fatalf("size %d (%v) after %d fallocate and %d fdatasync calls; want 65536 after 3 of each", size, err, allocs, syncs)
	}
	must(t, f.Close())
}
