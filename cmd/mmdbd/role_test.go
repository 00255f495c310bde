package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/servertest"
)

// TestSyncSettingsStartAndSIGHUPAgree: a file's sync settings are
// accepted or refused alike by a start (serve's load) and by a SIGHUP to
// a running node (reload), whatever the file's role. Sync settings that
// wait for standbys need peers on a standby or propagator too: it commits
// with them once promoted.
func TestSyncSettingsStartAndSIGHUPAgree(t *testing.T) {
	cases := []struct {
		name, file string
		ok         bool
	}{
		{"standby waits without peers", "role = \"standby\"\nsync_mode = \"received-ack\"\n", false},
		{"propagator waits without peers", "role = \"propagator\"\nsync_mode = \"applied-ack\"\n", false},
		{"standby waits with a peer", "role = \"standby\"\nsync_mode = \"received-ack\"\npeer \"a\" {\n  addr = \"127.0.0.1:1\"\n}\n", true},
		{"standby waits for no standby", "role = \"standby\"\nsync_mode = \"applied-ack\"\nsync_quorum = 0\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.hcl")
			if err := os.WriteFile(path, []byte("node = \"b\"\n"+tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			load := configFlags(fs)
			if err := fs.Parse([]string{"-config", path}); err != nil {
				t.Fatal(err)
			}

			if _, err := load(); (err == nil) != tc.ok { // what serve starts with
				t.Errorf("a start takes the file: %v, want %v (%v)", err == nil, tc.ok, err)
			}

			// A standby that runs async with no peers reads the file
			// again.
			role := conf.RoleStandby
			var running *conf.Config
			srv, _ := servertest.Start(t, func(c *conf.Config) { c.Node, c.Role, running = "b", role, c })
			var logs strings.Builder
			reload(srv, running, load, &role, hclog.New(&hclog.LoggerOptions{Output: &logs}))
			took := strings.Contains(logs.String(), "SIGHUP: took the sync settings")
			if refused := strings.Contains(logs.String(), "nothing changed"); took == refused || took != tc.ok {
				t.Errorf("SIGHUP takes the file: %v, want %v:\n%s", took, tc.ok, &logs)
			}
		})
	}
}

// TestSIGHUPNamesKeysThatNeedARestart: a SIGHUP file that changes keys
// a running node does not take (a tls block and a token file added,
// the log level) makes the node warn, naming each key and its line,
// where it used to say nothing, and say it read the certificate and
// token files again although it has none. A file that changes only
// keys SIGHUP takes draws no warning.
func TestSIGHUPNamesKeysThatNeedARestart(t *testing.T) {
	var running *conf.Config
	srv, _ := servertest.Start(t, func(c *conf.Config) { c.Node, running = "b", c })
	path := filepath.Join(t.TempDir(), "node.hcl")
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	load := configFlags(fs)
	if err := fs.Parse([]string{"-config", path}); err != nil {
		t.Fatal(err)
	}
	same := fmt.Sprintf("node = %q\ndata_dir = %q\n", running.Node, running.DataDir)
	hup := func(file string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(same+file), 0o644); err != nil {
			t.Fatal(err)
		}
		role := running.Role
		var logs strings.Builder
		reload(srv, running, load, &role, hclog.New(&hclog.LoggerOptions{Output: &logs}))
		return logs.String()
	}

	logs := hup("sync_timeout = \"3s\"\n")
	if !strings.Contains(logs, "SIGHUP: took the sync settings") || strings.Contains(logs, "only a restart") {
		t.Errorf("a file that changes sync_timeout alone:\n%s", logs)
	}
	if strings.Contains(logs, "certificate, CA and token files again") {
		t.Errorf("a node without TLS or tokens says it read their files again:\n%s", logs)
	}

	logs = hup("log_level = \"debug\"\ntls {\n  cert_file = \"/etc/mmdb/node.pem\"\n  key_file = \"/etc/mmdb/node-key.pem\"\n  ca_file = \"/etc/mmdb/ca.pem\"\n}\nauth_token_file = \"/etc/mmdb/tokens\"\n")
	if !strings.Contains(logs, "only a restart takes") {
		t.Fatalf("a file that adds TLS and tokens to a running node without them draws no warning:\n%s", logs)
	}
	for _, key := range []string{"log_level (" + path + ":3)", "tls_cert_file (" + path + ":5)", "tls_key_file (" + path + ":6)", "tls_ca_file (" + path + ":7)", "auth_token_file (" + path + ":9)"} {
		if !strings.Contains(logs, key) {
			t.Errorf("the warning does not name %s:\n%s", key, logs)
		}
	}
	if strings.Contains(logs, "certificate, CA and token files again") {
		t.Errorf("a node without TLS or tokens says it read their files again:\n%s", logs)
	}

	// A file that renames the node, and names its old name a peer (valid
	// for the new name), changes nothing: the node still runs as b.
	same = fmt.Sprintf("node = \"c\"\ndata_dir = %q\n", running.DataDir)
	logs = hup("peer \"b\" {\n  addr = \"127.0.0.1:9\"\n}\n")
	if !strings.Contains(logs, "renames the node") || strings.Contains(logs, "took the peers") {
		t.Fatalf("a file that renames the node:\n%s", logs)
	}
}
