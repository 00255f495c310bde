package main

import (
	"errors"
	"strings"
	"syscall"
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

// fullWriter fails every write, as stdout does on a full disk.
type fullWriter struct{}

func (fullWriter) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// flakyWriter fails its first write only, as a file does on a disk that
// is full for a moment: what comes after is written, and the output
// looks whole but misses a piece.
type flakyWriter struct {
	failed bool
	strings.Builder
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	if !f.failed {
		f.failed = true
		return 0, syscall.ENOSPC
	}
	return f.Builder.Write(p)
}

// TestReportsCheckEveryWrite: a report printed in many writes (through a
// tabwriter, which writes a block at each line without cells) fails if
// any write failed, not only the last; before, status, bench and the
// shell's tables printed a report with a piece missing and exited 0.
func TestReportsCheckEveryWrite(t *testing.T) {
	st := statusJSON{Role: "primary", Standbys: []standbyJSON{{Name: "b"}}, Tables: []tableJSON{{Name: "kv"}}}
	if err := printStatus(&flakyWriter{}, st); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("status: %v", err)
	}
	res := &benchResult{Transactions: []kindResult{{Name: "get"}}}
	if err := res.print(&flakyWriter{}); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("bench: %v", err)
	}
}

// TestOutputErrorsReachTheExitCode: a command whose output cannot be
// written exits 1 saying so, though what it did (a shell's insert) is
// done; before, the shell's "ok, lsn", audit's report and the usage of
// help were dropped and the exit code was 0.
func TestOutputErrorsReachTheExitCode(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"image", "help"}} {
		var stderr strings.Builder
		if code := run(args, nil, fullWriter{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "print the usage") {
			t.Errorf("%s: exit %d\n%s", args, code, &stderr)
		}
	}

	addr := startNode(t, nil)
	var stderr strings.Builder
	code := run([]string{"shell", "-addr", addr, "-c", "create table kv (k int64, v int64, primary key (k)); insert kv 1 1"}, nil, fullWriter{}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "create ran, but its output was not printed") || !strings.Contains(stderr.String(), "no space left") {
		t.Errorf("shell: exit %d\n%s", code, &stderr)
	}
	if out, code := shellRun(t, addr, "get kv 1"); code != 0 || !strings.Contains(out, "(0 rows)") {
		t.Errorf("the shell ran on past the create whose output was lost: exit %d\n%s", code, out)
	}

	// Two nodes with the same table, each at LSN 1: the same.
	primary, standby := startNode(t, nil), startNode(t, nil)
	for _, a := range []string{primary, standby} {
		if out, code := shellRun(t, a, "create table kv (k int64, primary key (k))"); code != 0 {
			t.Fatalf("create table on %s: exit %d\n%s", a, code, out)
		}
	}
	stderr.Reset()
	code = run([]string{"audit", "-primary", primary, "-standby", standby}, nil, fullWriter{}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "print the report: no space left") {
		t.Errorf("audit: exit %d\n%s", code, &stderr)
	}
}
