package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/secure"
	"github.com/mmdb/mmdb/internal/servertest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestTLSAndToken: a client reaches a node that requires TLS and a
// token with Options.TLS, ServerNames and Token, and is refused
// without the token or with the wrong server name.
func TestTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "n1")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("app 0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, func(c *conf.Config) {
		c.Node = "n1"
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.AuthTokenFile = cert, key, ca.File, tokens
	})
	trusted, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	try := func(opts Options) error {
		opts.Addrs, opts.MaxAttempts = []string{addr}, 1
		c, err := New(opts)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.ListTables(testCtx(t))
		return err
	}
	if err := try(Options{TLS: &tls.Config{RootCAs: trusted.Pool()}, ServerNames: map[string]string{addr: "n1"}, Token: "0123456789abcdef"}); err != nil {
		t.Fatalf("with TLS and the token: %v", err)
	}
	if err := try(Options{TLS: &tls.Config{RootCAs: trusted.Pool()}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without the token: %v, want UNAUTHENTICATED", err)
	}
	if err := try(Options{TLS: &tls.Config{RootCAs: trusted.Pool()}, ServerNames: map[string]string{addr: "n2"}, Token: "0123456789abcdef"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("expecting another node's certificate: %v, want UNAVAILABLE", err)
	}
	if _, err := New(Options{Addrs: []string{addr}, Token: "0123456789abcdef"}); err == nil {
		t.Fatal("a token without TLS was accepted")
	}
}

// TestCertificateFailuresFailFast: a certificate that fails the TLS
// handshake fails the call at once, saying so and naming the node's
// address, though gRPC reports it as UNAVAILABLE: the node's does not
// verify (another CA, or not naming the name checked), or the node,
// which requires client certificates, refuses the client's (none, or
// one of another CA, refused in the handshake under TLS 1.2 and after
// it under 1.3). Before, each was retried as a node found down, and
// failed only after every attempt; so was the lack of a certificate
// under TLS 1.2 until the node's handshake_failure alert, which says no
// more, was told apart by the node's having asked for one. A node that refuses the connection
// is still moved on from.
func TestCertificateFailuresFailFast(t *testing.T) {
	m := certtest.NewMutual(t, "n1")
	ca, other, cert, key := m.CA, m.Other, m.CertFile, m.KeyFile
	addr := serve(t, m.Configure)
	pool := func(ca *certtest.CA) *x509.CertPool {
		loaded, err := secure.LoadCA(ca.File)
		if err != nil {
			t.Fatal(err)
		}
		return loaded.Pool()
	}
	pair := func(ca *certtest.CA) *secure.KeyPair {
		kp, err := secure.LoadKeyPair(ca.Issue(t, "app"))
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	tls12 := func(cfg *tls.Config) *tls.Config {
		cfg.MaxVersion = tls.VersionTLS12
		return cfg
	}
	// Every attempt after the first waits backoff first: a call that
	// returns sooner was not tried again.
	const backoff = time.Second
	dial := func(cfg *tls.Config, addrs ...string) *Client {
		return newClientWith(t, Options{Addrs: addrs, TLS: cfg, MinBackoff: backoff, MaxBackoff: backoff})
	}
	for _, tc := range []struct {
		what string
		cfg  *tls.Config
		want string
	}{
		{"a node's certificate of another CA", secure.Client(pair(ca), pool(other), "n1"), "did not verify"},
		{"a node's certificate for another name", secure.Client(pair(ca), pool(ca), "n2"), "did not verify"},
		{"no client certificate", secure.Client(nil, pool(ca), "n1"), "certificate required"},
		{"no client certificate, TLS 1.2", tls12(secure.Client(nil, pool(ca), "n1")), "asked for one and got none"},
		{"a client certificate of another CA", secure.Client(pair(other), pool(ca), "n1"), "unknown certificate authority"},
		{"a client certificate of another CA, TLS 1.2", tls12(secure.Client(pair(other), pool(ca), "n1")), "unknown certificate authority"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := dial(tc.cfg, addr)
			err := within(t, backoff, "the call", func() error {
				_, err := c.ListTables(testCtx(t))
				return err
			})
			if !errors.Is(err, ErrCertificate) || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want UNAVAILABLE naming %s, telling of a certificate failure, saying %q", err, addr, tc.want)
			}
		})
	}
	c := dial(secure.Client(pair(ca), pool(ca), "n1"), grpctest.DeadAddr(t), addr)
	if _, err := c.ListTables(testCtx(t)); err != nil || c.Addr() != addr {
		t.Fatalf("after a node that refused the connection: %v, calls at %s, want them at %s", err, c.Addr(), addr)
	}
	// A node whose certificate fails is not tried again, but the client's
	// other nodes are, at once: one node's expired certificate must not
	// take a pair whose other node serves down with it.
	otherCert, otherKey := other.Issue(t, "n1")
	bad := serve(t, func(c *conf.Config) {
		m.Configure(c)
		c.TLSCertFile, c.TLSKeyFile = otherCert, otherKey
	})
	c = dial(secure.Client(pair(ca), pool(ca), "n1"), bad, addr)
	err := within(t, backoff, "the call", func() error {
		_, err := c.ListTables(testCtx(t))
		return err
	})
	if err != nil || c.Addr() != addr {
		t.Fatalf("after a node whose certificate failed: %v, calls at %s, want them at %s", err, c.Addr(), addr)
	}
	// A write that a standby redirects to a node whose certificate fails
	// ends at once with that failure, in a call and in Tx. The failed node
	// was not counted as down: the redirect was followed again at once,
	// back and forth without a pause until the attempts ran out, ending in
	// the standby's NOT_PRIMARY.
	kp, err := secure.LoadKeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	sb := &txStandby{standby{primary: bad}}
	sbAddr, _ := grpctest.Serve(t, func(g *grpc.Server) { pb.RegisterDatabaseServiceServer(g, sb) },
		grpc.Creds(credentials.NewTLS(secure.Server(kp, loaded, false))))
	for _, tc := range []struct {
		what string
		run  func(*Client) error
	}{
		{"a call redirected", func(c *Client) error {
			_, err := c.Insert(testCtx(t), "x", Uint64(1))
			return err
		}},
		{"Tx redirected", func(c *Client) error {
			_, err := c.Tx(testCtx(t), func(tx *Tx) error { return tx.Insert("x", Uint64(1)) })
			return err
		}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			c := dial(secure.Client(pair(ca), pool(ca), "n1"), sbAddr)
			sb.mu.Lock()
			sb.calls = 0
			sb.mu.Unlock()
			err := within(t, backoff, tc.what, func() error { return tc.run(c) })
			if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), bad) {
				t.Errorf("%v, want the certificate failure of %s", err, bad)
			}
			sb.mu.Lock()
			defer sb.mu.Unlock()
			if sb.calls > 2 {
				t.Errorf("the standby was sent the write %d times", sb.calls)
			}
		})
	}
}

// TestTxMovesOnFromACertificateFailure: a transaction whose node, after
// Begin, fails the TLS handshake of a new connection on its certificate
// (the node took another, of a CA the client does not trust) fails with
// that connection, as with a node found down: Tx runs it again on the
// client's other node, at once, and the failed call of the transaction
// wraps ErrCertificate. Before, Tx returned the failure at once though
// the other node served.
func TestTxMovesOnFromACertificateFailure(t *testing.T) {
	dir := t.TempDir()
	ca, other := certtest.NewCA(t, dir, "ca"), certtest.NewCA(t, dir, "other")
	cert, key := ca.Issue(t, "n1")
	// Node a's own files, which the test replaces with a certificate of
	// other.
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem")
	copyFile(t, cert, aCert)
	copyFile(t, key, aKey)
	tlsOn := func(cert, key string) func(*conf.Config) {
		return func(c *conf.Config) { c.Node, c.TLSCertFile, c.TLSKeyFile = "n1", cert, key }
	}
	a, aAddr := servertest.Start(t, tlsOn(aCert, aKey))
	bAddr := serve(t, tlsOn(cert, key))
	trusted, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	cfg := secure.Client(nil, trusted.Pool(), "n1")
	ctx := testCtx(t)
	for _, addr := range []string{aAddr, bAddr} {
		if _, err := newClientWith(t, Options{Addrs: []string{addr}, TLS: cfg}).CreateTable(ctx, counters); err != nil {
			t.Fatal(err)
		}
	}
	px := faultproxy.New(t, aAddr)
	// Every attempt after a backoff waits it first: a Tx that returns
	// sooner moved on at once.
	const backoff = time.Second
	c := newClientWith(t, Options{Addrs: []string{px.Addr(), bAddr}, TLS: cfg, MinBackoff: backoff, MaxBackoff: backoff})
	var runs []string
	var first error
	start := time.Now()
	lsn, err := c.Tx(ctx, func(tx *Tx) error {
		runs = append(runs, tx.addr)
		if len(runs) == 1 {
			otherCert, otherKey := other.Issue(t, "n1")
			copyFile(t, otherCert, aCert)
			copyFile(t, otherKey, aKey)
			if err := a.ReloadCredentials(); err != nil {
				t.Fatal(err)
			}
			px.Cut() // the next call connects again
			for deadline := time.Now().Add(10 * time.Second); tx.conn.GetState() == connectivity.Ready; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the connection through the cut proxy stayed ready")
				}
			}
			first = tx.Insert("counters", Uint64(1), String("x"), Int64(1), Null())
			return first
		}
		return tx.Insert("counters", Uint64(1), String("x"), Int64(1), Null())
	})
	if err != nil || lsn == 0 {
		t.Fatalf("Tx: LSN %d, %v; want it committed on %s (ran on %v)", lsn, err, bAddr, runs)
	}
	if took := time.Since(start); took >= backoff {
		t.Errorf("Tx took %v, not moving on at once (backoff %v)", took, backoff)
	}
	if len(runs) != 2 || runs[0] != px.Addr() || runs[1] != bAddr {
		t.Errorf("the transaction ran on %v, want on %s, then on %s", runs, px.Addr(), bAddr)
	}
	if !errors.Is(first, ErrCertificate) || !strings.Contains(first.Error(), px.Addr()) {
		t.Errorf("the insert on the node whose certificate failed: %v, want it wrapping ErrCertificate, naming %s", first, px.Addr())
	}
	if _, found, err := newClientWith(t, Options{Addrs: []string{bAddr}, TLS: cfg}).Get(ctx, "counters", Uint64(1)); err != nil || !found {
		t.Errorf("the row on %s: found %v, %v", bAddr, found, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTxReturnsACertificateFailureMetElsewhere: a certificate failure
// that fn met on another connection (another client's call) and
// returned says nothing of the transaction's node: Tx rolls back and
// returns it, as any error of fn's, and runs fn once. It took it for its
// own node's, noted both of the client's healthy nodes as failed and ran
// fn again on each.
func TestTxReturnsACertificateFailureMetElsewhere(t *testing.T) {
	dir := t.TempDir()
	ca, other := certtest.NewCA(t, dir, "ca"), certtest.NewCA(t, dir, "other")
	tlsOn := func(by *certtest.CA) func(*conf.Config) {
		cert, key := by.Issue(t, "n1")
		return func(c *conf.Config) { c.Node, c.TLSCertFile, c.TLSKeyFile = "n1", cert, key }
	}
	a1, a2, bad := serve(t, tlsOn(ca)), serve(t, tlsOn(ca)), serve(t, tlsOn(other))
	trusted, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	cfg := secure.Client(nil, trusted.Pool(), "n1")
	ctx := testCtx(t)
	c := newClientWith(t, Options{Addrs: []string{a1, a2}, TLS: cfg})
	y := newClientWith(t, Options{Addrs: []string{bad}, TLS: cfg})
	runs := 0
	_, err = c.Tx(ctx, func(tx *Tx) error {
		runs++
		_, _, err := y.Get(ctx, "counters", Uint64(1))
		return err
	})
	if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), bad) || runs != 1 {
		t.Fatalf("Tx whose fn returned another node's certificate failure: %v after %d runs; want that failure after one", err, runs)
	}
	for _, addr := range []string{a1, a2} {
		if f := c.certFailedAt(addr); f != nil {
			t.Errorf("%s noted as failed: %v", addr, f)
		}
	}
}
