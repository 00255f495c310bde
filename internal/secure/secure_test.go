package secure

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTokenFile(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      map[string]string // token -> name; nil: an error saying err
		err       string
	}{
		{"two clients", "# comment\n\napp 0123456789abcdef\n  ops   fedcba9876543210  \n", map[string]string{"0123456789abcdef": "app", "fedcba9876543210": "ops"}, ""},
		{"short token", "app 0123\n", nil, "line 1: the token of app is shorter than 16"},
		{"three fields", "app 0123456789abcdef extra\n", nil, "line 1: want"},
		{"one field", "\n0123456789abcdef\n", nil, "line 2: want"},
		{"a token twice", "a 0123456789abcdef\nb 0123456789abcdef\n", nil, "line 2: b has the token of a"},
		{"empty: every client refused", "# nothing\n", map[string]string{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseTokens([]byte(tc.src))
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tok := &Tokens{}
			tok.cur.Store(&m)
			for token, name := range tc.want {
				if got, ok := tok.Lookup(token); !ok || got != name {
					t.Errorf("Lookup(%q) = %q, %v; want %q", token, got, ok, name)
				}
			}
			if _, ok := tok.Lookup("0123456789abcdeX"); ok {
				t.Error("an unknown token was found")
			}
			if len(m) != len(tc.want) {
				t.Errorf("%d tokens, want %d", len(m), len(tc.want))
			}
		})
	}
}

// FuzzTokenFile: any bytes parse or fail cleanly, and every token parsed
// is found under its name and is long enough.
func FuzzTokenFile(f *testing.F) {
	f.Add([]byte("app 0123456789abcdef\n"))
	f.Add([]byte("# c\r\na 0123456789abcdef\r\nb fedcba9876543210\n"))
	f.Add([]byte("a\x00 0123456789abcdef\xff\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		m, err := parseTokens(src)
		if err != nil {
			return
		}
		if len(m) == 0 {
			t.Fatal("no error and no token")
		}
		for _, line := range strings.Split(string(src), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 || strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			if len(f[1]) < MinTokenLen {
				t.Fatalf("a short token was taken: %q", line)
			}
		}
	})
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t")
	if err := os.WriteFile(path, []byte("  abc  \nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := ReadToken(path); err != nil || tok != "abc" {
		t.Fatalf("ReadToken = %q, %v", tok, err)
	}
	if err := os.WriteFile(path, []byte("\nabc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadToken(path); err == nil {
		t.Fatal("an empty first line was taken as a token")
	}
}

// TestIsCertError: a certificate failure is told by its type, or, in a
// gRPC call (which keeps only its text), by an UNAVAILABLE whose message
// is the text gRPC's transport gives a connection that failed so. An
// error a node answered that quotes such a text is not one, whatever its
// code: before, any error holding the text was, so that a node's
// INVALID_ARGUMENT or FAILED_PRECONDITION naming a peer's certificate
// failure stopped a client as if its own connection had failed.
func TestIsCertError(t *testing.T) {
	certErr := &CertError{Name: "n1", Err: errors.New("x509: certificate signed by unknown authority")}
	refusedErr := &RefusedError{Err: &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}}
	// What a gRPC call returns when its connection failed so (the texts
	// of google.golang.org/grpc's transport.ConnectionError).
	connMsg := func(desc string) string { return fmt.Sprintf("connection error: desc = %q", desc) }
	conn := func(desc string) error { return status.Error(codes.Unavailable, connMsg(desc)) }
	for _, tc := range []struct {
		what string
		err  error
		want bool
	}{
		{"a CertError", certErr, true},
		{"a RefusedError", refusedErr, true},
		{"a CertError wrapped", fmt.Errorf("fetch: %w", certErr), true},
		{"a failed handshake, in a call", conn("transport: authentication handshake failed: " + certErr.Error()), true},
		{"a TLS 1.3 refusal, in a call", conn("error reading server preface: " + refusedErr.Error()), true},
		{"a TLS 1.3 refusal, failing the preface's flush, in a call", status.Error(codes.Unavailable, refusedErr.Error()), true},
		{"a failed handshake, through round_robin's picker", status.Error(codes.Unavailable, "last connection error: "+connMsg("transport: authentication handshake failed: "+certErr.Error())), true},
		{"a call's failure wrapped", fmt.Errorf("client: %w", conn("transport: authentication handshake failed: "+certErr.Error())), true},
		{"nil", nil, false},
		{"another handshake failure, in a call", conn("transport: authentication handshake failed: remote error: tls: protocol version not supported"), false},
		{"a node's INVALID_ARGUMENT quoting one", status.Error(codes.InvalidArgument, "bootstrap_from: "+certErr.Error()), false},
		{"a node's FAILED_PRECONDITION quoting one", status.Error(codes.FailedPrecondition, "the primary b is out of reach: "+refusedErr.Error()), false},
		{"a node's UNAVAILABLE quoting one", status.Error(codes.Unavailable, "replication: "+refusedErr.Error()), false},
		{"a plain error holding the text", errors.New(certErr.Error()), false},
	} {
		if got := IsCertError(tc.err); got != tc.want {
			t.Errorf("%s (%v): IsCertError says %v, want %v", tc.what, tc.err, got, tc.want)
		}
	}
}
