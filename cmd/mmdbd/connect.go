package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/client"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// defaultAddr is where a command finds a node when told nothing else.
const defaultAddr = "127.0.0.1:7700"

// connFlags say how a client command reaches nodes. -config reads a
// node's configuration (as serve would: the file, then MMDB_*
// variables): its listen address becomes the default address, its node
// and peer names the names the nodes' certificates must carry, and its
// tls block the credentials, so an operator or a health check on the
// node's machine needs nothing more. The -tls-* flags and -token-file
// set or override those.
type connFlags struct {
	config                    string
	useTLS                    bool
	caFile, certFile, keyFile string
	serverName                string
	tokenFile                 string

	cfg *conf.Config // from -config, once load ran
}

// addConnFlags registers the connection flags on fs; without files, the
// -tls-*-file flags are left out (bench registers them as node flags
// and sets them itself).
func addConnFlags(fs *flag.FlagSet, files bool) *connFlags {
	c := &connFlags{}
	fs.StringVar(&c.config, "config", "", "a node's configuration `file`: its listen address is the default address and its tls block the credentials")
	fs.BoolVar(&c.useTLS, "tls", false, "connect with TLS (implied by the other -tls-* flags and by -config with a tls block)")
	if files {
		fs.StringVar(&c.caFile, "tls-ca-file", "", "the CA `file` (PEM) the nodes' certificates must be signed by (default: the system's roots)")
		fs.StringVar(&c.certFile, "tls-cert-file", "", "a client certificate `file` (PEM) to present")
		fs.StringVar(&c.keyFile, "tls-key-file", "", "the client certificate's private key `file` (PEM)")
	}
	fs.StringVar(&c.serverName, "tls-server-name", "", "the `name` a node's certificate must carry (default: its name in -config, else the host dialled)")
	fs.StringVar(&c.tokenFile, "token-file", "", "a `file` whose first line is a bearer token to send (needs TLS)")
	return c
}

// parse parses a tool's flags, then loads -config.
func (c *connFlags) parse(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return c.load()
}

// load reads -config, once the flags are parsed; flags given win over it.
func (c *connFlags) load() error {
	if c.config == "" {
		return nil
	}
	cfg, err := conf.Load(c.config, os.Environ(), nil)
	if err != nil {
		return err
	}
	c.cfg = cfg
	if c.caFile == "" {
		c.caFile = cfg.TLSCAFile
	}
	if c.certFile == "" && c.keyFile == "" {
		c.certFile, c.keyFile = cfg.TLSCertFile, cfg.TLSKeyFile
	}
	c.useTLS = c.useTLS || cfg.TLSCertFile != ""
	return nil
}

// addr is the address to use: the one given, else -config's listen
// address (a wildcard host is reached on loopback), else defaultAddr.
func (c *connFlags) addr(given string) (string, error) {
	switch {
	case given != "":
		return given, nil
	case c.cfg == nil:
		return defaultAddr, nil
	}
	host, port, err := net.SplitHostPort(c.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("listen address of %s: %w", c.config, err)
	}
	if port == "0" {
		return "", fmt.Errorf("%s listens on port 0 (any); give the node's address with -addr", c.config)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// addrs is a comma-separated list of addresses to use: the list given
// (spaces around an address are dropped), else -config's listen address
// and its peers', else defaultAddr.
func (c *connFlags) addrs(given string) ([]string, error) {
	if given != "" {
		list := strings.Split(given, ",")
		for i, a := range list {
			if list[i] = strings.TrimSpace(a); list[i] == "" {
				return nil, fmt.Errorf("-addr %q: address %d of the list is empty", given, i+1)
			}
		}
		return list, nil
	}
	own, err := c.addr("")
	if err != nil || c.cfg == nil {
		return []string{own}, err
	}
	list := []string{own}
	for _, p := range c.cfg.Peers {
		list = append(list, p.Addr)
	}
	return list, nil
}

// name is the name the certificate of the node at addr must carry.
func (c *connFlags) name(addr string) string {
	if c.serverName != "" || c.cfg == nil {
		return c.serverName
	}
	if name, ok := c.cfg.PeerAt(addr); ok {
		return name
	}
	if own, err := c.addr(""); err == nil && own == addr || addr == c.cfg.Listen {
		return c.cfg.Node
	}
	return ""
}

// plaintext reports whether the command dials without TLS.
func (c *connFlags) plaintext() bool {
	return !c.useTLS && c.caFile == "" && c.certFile == "" && c.serverName == ""
}

// keys are the CA (nil: the system's roots) and the certificate to
// present (nil: none) that the flags give, to dial with TLS.
func (c *connFlags) keys() (*secure.CA, *secure.KeyPair, error) {
	var ca *secure.CA
	var kp *secure.KeyPair
	var err error
	if c.caFile != "" {
		if ca, err = secure.LoadCA(c.caFile); err != nil {
			return nil, nil, err
		}
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return nil, nil, errors.New("-tls-cert-file and -tls-key-file go together")
	}
	if c.certFile != "" {
		if kp, err = secure.LoadKeyPair(c.certFile, c.keyFile); err != nil {
			return nil, nil, err
		}
	}
	return ca, kp, nil
}

// tlsConfig is the TLS configuration of a client.Client; nil for
// plaintext. Its server name is -tls-server-name, for the addresses the
// client learns that clientOptions does not name.
func (c *connFlags) tlsConfig() (*tls.Config, error) {
	if c.plaintext() {
		return nil, nil
	}
	ca, kp, err := c.keys()
	if err != nil {
		return nil, err
	}
	return secure.Client(kp, ca.Pool(), c.serverName), nil
}

// token is the bearer token to send; empty for none.
func (c *connFlags) token() (string, error) {
	if c.tokenFile == "" {
		return "", nil
	}
	return secure.ReadToken(c.tokenFile)
}

// credentials are the dial options that carry the credentials for the
// node at addr. A certificate that does not verify, or that the node
// refuses, fails an image fetch at once (secure.IsCertError), not after
// its minute of retries.
func (c *connFlags) credentials(addr string) ([]grpc.DialOption, error) {
	tok, err := c.token()
	if err != nil {
		return nil, err
	}
	if c.plaintext() {
		if tok != "" {
			return nil, errors.New("-token-file needs TLS: give -tls or -tls-ca-file")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	ca, kp, err := c.keys()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(secure.Dial(kp, ca, c.name(addr)))}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(secure.Bearer(tok)))
	}
	return opts, nil
}

// errServesTLS says that a command dialled the node at addr, which
// serves TLS, in plaintext.
func errServesTLS(addr string) error {
	return fmt.Errorf("%s serves TLS: give its CA with -tls-ca-file (and a certificate it accepts with -tls-cert-file and -tls-key-file), or -config with a node's tls block", addr)
}

// explain returns err, a call's failure, saying why when the call was
// plaintext and the node at addr serves TLS, and what to check when a
// certificate failed the TLS handshake (which is not tried again: the
// client stops at once, and so does a call on a connection of dial).
func (c *connFlags) explain(addr string, err error) error {
	switch {
	case secure.IsCertError(err):
		return fmt.Errorf("%w (check -tls-ca-file and -tls-server-name, or -config, against the certificate of %s, and that -tls-cert-file is one its CA signs)", err, addr)
	case grpcstatus.Code(err) == codes.Unavailable && c.plaintext() && secure.ServesTLS(context.Background(), addr):
		return fmt.Errorf("%w (%w)", errServesTLS(addr), err)
	}
	return err
}

// dial connects to the node at addr.
func (c *connFlags) dial(addr string) (*grpc.ClientConn, error) {
	opts, err := c.credentials(addr)
	if err != nil {
		return nil, err
	}
	opts = append(opts, grpc.WithInitialWindowSize(pb.WindowBytes), grpc.WithInitialConnWindowSize(pb.ConnWindowBytes))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return conn, nil
}

// clientOptions are the options of a client.Client for addrs.
func (c *connFlags) clientOptions(addrs []string) (client.Options, error) {
	cfg, err := c.tlsConfig()
	if err != nil {
		return client.Options{}, err
	}
	tok, err := c.token()
	if err != nil {
		return client.Options{}, err
	}
	opts := client.Options{Addrs: addrs, TLS: cfg, Token: tok}
	if cfg != nil {
		opts.ServerNames = map[string]string{}
		for _, a := range addrs {
			opts.ServerNames[a] = c.name(a)
		}
		if c.cfg != nil {
			// A standby names its primary's address in the error of a
			// write, and the client follows it there: a peer of -config
			// is checked for its name there too, not for the host, nor
			// for -tls-server-name, which names the addresses given and
			// those learned of no peer (cfg.ServerName).
			for _, p := range c.cfg.Peers {
				if _, ok := opts.ServerNames[p.Addr]; !ok {
					opts.ServerNames[p.Addr] = p.Name
				}
			}
		}
	}
	return opts, nil
}
