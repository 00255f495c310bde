package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/certtest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// cluster is a test's CA and token file, and the flags that give a node
// its certificate.
type cluster struct {
	dir    string
	ca     *certtest.CA
	tokens string
}

const appToken = "s3cret-app-token-0123456789"

func newCluster(t *testing.T) *cluster {
	dir := t.TempDir()
	c := &cluster{dir: dir, ca: certtest.NewCA(t, dir, "ca"), tokens: filepath.Join(dir, "tokens")}
	if err := os.WriteFile(c.tokens, []byte("app "+appToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// node is the flags of a node called name holding a certificate for
// cert (its own name, or another's to play an intruder), which lets the
// operator ops in.
func (c *cluster) node(t *testing.T, name, cert string) []string {
	certFile, keyFile := c.ca.Issue(t, cert)
	return []string{"-node", name, "-tls-cert-file", certFile, "-tls-key-file", keyFile, "-tls-ca-file", c.ca.File, "-auth-token-file", c.tokens,
		"-tls-admin-names", "ops"}
}

// dial connects to addr over TLS, expecting the certificate of server,
// as the client certName of the CA (none if empty) with the app's
// token.
func (c *cluster) dial(t *testing.T, addr, server, certName string) *grpc.ClientConn {
	t.Helper()
	var issuer *certtest.CA
	if certName != "" {
		issuer = c.ca
	}
	return c.ca.Dial(t, addr, server, issuer, certName, appToken)
}

// TestSecuredReplication runs a TLS primary and standby that
// authenticate each other, and shows that nodes and tools without the
// right certificate get nothing in and nothing out (SPEC section 9): a
// node of the same CA with a stranger's certificate cannot ship log to
// the standby, a primary does not ship to a node that is not the peer
// it names, and images go only to certificates the node allows. A
// diskless node bootstraps over TLS, and the tools work with -config
// and the -tls-* flags.
func TestSecuredReplication(t *testing.T) {
	cl := newCluster(t)
	b := start(t, append(cl.node(t, "b", "b"), "-role", "standby", "-durability", "fsync-log", "-peer", "a=127.0.0.1:1", "-tls-admin-names", "ops,d")...)
	// x is of the same CA, but its certificate names it x: it is no
	// peer of b, and not the node a ships to as c.
	x := start(t, append(cl.node(t, "x", "x"), "-role", "standby")...)
	a := start(t, append(cl.node(t, "a", "a"), "-durability", "fsync-log", "-sync-mode", "applied-ack", "-peer", "b="+b.addr, "-peer", "c="+x.addr)...)

	adb := pb.NewDatabaseServiceClient(cl.dial(t, a.addr, "a", ""))
	createBank(t, adb)
	bdb := pb.NewDatabaseServiceClient(cl.dial(t, b.addr, "b", ""))
	sameRows(t, adb, bdb) // applied-ack: the standby holds every acknowledged commit

	// a does not ship to x, whose certificate is not c's.
	aAdmin := pb.NewAdminServiceClient(cl.dial(t, a.addr, "a", "ops"))
	st, err := aAdmin.Status(testCtx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range st.GetStandbys() {
		if sb.GetName() == "c" && (sb.GetState() == "streaming" || !strings.Contains(sb.GetReason(), "certificate")) {
			t.Fatalf("a ships to x as c: %v", sb)
		}
	}

	// An intruder that calls itself a, with a certificate that names
	// it mallory, cannot ship log to b.
	bAdmin := pb.NewAdminServiceClient(cl.dial(t, b.addr, "b", "ops"))
	bLSN := settledAt(t, bAdmin, b.addr)
	intruder := start(t, append(cl.node(t, "a", "mallory"), "-peer", "b="+b.addr)...)
	idb := pb.NewDatabaseServiceClient(cl.dial(t, intruder.addr, "mallory", ""))
	if _, err := idb.CreateTable(testCtx(t), &pb.CreateTableRequest{Table: &pb.Table{Name: "evil",
		Columns:    []*pb.Column{{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
		PrimaryKey: []string{"id"}, PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED}}); err != nil {
		t.Fatal(err)
	}
	iAdmin := pb.NewAdminServiceClient(cl.dial(t, intruder.addr, "mallory", "ops"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := iAdmin.Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if r := st.GetStandbys()[0].GetReason(); strings.Contains(r, "PermissionDenied") || strings.Contains(r, "only its peers") {
			t.Logf("b refuses the intruder: %s", r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b does not refuse the intruder's log: %v\n%s", st.GetStandbys(), b.output())
		}
	}
	if got := settledAt(t, bAdmin, b.addr); got != bLSN {
		t.Fatalf("b took log from the intruder: applied LSN %d, was %d", got, bLSN)
	}
	if _, err := bdb.DescribeTable(testCtx(t), &pb.DescribeTableRequest{Table: "evil"}); status.Code(err) != codes.NotFound {
		t.Fatalf("b has the intruder's table: %v", err)
	}

	// Images: only for certificates b allows.
	img := filepath.Join(cl.dir, "b.mmdb")
	opsCert, opsKey := cl.ca.Issue(t, "ops")
	mCert, mKey := cl.ca.Issue(t, "mallory")
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr; empty: it works
	}{
		{"without TLS", []string{"-tls-ca-file", ""}, "serves TLS: give its CA"},
		{"without a certificate", nil, "Unauthenticated"},
		{"a stranger's certificate", []string{"-tls-cert-file", mCert, "-tls-key-file", mKey}, "PermissionDenied"},
		{"an operator's certificate", []string{"-tls-cert-file", opsCert, "-tls-key-file", opsKey}, ""},
	} {
		args := []string{"image", "fetch", "-from", b.addr, "-out", img, "-quiet", "-tls-ca-file", cl.ca.File}
		_, errOut, code := runTool(t, append(args, tc.args...)...)
		if tc.want == "" && code != 0 || tc.want != "" && (code == 0 || !strings.Contains(errOut, tc.want)) {
			t.Fatalf("image fetch with %s: exit %d, want %q:\n%s", tc.name, code, tc.want, errOut)
		}
	}
	// The other commands, too, say why a plaintext call to b fails.
	for _, args := range [][]string{{"status", "-addr", b.addr}, {"audit", "-primary", b.addr, "-standby", a.addr},
		{"shell", "-addr", b.addr, "-c", "tables"}, {"bench", "-addr", b.addr, "-workload", "kv", "-duration", "100ms"}} {
		if _, errOut, code := runTool(t, args...); code == 0 || !strings.Contains(errOut, "serves TLS: give its CA") {
			t.Fatalf("%s in plaintext: exit %d:\n%s", args[0], code, errOut)
		}
	}
	if _, errOut, code := runTool(t, "image", "verify", "-in", img); code != 0 {
		t.Fatalf("the fetched image does not verify: %s", errOut)
	}

	// The tools take the credentials from a node's configuration.
	conf := filepath.Join(cl.dir, "ops.hcl")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "node = %q\ntls {\n  cert_file = %q\n  key_file = %q\n  ca_file = %q\n}\npeer \"b\" {\n  addr = %q\n}\n",
		"ops", opsCert, opsKey, cl.ca.File, b.addr), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runTool(t, "status", "-config", conf, "-addr", b.addr, "-json"); code != 0 || !strings.Contains(out, `"role": "standby"`) {
		t.Fatalf("status -config: exit %d: %s %s", code, out, errOut)
	}
	tok := filepath.Join(cl.dir, "app.token")
	if err := os.WriteFile(tok, []byte(appToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := runTool(t, "shell", "-addr", a.addr, "-tls-ca-file", cl.ca.File, "-tls-server-name", "a", "-token-file", tok, "-c", "get acct 1"); code != 0 {
		t.Fatalf("shell with a token: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := runTool(t, "shell", "-addr", a.addr, "-tls-ca-file", cl.ca.File, "-c", "get acct 1"); code == 0 || !strings.Contains(errOut, "UNAUTHENTICATED") {
		t.Fatalf("shell without a token: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runTool(t, "audit", "-config", conf, "-primary", a.addr, "-standby", b.addr); code != 0 {
		t.Fatalf("audit over TLS: exit %d: %s", code, errOut)
	}

	// A node without TLS cannot bootstrap from b, and says why at once,
	// diskless or with a data dir.
	for _, dir := range []string{"", t.TempDir()} {
		_, errOut, code := runTool(t, "serve", "-listen", "127.0.0.1:0", "-node", "e", "-data-dir", dir, "-role", "standby", "-bootstrap-from", b.addr, "-peer", "b="+b.addr)
		if code == 0 || !strings.Contains(errOut, "serves TLS and this node has no tls block") {
			t.Fatalf("a plaintext node bootstrapping from b (data dir %q): exit %d:\n%s", dir, code, errOut)
		}
	}

	// A diskless node bootstraps from b over TLS, as d, which b allows.
	d := start(t, append(cl.node(t, "d", "d"), "-data-dir", "", "-role", "standby", "-bootstrap-from", b.addr, "-peer", "b="+b.addr)...)
	sameRows(t, bdb, pb.NewDatabaseServiceClient(cl.dial(t, d.addr, "d", "")))
}
