package secure_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"testing"

	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/internal/secure"
)

// TestServesTLS: the probe tells a node that speaks TLS, under 1.3 and
// under 1.2 with a client certificate required (it answers with an
// alert), from a plaintext one and from an address nobody listens on.
func TestServesTLS(t *testing.T) {
	ca := certtest.NewCA(t, t.TempDir(), "ca")
	certFile, keyFile := ca.Issue(t, "node")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	serve := func(wrap func(net.Conn) net.Conn) string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := lis.Close(); err != nil {
				t.Error(err)
			}
		})
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				go func() {
					c = wrap(c)
					if tc, ok := c.(*tls.Conn); ok {
						_ = tc.Handshake() // the probe ends it; its error is the probe's business
					}
					_, _ = io.Copy(io.Discard, c) // until the probe closes
					_ = c.Close()
				}()
			}
		}()
		return lis.Addr().String()
	}
	plain := func(c net.Conn) net.Conn { return c }
	tls13 := func(c net.Conn) net.Conn { return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}) }
	tls12 := func(c net.Conn) net.Conn {
		return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12,
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	}
	nobody := grpctest.DeadAddr(t)
	for _, c := range []struct {
		name, addr string
		want       bool
	}{
		{"plaintext", serve(plain), false},
		{"TLS 1.3", serve(tls13), true},
		{"TLS 1.2 wanting a client certificate", serve(tls12), true},
		{"nobody", nobody, false},
	} {
		if got := secure.ServesTLS(context.Background(), c.addr); got != c.want {
			t.Errorf("%s: ServesTLS %v, want %v", c.name, got, c.want)
		}
	}
}
