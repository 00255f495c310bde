//go:build !amd64

package mem

import "unsafe"

// prefetch does nothing on this architecture.
func prefetch(unsafe.Pointer) {}
