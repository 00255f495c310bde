// Package vfs is the small file system interface the redo log (and later
// the checkpoints) write through, with two implementations: Default, the
// operating system's, and MemFS, an in-memory one that tests crash to
// find out what a real crash would have kept.
//
// The interface promises only what POSIX file systems promise: data
// written to a file survives a crash once File.Sync returns; a file's
// name (its creation, a rename, a removal) survives once SyncDir of its
// directory returns. MemFS keeps exactly that and no more.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// FS is a file system.
type FS interface {
	// Create makes a new file for reading and writing; it fails if name
	// exists.
	Create(name string) (File, error)
	// Open opens an existing file for reading and writing.
	Open(name string) (File, error)
	// Remove removes a file.
	Remove(name string) error
	// Rename renames a file, replacing newname if it exists.
	Rename(oldname, newname string) error
	// MkdirAll makes a directory and its parents.
	MkdirAll(dir string) error
	// ReadDir returns the names in a directory, sorted.
	ReadDir(dir string) ([]string, error)
	// SyncDir makes the names in a directory durable.
	SyncDir(dir string) error
	// Free returns the bytes free for new data on the file system that
	// holds dir.
	Free(dir string) (int64, error)
}

// File is an open file.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's data durable (fdatasync).
	Sync() error
	// Allocate reserves space for the file's first size bytes, so later
	// writes there cannot fail for want of space.
	Allocate(size int64) error
	// Size returns the file's size.
	Size() (int64, error)
	// Truncate sets the file's size.
	Truncate(size int64) error
	// Map maps the file's first size bytes (all preallocated) into memory
	// for reading and writing. Writes through the mapping are durable once
	// Mapping.Flush returns, and survive the process's crash (not the
	// machine's) at once; the file must not be written otherwise, or
	// resized, while it is mapped.
	Map(size int64) (Mapping, error)
	// Close closes the file.
	Close() error
	// Name returns the name the file was opened with.
	Name() string
}

// Mapping is a file mapped into memory.
type Mapping interface {
	// Copy copies b into the mapped memory at off (a memcpy, no system
	// call); it fails if b does not fit.
	Copy(off int64, b []byte) error
	// Flush makes the first n bytes of the mapping durable (msync). It
	// writes whole pages, so bytes past n in n's page may go out too, as
	// they were at that moment; Copy may run while it does.
	Flush(n int64) error
	// Unmap releases the mapping; neither Copy nor Flush may be called
	// after.
	Unmap() error
}

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string) error            { return os.MkdirAll(dir, 0o755) }

func (osFS) ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		return errors.Join(fmt.Errorf("sync directory %s: %w", dir, err), d.Close())
	}
	return d.Close()
}

func (osFS) Free(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := retryEINTR(func() error { return unix.Statfs(dir, &st) }); err != nil {
		return 0, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// The system calls that make data durable and reserve its room:
// osFile.Sync's, osMapping.Flush's and osFile.Allocate's, variables so
// that this package's tests can see them made.
var (
	fdatasync = unix.Fdatasync
	msync     = unix.Msync
	fallocate = unix.Fallocate
)

// retryEINTR runs call again while a signal interrupts it, as the os
// package does for its own calls: fallocate is interrupted by any signal
// the process takes (on tmpfs, for one), and the Go runtime sends its
// threads signals of its own.
func retryEINTR(call func() error) error {
	for {
		if err := call(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

type osFile struct{ f *os.File }

func (o osFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o osFile) Truncate(size int64) error                { return o.f.Truncate(size) }
func (o osFile) Close() error                             { return o.f.Close() }
func (o osFile) Name() string                             { return o.f.Name() }

func (o osFile) Sync() error {
	if err := retryEINTR(func() error { return fdatasync(int(o.f.Fd())) }); err != nil {
		return &os.PathError{Op: "fdatasync", Path: o.f.Name(), Err: err}
	}
	return nil
}

// Allocate uses fallocate; where the file system has none it writes
// zeros over the part of the range past the file's end.
func (o osFile) Allocate(size int64) error {
	err := retryEINTR(func() error { return fallocate(int(o.f.Fd()), 0, 0, size) })
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return &os.PathError{Op: "fallocate", Path: o.f.Name(), Err: err}
	}
	cur, err := o.Size()
	if err != nil {
		return err
	}
	zeros := make([]byte, 1<<20)
	for off := cur; off < size; off += int64(len(zeros)) {
		if _, err := o.f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// Map maps the file with mmap-go, shared, so writes reach the page cache
// at once.
func (o osFile) Map(size int64) (Mapping, error) {
	m, err := mmap.MapRegion(o.f, int(size), mmap.RDWR, 0, 0)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: o.f.Name(), Err: err}
	}
	return osMapping{m: m, name: o.f.Name()}, nil
}

type osMapping struct {
	m    mmap.MMap
	name string
}

func (m osMapping) Copy(off int64, b []byte) error { return copyInto(m.m, off, b, m.name) }

// copyInto copies b into a mapping's memory at off.
func copyInto(mem []byte, off int64, b []byte, name string) error {
	if off < 0 || off+int64(len(b)) > int64(len(mem)) {
		return fmt.Errorf("vfs: %d bytes at %d pass the end of %s's %d-byte mapping", len(b), off, name, len(mem))
	}
	copy(mem[off:], b)
	return nil
}

// Flush msyncs the pages holding the first n bytes.
func (m osMapping) Flush(n int64) error {
	page := int64(os.Getpagesize())
	n = min((n+page-1)/page*page, int64(len(m.m)))
	if err := msync(m.m[:n], unix.MS_SYNC); err != nil {
		return &os.PathError{Op: "msync", Path: m.name, Err: err}
	}
	return nil
}

func (m osMapping) Unmap() error {
	if err := m.m.Unmap(); err != nil {
		return &os.PathError{Op: "munmap", Path: m.name, Err: err}
	}
	return nil
}

func (o osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// NoSpace reports whether err says the file system has no room for a
// write: the disk is full (ENOSPC), or the user's quota is used up
// (EDQUOT).
func NoSpace(err error) bool { return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) }

// ErrCrashed is what every operation of a crashed MemFS returns.
var ErrCrashed = errors.New("vfs: the file system has crashed")

// clean normalizes a name for MemFS's maps.
func clean(name string) string { return filepath.Clean(name) }

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// MkdirDurable creates dir and its parents, and syncs each parent, so
// that the whole path survives a crash.
func MkdirDurable(fs FS, dir string) error {
	if err := fs.MkdirAll(dir); err != nil {
		return fmt.Errorf("vfs: create directory %s: %w", dir, err)
	}
	for d := filepath.Clean(dir); filepath.Dir(d) != d; d = filepath.Dir(d) {
		if err := fs.SyncDir(filepath.Dir(d)); err != nil {
			return fmt.Errorf("vfs: sync directory %s: %w", filepath.Dir(d), err)
		}
	}
	return nil
}

// TempSuffix names the temporary file ReplaceFile writes before it
// renames it into place.
const TempSuffix = ".tmp"

// ReplaceFile makes path a file that fill writes, so that a crash leaves
// either the old file or the whole new one: fill writes path+TempSuffix
// (one left by an earlier attempt is removed first), which is synced and
// closed; then, once ready (if set) approves, it is renamed into place
// and the directory synced. On a failure before the rename the temporary
// file is removed.
func ReplaceFile(fs FS, path string, fill func(f File) error, ready func() error) error {
	tmp := path + TempSuffix
	if err := fs.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vfs: remove %s: %w", tmp, err)
	}
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("vfs: create %s: %w", tmp, err)
	}
	err = fill(f)
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("vfs: sync %s: %w", tmp, err)
		}
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("vfs: close %s: %w", tmp, cerr)
	}
	if err == nil && ready != nil {
		err = ready()
	}
	if err == nil {
		if err = fs.Rename(tmp, path); err != nil {
			err = fmt.Errorf("vfs: rename %s to %s: %w", tmp, path, err)
		}
	}
	if err != nil {
		if rerr := fs.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("vfs: remove %s: %w", tmp, rerr))
		}
		return err
	}
	if err := fs.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("vfs: sync directory %s: %w", filepath.Dir(path), err)
	}
	return nil
}

// ReadFile returns the contents of path.
func ReadFile(fs FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vfs: open %s: %w", path, err)
	}
	size, err := f.Size()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("vfs: size of %s: %w", path, err), f.Close())
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, errors.Join(fmt.Errorf("vfs: read %s: %w", path, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("vfs: close %s: %w", path, err)
	}
	return data, nil
}

// WriteFile makes data the contents of path, as ReplaceFile does.
func WriteFile(fs FS, path string, data []byte) error {
	return ReplaceFile(fs, path, func(f File) error {
		_, err := f.WriteAt(data, 0)
		return err
	}, nil)
}

// RemoveDurable removes path and syncs its directory, so that the
// removal survives a crash.
func RemoveDurable(fs FS, path string) error {
	if err := fs.Remove(path); err != nil {
		return fmt.Errorf("vfs: remove %s: %w", path, err)
	}
	if err := fs.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("vfs: sync directory %s: %w", filepath.Dir(path), err)
	}
	return nil
}
