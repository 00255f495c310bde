package secure_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/secure"
)

// TestTLS12RefusalWithoutCertificate: under TLS 1.2 a node that requires
// a client certificate and gets none says so only with handshake_failure;
// a side that presented none when the node asked for one takes it for the
// refusal it is, a *RefusedError, and IsCertError says so. Before, it was
// a handshake failure like any, retried as a node found down. The same
// alert sent before the node asked for a certificate (no cipher suite in
// common) is not one.
func TestTLS12RefusalWithoutCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	pool, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	node, err := secure.LoadKeyPair(ca.Issue(t, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	const suite = tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
	serverCfg := secure.Server(node, pool, true)
	serverCfg.MaxVersion, serverCfg.CipherSuites = tls.VersionTLS12, []uint16{suite}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() }) // ends the accept loop
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = tls.Server(c, serverCfg).Handshake() // its failure is what the client sees
				_ = c.Close()
			}()
		}
	}()
	for _, tc := range []struct {
		what    string
		kp      *secure.KeyPair
		suite   uint16
		refused bool
	}{
		{"no certificate", nil, suite, true},
		{"no cipher suite in common", nil, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, false},
	} {
		cfg := secure.Client(tc.kp, pool.Pool(), "n1")
		cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, []uint16{tc.suite}
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn, _, err := secure.Checked(cfg).ClientHandshake(context.Background(), lis.Addr().String(), raw)
		if conn != nil {
			_ = conn.Close()
		}
		_ = raw.Close()
		if err == nil || !strings.Contains(err.Error(), "handshake failure") {
			t.Fatalf("%s: %v, want a handshake_failure alert", tc.what, err)
		}
		if refused := errors.As(err, new(*secure.RefusedError)); refused != tc.refused || secure.IsCertError(err) != tc.refused {
			t.Errorf("%s: %v: a refusal of the certificate %v (IsCertError %v), want %v", tc.what, err, refused, secure.IsCertError(err), tc.refused)
		}
	}
}
