// Package tests runs real mmdbd processes on loopback, as operators and
// users do: start, status, signals, configuration errors.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/metricstest"
	"github.com/mmdb/mmdb/internal/servertest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// mmdbd is the binary under test, built once by TestMain.
var mmdbd string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mmdbd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	mmdbd = filepath.Join(dir, "mmdbd")
	build := exec.Command("go", "build", "-o", mmdbd, "../cmd/mmdbd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mmdbd:", err)
		return 1
	}
	return m.Run()
}

// proc is a running mmdbd serve.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	addr    string
	mu      sync.Mutex
	log     bytes.Buffer // everything it printed on stderr
	metrics string       // where it serves metrics (-metrics-addr), once it said (guarded by mu)
	exit    chan error
}

// servingRE finds the address in the "serving" line, text or JSON;
// metricsRE the metrics endpoint's, which comes before it.
var (
	servingRE = regexp.MustCompile(`serving: addr=(\S+)|"@message":"serving".*"addr":"([^"]+)"`)
	metricsRE = regexp.MustCompile(`serving metrics: addr=(\S+)|"@message":"serving metrics".*"addr":"([^"]+)"`)
)

// start runs mmdbd serve on a loopback port the kernel picks, with a
// temporary data directory, and waits until it serves. It is killed at the
// end of the test if it is still running.
func start(t testing.TB, args ...string) *proc {
	t.Helper()
	p, serving := spawn(t, args...)
	p.await(serving)
	return p
}

// spawn runs mmdbd serve as start does, without waiting: the channel it
// returns delivers the address once the node serves (await).
func spawn(t testing.TB, args ...string) (*proc, <-chan string) {
	t.Helper()
	args = append([]string{"serve", "-listen", "127.0.0.1:0", "-data-dir", t.TempDir()}, args...)
	p := &proc{t: t, cmd: exec.Command(mmdbd, args...), exit: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill() // already gone is fine
			<-p.exit
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := metricsRE.FindStringSubmatch(line); m != nil {
				p.metrics = m[1] + m[2]
			}
			p.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				found <- m[1] + m[2]
			}
		}
		p.exit <- p.cmd.Wait()
	}()
	return p, found
}

// await waits until the node spawn started serves, at the address
// serving delivers.
func (p *proc) await(serving <-chan string) {
	p.t.Helper()
	select {
	case p.addr = <-serving:
	case err := <-p.exit:
		p.exit <- err
		p.t.Fatalf("mmdbd exited before serving (%v):\n%s", err, p.output())
	case <-time.After(30 * time.Second):
		p.t.Fatalf("mmdbd did not serve within 30s:\n%s", p.output())
	}
}

// metricsAddr returns where the node serves metrics; the test fails if
// it said it serves none.
func (p *proc) metricsAddr() string {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.metrics == "" {
		p.t.Fatalf("mmdbd serves no metrics:\n%s", p.log.String())
	}
	return p.metrics
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill kills the process (kill -9), unless it has exited already, and
// waits until it has exited.
func (p *proc) kill() {
	p.t.Helper()
	switch err := p.cmd.Process.Kill(); {
	case errors.Is(err, os.ErrProcessDone):
		return // reaped: its exit was delivered
	case err != nil:
		p.t.Fatal(err)
	}
	<-p.exit
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exit:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("mmdbd did not exit within 30s:\n%s", p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) client() (pb.DatabaseServiceClient, *grpc.ClientConn) {
	p.t.Helper()
	conn := servertest.Dial(p.t, p.addr)
	return pb.NewDatabaseServiceClient(conn), conn
}

// runTool runs an mmdbd client command and returns its stdout, stderr and
// exit code; one still running after two minutes is killed (exit code
// -1), so that a command that should have failed and serves or waits
// instead fails the test rather than hanging it.
func runTool(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mmdbd, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStatusJSON(t *testing.T) {
	p := start(t, "-node", "n1")
	db, _ := p.client()
	c := testCtx(t)
	_, err := db.CreateTable(c, &pb.CreateTableRequest{Table: &pb.Table{
		Name:       "kv",
		Columns:    []*pb.Column{{Name: "k", Type: pb.ColumnType_COLUMN_TYPE_UINT64}, {Name: "v", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 8}},
		PrimaryKey: []string{"k"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var lsn uint64
	for i := uint64(1); i <= 3; i++ {
		w, err := db.Insert(c, &pb.InsertRequest{Table: "kv", Row: &pb.Row{Values: []*pb.Value{
			{Kind: &pb.Value_Uint64{Uint64: i}}, {Kind: &pb.Value_String_{String_: "x"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		lsn = w.GetLsn()
	}
	out, errOut, code := runTool(t, "status", "-addr", p.addr, "-json")
	if code != 0 {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json printed %q: %v", out, err)
	}
	// SPEC section 10's field names.
	for _, f := range []string{"role", "epoch", "durability", "sync_mode", "last_lsn", "durable_lsn", "applied_lsn", "checkpoint_lsn", "standbys", "tables"} {
		if _, ok := st[f]; !ok {
			t.Errorf("status -json has no %q", f)
		}
	}
	if st["node"] != "n1" || st["role"] != "primary" || st["durability"] != "no-log" || st["sync_mode"] != "async" || st["last_lsn"] != float64(lsn) {
		t.Errorf("status: %s", out)
	}
	tables, _ := st["tables"].([]any)
	if len(tables) != 1 {
		t.Fatalf("tables: %v", st["tables"])
	}
	tb := tables[0].(map[string]any)
	for _, f := range []string{"name", "rows", "bytes"} {
		if _, ok := tb[f]; !ok {
			t.Errorf("table entry has no %q", f)
		}
	}
	if tb["name"] != "kv" || tb["rows"] != float64(3) || tb["bytes"].(float64) <= 0 {
		t.Errorf("table entry: %v", tb)
	}
	text, _, code := runTool(t, "status", "-addr", p.addr)
	if code != 0 || !strings.Contains(text, "primary") || !regexp.MustCompile(`kv\s+3\s`).MatchString(text) {
		t.Errorf("status text (exit %d):\n%s", code, text)
	}
}

func TestStatusOfNoServer(t *testing.T) {
	addr := grpctest.DeadAddr(t)
	_, errOut, code := runTool(t, "status", "-addr", addr, "-timeout", "2s")
	if code != 1 || !strings.Contains(errOut, addr) {
		t.Fatalf("status of a closed port: exit %d, %q", code, errOut)
	}
}

// TestSIGTERMShutsDownGracefully: in-flight streams end with UNAVAILABLE,
// open transactions are rolled back, and the process exits 0.
func TestSIGTERMShutsDownGracefully(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := start(t)
			db, _ := p.client()
			c := testCtx(t)
			if _, err := db.Begin(c, &pb.BeginRequest{}); err != nil {
				t.Fatal(err)
			}
			s, err := db.Session(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(&pb.SessionRequest{Requests: []*pb.Request{{Id: 1, Op: &pb.Request_Begin{Begin: &pb.BeginRequest{}}}}}); err != nil {
				t.Fatal(err)
			}
			if m, err := s.Recv(); err != nil || m.GetReplies()[0].GetCode() != 0 {
				t.Fatalf("session: %v %v", m, err)
			}
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
				t.Errorf("the session ended with %v, want UNAVAILABLE", err)
			}
			if code := p.wait(); code != 0 {
				t.Fatalf("exit code %d after %v:\n%s", code, sig, p.output())
			}
			// The session's transaction ended with its stream; the other one
			// is rolled back at shutdown.
			out := p.output()
			for _, want := range []string{"shutting down: signal=", "rolled back open transactions at shutdown: count=1", "stopped"} {
				if !strings.Contains(out, want) {
					t.Errorf("the log does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestBadConfigurationRefused: the node does not start, exits 1, and says
// which key is wrong and where it was set.
func TestBadConfigurationRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.hcl")
	if err := os.WriteFile(file, []byte("node = \"a\"\ndurability = \"sometimes\"\nmax_scan_rows = 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	taken := metricstest.TakenAddr(t)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"bad file", []string{"-config", file}, []string{file + ":2: durability", file + ":3: max_scan_rows"}},
		{"missing file", []string{"-config", filepath.Join(dir, "nope.hcl")}, []string{"nope.hcl", "no such file"}},
		{"bad flag value", []string{"-tx-idle-timeout", "soon"}, []string{"flag -tx-idle-timeout", "duration"}},
		{"metrics address in use", []string{"-metrics-addr", taken}, []string{"flag -metrics-addr: metrics_addr", taken, "address already in use"}},
		{"unknown flag", []string{"-lsiten", "x"}, []string{"lsiten"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "-listen", "127.0.0.1:0", "-data-dir", t.TempDir()}, tc.args...)
			_, errOut, code := runTool(t, args...)
			if code == 0 {
				t.Fatal("mmdbd serve accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not say %q:\n%s", w, errOut)
				}
			}
		})
	}
}

// TestEmbeddedDefaults runs `mmdbd serve` with no arguments, as README's
// first command does: it serves on 127.0.0.1:7700 with ./mmdb-data.
func TestEmbeddedDefaults(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:7700")
	if err != nil {
		t.Skipf("port 7700 is taken here (%v); the defaults cannot be tried", err)
	}
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(mmdbd, "serve")
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill() // a failed test must not leave it on port 7700
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stderr)
	served := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "serving: addr=127.0.0.1:7700") {
			served = true
			break
		}
	}
	if !served {
		t.Fatal("mmdbd serve did not report serving on 127.0.0.1:7700")
	}
	if _, err := os.Stat(filepath.Join(dir, "mmdb-data", "LOCK")); err != nil {
		t.Errorf("no lock in ./mmdb-data: %v", err)
	}
	out, errOut, code := runTool(t, "status")
	if code != 0 || !strings.Contains(out, "primary") {
		t.Errorf("status with its default address: exit %d\n%s%s", code, out, errOut)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }() // drain the rest of the log
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mmdbd serve exited with %v", err)
	}
}

// TestShellCommands runs `mmdbd shell -c` against a real node: DDL, writes,
// reads, scans and a transaction, printed as aligned tables; an error stops
// the script with a non-zero exit and changes nothing after it.
func TestShellCommands(t *testing.T) {
	p := start(t)
	script := `create table subs (id uint64, nbr string(15), loc uint64 null,
	                          primary key (id) ordered, unique index by_nbr (nbr))
insert subs 1 "000000000000001" 42
insert subs 2 "000000000000002" null; upsert subs 3 three 7
update subs 2 set loc = 9
begin; delete subs 3; rollback
begin; delete subs 1; commit
get subs index by_nbr "000000000000002"
scan subs reverse limit 5`
	out, errOut, code := runTool(t, "shell", "-addr", p.addr, "-c", script)
	if code != 0 {
		t.Fatalf("shell exited %d: %s\n%s", code, errOut, out)
	}
	want := []string{
		"ok, lsn 1", "ok, lsn 2", "ok, lsn 3", "ok, lsn 4", "ok, lsn 5", "rolled back", "committed, lsn 6",
		"id  nbr              loc\n2   000000000000002  9\n(1 row)\n",
		"id  nbr              loc\n3   three            7\n2   000000000000002  9\n(2 rows)\n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the output lacks %q:\n%s", w, out)
		}
	}
	out, errOut, code = runTool(t, "shell", "-addr", p.addr, "-c", "insert subs 2 dup 1; insert subs 4 four 4")
	if code != 1 || !strings.Contains(errOut, `ALREADY_EXISTS: duplicate key: table "subs"`) {
		t.Fatalf("duplicate insert: exit %d, stderr %q, stdout %q", code, errOut, out)
	}
	out, _, _ = runTool(t, "shell", "-addr", p.addr, "-c", "get subs 4; tables")
	if !strings.Contains(out, "(0 rows)") || !regexp.MustCompile(`subs\s+2\s`).MatchString(out) {
		t.Fatalf("the statement after the error ran:\n%s", out)
	}
	_, errOut, code = runTool(t, "shell", "-addr", p.addr, "-c", "get subs x")
	if code != 1 || !strings.Contains(errOut, "column id (uint64)") {
		t.Fatalf("bad value: exit %d, %q", code, errOut)
	}
}

// TestBenchRuns runs each workload of `mmdbd bench -json` briefly, over
// gRPC against a real node and in-process, and checks the report.
func TestBenchRuns(t *testing.T) {
	p := start(t)
	short := []string{"-duration", "300ms", "-warmup", "100ms", "-clients", "3", "-json"}
	cases := [][]string{
		{"-workload", "ping", "-addr", p.addr},
		{"-workload", "kv", "-addr", p.addr, "-keys", "500", "-read-ratio", "0.5"},
		{"-workload", "kv", "-addr", p.addr, "-keys", "500", "-api", "session", "-pipeline", "4", "-window", "2"},
		{"-workload", "kv", "-addr", p.addr, "-keys", "600"}, // does not match the table loaded: refused
		{"-workload", "tatp", "-addr", p.addr, "-subscribers", "300"},
		{"-workload", "tatp", "-addr", p.addr, "-api", "session"},
		{"-workload", "tatp", "-inprocess", "-subscribers", "300"},
		{"-workload", "kv", "-inprocess", "-keys", "500"},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := runTool(t, append(append([]string{"bench"}, args...), short...)...)
			if slices.Contains(args, "600") {
				if code == 0 || !strings.Contains(errOut, "does not match -keys 600") {
					t.Fatalf("a mismatched kv table: exit %d, %q", code, errOut)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var res map[string]any
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for _, f := range []string{"workload", "mode", "api", "clients", "duration_s", "tx_per_sec", "ok_per_sec", "p50_us", "p99_us", "p999_us", "errors"} {
				if _, ok := res[f]; !ok {
					t.Errorf("no %q in %s", f, out)
				}
			}
			if res["errors"] != float64(0) || res["tx_per_sec"].(float64) <= 0 || res["ok_per_sec"].(float64) <= 0 || res["clients"] != float64(3) {
				t.Errorf("report: %s", out)
			}
		})
	}
	_, errOut, code := runTool(t, "bench", "-workload", "ping", "-inprocess")
	if code == 0 || !strings.Contains(errOut, "no -inprocess form") {
		t.Errorf("ping in-process: exit %d, %q", code, errOut)
	}
	// -rate paces the clients: far below what they could do, they do
	// about that much, and no more.
	out, errOut, code := runTool(t, "bench", "-workload", "ping", "-addr", p.addr, "-rate", "200", "-duration", "1s", "-warmup", "0s", "-clients", "3", "-json")
	var res struct {
		TxPerSec float64 `json:"tx_per_sec"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.TxPerSec > 220 || res.TxPerSec < 100 {
		t.Errorf("-rate 200: %.0f/s, exit %d, %v %s", res.TxPerSec, code, err, errOut)
	}
}

// TestLogLinesAreStructured: with -log-format json every line is one JSON
// event whose keys are kebab-case (SPEC 10), debug call lines included.
func TestLogLinesAreStructured(t *testing.T) {
	p := start(t, "-log-format", "json", "-log-level", "debug")
	db, _ := p.client()
	c := testCtx(t)
	if _, err := db.Get(c, &pb.GetRequest{Table: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get: %v", err)
	}
	if _, err := db.Begin(c, &pb.BeginRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	kebab := regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	lines := strings.Split(strings.TrimSpace(p.output()), "\n")
	if len(lines) < 4 || !strings.Contains(p.output(), `"grpc-method":"Get"`) {
		t.Fatalf("no per-call debug line among %d log lines:\n%s", len(lines), p.output())
	}
	for _, line := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("a log line that is not one JSON event: %q: %v", line, err)
		}
		for k := range ev {
			if !strings.HasPrefix(k, "@") && !kebab.MatchString(k) {
				t.Errorf("key %q is not kebab-case in %s", k, line)
			}
		}
	}
}
