package main

import (
	"errors"
	"testing"
)

type failCloser struct{ err error }

func (f failCloser) Close() error { return f.err }

// TestCloseInto: a deferred close's failure reaches the function's
// error, saying what failed to close, and keeps an error it had.
func TestCloseInto(t *testing.T) {
	boom, before := errors.New("boom"), errors.New("the call failed")
	f := func(had error, closeErr error) (err error) {
		defer closeInto(&err, failCloser{closeErr}, "the connection to x:1")
		return had
	}
	if err := f(nil, nil); err != nil {
		t.Errorf("a close that works: %v", err)
	}
	if err := f(nil, boom); !errors.Is(err, boom) || err.Error() != "close the connection to x:1: boom" {
		t.Errorf("a close that fails: %v", err)
	}
	if err := f(before, boom); !errors.Is(err, boom) || !errors.Is(err, before) {
		t.Errorf("a close that fails after the call failed: %v", err)
	}
}
