package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/servertest"
)

// startNode starts a node in the process, on loopback, diskless unless
// edit says otherwise, and returns its address; the node stops when the
// test ends.
func startNode(t *testing.T, edit func(c *conf.Config)) string {
	t.Helper()
	_, addr := servertest.Start(t, func(c *conf.Config) {
		c.DataDir = ""
		if edit != nil {
			edit(c)
		}
	})
	return addr
}

// shellRun runs mmdbd shell -c stmts on the node at addr and returns what
// it printed, on both outputs, and its exit code.
func shellRun(t *testing.T, addr, stmts string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code := run([]string{"shell", "-addr", addr, "-c", stmts}, nil, &out, &out)
	return out.String(), code
}

// TestShellUpdateAndDeleteByIndex: "update T index I KEY set ..." and
// "delete T index I KEY" act on the row whose key in the unique index I
// is KEY, not on the row whose primary key has KEY's values; a key no row
// has in the index changes nothing, and a non-unique index is refused.
func TestShellUpdateAndDeleteByIndex(t *testing.T) {
	addr := startNode(t, nil)
	// Each row's u is another row's k: a statement that took the index
	// key for the primary key would change the wrong row.
	if out, code := shellRun(t, addr, `create table d (k string(10), u string(10), v int64, primary key (k) ordered, unique index ui (u), index vi (v))
insert d a b 1
insert d b c 2
insert d c a 3`); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	rows := func() string {
		t.Helper()
		out, code := shellRun(t, addr, "scan d")
		if code != 0 {
			t.Fatalf("scan d: exit %d\n%s", code, out)
		}
		return strings.Join(strings.Fields(out), " ")
	}
	steps := []struct {
		stmt   string
		failed string // what the error says; "" for success
		rows   string
	}{
		{"update d index ui b set v = 10", "", "k u v a b 10 b c 2 c a 3 (3 rows)"},
		{"delete d index ui c", "", "k u v a b 10 c a 3 (2 rows)"},
		{"begin; update d index ui a set v = 30; delete d index ui b; commit", "", "k u v c a 30 (1 row)"},
		{"delete d index ui zz", "NOT_FOUND", "k u v c a 30 (1 row)"},
		{"update d index vi 30 set v = 31", "not unique", "k u v c a 30 (1 row)"},
	}
	for _, s := range steps {
		out, code := shellRun(t, addr, s.stmt)
		if s.failed == "" && code != 0 || s.failed != "" && (code == 0 || !strings.Contains(out, s.failed)) {
			t.Errorf("%s: exit %d\n%s", s.stmt, code, out)
		}
		if got := rows(); got != s.rows {
			t.Fatalf("after %s: %s\nwant %s", s.stmt, got, s.rows)
		}
	}
}

// TestShellScanLimitIsARowCount: scan's limit is a decimal row count that
// fits 32 bits; a larger number or trailing junk is refused, not wrapped
// (4294967297 scanned 1 row) or cut short (2x scanned 2).
func TestShellScanLimitIsARowCount(t *testing.T) {
	addr := startNode(t, nil)
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

// TestShellIndexDDL: "create ... index NAME on T (COL, ...)" adds an index
// to a table that holds rows, which get, scan and describe then use in
// the same session (the shell forgets the table's cached definition);
// "drop index NAME on T" removes it. The server's refusals come through.
func TestShellIndexDDL(t *testing.T) {
	addr := startNode(t, nil)
	if out, code := shellRun(t, addr, `create table d (k int64, u string(10), v int64, primary key (k) ordered)
insert d 1 a 30
insert d 2 b 20
insert d 3 c 20`); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	flat := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	steps := []struct {
		stmts  string
		failed string // what the error says; "" for success
		out    string // what the output holds
	}{
		{"describe d; create unique index ui on d (u); get d index ui b", "", "ok, lsn 5 k u v 2 b 20 (1 row)"},
		{"create index vi on d (v, k) using ordered; scan d index vi prefix 20", "", "k u v 2 b 20 3 c 20 (2 rows)"},
		{"describe d", "", "ui u true hash vi v, k false ordered"},
		{"create unique index uv on d (v)", "FAILED_PRECONDITION", `index "uv": key (20) appears in more than one row`},
		{"create index ui on d (v)", "ALREADY_EXISTS", `"ui"`},
		{"create index x on d (nope)", "INVALID_ARGUMENT", `"nope"`},
		{"create index x on nope (v)", "NOT_FOUND", `"nope"`},
		{"drop index ui on d; get d index ui b", `has no index "ui"`, "ok, lsn 7"},
		{"drop index ui on d", "NOT_FOUND", `"ui"`},
		{"create view x", `expected "table" or "[unique] [hash|ordered] index"`, ""},
		{"drop view x", `expected "table" or "index"`, ""},
	}
	for _, s := range steps {
		out, code := shellRun(t, addr, s.stmts)
		if s.failed == "" && code != 0 || s.failed != "" && (code == 0 || !strings.Contains(out, s.failed)) || !strings.Contains(flat(out), s.out) {
			t.Errorf("%s: exit %d\n%s", s.stmts, code, out)
		}
	}
}

// shellScript runs mmdbd shell on the node at addr with script on stdin
// (not a terminal) and returns what it printed on each output and its
// exit code.
func shellScript(t *testing.T, addr, script string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run([]string{"shell", "-addr", addr}, strings.NewReader(script), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// TestShellScriptOnStdin: statements piped to the shell run in order
// until one fails, which ends the shell with exit code 1 and that
// statement's error and line on stderr; the transaction they left open
// is rolled back. No banner or prompt is printed, a statement may span
// lines while its parentheses are open, a line may be longer than a
// terminal's (liner cut it at 4096 bytes), and "exit" ends the script.
// Before, the shell read stdin as a terminal: it printed prompts, went
// on past a failing statement and exited 0.
func TestShellScriptOnStdin(t *testing.T) {
	addr := startNode(t, nil)
	long := strings.Repeat("x", 6000)
	stdout, stderr, code := shellScript(t, addr, `create table s (
  k int64,
  v string(8000),
  primary key (k) ordered)
insert s 1 `+long+`
exit
insert s 2 never`)
	if code != 0 || stderr != "" || strings.Contains(stdout, "mmdb>") || strings.Contains(stdout, "connected") ||
		strings.Count(stdout, "ok, lsn") != 2 {
		t.Fatalf("a script that works: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if out, code := shellRun(t, addr, "get s 1"); code != 0 || !strings.Contains(out, long) {
		t.Fatalf("get s 1: exit %d\n%s", code, truncate(out, 200))
	}

	stdout, stderr, code = shellScript(t, addr, `insert s 2 b

begin; insert s 3 c
insert s 1 again
insert s 4 d
commit`)
	if code != 1 || !strings.Contains(stderr, "line 4: ALREADY_EXISTS") || !strings.Contains(stderr, "rolled back the open transaction") {
		t.Errorf("a script whose fourth line fails: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if out, code := shellRun(t, addr, "scan s"); code != 0 || !strings.Contains(out, "(2 rows)") {
		t.Errorf("after the failed script, the rows of s (1 and 2, not 3 or 4): exit %d\n%s", code, truncate(out, 200))
	}

	if _, stderr, code := shellScript(t, addr, "bad statement\n"); code != 1 || !strings.Contains(stderr, `line 1: unknown statement "bad"`) {
		t.Errorf("bad statement: exit %d\n%s", code, stderr)
	}
}

// TestShellAddrList: -addr takes a list with spaces after its commas, as
// an operator may write it, and refuses an empty entry by name; before,
// " host:port" reached the resolver ("produced zero addresses").
func TestShellAddrList(t *testing.T) {
	addr := startNode(t, nil)
	var out bytes.Buffer
	if code := run([]string{"shell", "-addr", "127.0.0.1:1, " + addr, "-c", "tables"}, nil, &out, &out); code != 0 {
		t.Errorf("-addr %q: exit %d\n%s", "127.0.0.1:1, "+addr, code, &out)
	}
	out.Reset()
	if code := run([]string{"shell", "-addr", addr + ",,127.0.0.1:1", "-c", "tables"}, nil, &out, &out); code != 1 || !strings.Contains(out.String(), "address 2 of the list is empty") {
		t.Errorf("-addr %q: exit %d\n%s", addr+",,127.0.0.1:1", code, &out)
	}
}

// TestShellHistoryIsPrivate: the history file the interactive shell
// writes is readable by its user alone (statements hold data); before it
// was made as os.Create makes files, readable by all under umask 022,
// and an existing one kept its mode.
func TestShellHistoryIsPrivate(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "old")
	if err := os.WriteFile(old, nil, 0o644); err != nil { // as saved before
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "new"), old} {
		if err := saveHistory(path, func(w io.Writer) (int, error) { return io.WriteString(w, "insert subscriber 1 secret\n") }); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", path, perm)
		}
	}
}

// TestShellTimeoutSaysWhichFlag: a statement that runs out of time says
// it gave up after the shell's -timeout (a large index build needs a
// larger one); it said only "context deadline exceeded".
func TestShellTimeoutSaysWhichFlag(t *testing.T) {
	addr := startNode(t, nil)
	var out bytes.Buffer
	code := run([]string{"shell", "-addr", addr, "-timeout", "1ns", "-c", "tables"}, nil, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "DEADLINE_EXCEEDED") || !strings.Contains(out.String(), "gave up after the statement's -timeout 1ns") {
		t.Errorf("tables with -timeout 1ns: exit %d\n%s", code, &out)
	}
}

// TestShellExitIsAStatement: "exit" or "quit" ends the statements as a
// statement does, ended by ';' and in any case, in a script and with -c
// too, and the shell exits 0 without running what follows. Before, only
// a line holding the bare word did: "exit;" ended a script with exit
// code 1 (unknown statement "exit"), and -c "...; exit" failed too.
func TestShellExitIsAStatement(t *testing.T) {
	addr := startNode(t, nil)
	if out, code := shellRun(t, addr, "create table e (k int64, primary key (k) ordered)"); code != 0 {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	if stdout, stderr, code := shellScript(t, addr, "insert e 1;\nexit;\ninsert e 2\n"); code != 0 || stderr != "" {
		t.Errorf("a script ending in \"exit;\": exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if out, code := shellRun(t, addr, "insert e 3; QUIT; insert e 4"); code != 0 {
		t.Errorf("-c \"...; QUIT; ...\": exit %d\n%s", code, out)
	}
	if out, code := shellRun(t, addr, "scan e"); code != 0 || !strings.Contains(out, "(2 rows)") {
		t.Errorf("the rows of e (1 and 3; 2 and 4 came after exit): exit %d\n%s", code, out)
	}
	if out, code := shellRun(t, addr, "exit now"); code != 1 || !strings.Contains(out, `unexpected "now"`) {
		t.Errorf("\"exit now\": exit %d\n%s", code, out)
	}
}
