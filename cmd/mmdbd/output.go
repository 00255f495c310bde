package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
)

// closeInto closes c and joins a failure, saying what failed to close,
// into *err: for a defer in a function whose error result is named, so
// that no close goes unchecked.
func closeInto(err *error, c io.Closer, what string) {
	if cerr := c.Close(); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("close %s: %w", what, cerr))
	}
}

// errWriter writes to w and keeps the first error, after which it writes
// nothing more: the output of many calls (through a tabwriter too) is
// checked once, at its end, and no failed write goes unnoticed.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	e.err = err
	return n, err
}

// flush flushes tw, which writes to e, and returns the first error of
// e's writes.
func (e *errWriter) flush(tw *tabwriter.Writer) error {
	if err := tw.Flush(); err != nil && e.err == nil {
		return err
	}
	return e.err
}
