package conf

import (
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func parseFlags(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDefaultsAreValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDefaultBindIsLoopback: with no file, variable or flag, a node
// listens on loopback only, and serves metrics, if at all, on loopback
// too (SPEC 9).
func TestDefaultBindIsLoopback(t *testing.T) {
	c, err := Load("", nil, parseFlags(t))
	if err != nil {
		t.Fatal(err)
	}
	if !isLoopback(c.Listen) {
		t.Errorf("listen defaults to %q, not a loopback address", c.Listen)
	}
	if c.MetricsAddr != "" && !isLoopback(c.MetricsAddr) {
		t.Errorf("metrics_addr defaults to %q, not a loopback address", c.MetricsAddr)
	}
}

// isLoopback says whether addr (host:port) names a loopback host.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// TestPrecedence: defaults < file < environment < flags, and Origin says
// which one set each key.
func TestPrecedence(t *testing.T) {
	path := writeFile(t, "node.hcl", `
node          = "a"
listen        = "127.0.0.1:7001"
max_scan_rows = 500
log_channels  = ["/d1", "/d2"]

peer "b" {
  addr = "127.0.0.1:7002"
}

tls {
  cert_file   = "/a.pem"
  key_file    = "/a-key.pem"
  ca_file     = "/ca.pem"
  admin_names = ["ops"]
}
`)
	env := []string{"HOME=/root", "MMDB_LISTEN=127.0.0.1:7101", "MMDB_TX_IDLE_TIMEOUT=2s", "MMDB_TLS_CA_FILE=/ca2.pem", "MMDB_METRICS_ADDR=127.0.0.1:0"}
	c, err := Load(path, env, parseFlags(t, "-max-scan-rows", "9", "-tls-client-auth=false"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		got    any
		want   any
		origin string
	}{
		"node":            {c.Node, "a", path + ":2"},
		"listen":          {c.Listen, "127.0.0.1:7101", "env MMDB_LISTEN"},
		"max_scan_rows":   {c.MaxScanRows, int64(9), "flag -max-scan-rows"},
		"tx_idle_timeout": {c.TxIdleTimeout, 2 * time.Second, "env MMDB_TX_IDLE_TIMEOUT"},
		"log_channels":    {c.LogChannels, []string{"/d1", "/d2"}, path + ":5"},
		"peer":            {c.Peers, []Peer{{"b", "127.0.0.1:7002"}}, path + ":7"},
		"data_dir":        {c.DataDir, "./mmdb-data", "default"},
		"tls_client_auth": {c.TLSClientAuth, false, "flag -tls-client-auth"},
		"tls_cert_file":   {c.TLSCertFile, "/a.pem", path + ":12"},
		"tls_ca_file":     {c.TLSCAFile, "/ca2.pem", "env MMDB_TLS_CA_FILE"},
		"tls_admin_names": {c.TLSAdminNames, []string{"ops"}, path + ":15"},
		"metrics_addr":    {c.MetricsAddr, "127.0.0.1:0", "env MMDB_METRICS_ADDR"}, // port 0 picks one, as for listen
	}
	for k, w := range want {
		if !reflect.DeepEqual(w.got, w.want) {
			t.Errorf("%s = %v, want %v", k, w.got, w.want)
		}
		if o := c.Origin(k); o != w.origin {
			t.Errorf("%s set at %q, want %q", k, o, w.origin)
		}
	}
}

// TestEveryKeyHasAFlagAndAVariable sets each key through its flag and
// through its variable and checks both reach the field.
func TestEveryKeyHasAFlagAndAVariable(t *testing.T) {
	sample := func(k key) (text string, want any) {
		switch k.field(DefaultConfig()).(type) {
		case *string:
			return "127.0.0.1:9", "127.0.0.1:9"
		case *int64:
			return "12345", int64(12345)
		case *bool:
			return "true", true
		case *time.Duration:
			return "1500ms", 1500 * time.Millisecond
		case *[]string:
			return "/x,/y", []string{"/x", "/y"}
		case *[]Peer:
			return "p=127.0.0.1:9", []Peer{{"p", "127.0.0.1:9"}}
		}
		t.Fatalf("key %s: no sample for its type", k.name)
		return "", nil
	}
	for _, k := range keys {
		text, want := sample(k)
		viaFlag := DefaultConfig()
		if err := parseFlags(t, "-"+flagName(k.name)+"="+text).Apply(viaFlag); err != nil {
			t.Fatalf("flag -%s: %v", flagName(k.name), err)
		}
		viaEnv := DefaultConfig()
		if err := viaEnv.LoadEnv([]string{envName(k.name) + "=" + text}); err != nil {
			t.Fatalf("%s: %v", envName(k.name), err)
		}
		for src, c := range map[string]*Config{"flag": viaFlag, "env": viaEnv} {
			if got := reflect.ValueOf(k.field(c)).Elem().Interface(); !reflect.DeepEqual(got, want) {
				t.Errorf("%s via %s: got %v, want %v", k.name, src, got, want)
			}
			if !c.IsSet(k.name) {
				t.Errorf("%s via %s: not marked set", k.name, src)
			}
		}
	}
}

// TestErrorsNameWhere: every problem names the key and where it was set.
func TestErrorsNameWhere(t *testing.T) {
	cases := []struct {
		name, file string
		env        []string
		args       []string
		want       []string
	}{
		{"unknown key", "listen = \"127.0.0.1:1\"\nlsiten = \"x\"\n", nil, nil, []string{"f.hcl:2", "lsiten", "unknown key"}},
		{"wrong type", "max_scan_rows = \"many\"\n", nil, nil, []string{"f.hcl:1", "max_scan_rows", "whole number"}},
		{"fraction", "max_scan_rows = 1.5\n", nil, nil, []string{"f.hcl:1", "max_scan_rows", "whole number"}},
		{"bad duration", "\n\ntx_idle_timeout = \"soon\"\n", nil, nil, []string{"f.hcl:3", "tx_idle_timeout", "duration"}},
		{"duration as number", "tx_idle_timeout = 30\n", nil, nil, []string{"f.hcl:1", "tx_idle_timeout", "duration string"}},
		{"syntax", "listen = \n", nil, nil, []string{"f.hcl:1"}},
		{"unknown block", "tlss {\n}\n", nil, nil, []string{"f.hcl:1", "unknown block"}},
		{"two tls blocks", "tls {\n}\ntls {\n}\n", nil, nil, []string{"f.hcl:3", "one tls block"}},
		{"tls key at the top", "tls_ca_file = \"/ca.pem\"\n", nil, nil, []string{"f.hcl:1", "tls block"}},
		{"unknown key in tls", "tls {\n  cert = \"/c.pem\"\n}\n", nil, nil, []string{"f.hcl:2", "tls_cert", "unknown key"}},
		{"ca without a certificate", "tls {\n  ca_file = \"/ca.pem\"\n}\n", nil, nil, []string{"f.hcl:2: tls_ca_file", "tls_cert_file"}},
		{"tokens without a ca", "tls {\n  cert_file = \"/c.pem\"\n  key_file = \"/k.pem\"\n}\nauth_token_file = \"/t\"\n", nil, nil, []string{"f.hcl:5: auth_token_file", "tls_ca_file"}},
		{"admin names without a ca", "", nil, []string{"-tls-admin-names", "ops"}, []string{"flag -tls-admin-names: tls_admin_names", "tls_ca_file"}},
		{"bad value in file", "durability = \"sometimes\"\n", nil, nil, []string{"f.hcl:1: durability", `"sometimes"`, "fsync-log"}},
		{"floor above level", "durability_floor = \"fsync-log\"\n", nil, nil, []string{"f.hcl:1: durability_floor", "stronger"}},
		{"bad address", "listen = \"nowhere\"\n", nil, nil, []string{"f.hcl:1: listen", "host:port"}},
		{"bad metrics address", "metrics_addr = \"9700\"\n", nil, nil, []string{"f.hcl:1: metrics_addr", "host:port"}},
		{"metrics on the gRPC port", "listen = \"127.0.0.1:7700\"\nmetrics_addr = \"127.0.0.1:7700\"\n", nil, nil, []string{"f.hcl:2: metrics_addr", "port of listen", "f.hcl:1"}},
		{"metrics on the gRPC port of every interface", "listen = \":7700\"\n", nil, []string{"-metrics-addr", "127.0.0.1:7700"}, []string{"flag -metrics-addr: metrics_addr", "port of listen"}},
		{"metrics_addr's old name", "metrics_listen = \"127.0.0.1:9700\"\n", nil, nil, []string{"f.hcl:1", "metrics_listen", "unknown key"}},
		{"unknown variable", "", []string{"MMDB_LISTN=x"}, nil, []string{"env MMDB_LISTN", "no such configuration key"}},
		{"bad variable", "", []string{"MMDB_MAX_SCAN_ROWS=lots"}, nil, []string{"env MMDB_MAX_SCAN_ROWS", "integer"}},
		{"bad value from env", "", []string{"MMDB_ROLE=boss"}, nil, []string{"env MMDB_ROLE: role", `"boss"`}},
		{"bad value from flag", "", nil, []string{"-sync-mode", "eventually"}, []string{"flag -sync-mode: sync_mode", `"eventually"`}},
		{"quorum without peers", "sync_mode = \"applied-ack\"\n", nil, nil, []string{"sync_quorum", "peers"}},
		{"sync_standbys names the node", "sync_standbys = [\"b\", \"mmdb\"]\n", nil, nil, []string{"f.hcl:1: sync_standbys", `"mmdb"`}},
		{"sync_standbys repeats", "", nil, []string{"-sync-standbys", "b,c,b"}, []string{"flag -sync-standbys: sync_standbys", `"b"`}},
		{"quorum above sync_standbys", "sync_quorum = 2\nsync_standbys = [\"b\"]\n", nil, nil, []string{"f.hcl:1: sync_quorum", "names only 1"}},
		{"diskless needs no-log", "data_dir = \"\"\ndurability = \"fsync-log\"\n", nil, nil, []string{"f.hcl:1: data_dir", "no-log"}},
		{"duplicate peer", "peer \"b\" {\n addr = \"127.0.0.1:1\"\n}\npeer \"b\" {\n addr = \"127.0.0.1:2\"\n}\n", nil, nil, []string{"peer", `"b"`}},
		{"block in a peer block", "peer \"b\" {\n  addr = \"127.0.0.1:1\"\n  tls {\n    server_name = \"b.example\"\n  }\n}\n", nil, nil, []string{"f.hcl:3: peer", "no tls block"}},
		{"peer without port", "peer \"b\" {\n addr = \"127.0.0.1\"\n}\n", nil, nil, []string{"f.hcl:1: peer", "host:port"}},
		{"half of tls", "tls {\n  cert_file = \"/c.pem\"\n}\n", nil, nil, []string{"f.hcl:2: tls_cert_file", "tls_key_file"}},
		{"the other half of tls", "tls {\n  key_file = \"/k.pem\"\n}\n", nil, nil, []string{"f.hcl:2: tls_key_file: set without tls_cert_file"}},
		{"half of tls from a flag", "", nil, []string{"-tls-key-file", "/k.pem"}, []string{"flag -tls-key-file: tls_key_file: set without tls_cert_file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "f.hcl", tc.file)
			_, err := Load(path, tc.env, parseFlags(t, tc.args...))
			if err == nil {
				t.Fatal("Load accepted it")
			}
			for _, w := range tc.want {
				if w == "f.hcl:1" || strings.HasPrefix(w, "f.hcl:") {
					w = strings.Replace(w, "f.hcl", path, 1)
				}
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestExampleIsValidAndEveryKeyDocumented: the example config loads, and
// docs/configuration.md and the example name every key.
func TestExampleIsValidAndEveryKeyDocumented(t *testing.T) {
	example := filepath.Join("..", "docs", "example.hcl")
	if _, err := Load(example, nil, nil); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		// In the file, tls_cert_file is cert_file in the tls block.
		heading, inFile := k.name, k.name
		if in, ok := strings.CutPrefix(k.name, tlsPrefix); ok {
			heading, inFile = "tls."+in, in
		}
		if !strings.Contains(string(doc), "### `"+heading+"`") {
			t.Errorf("docs/configuration.md has no section for %s", heading)
		}
		if !strings.Contains(string(ex), inFile) {
			t.Errorf("docs/example.hcl does not mention %s", inFile)
		}
	}
}

// TestLoadReportsEveryProblemAtOnce: Load goes on past a stage that
// fails (the file, the environment, the flags) and validates what loaded,
// so one run reports the problems of every stage, as
// docs/configuration.md shows; Validate is skipped only when the file did
// not parse.
func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	path := writeFile(t, "node.hcl", "node = \"n\"\nlsiten = \"x\"\n\ndurability = \"sometimes\"\n")
	_, err := Load(path, []string{"MMDB_MAX_SCAN_ROWS=lots", "MMDB_ROLE=boss"}, parseFlags(t, "-sync-quorum", "many", "-sync-mode", "eventually"))
	if err == nil {
		t.Fatal("Load accepted it")
	}
	for _, w := range []string{
		"conf: invalid configuration:\n",
		path + ":2: lsiten: unknown key",                                    // the file
		path + ":4: durability: \"sometimes\"",                              // Validate, of the file
		"env MMDB_MAX_SCAN_ROWS: max_scan_rows: \"lots\" is not an integer", // the environment
		"env MMDB_ROLE: role: \"boss\"",                                     // Validate, of the environment
		"flag -sync-quorum: sync_quorum: \"many\" is not an integer",        // the flags
		"flag -sync-mode: sync_mode: \"eventually\"",                        // Validate, of the flags
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}

	// A file that does not parse: the environment is still reported, but
	// not Validate's view of a configuration without the file (which
	// would miss the file's peer).
	path = writeFile(t, "broken.hcl", "peer \"b\" {\n  addr = \"127.0.0.1:1\"\n}\nlisten = \n")
	_, err = Load(path, []string{"MMDB_MAX_SCAN_ROWS=lots"}, parseFlags(t, "-sync-mode", "applied-ack"))
	if err == nil || !strings.Contains(err.Error(), path+":4") || !strings.Contains(err.Error(), "env MMDB_MAX_SCAN_ROWS") {
		t.Errorf("a file that does not parse and a bad variable: %v", err)
	} else if strings.Contains(err.Error(), "no peers") {
		t.Errorf("Validate judged the configuration without the file: %v", err)
	}
}

// TestPeerProblemsNameTheirBlock: a problem with a peer names the line of
// its own peer block, not the last block's; peers from a variable name
// the variable.
func TestPeerProblemsNameTheirBlock(t *testing.T) {
	path := writeFile(t, "f.hcl", "peer \"bad name!\" {\n  addr = \"127.0.0.1:1\"\n}\n\npeer \"b\" {\n  addr = \"127.0.0.1\"\n}\n\npeer \"c\" {\n  addr = \"127.0.0.1:3\"\n}\n")
	_, err := Load(path, nil, nil)
	if err == nil {
		t.Fatal("Load accepted it")
	}
	for _, w := range []string{path + `:1: peer: "bad name!"`, path + `:5: peer: "127.0.0.1"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), path+":9") {
		t.Errorf("error %q blames the good peer's block", err)
	}
	_, err = Load(path, []string{"MMDB_PEER=b=127.0.0.1"}, nil)
	if err == nil || !strings.Contains(err.Error(), `env MMDB_PEER: peer: "127.0.0.1"`) {
		t.Errorf("a bad peer from the environment: %v", err)
	}
}

// TestNodeNamesAsDocumented: node names are 1 to 64 letters, digits, '.',
// '_' or '-', the first a letter or digit; Validate's message and
// docs/configuration.md both state the rule about the first character.
func TestNodeNamesAsDocumented(t *testing.T) {
	const first = "the first a letter or digit"
	for _, n := range []string{"a", "9", "a_b.c-d", "A." + strings.Repeat("x", 62)} {
		c := DefaultConfig()
		c.Node = n
		if err := c.Validate(); err != nil {
			t.Errorf("node %q refused: %v", n, err)
		}
	}
	for _, n := range []string{"", "_a", ".a", "-a", "a b", strings.Repeat("x", 65)} {
		c := DefaultConfig()
		c.Node = n
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), first) {
			t.Errorf("node %q: %v; want a refusal saying %q", n, err, first)
		}
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "### `node`\n")
	section, _, _ = strings.Cut(section, "###")
	if !strings.Contains(strings.Join(strings.Fields(section), " "), first) {
		t.Errorf("docs/configuration.md's node section does not say %q:\n%s", first, section)
	}
}

// TestFlagHelpShowsDefaults: the flags' help (mmdbd serve -h, which the
// README presents as the list of keys) shows each key's default, in the
// form the flag takes: read back, it is the default. A key whose default
// is empty shows none.
func TestFlagHelpShowsDefaults(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var help strings.Builder
	fs.SetOutput(&help)
	RegisterFlags(fs)
	fs.PrintDefaults()
	// Each flag's entry is a line "  -name [type]" and a line of help.
	entries := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+).*\n\s+(.*)$`).FindAllStringSubmatch(help.String(), -1) {
		entries[m[1]] = m[2]
	}
	def := DefaultConfig()
	for _, k := range keys {
		e, ok := entries[flagName(k.name)]
		if !ok {
			t.Fatalf("the help has no -%s:\n%s", flagName(k.name), &help)
		}
		want := reflect.ValueOf(k.field(def)).Elem()
		_, shown, found := strings.Cut(e, "(default ")
		if !found {
			if !want.IsZero() {
				t.Errorf("-%s: the help shows no default; the default is %v:\n%s", flagName(k.name), want, e)
			}
			continue
		}
		shown = strings.TrimSuffix(shown, ")")
		c := DefaultConfig()
		reflect.ValueOf(k.field(c)).Elem().SetZero()
		if err := c.setString(k, shown); err != nil {
			t.Errorf("-%s: the help's default %q does not parse: %v", flagName(k.name), shown, err)
			continue
		}
		if got := reflect.ValueOf(k.field(c)).Elem().Interface(); !reflect.DeepEqual(got, want.Interface()) {
			t.Errorf("-%s: the help's default %q reads as %v; the default is %v", flagName(k.name), shown, got, want)
		}
	}
}

// TestLoadFailureIsNotJudged: a key that fails to load keeps its earlier
// value, so Load reports the load's problem and neither judges that value
// nor checks other keys against it: no complaint about a peer's empty
// address when its block failed, or about tls.client_auth without a CA
// when ca_file failed. A later stage that sets the key brings its checks
// back.
func TestLoadFailureIsNotJudged(t *testing.T) {
	path := writeFile(t, "f.hcl", `role = standby
sync_mode = "applied-ack"

peer "b" {
  addr = 7700
}

tls {
  cert_file   = "/c.pem"
  key_file    = "/k.pem"
  ca_file     = 1
  client_auth = true
}

data_dir   = ""
durability = 3
`)
	_, err := Load(path, nil, nil)
	if err == nil {
		t.Fatal("Load accepted it")
	}
	for _, w := range []string{path + ":1: role", path + ":5: peer", path + ":11: tls_ca_file", path + ":16: durability"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	for _, noise := range []string{"is required", "tls_client_auth", "data_dir", "sync_quorum"} {
		if strings.Contains(err.Error(), noise) {
			t.Errorf("error %q judges a key that failed to load: it says %q", err, noise)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != 4 {
		t.Errorf("%d problems, want the 4 keys that failed:\n%v", n, err)
	}

	// The flag sets durability after the file failed to: data_dir = ""
	// is judged against it again.
	_, err = Load(path, nil, parseFlags(t, "-durability", "fsync-log"))
	if err == nil || !strings.Contains(err.Error(), path+":15: data_dir") {
		t.Errorf("durability from a flag after the file's failed: %v", err)
	}
}

// TestRestartOnly: RestartOnly names the keys SIGHUP does not take that
// the file read again changes, with their lines, and none of those it
// takes; every key it knows SIGHUP takes is a key.
func TestRestartOnly(t *testing.T) {
	for k := range reloaded {
		if _, ok := lookupKey(k); !ok {
			t.Errorf("%s, taken on SIGHUP, is no key", k)
		}
	}
	running := DefaultConfig()
	next, err := Load(writeFile(t, "f.hcl", "role = \"standby\"\nsync_mode = \"applied-ack\"\nlog_level = \"debug\"\npeer \"b\" {\n  addr = \"h:1\"\n}\ntls {\n  cert_file = \"c.pem\"\n  key_file = \"k.pem\"\n}\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(running.RestartOnly(next), "; ")
	if want := "log_level (" + next.Origin("log_level") + "); tls_cert_file (" + next.Origin("tls_cert_file") + "); tls_key_file (" + next.Origin("tls_key_file") + ")"; got != want {
		t.Errorf("RestartOnly = %q, want %q", got, want)
	}
	if keys := running.RestartOnly(DefaultConfig()); keys != nil {
		t.Errorf("RestartOnly of the same configuration = %q", keys)
	}
}

// TestSamePort: which metrics_addr takes listen's port.
func TestSamePort(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"127.0.0.1:7700", "127.0.0.1:7700", true},
		{":7700", "127.0.0.1:7700", true},
		{"[::]:7700", "10.0.0.1:7700", true},
		{"10.0.0.1:7700", "0.0.0.0:7700", true},
		{"127.0.0.1:7700", "127.0.0.1:9700", false},
		{"127.0.0.1:7700", "10.0.0.1:7700", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{"127.0.0.1:7700", "", false},
	} {
		if got := samePort(c.a, c.b); got != c.want {
			t.Errorf("samePort(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

// TestDurationMinimums: a duration key below its least value is refused,
// naming the key, the value, the least and where it was set; at the least
// it loads. Before, any positive duration passed, and "1ns" would have
// the node spin on its timers (the idle transaction reaper, the mmap-log
// sync, the checkpoint loop).
func TestDurationMinimums(t *testing.T) {
	for _, c := range []struct {
		key   string
		least time.Duration
	}{
		{"tx_idle_timeout", minTxIdleTimeout},
		{"shutdown_timeout", minShutdownTimeout},
		{"mmap_sync_interval", minMmapSyncInterval},
		{"checkpoint_interval", minCheckpointInterval},
		{"sync_timeout", minSyncTimeout},
	} {
		t.Run(c.key, func(t *testing.T) {
			below := c.least - time.Nanosecond
			path := writeFile(t, "f.hcl", "\n"+c.key+" = \"1ns\"\n")
			_, err := Load(path, nil, nil)
			if err == nil {
				t.Fatalf("%s = \"1ns\" loaded", c.key)
			}
			for _, w := range []string{path + ":2: " + c.key + ": 1ns", c.least.String()} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			_, err = Load("", []string{envName(c.key) + "=" + below.String()}, nil)
			if w := "env " + envName(c.key) + ": " + c.key + ": " + below.String(); err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s just below its least from the environment: %v, want %q", c.key, err, w)
			}
			if _, err := Load("", nil, parseFlags(t, "-"+flagName(c.key), c.least.String())); err != nil {
				t.Errorf("%s at its least: %v", c.key, err)
			}
		})
	}
	// mmap_sync_interval 0 syncs only when a segment is full; a negative
	// one is refused.
	if _, err := Load("", []string{"MMDB_MMAP_SYNC_INTERVAL=0s"}, nil); err != nil {
		t.Errorf("mmap_sync_interval 0: %v", err)
	}
	if _, err := Load("", []string{"MMDB_MMAP_SYNC_INTERVAL=-1s"}, nil); err == nil || !strings.Contains(err.Error(), "mmap_sync_interval: -1s") {
		t.Errorf("mmap_sync_interval -1s: %v", err)
	}
}

// TestPeerAddressesAreDistinct: two peers at one address, or a peer at
// the node's own listen address, are refused, naming both and where each
// was set. Before, they loaded, and the node took every link from that
// address for the first peer (PeerAt), so the second's was always
// refused.
func TestPeerAddressesAreDistinct(t *testing.T) {
	path := writeFile(t, "f.hcl", "listen = \"127.0.0.1:7001\"\npeer \"b\" {\n  addr = \"127.0.0.1:7002\"\n}\npeer \"c\" {\n  addr = \"127.0.0.1:7002\"\n}\npeer \"d\" {\n  addr = \"127.0.0.1:7001\"\n}\n")
	_, err := Load(path, nil, nil)
	if err == nil {
		t.Fatal("Load accepted two peers at one address and a peer at listen's")
	}
	for _, w := range []string{
		path + `:5: peer: "c" has the address "127.0.0.1:7002" of the peer "b" (` + path + `:2)`,
		path + `:8: peer: "d" has the address "127.0.0.1:7001" this node listens on (listen, ` + path + `:1)`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), path+":2: peer") {
		t.Errorf("error %q blames the first peer at the address", err)
	}
	_, err = Load("", []string{"MMDB_PEER=b=127.0.0.1:7002,c=127.0.0.1:7002"}, nil)
	if w := `env MMDB_PEER: peer: "c" has the address "127.0.0.1:7002" of the peer "b" (env MMDB_PEER)`; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("two peers at one address from the environment: %v, want %q", err, w)
	}
	_, err = Load("", nil, parseFlags(t, "-peer", "b=127.0.0.1:7700"))
	if w := `flag -peer: peer: "b" has the address "127.0.0.1:7700" this node listens on (listen, default)`; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("a peer at the default listen address: %v, want %q", err, w)
	}
	if _, err := Load("", nil, parseFlags(t, "-peer", "b=127.0.0.1:7002", "-peer", "c=127.0.0.2:7002")); err != nil {
		t.Errorf("two peers on one port of different hosts: %v", err)
	}
}

// TestLogChannelsAreDistinctDirectories: two log channels that name one
// directory in two spellings ("/d" and "/d/", "log" and "./log") are
// refused like two that repeat it: each channel names its segments by
// number alone, so the second would rename its segment over the
// first's, and the commits the first wrote there would be lost.
func TestLogChannelsAreDistinctDirectories(t *testing.T) {
	for _, chans := range []string{`["/d", "/d"]`, `["/d", "/d/"]`, `["log", "./log"]`, `["/d/a", "/d/b/../a"]`, `["/d", ""]`} {
		path := writeFile(t, "node.hcl", "log_channels = "+chans+"\n")
		_, err := Load(path, nil, nil)
		if err == nil || !strings.Contains(err.Error(), path+":1: log_channels:") {
			t.Errorf("log_channels = %s: %v, want an error naming the key and line", chans, err)
		}
	}
	for _, chans := range []string{`["/d1", "/d2"]`, `["log", "log2"]`} {
		if _, err := Load(writeFile(t, "node.hcl", "log_channels = "+chans+"\n"), nil, nil); err != nil {
			t.Errorf("log_channels = %s: %v", chans, err)
		}
	}
}

// TestLogSegmentBytesRange: at least 1 MiB, so that segment switches
// (each a file made, synced and renamed) do not come every few commits,
// and under 4 GiB, since a block records in 32 bits how much of its
// segment is synced.
func TestLogSegmentBytesRange(t *testing.T) {
	for v, ok := range map[string]bool{"1048576": true, "8388608": true, "4294967295": true, "1048575": false, "4294967296": false, "0": false, "-1": false} {
		_, err := Load("", []string{"MMDB_LOG_SEGMENT_BYTES=" + v}, nil)
		if ok && err != nil || !ok && (err == nil || !strings.Contains(err.Error(), "log_segment_bytes: "+v+" is out of range")) {
			t.Errorf("log_segment_bytes %s: %v", v, err)
		}
	}
}
