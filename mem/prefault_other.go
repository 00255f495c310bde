//go:build !linux

package mem

import "unsafe"

// prefault does nothing where madvise(MADV_POPULATE_WRITE) is not known.
func prefault(unsafe.Pointer, uintptr) {}
