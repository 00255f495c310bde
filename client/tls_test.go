package client

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/secure"
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
