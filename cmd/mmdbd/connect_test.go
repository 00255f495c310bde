package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/certtest"
)

// peerConfig writes the config file of node b, with TLS (an ops
// certificate of a new CA) and a peer a at db-a.example:7700, and
// returns its path and the CA's file.
func peerConfig(t *testing.T) (path, caFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "ops")
	path = filepath.Join(dir, "b.hcl")
	src := fmt.Appendf(nil, "node = \"b\"\nlisten = \"127.0.0.1:7700\"\ntls {\n  cert_file = %q\n  key_file = %q\n  ca_file = %q\n}\npeer \"a\" {\n  addr = \"db-a.example:7700\"\n}\n", cert, key, ca.File)
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, ca.File
}

// TestClientFollowsPeersByName: a client command given -config and one
// node's address checks the certificate of each peer of the file for
// the peer's name, at whichever address the client learns (a standby
// names its primary's in the error of a write). Before, only the
// addresses given were mapped, and a redirect to the primary checked
// its certificate for the host dialled, which a node's certificate
// need not name: the write failed its handshake.
func TestClientFollowsPeersByName(t *testing.T) {
	path, _ := peerConfig(t)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cf := addConnFlags(fs, true)
	if err := cf.parse(fs, []string{"-config", path}); err != nil {
		t.Fatal(err)
	}
	opts, err := cf.clientOptions([]string{"127.0.0.1:7700"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"127.0.0.1:7700": "b", "db-a.example:7700": "a"} {
		if got, ok := opts.ServerNames[addr]; !ok || got != want {
			t.Errorf("the certificate at %s is checked for %q (known %v), want %q", addr, got, ok, want)
		}
	}
}

// TestServerNameCoversLearnedAddresses: -tls-server-name names the
// certificate of every node the client reaches that no peer entry of
// -config names, those it learns too (a standby names its primary's
// address in the error of a write; after a failover, a new primary),
// while a peer of -config is checked for its own name at its address.
// Before, only the addresses given were checked for -tls-server-name: a
// learned one was checked for the host dialled, which a certificate
// need not name (the reason to give -tls-server-name), and with
// -tls-server-name the peers of -config were not mapped at all.
func TestServerNameCoversLearnedAddresses(t *testing.T) {
	path, caFile := peerConfig(t)
	for _, tc := range []struct {
		name  string
		args  []string
		named map[string]string // address: the name checked there
	}{
		{"flags alone", []string{"-tls-ca-file", caFile, "-tls-server-name", "db"}, map[string]string{"10.0.0.1:7700": "db"}},
		{"with -config", []string{"-config", path, "-tls-server-name", "db"}, map[string]string{"10.0.0.1:7700": "db", "db-a.example:7700": "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cf := addConnFlags(fs, true)
			if err := cf.parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			opts, err := cf.clientOptions([]string{"10.0.0.1:7700"})
			if err != nil {
				t.Fatal(err)
			}
			if opts.TLS.ServerName != "db" {
				t.Errorf("an address the client learns of no peer is checked for %q, want -tls-server-name's %q", opts.TLS.ServerName, "db")
			}
			for addr, want := range tc.named {
				if got := opts.ServerNames[addr]; got != want {
					t.Errorf("the certificate at %s is checked for %q, want %q", addr, got, want)
				}
			}
		})
	}
}

// TestCertificateFailuresExitAtOnce: a tool whose TLS handshake fails on
// a certificate (the node's does not verify, or the node refuses the
// tool's) exits with 1 at once, saying so on stderr with what to check;
// the shell, whose client retried it as a node found down, took its
// every attempt (over 6 s).
func TestCertificateFailuresExitAtOnce(t *testing.T) {
	m := certtest.NewMutual(t, "n1")
	addr := startNode(t, m.Configure)
	for _, tc := range []struct {
		what, caFile, want string
	}{
		{"a node's certificate of another CA", m.Other.File, "did not verify"},
		{"no certificate", m.CA.File, "certificate required"},
	} {
		for _, cmd := range [][]string{{"status"}, {"shell", "-c", "tables"}} {
			args := append(cmd, "-addr", addr, "-tls-ca-file", tc.caFile, "-tls-server-name", "n1")
			var stdout, stderr bytes.Buffer
			start := time.Now()
			code := run(args, nil, &stdout, &stderr)
			if took := time.Since(start); code != 1 || took > 2*time.Second || stdout.Len() > 0 ||
				!strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "check -tls-ca-file") {
				t.Errorf("mmdbd %s with %s: exit %d after %v, stdout %q, stderr %q; want 1 at once, saying %q and what to check on stderr",
					cmd[0], tc.what, code, took, stdout.String(), stderr.String(), tc.want)
			}
		}
	}
}
