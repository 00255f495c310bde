package server

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// secured is a node with TLS, peer authentication (its peers "p" and
// "q" and the operator "ops") and client tokens, and what the tests dial it with.
type secured struct {
	n         *node
	ca, other *certtest.CA // the node's CA, and one it does not trust
	tokens    string       // the token file
}

func startSecured(t testing.TB, edit func(*conf.Config)) *secured {
	dir := t.TempDir()
	s := &secured{ca: certtest.NewCA(t, dir, "ca"), other: certtest.NewCA(t, dir, "other-ca"), tokens: filepath.Join(dir, "tokens")}
	if err := os.WriteFile(s.tokens, []byte("# the app's token\napp 0123456789abcdef-app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := s.ca.Issue(t, "a")
	s.n = startNode(t, func(c *conf.Config) {
		c.Node = "a"
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = cert, key, s.ca.File
		c.TLSAdminNames = []string{"ops"}
		c.AuthTokenFile = s.tokens
		c.Peers = []conf.Peer{{Name: "p", Addr: "127.0.0.1:1"}, {Name: "q", Addr: "127.0.0.1:2"}}
		if edit != nil {
			edit(c)
		}
	})
	return s
}

// dial connects with TLS, presenting a certificate for name signed by ca
// (none if ca is nil), and sending token (none if empty).
func (s *secured) dial(t testing.TB, ca *certtest.CA, name, token string) *grpc.ClientConn {
	t.Helper()
	return s.ca.Dial(t, s.n.addr, "a", ca, name, token)
}

// calls makes one call of each kind the node guards and returns each
// one's error.
func calls(t *testing.T, conn *grpc.ClientConn) map[string]error {
	t.Helper()
	c := ctx(t)
	errs := map[string]error{}
	_, errs["health"] = healthpb.NewHealthClient(conn).Check(c, &healthpb.HealthCheckRequest{})
	_, errs["data"] = pb.NewDatabaseServiceClient(conn).ListTables(c, &pb.ListTablesRequest{})
	_, errs["admin"] = pb.NewAdminServiceClient(conn).Status(c, &pb.StatusRequest{})
	img, err := pb.NewImageServiceClient(conn).FetchImage(c, &pb.FetchImageRequest{})
	if err == nil {
		_, err = img.Recv()
	}
	errs["image"] = err
	ship, err := pb.NewReplicationServiceClient(conn).Ship(c)
	if err == nil {
		// The node checks the caller before it reads the hello; a
		// caller it lets in gets a refusal of the empty hello. A Send
		// that finds the stream ended already says only io.EOF: Recv
		// has the status.
		if err = ship.Send(&pb.ShipRequest{}); err == nil || errors.Is(err, io.EOF) {
			_, err = ship.Recv()
		}
	}
	errs["ship"] = err
	return errs
}

// TestSecurity: who may call what on a node with TLS, peer
// authentication and tokens (SPEC section 9), and that a refused call
// changes nothing.
func TestSecurity(t *testing.T) {
	s := startSecured(t, nil)
	// Something to image.
	if _, err := pb.NewDatabaseServiceClient(s.dial(t, s.ca, "ops", "")).CreateTable(ctx(t), &pb.CreateTableRequest{Table: accountsTable()}); err != nil {
		t.Fatal(err)
	}
	const ok, unauth, denied, shipRefused = codes.OK, codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument
	cases := []struct {
		name        string
		ca          *certtest.CA
		cert, token string
		want        map[string]codes.Code
	}{
		{"no credentials", nil, "", "", map[string]codes.Code{"health": ok, "data": unauth, "admin": unauth, "image": unauth, "ship": unauth}},
		{"a bad token", nil, "", "0123456789abcdef-bad", map[string]codes.Code{"health": ok, "data": unauth, "admin": unauth, "image": unauth, "ship": unauth}},
		{"a client's token", nil, "", "0123456789abcdef-app", map[string]codes.Code{"health": ok, "data": ok, "admin": unauth, "image": unauth, "ship": unauth}},
		{"an operator's certificate", s.ca, "ops", "", map[string]codes.Code{"health": ok, "data": ok, "admin": ok, "image": ok, "ship": denied}},
		{"the node's own certificate", s.ca, "a", "", map[string]codes.Code{"health": ok, "data": ok, "admin": ok, "image": ok, "ship": denied}},
		{"a peer's certificate", s.ca, "p", "", map[string]codes.Code{"health": ok, "data": ok, "admin": ok, "image": ok, "ship": shipRefused}},
		{"a stranger's certificate from the CA", s.ca, "mallory", "", map[string]codes.Code{"health": ok, "data": unauth, "admin": denied, "image": denied, "ship": denied}},
		{"a stranger's certificate and a token", s.ca, "mallory", "0123456789abcdef-app", map[string]codes.Code{"health": ok, "data": ok, "admin": denied, "image": denied, "ship": denied}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := calls(t, s.dial(t, tc.ca, tc.cert, tc.token))
			for call, want := range tc.want {
				if code := status.Code(got[call]); code != want {
					t.Errorf("%s: %v, want %v", call, got[call], want)
				}
			}
		})
	}

	t.Run("a peer's name from another CA", func(t *testing.T) {
		// The handshake fails: the node verifies every certificate it is shown.
		if _, err := healthpb.NewHealthClient(s.dial(t, s.other, "p", "")).Check(ctx(t), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("health over a handshake with a certificate of another CA: %v, want UNAVAILABLE", err)
		}
	})
	t.Run("a peer that ships as another", func(t *testing.T) {
		ship, err := pb.NewReplicationServiceClient(s.dial(t, s.ca, "p", "")).Ship(ctx(t))
		if err == nil {
			if err = ship.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Hello{Hello: &pb.ShipHello{Node: "q", Epoch: 1}}}); err == nil {
				_, err = ship.Recv()
			}
		}
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "does not name it") {
			t.Fatalf("p shipping as q: %v, want PERMISSION_DENIED", err)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		if _, err := s.n.db.ListTables(ctx(t), &pb.ListTablesRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("a plaintext call to a TLS node: %v, want UNAVAILABLE", err)
		}
	})
	t.Run("refused calls change nothing", func(t *testing.T) {
		app := pb.NewDatabaseServiceClient(s.dial(t, nil, "", "0123456789abcdef-app"))
		if _, err := app.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(1, 100)}); err != nil {
			t.Fatal(err)
		}
		lsn := s.n.srv.DB().LastLSN()
		bad := pb.NewDatabaseServiceClient(s.dial(t, nil, "", "0123456789abcdef-bad"))
		if _, err := bad.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(2, 100)}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Insert with a bad token: %v", err)
		}
		if _, err := pb.NewAdminServiceClient(s.dial(t, s.ca, "mallory", "")).Checkpoint(ctx(t), &pb.CheckpointRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Checkpoint with a stranger's certificate: %v", err)
		}
		st, err := pb.NewAdminServiceClient(s.dial(t, s.ca, "ops", "")).Status(ctx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLastLsn() != lsn || st.GetCheckpointLsn() >= lsn || st.GetTables()[0].GetRows() != 1 {
			t.Fatalf("refused calls left a trace (last LSN %d before them): %v", lsn, st)
		}
	})
	t.Run("tokens reload", func(t *testing.T) {
		if err := os.WriteFile(s.tokens, []byte("app2 fedcba9876543210-app2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.n.srv.ReloadCredentials(); err != nil {
			t.Fatal(err)
		}
		for token, want := range map[string]codes.Code{"0123456789abcdef-app": unauth, "fedcba9876543210-app2": ok} {
			_, err := pb.NewDatabaseServiceClient(s.dial(t, nil, "", token)).ListTables(ctx(t), &pb.ListTablesRequest{})
			if status.Code(err) != want {
				t.Errorf("token %s after the reload: %v, want %v", token, err, want)
			}
		}
		// A file that does not load leaves the tokens in use.
		if err := os.WriteFile(s.tokens, []byte("short tok\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.n.srv.ReloadCredentials(); err == nil {
			t.Fatal("a token file with a short token reloaded")
		}
		if _, err := pb.NewDatabaseServiceClient(s.dial(t, nil, "", "fedcba9876543210-app2")).ListTables(ctx(t), &pb.ListTablesRequest{}); err != nil {
			t.Fatalf("the token in use before a failed reload: %v", err)
		}
		// A file with no token revokes every client; peers and operators
		// still get in with their certificates.
		if err := os.WriteFile(s.tokens, []byte("# everyone revoked\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.n.srv.ReloadCredentials(); err != nil {
			t.Fatalf("a token file with no token: %v", err)
		}
		if _, err := pb.NewDatabaseServiceClient(s.dial(t, nil, "", "fedcba9876543210-app2")).ListTables(ctx(t), &pb.ListTablesRequest{}); status.Code(err) != unauth {
			t.Fatalf("a token after the file was emptied: %v, want UNAUTHENTICATED", err)
		}
		if _, err := pb.NewAdminServiceClient(s.dial(t, s.ca, "ops", "")).Status(ctx(t), &pb.StatusRequest{}); err != nil {
			t.Fatalf("an operator after the token file was emptied: %v", err)
		}
		if err := os.WriteFile(s.tokens, []byte("app2 fedcba9876543210-app2\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.n.srv.ReloadCredentials(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("peers reload", func(t *testing.T) {
		// p is gone and r is new: r may ship log and run admin RPCs, p
		// no longer.
		cfg := *s.n.srv.cfg
		cfg.Peers = []conf.Peer{{Name: "q", Addr: "127.0.0.1:2"}, {Name: "r", Addr: "127.0.0.1:3"}}
		if changed, added, removed, err := s.n.srv.SetPeers(&cfg); err != nil || !changed || !slices.Equal(added, []string{"r"}) || !slices.Equal(removed, []string{"p"}) {
			t.Fatalf("SetPeers: changed %v, added %q, removed %q: %v", changed, added, removed, err)
		}
		for name, want := range map[string]map[string]codes.Code{
			"p": {"admin": denied, "image": denied, "ship": denied},
			"r": {"admin": ok, "image": ok, "ship": shipRefused},
		} {
			got := calls(t, s.dial(t, s.ca, name, ""))
			for call, code := range want {
				if status.Code(got[call]) != code {
					t.Errorf("%s's certificate, %s: %v, want %v", name, call, got[call], code)
				}
			}
		}
	})
}

// TestClientAuthRequiresCertificates: with tls.client_auth every
// connection needs a certificate of the CA, whatever it calls.
func TestClientAuthRequiresCertificates(t *testing.T) {
	s := startSecured(t, func(c *conf.Config) { c.TLSClientAuth = true })
	if _, err := healthpb.NewHealthClient(s.dial(t, nil, "", "0123456789abcdef-app")).Check(ctx(t), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a connection without a certificate: %v, want UNAVAILABLE", err)
	}
	if _, err := pb.NewDatabaseServiceClient(s.dial(t, s.ca, "mallory", "0123456789abcdef-app")).ListTables(ctx(t), &pb.ListTablesRequest{}); err != nil {
		t.Fatalf("a certificate of the CA and a token: %v", err)
	}
}

// TestNodeRefusesBadSecurityFiles: a missing or broken file stops the
// node from starting, naming the key.
func TestNodeRefusesBadSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "a")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("app tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		edit func(*conf.Config)
		want string
	}{
		"missing key":  {func(c *conf.Config) { c.TLSCertFile, c.TLSKeyFile = cert, filepath.Join(dir, "none.pem") }, "none.pem"},
		"key for cert": {func(c *conf.Config) { c.TLSCertFile, c.TLSKeyFile = cert, ca.File }, "certificate"},
		"CA not PEM":   {func(c *conf.Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = cert, key, tokens }, "no PEM certificate"},
		"short token": {func(c *conf.Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.AuthTokenFile = cert, key, ca.File, tokens
		}, "shorter than"},
		"missing token": {func(c *conf.Config) {
			c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.AuthTokenFile = cert, key, ca.File, dir+"/nope"
		}, "nope"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := conf.DefaultConfig()
			cfg.DataDir = t.TempDir()
			c.edit(cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			srv, err := New(cfg, nil)
			if err == nil {
				srv.Shutdown(context.Background())
				t.Fatal("the node started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// TestSIGHUPEndsStreamsOfRevokedCallers: a Session stream, which a
// client may keep open for days, ends at its next message once the
// token it opened with is gone from the reloaded token file, or once
// the peer whose certificate opened it is no longer a peer; a stream
// whose caller is still allowed goes on.
func TestSIGHUPEndsStreamsOfRevokedCallers(t *testing.T) {
	s := startSecured(t, nil)
	open := func(conn *grpc.ClientConn) pb.DatabaseService_SessionClient {
		t.Helper()
		st, err := pb.NewDatabaseServiceClient(conn).Session(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// ask sends one request and returns the stream's error, if it ended.
	ask := func(st pb.DatabaseService_SessionClient) error {
		t.Helper()
		req := &pb.SessionRequest{Requests: []*pb.Request{{Id: 1, Op: &pb.Request_Get{Get: &pb.GetRequest{Table: "nope", Key: key(vI(1))}}}}}
		if err := st.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err := st.Recv()
		return err
	}
	app, peer := open(s.dial(t, nil, "", "0123456789abcdef-app")), open(s.dial(t, s.ca, "p", ""))
	if err := os.WriteFile(s.tokens, []byte("app 0123456789abcdef-app\napp2 fedcba9876543210-app2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.n.srv.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	other := open(s.dial(t, nil, "", "fedcba9876543210-app2"))
	for name, st := range map[string]pb.DatabaseService_SessionClient{"app": app, "app2": other, "p": peer} {
		if err := ask(st); err != nil {
			t.Fatalf("%s's session before anything is revoked: %v", name, err)
		}
	}

	// app's token goes.
	if err := os.WriteFile(s.tokens, []byte("app2 fedcba9876543210-app2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.n.srv.ReloadCredentials(); err != nil {
		t.Fatal(err)
	}
	if err := ask(app); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a session whose token was revoked: %v, want UNAUTHENTICATED", err)
	}
	if err := ask(other); err != nil {
		t.Errorf("a session whose token stays: %v", err)
	}

	// p is no longer a peer.
	cfg := *s.n.srv.cfg
	cfg.Peers = []conf.Peer{{Name: "q", Addr: "127.0.0.1:2"}}
	if _, _, _, err := s.n.srv.SetPeers(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := ask(peer); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a session opened with the certificate of a peer since removed: %v, want UNAUTHENTICATED", err)
	}
	if err := ask(other); err != nil {
		t.Errorf("a session whose token stays, after the peers changed: %v", err)
	}
}

// TestBearerSchemeIgnoresCase: the authorization header's scheme is
// case-insensitive and one or more spaces follow it (RFC 7235 2.1, RFC
// 6750 2.1): "bearer TOKEN" and "BEARER TOKEN" are let in as "Bearer
// TOKEN" is. Before, only "Bearer " was, and a client whose library
// writes the scheme in lower case got UNAUTHENTICATED with a good token.
func TestBearerSchemeIgnoresCase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("app 0123456789abcdef-app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := secure.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	sec := &security{node: "a", tokens: tokens}
	sec.setPeers(nil)
	method := "/" + pb.DatabaseService_ServiceDesc.ServiceName + "/ListTables"
	for header, want := range map[string]codes.Code{
		"Bearer 0123456789abcdef-app":   codes.OK,
		"bearer 0123456789abcdef-app":   codes.OK,
		"BEARER 0123456789abcdef-app":   codes.OK,
		"bEaReR 0123456789abcdef-app":   codes.OK,
		"Bearer   0123456789abcdef-app": codes.OK,
		"Bearer 0123456789abcdef-bad":   codes.Unauthenticated,
		"Bearer0123456789abcdef-app":    codes.Unauthenticated,
		"Basic 0123456789abcdef-app":    codes.Unauthenticated,
		"Bearers 0123456789abcdef-app":  codes.Unauthenticated,
		"0123456789abcdef-app":          codes.Unauthenticated,
	} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", header))
		if err := sec.check(ctx, method); status.Code(err) != want {
			t.Errorf("authorization %q: %v, want %v", header, err, want)
		}
	}
}

// TestReimageOverTLSChecksTheSendersName: a standby sent for an image
// fetches it from the address its primary gave of itself, which need not
// be the one the standby's peer list spells (here the primary listens on
// 127.0.0.1 and the standby's peer entry says localhost; a primary
// listening on 0.0.0.0 gives its host's name). The primary's certificate
// names the node only, as node certificates do. The fetch checks it for
// the name of the node whose link sent the standby for the image: it
// checked it for the host dialled, failed at every start, and the standby
// never caught up.
func TestReimageOverTLSChecksTheSendersName(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	addrA, addrB := grpctest.DeadAddr(t), grpctest.DeadAddr(t)
	_, portB, err := net.SplitHostPort(addrB)
	if err != nil {
		t.Fatal(err)
	}
	certA, keyA := ca.IssueNameOnly(t, "a")
	certB, keyB := ca.IssueNameOnly(t, "b")
	dirA := t.TempDir()
	asStandby := func(c *conf.Config) {
		c.Node, c.Role, c.Listen, c.DataDir = "a", conf.RoleStandby, addrA, dirA
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = certA, keyA, ca.File
		c.Peers = []conf.Peer{{Name: "b", Addr: net.JoinHostPort("localhost", portB)}}
	}
	a := startNode(t, asStandby)
	b := startNode(t, func(c *conf.Config) {
		c.Node, c.Listen, c.Durability, c.LogRetentionBytes = "b", addrB, conf.DurabilityNoLog, 4096 // a small ring
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = certB, keyB, ca.File
		c.Peers = []conf.Peer{{Name: "a", Addr: addrA}}
	})
	app := *b // b's own client has no TLS
	app.db = pb.NewDatabaseServiceClient(ca.Dial(t, b.addr, "b", nil, "", ""))
	app.withAccounts(3)
	if err := a.srv.store.WaitApplied(ctx(t), b.srv.db.LastLSN()); err != nil {
		t.Fatal(err)
	}
	a.stop()
	for id := int64(4); id <= 200; id++ { // past the ring: a needs an image
		if _, err := app.db.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(id, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	a = startNode(t, asStandby)
	select {
	case why := <-a.srv.Restarts():
		t.Logf("a restarts to %s", why)
	case <-time.After(20 * time.Second):
		t.Fatal("b did not send a for an image")
	}
	a.stop()
	a = startNode(t, asStandby)
	c := ctx(t)
	applied := make(chan error, 1)
	go func() { applied <- a.srv.store.WaitApplied(c, b.srv.db.LastLSN()) }()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case why := <-a.srv.Restarts():
		t.Fatalf("a did not load b's image, and asks to restart again, to %s", why)
	}
	if _, err := os.Stat(filepath.Join(dirA, reimageFile)); !os.IsNotExist(err) {
		t.Fatalf("%s is left: %v", reimageFile, err)
	}
	// The name checked is the sender's: b's certificate does not do for c.
	for node, ok := range map[string]bool{"b": true, "c": false} {
		conn, err := grpc.NewClient(b.addr, a.srv.sec.dialNode(b.addr, node))
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(c, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
		cancel()
		if cerr := conn.Close(); cerr != nil {
			t.Error(cerr)
		}
		if (err == nil) != ok || !ok && !strings.Contains(err.Error(), "certificate") {
			t.Errorf("b's health, dialled as %s: %v", node, err)
		}
	}
}

// TestReimageMarkFields: a REIMAGE mark names the address and the node to
// fetch from, and says "replacing" second once the replacement began, so
// that a build that reads only the first two fields (one from before
// node=) still tells a replacement under way; marks of such builds, with
// no node=, are read as the address alone.
func TestReimageMarkFields(t *testing.T) {
	for _, m := range []reimageMark{
		{addr: "h:1"}, {addr: "h:1", replacing: true},
		{addr: "h:1", node: "b"}, {addr: "h:1", node: "b", replacing: true}, {addr: "h:1", node: replacingMark},
	} {
		b := m.bytes()
		got, err := parseReimageMark(b)
		if err != nil || got != m {
			t.Errorf("%q read back as %+v, %v; want %+v", b, got, err, m)
		}
		fields := strings.Fields(string(b)) // as an older build reads it
		if older := len(fields) > 1 && fields[1] == replacingMark; fields[0] != m.addr || older != m.replacing {
			t.Errorf("an older build reads %q as %s, replacing %v; want %+v", b, fields[0], older, m)
		}
	}
	for content, want := range map[string]reimageMark{
		"h:1\n":              {addr: "h:1"},
		"h:1\nreplacing\n":   {addr: "h:1", replacing: true},
		"h:1\nnode=b\nnew\n": {addr: "h:1", node: "b"}, // a field of a newer build is skipped
	} {
		if got, err := parseReimageMark([]byte(content)); err != nil || got != want {
			t.Errorf("%q read as %+v, %v; want %+v", content, got, err, want)
		}
	}
	for _, bad := range []string{"", " \n", "h:1\nnode=\n"} {
		if m, err := parseReimageMark([]byte(bad)); err == nil {
			t.Errorf("%q read as %+v", bad, m)
		}
	}
}
