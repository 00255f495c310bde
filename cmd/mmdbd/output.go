package main

import (
	"errors"
	"fmt"
	"io"
)

// closeInto closes c and joins a failure, saying what failed to close,
// into *err: for a defer in a function whose error result is named, so
// that no close goes unchecked.
func closeInto(err *error, c io.Closer, what string) {
	if cerr := c.Close(); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("close %s: %w", what, cerr))
	}
}
