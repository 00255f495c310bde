package mem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageSize is the kernel's page size: 4 KiB on most machines, 16 or 64
// KiB on some arm64 ones.
var pageSize = uintptr(unix.Getpagesize())

// prefault maps in, writable, the memory pages wholly inside the n bytes
// at p, in one madvise(MADV_POPULATE_WRITE) call (Linux 5.14). Memory the
// Go runtime has just taken from the kernel is not mapped yet: filling it
// in random order takes a fault per page, two where a read comes
// first (the read maps the shared zero page, the write then copies it),
// and on a virtual machine each fault costs microseconds. The advice
// changes no byte; where the kernel refuses it (an older kernel) the pages
// fault in as before, so its error is of no consequence and dropped.
func prefault(p unsafe.Pointer, n uintptr) {
	skip := -uintptr(p) & (pageSize - 1) // to the first page boundary
	if n < skip+pageSize {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, skip)), (n-skip)&^(pageSize-1))
	_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE)
}
