package main

import (
	"flag"
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
			srv, _ := servertest.Start(t, func(c *conf.Config) { c.Node, c.Role = "b", role })
			var logs strings.Builder
			reload(srv, load, &role, hclog.New(&hclog.LoggerOptions{Output: &logs}))
			took := strings.Contains(logs.String(), "SIGHUP: took the sync settings")
			if refused := strings.Contains(logs.String(), "nothing changed"); took == refused || took != tc.ok {
				t.Errorf("SIGHUP takes the file: %v, want %v:\n%s", took, tc.ok, &logs)
			}
		})
	}
}
