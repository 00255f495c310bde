package secure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
