// Package secure builds the TLS configurations and bearer-token
// credentials of mmdb's nodes and tools, and tells who a caller is.
//
// A node has one certificate, for both ends of its connections: it serves
// with it and presents it when it dials a peer. A certificate names its
// holder by its subject's common name and its DNS names (Names); a node's
// names its node, so that peers can check they reach the node they mean
// (the dialled server name is the peer's name) and a node can check who
// calls it. The key pair, the CA file and the token file are read again
// by Reload, so an operator can replace them without a restart.
package secure

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// KeyPair is a certificate and its key, read from PEM files; Reload reads
// them again and the connections made afterwards use the new pair.
type KeyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadKeyPair reads a certificate and its private key.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	kp := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.Reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// Reload reads the files again; on error the pair in use stays. A
// certificate that is not valid now (expired, or not yet valid), or that
// lacks a name the one in use carries (whoever dials the node checks
// its name), is refused: every handshake with it would fail.
func (kp *KeyPair) Reload() error {
	c, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("secure: load certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
	}
	leaf := c.Leaf // set by LoadX509KeyPair
	switch now := time.Now(); {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("secure: certificate %s expired at %s", kp.certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("secure: certificate %s is not valid before %s", kp.certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if old := kp.cur.Load(); old != nil {
		for _, n := range Names(old.Leaf) {
			if !slices.Contains(Names(leaf), n) {
				return fmt.Errorf("secure: certificate %s does not name %q, which the certificate in use names (it names %s)", kp.certFile, n, strings.Join(Names(leaf), ", "))
			}
		}
	}
	kp.cur.Store(&c)
	return nil
}

// CA is a PEM file of CA certificates; Reload reads it again and the
// handshakes made afterwards verify against the new pool, those of the
// connections open already when they connect again too (Server, Dial).
type CA struct {
	path string
	cur  atomic.Pointer[x509.CertPool]
}

// LoadCA reads a PEM file of CA certificates.
func LoadCA(path string) (*CA, error) {
	ca := &CA{path: path}
	if err := ca.Reload(); err != nil {
		return nil, err
	}
	return ca, nil
}

// Reload reads the file again; on error the pool in use stays.
func (ca *CA) Reload() error {
	pem, err := os.ReadFile(ca.path)
	if err != nil {
		return fmt.Errorf("secure: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("secure: CA file %s holds no PEM certificate", ca.path)
	}
	ca.cur.Store(pool)
	return nil
}

// Pool returns the CA certificates in use; nil for a nil CA (the
// system's roots, to a dialling side).
func (ca *CA) Pool() *x509.CertPool {
	if ca == nil {
		return nil
	}
	return ca.cur.Load()
}

// Server is the TLS configuration a node serves with. With a CA it
// verifies the certificates callers present against the CA's pool at
// the time of the handshake, and with requireCert a caller without one
// is refused in the handshake; without requireCert a caller may come
// without a certificate (a client with a token) and the RPCs that need
// one refuse it (Caller).
func Server(kp *KeyPair, ca *CA, requireCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.cur.Load(), nil },
		// gRPC adds h2 to a copy of the config it is given, which
		// GetConfigForClient below does not see: it is named here.
		NextProtos: []string{"h2"},
	}
	switch {
	case ca != nil && requireCert:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	case ca != nil:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if ca != nil {
		// ClientCAs is read once per handshake from the config it is
		// made with: a config of the pool in use now.
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			now := cfg.Clone()
			now.GetConfigForClient, now.ClientCAs = nil, ca.Pool()
			return now, nil
		}
	}
	return cfg
}

// Client is the TLS configuration to dial a node with: its certificate
// checked against ca (the system's roots when nil) for serverName (the
// dialled host when empty), and kp, if not nil, presented when asked.
// Its pool is fixed: a node dials with Dial.
func Client(kp *KeyPair, ca *x509.CertPool, serverName string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca, ServerName: serverName}
	if kp != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.cur.Load(), nil }
	}
	return cfg
}

// Dial is the transport credentials to dial a node with: Client's
// configuration made again at each handshake, from the key pair and the
// CA's pool in use then, so that a connection that connects again (a
// link to a peer, kept for days) verifies against a CA file read again.
// Certificate failures are told apart as Checked's are.
func Dial(kp *KeyPair, ca *CA, serverName string) credentials.TransportCredentials {
	return &dialCreds{TransportCredentials: credentials.NewTLS(Client(kp, ca.Pool(), serverName)),
		config: func() *tls.Config { return Client(kp, ca.Pool(), serverName) }}
}

// Checked is the transport credentials to dial with cfg, which tell
// the failures of a certificate apart: a handshake whose server
// certificate does not verify fails with a *CertError, and a node that
// refuses the certificate presented (or its absence) fails the
// connection with a *RefusedError, in the handshake or, under TLS 1.3,
// at the first read or write after it. Neither is transient
// (IsCertError).
func Checked(cfg *tls.Config) credentials.TransportCredentials {
	return &dialCreds{TransportCredentials: credentials.NewTLS(cfg), config: func() *tls.Config { return cfg }}
}

// dialCreds are Dial's and Checked's credentials; the embedded ones, of
// the configuration at the start, only give Info (ServerHandshake is
// never called on credentials to dial with).
type dialCreds struct {
	credentials.TransportCredentials
	config func() *tls.Config // the configuration of a handshake
}

func (d *dialCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg, none := presented(d.config())
	conn, info, err := credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
	if verr := (*tls.CertificateVerificationError)(nil); errors.As(err, &verr) {
		name := cfg.ServerName
		if name == "" { // checked for the host dialled, as gRPC's TLS does
			name = authority
			if host, _, err := net.SplitHostPort(authority); err == nil {
				name = host
			}
		}
		return nil, nil, &CertError{Name: name, Err: verr}
	}
	if err != nil {
		return nil, nil, refusal(err, none.Load())
	}
	if t, ok := info.(credentials.TLSInfo); ok && t.State.Version >= tls.VersionTLS13 {
		// A node checks the certificate presented after the handshake
		// ends on this side; it refuses it with an alert.
		conn = &refusalConn{Conn: conn, none: none.Load()}
	}
	return conn, info, nil
}

func (d *dialCreds) Clone() credentials.TransportCredentials {
	c := *d
	return &c
}

// CertError is the failure of a handshake whose server certificate did
// not verify: not signed by the CA, expired, or not naming the name
// checked. Trying again fails the same way until an operator changes a
// certificate or a CA file: it is not transient (IsCertError).
type CertError struct {
	Name string // the name the certificate was checked for
	Err  error
}

func (e *CertError) Error() string {
	return fmt.Sprintf("%s for the name %q: %v", certFailed, e.Name, e.Err)
}

func (e *CertError) Unwrap() error { return e.Err }

// certFailed starts a CertError's text, which IsCertError looks for.
const certFailed = "secure: the certificate of the node dialled did not verify"

// RefusedError is the failure of a connection whose node refused the
// certificate presented, or wanted one and got none (a TLS alert about
// the certificate, Err). Like a CertError it is not transient.
type RefusedError struct {
	Err error // the alert, a *net.OpError
	// None says the node asked for a certificate and this side
	// presented none.
	None bool
}

func (e *RefusedError) Error() string {
	if e.None {
		return refused + " (it asked for one and got none): " + e.Err.Error()
	}
	return refused + ": " + e.Err.Error()
}

func (e *RefusedError) Unwrap() error { return e.Err }

// refused starts a RefusedError's text, which IsCertError looks for.
const refused = "secure: the node dialled refused the certificate this side presented, or its lack of one"

// certAlerts are the TLS alerts by which a node refuses the certificate
// a dialling side presented, or its lack of one, as crypto/tls spells
// them: it does not export the type of the alerts a connection returns
// (tls.AlertError is QUIC's), so an alert is told by its text.
var certAlerts = []string{
	"tls: bad certificate", "tls: unsupported certificate", "tls: revoked certificate",
	"tls: expired certificate", "tls: unknown certificate", "tls: unknown certificate authority",
	"tls: certificate required",
}

// refusal returns err as a *RefusedError when it is a TLS alert of
// certAlerts from the node, or, when the node asked for a certificate
// and this side presented none (none, from presented), the alert
// handshake_failure; else err.
//
// A node under TLS 1.2 that requires a certificate and gets none may say
// so only with handshake_failure (RFC 5246 7.4.6 lets it; crypto/tls
// does, and OpenSSL), which a node also sends when the two sides share
// no cipher suite, curve or version: that alert is a refusal of the
// certificate only once the node asked for one, which it does after it
// chose those (its CertificateRequest follows its ServerHello), and
// this side sent none. After that, crypto/tls checks the certificates it
// got before anything else of this side's flight; what else it might
// fail with that alert (a key exchange or Finished message it cannot
// read) would fail every attempt alike too.
func refusal(err error, none bool) error {
	var alert *net.OpError
	if !errors.As(err, &alert) || alert.Op != "remote error" {
		return err
	}
	if text := alert.Err.Error(); slices.Contains(certAlerts, text) || none && text == "tls: handshake failure" {
		return &RefusedError{Err: alert, None: none}
	}
	return err
}

// presented returns a copy of cfg that notes, once a handshake with it
// has asked for a client certificate (a node's CertificateRequest: only
// then does crypto/tls call GetClientCertificate), whether it presented
// none.
func presented(cfg *tls.Config) (*tls.Config, *atomic.Bool) {
	none := new(atomic.Bool)
	cfg = cfg.Clone()
	get := cfg.GetClientCertificate
	if get == nil {
		// crypto/tls's own choice from Certificates, which
		// GetClientCertificate replaces.
		certs := cfg.Certificates
		get = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			for i := range certs {
				if cri.SupportsCertificate(&certs[i]) == nil {
					return &certs[i], nil
				}
			}
			return new(tls.Certificate), nil
		}
	}
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := get(cri)
		none.Store(err == nil && (c == nil || len(c.Certificate) == 0))
		return c, err
	}
	return cfg, none
}

// refusalConn is a TLS 1.3 connection whose node may yet refuse the
// certificate presented: the alert that says so comes after the
// handshake, and the first read returns it (a *RefusedError). gRPC
// writes its preface before it reads; a node that refused may have
// reset the connection by then, and the write fails with only "broken
// pipe": until a read has returned data, a failed write reads the
// alert the node sent before it reset.
type refusalConn struct {
	net.Conn
	none  bool        // the node asked for a certificate and got none (presented)
	taken atomic.Bool // a read returned data: the node took the certificate
}

func (c *refusalConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.taken.Load() {
		c.taken.Store(true)
	}
	return n, refusal(err, c.none)
}

func (c *refusalConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err == nil || c.taken.Load() {
		return n, err
	}
	// The connection is lost: reading, with gRPC's own reader, ends at
	// its alert or its error, and a read deadline bounds a connection
	// that fails to write yet still reads.
	// A byte read here, of a connection lost, is lost with it.
	if c.Conn.SetReadDeadline(time.Now().Add(refusalWait)) == nil {
		_, rerr := c.Conn.Read(make([]byte, 1))
		if r := (*RefusedError)(nil); errors.As(refusal(rerr, c.none), &r) {
			return n, r
		}
	}
	return n, err
}

// refusalWait bounds the read of refusalConn.Write.
const refusalWait = time.Second

// IsCertError reports whether err is, or tells of, a CertError or a
// RefusedError: a certificate failed the connection, on either end.
//
// The typed errors are found with errors.As: a caller of ClientHandshake,
// or of a connection's Read or Write, gets them. A call through gRPC gets
// only their text, as the message of a status of code UNAVAILABLE, which
// gRPC (v1.85) makes of the error of the connection the call waited for
// (picker_wrapper.go) or that failed under it (http2_client.go Close),
// text alone. That error is, as it surfaces:
//   - a ConnectionError of the transport, whose text is "connection
//     error: desc = " and, quoted, a phrase of the transport's and the
//     error it got: "transport: authentication handshake failed: " and
//     the handshake's; "error reading server preface: " and the
//     RefusedError of a TLS 1.3 node that refused the certificate after
//     the handshake (refusalConn.Read);
//   - the error itself, its text unchanged: the transport returns the
//     error of the flush of its preface and settings as it is, which is
//     a TLS 1.3 node's RefusedError when the node reset the connection
//     before it (refusalConn.Write).
//
// So the text is looked for there and only there: in an UNAVAILABLE whose
// message is such a ConnectionError's (connectionError), or starts with
// the text. An error a node answered that quotes the text (an
// INVALID_ARGUMENT or a FAILED_PRECONDITION naming a peer's failure; an
// UNAVAILABLE saying its own link to a peer failed, "replication: ...")
// tells of no failure of the caller's connection, and is not one.
func IsCertError(err error) bool {
	if errors.As(err, new(*CertError)) || errors.As(err, new(*RefusedError)) {
		return true
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) || se.GRPCStatus().Code() != codes.Unavailable {
		return false
	}
	// A balancer other than pick_first (one a client's DialOptions
	// chose) may put its own words before the error; round_robin's and
	// the other base balancers' picker does (balancer/base).
	msg := strings.TrimPrefix(se.GRPCStatus().Message(), "last connection error: ")
	if strings.HasPrefix(msg, connectionError) {
		// The texts quoted hold no character %q escapes: they are
		// found as they are.
		return strings.Contains(msg, certFailed) || strings.Contains(msg, refused)
	}
	return strings.HasPrefix(msg, certFailed) || strings.HasPrefix(msg, refused)
}

// connectionError starts the message of the status of a call that
// gRPC's transport failed (its ConnectionError's text, the error of the
// connection quoted).
const connectionError = `connection error: desc = "`

// Names returns the names a certificate gives its holder: the subject's
// common name and the DNS names.
func Names(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	if c.Subject.CommonName != "" && !slices.Contains(names, c.Subject.CommonName) {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

// Verified returns the certificate a caller presented and the TLS
// handshake verified, from a connection's AuthInfo; nil when it
// presented none (or the connection is not TLS).
func Verified(info credentials.AuthInfo) *x509.Certificate {
	t, ok := info.(credentials.TLSInfo)
	if !ok || len(t.State.VerifiedChains) == 0 || len(t.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return t.State.VerifiedChains[0][0]
}

// MinTokenLen is the shortest token a token file may hold: a token must
// not be guessable.
const MinTokenLen = 16

// Tokens are the bearer tokens a node accepts, each with the name of the
// client it belongs to, read from a file of lines "name token" (blank
// lines and lines starting with # are skipped). Reload reads it again.
type Tokens struct {
	path string
	cur  atomic.Pointer[map[[sha256.Size]byte]string]
}

// LoadTokens reads a token file.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again; on error the tokens in use stay.
func (t *Tokens) Reload() error {
	src, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("secure: read token file: %w", err)
	}
	m, err := parseTokens(src)
	if err != nil {
		return fmt.Errorf("secure: token file %s: %w", t.path, err)
	}
	t.cur.Store(&m)
	return nil
}

// parseTokens parses a token file. Tokens are kept as their SHA-256
// digests: a lookup's time then tells nothing about how much of a token
// a guess got right.
func parseTokens(src []byte) (map[[sha256.Size]byte]string, error) {
	m := map[[sha256.Size]byte]string{}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"name token\"", line)
		}
		if len(f[1]) < MinTokenLen {
			return nil, fmt.Errorf("line %d: the token of %s is shorter than %d characters", line, f[0], MinTokenLen)
		}
		sum := sha256.Sum256([]byte(f[1]))
		if other, dup := m[sum]; dup {
			return nil, fmt.Errorf("line %d: %s has the token of %s", line, f[0], other)
		}
		m[sum] = f[0]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Len returns how many tokens are in use: none refuses every client,
// which is how an operator revokes them all.
func (t *Tokens) Len() int { return len(*t.cur.Load()) }

// Lookup returns the name of the client a token belongs to.
func (t *Tokens) Lookup(token string) (string, bool) {
	name, ok := (*t.cur.Load())[sha256.Sum256([]byte(token))]
	return name, ok
}

// ReadToken reads a client's token from a file: its first line.
func ReadToken(path string) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secure: read token: %w", err)
	}
	tok, _, _ := strings.Cut(string(src), "\n")
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", fmt.Errorf("secure: token file %s: the first line is empty", path)
	}
	return tok, nil
}

// Bearer returns credentials that send token with every call, as the
// metadata "authorization: Bearer token"; only over TLS.
func Bearer(token string) credentials.PerRPCCredentials { return bearer("Bearer " + token) }

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
