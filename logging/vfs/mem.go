package vfs

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SectorSize is the unit in which MemFS's crashes keep or lose unsynced
// writes: a crash may keep any subset of the sectors written since the
// last Sync, which is how torn writes look on real disks.
const SectorSize = 512

// MemFS is an in-memory file system that can crash. It tracks, for every
// file, the data written and the data synced, and for every directory the
// names created and the names synced. Crash returns a new MemFS holding
// what a real machine would have kept: synced names, pointing at synced
// data, plus (optionally) a random subset of unsynced sectors.
//
// CrashAfter makes the file system crash by itself at its k-th mutating
// operation (writes, copies into mappings, syncs, creates, renames,
// removes, allocations, size changes): that operation and every later one
// fail with ErrCrashed, so a test can crash a workload at every point in
// turn.
type MemFS struct {
	mu      sync.Mutex
	names   map[string]*memInode // the namespace as it is now
	durable map[string]*memInode // the namespace a crash keeps
	dirs    map[string]bool      // directories as they are now
	durDirs map[string]bool      // directories whose names a crash keeps
	ops     int
	crashAt int // 0: never
	crashed bool
	space   int64         // bytes files may hold in all; 0: unlimited
	full    error         // what a write past space fails with: ENOSPC, or EDQUOT (SetQuota)
	delay   time.Duration // how long a Sync takes
}

// memInode is a file's contents.
type memInode struct {
	data   []byte
	synced []byte
	began  uint64 // syncs begun (File.Sync and Mapping.Flush)
	kept   uint64 // the latest-begun sync whose snapshot synced holds
}

// NewMemFS returns an empty file system with the root directory.
func NewMemFS() *MemFS {
	return &MemFS{
		names:   map[string]*memInode{},
		durable: map[string]*memInode{},
		dirs:    map[string]bool{"/": true, ".": true},
		durDirs: map[string]bool{"/": true, ".": true},
	}
}

// CrashAfter makes the k-th mutating operation from now, and all after
// it, fail with ErrCrashed (k >= 1).
func (fs *MemFS) CrashAfter(k int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.crashAt = fs.ops + k
}

// SetSpace limits the bytes all files together may hold: writes and
// allocations past it fail with ENOSPC. Zero means no limit.
func (fs *MemFS) SetSpace(bytes int64) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.space, fs.full = bytes, unix.ENOSPC
}

// SetQuota is SetSpace for a user's disk quota: writes and allocations
// past it fail with EDQUOT.
func (fs *MemFS) SetQuota(bytes int64) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.space, fs.full = bytes, unix.EDQUOT
}

// SetSyncDelay makes every File.Sync and Mapping.Flush take d, as a
// disk's flush would, so that tests see group commit form and writes that
// race a sync.
func (fs *MemFS) SetSyncDelay(d time.Duration) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.delay = d
}

// Crash returns what survives a crash now: the synced names, each with
// its file's synced data; with r, each unsynced sector of a durable file
// is also kept with probability one half. The MemFS itself stops working.
func (fs *MemFS) Crash(r *rand.Rand) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.crashed = true
	out := NewMemFS()
	for d := range fs.durDirs {
		if fs.keptDir(d) {
			out.dirs[d], out.durDirs[d] = true, true
		}
	}
	kept := map[*memInode]*memInode{}
	for _, name := range sortedKeys(fs.durable) {
		if !out.dirs[filepath.Dir(name)] {
			continue // its directory did not survive
		}
		ino := fs.durable[name]
		n, ok := kept[ino]
		if !ok {
			n = &memInode{data: tornCopy(ino, r)}
			n.synced = append([]byte(nil), n.data...)
			kept[ino] = n
		}
		out.names[name], out.durable[name] = n, n
	}
	return out
}

// CrashProcess returns what survives the process's crash (kill -9) now:
// everything written, synced or not, under the names as they are. What
// was not synced stays so: a later Crash of the result can still lose
// it. The MemFS itself stops working.
func (fs *MemFS) CrashProcess() *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.crashed = true
	out := NewMemFS()
	for d := range fs.dirs {
		out.dirs[d], out.durDirs[d] = true, fs.durDirs[d]
	}
	kept := map[*memInode]*memInode{}
	for name, ino := range fs.names {
		n, ok := kept[ino]
		if !ok {
			n = &memInode{data: append([]byte(nil), ino.data...), synced: append([]byte(nil), ino.synced...)}
			kept[ino] = n
		}
		out.names[name] = n
		if fs.durable[name] == ino {
			out.durable[name] = n
		}
	}
	return out
}

// keptDir reports whether a crash keeps directory d: its name and those
// of all its parents were synced.
func (fs *MemFS) keptDir(d string) bool {
	for ; d != "/" && d != "."; d = filepath.Dir(d) {
		if !fs.durDirs[d] {
			return false
		}
	}
	return true
}

// tornCopy returns a file's synced data with, when r is set, some of the
// sectors written since also kept.
func tornCopy(ino *memInode, r *rand.Rand) []byte {
	out := append([]byte(nil), ino.synced...)
	if r == nil {
		return out
	}
	for off := 0; off < len(ino.data); off += SectorSize {
		end := min(off+SectorSize, len(ino.data))
		if off < len(ino.synced) && string(ino.data[off:end]) == string(ino.synced[off:min(end, len(ino.synced))]) {
			continue
		}
		if r.IntN(2) == 0 {
			continue
		}
		if len(out) < end {
			out = append(out, make([]byte, end-len(out))...)
		}
		copy(out[off:end], ino.data[off:end])
	}
	return out
}

// op counts a mutating operation; it fails if the file system has crashed
// or crashes now. The caller holds fs.mu.
func (fs *MemFS) op(what, name string) error {
	if fs.crashed {
		return &os.PathError{Op: what, Path: name, Err: ErrCrashed}
	}
	fs.ops++
	if fs.crashAt > 0 && fs.ops >= fs.crashAt {
		fs.crashed = true
		return &os.PathError{Op: what, Path: name, Err: ErrCrashed}
	}
	return nil
}

func (fs *MemFS) checkDir(what, name string) error {
	if !fs.dirs[filepath.Dir(name)] {
		return &os.PathError{Op: what, Path: name, Err: os.ErrNotExist}
	}
	return nil
}

func (fs *MemFS) used() int64 {
	var n int64
	seen := map[*memInode]bool{}
	for _, ino := range fs.names {
		if !seen[ino] {
			seen[ino] = true
			n += int64(len(ino.data))
		}
	}
	return n
}

// Free implements FS: what SetSpace or SetQuota leaves, or math.MaxInt64
// without a limit.
func (fs *MemFS) Free(dir string) (int64, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = clean(dir)
	if fs.crashed {
		return 0, &os.PathError{Op: "statfs", Path: dir, Err: ErrCrashed}
	}
	if !fs.dirs[dir] {
		return 0, &os.PathError{Op: "statfs", Path: dir, Err: os.ErrNotExist}
	}
	if fs.space == 0 {
		return math.MaxInt64, nil
	}
	return max(fs.space-fs.used(), 0), nil
}

// Create implements FS.
func (fs *MemFS) Create(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = clean(name)
	if err := fs.op("create", name); err != nil {
		return nil, err
	}
	if err := fs.checkDir("create", name); err != nil {
		return nil, err
	}
	if _, ok := fs.names[name]; ok {
		return nil, &os.PathError{Op: "create", Path: name, Err: os.ErrExist}
	}
	ino := &memInode{}
	fs.names[name] = ino
	return &memFile{fs: fs, ino: ino, name: name}, nil
}

// Open implements FS.
func (fs *MemFS) Open(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = clean(name)
	if fs.crashed {
		return nil, &os.PathError{Op: "open", Path: name, Err: ErrCrashed}
	}
	ino, ok := fs.names[name]
	if !ok {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return &memFile{fs: fs, ino: ino, name: name}, nil
}

// Remove implements FS.
func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = clean(name)
	if err := fs.op("remove", name); err != nil {
		return err
	}
	if _, ok := fs.names[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(fs.names, name)
	return nil
}

// Rename implements FS.
func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	oldname, newname = clean(oldname), clean(newname)
	if err := fs.op("rename", oldname); err != nil {
		return err
	}
	ino, ok := fs.names[oldname]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: os.ErrNotExist}
	}
	if err := fs.checkDir("rename", newname); err != nil {
		return err
	}
	delete(fs.names, oldname)
	fs.names[newname] = ino
	return nil
}

// MkdirAll implements FS. A new directory's name survives a crash once
// its parent is synced (SyncDir).
func (fs *MemFS) MkdirAll(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = clean(dir)
	if err := fs.op("mkdir", dir); err != nil {
		return err
	}
	for d := dir; !fs.dirs[d]; d = filepath.Dir(d) {
		fs.dirs[d] = true
	}
	return nil
}

// ReadDir implements FS.
func (fs *MemFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = clean(dir)
	if fs.crashed {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: ErrCrashed}
	}
	if !fs.dirs[dir] {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: os.ErrNotExist}
	}
	var names []string
	for _, name := range sortedKeys(fs.names) {
		if filepath.Dir(name) == dir {
			names = append(names, filepath.Base(name))
		}
	}
	return names, nil
}

// SyncDir implements FS: the directory's names become durable as they are.
func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = clean(dir)
	if err := fs.op("syncdir", dir); err != nil {
		return err
	}
	for name := range fs.durable {
		if filepath.Dir(name) == dir {
			delete(fs.durable, name)
		}
	}
	for name, ino := range fs.names {
		if filepath.Dir(name) == dir {
			fs.durable[name] = ino
		}
	}
	for d := range fs.dirs {
		if filepath.Dir(d) == dir && d != dir {
			fs.durDirs[d] = true
		}
	}
	return nil
}

type memFile struct {
	fs     *MemFS
	ino    *memInode
	name   string
	closed bool
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) check(what string) error {
	if f.closed {
		return &os.PathError{Op: what, Path: f.name, Err: os.ErrClosed}
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read"); err != nil {
		return 0, err
	}
	if f.fs.crashed {
		return 0, &os.PathError{Op: "read", Path: f.name, Err: ErrCrashed}
	}
	if len(p) == 0 {
		return 0, nil // as os.File does
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write"); err != nil {
		return 0, err
	}
	if err := f.fs.op("write", f.name); err != nil {
		return 0, err
	}
	if end := off + int64(len(p)); end > int64(len(f.ino.data)) {
		if f.fs.space > 0 && f.fs.used()+end-int64(len(f.ino.data)) > f.fs.space {
			return 0, &os.PathError{Op: "write", Path: f.name, Err: f.fs.full}
		}
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p)
	return len(p), nil
}

// Sync makes durable what the file held when it was called: data written
// while it takes its delay may or may not be, so this keeps none of it.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	err := f.check("sync")
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.fs.sync(f, "sync", -1)
}

// sync makes the first n bytes of f's data as they are now durable (n <
// 0: the whole file, size included), after the sync delay, unless a sync
// begun later has finished first (durability only grows).
func (fs *MemFS) sync(f *memFile, what string, n int64) error {
	fs.mu.Lock()
	ino := f.ino
	whole := n < 0
	if whole {
		n = int64(len(ino.data))
	}
	ino.began++
	gen, data, delay := ino.began, slices.Clone(ino.data[:n]), fs.delay
	fs.mu.Unlock()
	time.Sleep(delay)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.op(what, f.name); err != nil {
		return err
	}
	if gen < ino.kept {
		return nil
	}
	ino.kept = gen
	if whole {
		ino.synced = append(ino.synced[:0], data...)
		return nil
	}
	if len(ino.synced) < len(ino.data) {
		ino.synced = append(ino.synced, make([]byte, len(ino.data)-len(ino.synced))...)
	}
	copy(ino.synced, data)
	return nil
}

func (f *memFile) Allocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("allocate"); err != nil {
		return err
	}
	if err := f.fs.op("allocate", f.name); err != nil {
		return err
	}
	if grow := size - int64(len(f.ino.data)); grow > 0 {
		if f.fs.space > 0 && f.fs.used()+grow > f.fs.space {
			return &os.PathError{Op: "allocate", Path: f.name, Err: f.fs.full}
		}
		f.ino.data = append(f.ino.data, make([]byte, grow)...)
	}
	return nil
}

// Map returns the file's data itself: writes to it are kept by a
// process crash (CrashProcess) at once, and by a machine crash (Crash)
// once flushed.
func (f *memFile) Map(size int64) (Mapping, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("mmap"); err != nil {
		return nil, err
	}
	if size > int64(len(f.ino.data)) {
		return nil, &os.PathError{Op: "mmap", Path: f.name, Err: fmt.Errorf("mapping %d bytes of a %d-byte file", size, len(f.ino.data))}
	}
	return &memMapping{f: f, b: f.ino.data[:size:size]}, nil
}

type memMapping struct {
	f *memFile
	b []byte
}

// Copy copies under the file system's lock, as a CPU's stores and a
// crash are ordered. It counts as a mutating operation: a crash can fall
// between two copies, and none lands after it.
func (m *memMapping) Copy(off int64, b []byte) error {
	m.f.fs.mu.Lock()
	defer m.f.fs.mu.Unlock()
	if err := m.f.fs.op("copy", m.f.name); err != nil {
		return err
	}
	return copyInto(m.b, off, b, m.f.name)
}

// Flush, like Sync, keeps only what the first n bytes held when it was
// called. A mapping outlives its file's Close.
func (m *memMapping) Flush(n int64) error { return m.f.fs.sync(m.f, "msync", n) }

func (m *memMapping) Unmap() error { return nil }

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat"); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate"); err != nil {
		return err
	}
	if err := f.fs.op("truncate", f.name); err != nil {
		return err
	}
	if grow := size - int64(len(f.ino.data)); grow <= 0 {
		f.ino.data = f.ino.data[:size]
	} else {
		if f.fs.space > 0 && f.fs.used()+grow > f.fs.space {
			return &os.PathError{Op: "truncate", Path: f.name, Err: f.fs.full}
		}
		f.ino.data = append(f.ino.data, make([]byte, grow)...)
	}
	return nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("close"); err != nil {
		return err
	}
	f.closed = true
	return nil
}
