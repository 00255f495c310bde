package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/server"
)

// startNode starts a diskless node in the process, on loopback, and
// returns its address; the node stops when the test ends.
func startNode(t *testing.T) string {
	t.Helper()
	cfg := conf.DefaultConfig()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", ""
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		if err := errors.Join(srv.Shutdown(context.Background()), <-served); err != nil {
			t.Errorf("stop the node: %v", err)
		}
	})
	return lis.Addr().String()
}

// shellRun runs mmdbd shell -c stmts on the node at addr and returns what
// it printed, on both outputs, and its exit code.
func shellRun(t *testing.T, addr, stmts string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code := run([]string{"shell", "-addr", addr, "-c", stmts}, &out, &out)
	return out.String(), code
}

// TestShellScanLimitIsARowCount: scan's limit is a decimal row count that
// fits 32 bits; a larger number or trailing junk is refused, not wrapped
// (4294967297 scanned 1 row) or cut short (2x scanned 2).
func TestShellScanLimitIsARowCount(t *testing.T) {
	addr := startNode(t)
	if out, code := shellRun(t, addr, `create table s (k int64, primary key (k) ordered)
insert s 1
insert s 2
insert s 3`); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	if out, code := shellRun(t, addr, "scan s limit 2"); code != 0 || !strings.Contains(out, "(2 rows)") {
		t.Errorf("scan s limit 2: exit %d\n%s", code, out)
	}
	for _, limit := range []string{"4294967297", "2x", "-1", "0x2"} {
		if out, code := shellRun(t, addr, "scan s limit "+limit); code == 0 || !strings.Contains(out, "limit") {
			t.Errorf("scan s limit %s: exit %d\n%s", limit, code, out)
		}
	}
}
