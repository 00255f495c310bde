package mem

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPrefault: prefault maps in exactly the pages wholly inside the
// range it is given, of memory no one has touched yet, and changes no
// byte.
func TestPrefault(t *testing.T) {
	const pages = 16
	page := int(pageSize)
	m, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	// A huge page would make its neighbours resident too.
	if err := unix.Madvise(m, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Munmap(m); err != nil {
			t.Error(err)
		}
	})
	probe, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Madvise(probe, unix.MADV_POPULATE_WRITE)
	if uerr := unix.Munmap(probe); uerr != nil {
		t.Fatal(uerr)
	}
	if err != nil {
		t.Skipf("MADV_POPULATE_WRITE (Linux 5.14) is refused here (%v): prefault does nothing", err)
	}
	resident := func() []bool {
		t.Helper()
		vec := make([]byte, pages)
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal(e)
		}
		out := make([]bool, pages)
		for i, v := range vec {
			out[i] = v&1 != 0
		}
		return out
	}
	for i, r := range resident() {
		if r {
			t.Fatalf("page %d of a fresh mapping is resident", i)
		}
	}
	// From the middle of page 1 to the middle of page 13: pages 2 to 12.
	prefault(unsafe.Pointer(&m[page+100]), uintptr(12*page))
	// Less than a page, and a page not on a boundary: nothing.
	prefault(unsafe.Pointer(&m[14*page+1]), uintptr(page-10))
	prefault(unsafe.Pointer(&m[15*page-100]), uintptr(page))
	for i, r := range resident() {
		if want := i >= 2 && i <= 12; r != want {
			t.Errorf("page %d: resident %v, want %v", i, r, want)
		}
	}
	for i, b := range m {
		if b != 0 {
			t.Fatalf("byte %d is %d after prefault", i, b)
		}
	}
}
