package main

import (
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBenchOverGRPCRefusesNodeFlags: over gRPC, a node flag (but for the
// client's -tls-*-file credentials) is refused, as the node runs as it
// is configured; before, -durability fsync-log was taken, ignored, and
// the run reported as if it had held.
func TestBenchOverGRPCRefusesNodeFlags(t *testing.T) {
	addr := startNode(t, nil)
	ping := []string{"bench", "-addr", addr, "-workload", "ping", "-clients", "1", "-warmup", "0s", "-duration", "50ms"}
	var stderr strings.Builder
	code := run(append(ping, "-durability", "fsync-log", "-data-dir", "/tmp/x"), nil, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "-data-dir, -durability: node flags, for -inprocess") {
		t.Errorf("bench over gRPC with node flags: exit %d\n%s", code, &stderr)
	}
	stderr.Reset()
	if code := run(ping, nil, io.Discard, &stderr); code != 0 {
		t.Errorf("bench over gRPC: exit %d\n%s", code, &stderr)
	}
	stderr.Reset()
	if code := run(append(ping, "-warmup", "-1s"), nil, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "-warmup at least 0") {
		t.Errorf("bench -warmup -1s: exit %d\n%s", code, &stderr)
	}
}

// TestBenchInterruptedCleansUp: SIGINT stops an in-process run, which
// removes its scratch data directory and exits 1 saying it was
// interrupted; before, the signal ended the process and left the
// directory (with its preallocated log under -durability mmap-log or
// fsync-log) in $TMPDIR.
func TestBenchInterruptedCleansUp(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	done := make(chan error, 1)
	go func() {
		done <- bench([]string{"-inprocess", "-workload", "kv", "-keys", "100", "-clients", "1", "-warmup", "0s", "-duration", "1m",
			"-durability", "mmap-log"}, io.Discard, io.Discard)
	}()
	// bench catches the signal before it makes the directory.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scratch data directory after 10s")
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("bench interrupted: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bench runs on 30s after SIGINT")
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
		t.Errorf("left in $TMPDIR: %v %v", entries, err)
	}
}
