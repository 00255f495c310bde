package secure_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/secure"
)

// TestCAReload: a CA file replaced in place and read again (Reload, on
// SIGHUP) is the one a node verifies with from then on, on both ends:
// the certificates of its callers (Server), and those of the nodes it
// dials, with credentials made before the reload (Dial; a link to a
// peer keeps its credentials for days and connects again with them).
// Before, the pool read at start stayed in use on both ends until a
// restart, while the key pair, read again, might already be one of the
// new CA.
func TestCAReload(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := certtest.NewCA(t, dir, "old"), certtest.NewCA(t, dir, "new")
	caFile := filepath.Join(dir, "ca.pem")
	put := func(from string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	put(oldCA.File)
	ca, err := secure.LoadCA(caFile)
	if err != nil {
		t.Fatal(err)
	}
	trustNew, err := secure.LoadCA(newCA.File)
	if err != nil {
		t.Fatal(err)
	}
	node, dialler := keyPair(t, newCA, "n"), keyPair(t, newCA, "d")
	serving := secure.Server(node, ca, true)
	dialling := secure.Dial(dialler, ca, "n")
	caller := secure.Dial(dialler, trustNew, "n") // trusts the node, presents a certificate of the new CA

	if _, dialErr := handshake(t, serving, dialling); dialErr == nil {
		t.Fatal("before the reload, a dialling node took a certificate of a CA not in its CA file")
	}
	if serverErr, _ := handshake(t, serving, caller); serverErr == nil {
		t.Fatal("before the reload, a node took a caller's certificate of a CA not in its CA file")
	}
	put(newCA.File)
	if err := ca.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, dialErr := handshake(t, serving, dialling); dialErr != nil {
		t.Errorf("after the reload, credentials made before it refuse the new CA's certificate: %v", dialErr)
	}
	if serverErr, _ := handshake(t, serving, caller); serverErr != nil {
		t.Errorf("after the reload, the node refuses a caller's certificate of the new CA: %v", serverErr)
	}
	if err := os.WriteFile(caFile, []byte("no PEM here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ca.Reload(); err == nil {
		t.Error("a CA file without a certificate was read without an error")
	}
	if serverErr, dialErr := handshake(t, serving, dialling); serverErr != nil || dialErr != nil {
		t.Errorf("a CA file that failed to load replaced the pool in use: serving %v, dialling %v", serverErr, dialErr)
	}
}

// keyPair issues a certificate for name and loads it.
func keyPair(t *testing.T, ca *certtest.CA, name string) *secure.KeyPair {
	t.Helper()
	kp, err := secure.LoadKeyPair(ca.Issue(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// handshake runs a TLS handshake between a node serving with srv and a
// dialling side with creds over loopback, and returns each side's error.
func handshake(t *testing.T, srv *tls.Config, creds credentials.TransportCredentials) (serverErr, dialErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }() // the one connection was accepted
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer func() { _ = c.Close() }() // a handshake only: nothing to flush
		done <- tls.Server(c, srv).Handshake()
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = raw.Close() }() // a handshake only: nothing to flush
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, dialErr = creds.ClientHandshake(ctx, lis.Addr().String(), raw)
	return <-done, dialErr
}
