package main

import (
	"io"
	"strings"
	"testing"
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
