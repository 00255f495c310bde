// Package certtest makes certificate authorities and certificates for
// tests, as PEM files in a test's directory, and dials nodes with them.
package certtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/secure"
)

// CA is a certificate authority; File is its certificate's PEM file.
type CA struct {
	File string
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA called name, with its files in dir.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{File: filepath.Join(dir, name+".pem"), dir: dir, cert: cert, key: key}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate for name (its common name and DNS name,
// valid for 127.0.0.1 too), for servers and clients alike, and returns
// its certificate and key files.
func (ca *CA) Issue(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	return ca.IssueValid(t, name, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// IssueValid is Issue of a certificate valid from notBefore to notAfter.
func (ca *CA) IssueValid(t testing.TB, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, []net.IP{net.IPv4(127, 0, 0, 1)}, notBefore, notAfter)
}

// IssueNameOnly is Issue of a certificate that names name alone, as a
// node's certificate does: it is not valid for 127.0.0.1, so a side that
// dials a test's node checking the host it dials, instead of the node's
// name, fails the handshake.
func (ca *CA) IssueNameOnly(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, nil, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

func (ca *CA) issue(t testing.TB, name string, ips []net.IP, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  ips,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, name+"-"+ca.cert.Subject.CommonName+".pem")
	keyFile = filepath.Join(ca.dir, name+"-"+ca.cert.Subject.CommonName+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// Mutual is the set-up of a node that requires its callers'
// certificates: CA signs the node's and those it accepts, and Other is a
// second CA, whose certificates neither the node nor a side that trusts
// CA accepts.
type Mutual struct {
	CA, Other         *CA
	Node              string // the node's name, which its certificate names
	CertFile, KeyFile string // the node's certificate and key, of CA
}

// NewMutual makes the two CAs, in a new directory of the test's, and the
// certificate of node.
func NewMutual(t testing.TB, node string) *Mutual {
	t.Helper()
	dir := t.TempDir()
	m := &Mutual{CA: NewCA(t, dir, "ca"), Other: NewCA(t, dir, "other"), Node: node}
	m.CertFile, m.KeyFile = m.CA.Issue(t, node)
	return m
}

// Configure makes c the node's config: its name, certificate and key,
// and CA, requiring callers' certificates.
func (m *Mutual) Configure(c *conf.Config) {
	c.Node = m.Node
	c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile, c.TLSClientAuth = m.CertFile, m.KeyFile, m.CA.File, true
}

// Dial connects to the node at addr over TLS, trusting ca for the
// certificate named server; it presents a certificate for name that
// issuer signs (none if issuer is nil), and sends token with every call
// (none if empty). The connection closes when the test ends.
func (ca *CA) Dial(t testing.TB, addr, server string, issuer *CA, name, token string) *grpc.ClientConn {
	t.Helper()
	trusted, err := secure.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	var kp *secure.KeyPair
	if issuer != nil {
		cert, key := issuer.Issue(t, name)
		if kp, err = secure.LoadKeyPair(cert, key); err != nil {
			t.Fatal(err)
		}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(secure.Dial(kp, trusted, server))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(secure.Bearer(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
