package mem

import "unsafe"

// prefetch asks the CPU to bring the cache line at p into cache and goes
// on at once; it never faults, whatever p is.
//
//go:noescape
func prefetch(p unsafe.Pointer)
