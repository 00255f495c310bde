package conf

import (
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// docsConfigs are the configuration files docs/ must hold: the example,
// the failover pair and its diskless reader (docs/operations.md), and the
// Docker image's default (the Dockerfile copies it).
var docsConfigs = []string{
	"example.hcl",
	"examples/pair-a.hcl",
	"examples/pair-b.hcl",
	"examples/diskless.hcl",
	"examples/docker.hcl",
}

// TestDocsConfigsLoad: every HCL file under docs/ loads with Load, as
// `mmdbd serve -config FILE` loads it.
func TestDocsConfigsLoad(t *testing.T) {
	docs := filepath.Join("..", "docs")
	var files []string
	err := filepath.WalkDir(docs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".hcl") {
			rel, err := filepath.Rel(docs, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range docsConfigs {
		if !slices.Contains(files, want) {
			t.Errorf("docs/%s is missing (found %q)", want, files)
		}
	}
	for _, rel := range files {
		t.Run(rel, func(t *testing.T) {
			loadDoc(t, filepath.Join(docs, filepath.FromSlash(rel)))
		})
	}
}

// TestFailoverExamplesAgree: the failover pair and its diskless reader
// name each other as docs/operations.md describes: A ships to B, B relays
// to R, R loads its image from B, and every node is known by one address.
func TestFailoverExamplesAgree(t *testing.T) {
	dir := filepath.Join("..", "docs", "examples")
	a := loadDoc(t, filepath.Join(dir, "pair-a.hcl"))
	b := loadDoc(t, filepath.Join(dir, "pair-b.hcl"))
	r := loadDoc(t, filepath.Join(dir, "diskless.hcl"))

	peerNames := func(c *Config) []string {
		var names []string
		for _, p := range c.Peers {
			names = append(names, p.Name)
		}
		sort.Strings(names)
		return names
	}
	sorted := func(s ...string) []string { sort.Strings(s); return s }
	for _, tc := range []struct {
		c          *Config
		role, dur  string
		peers      []string
		diskless   bool
		file, note string
	}{
		{a, RolePrimary, DurabilityFsyncLog, []string{b.Node}, false, "pair-a.hcl", "A ships to B alone"},
		{b, RolePropagator, DurabilityFsyncLog, sorted(a.Node, r.Node), false, "pair-b.hcl", "B follows A and relays to R"},
		{r, RoleStandby, DurabilityNoLog, []string{b.Node}, true, "diskless.hcl", "R follows B"},
	} {
		if tc.c.Role != tc.role {
			t.Errorf("%s: role %q, want %q", tc.file, tc.c.Role, tc.role)
		}
		if tc.c.Durability != tc.dur {
			t.Errorf("%s: durability %q, want %q", tc.file, tc.c.Durability, tc.dur)
		}
		if got := peerNames(tc.c); !slices.Equal(got, tc.peers) {
			t.Errorf("%s: peers %q, want %q (%s)", tc.file, got, tc.peers, tc.note)
		}
		if (tc.c.DataDir == "") != tc.diskless {
			t.Errorf("%s: data_dir %q", tc.file, tc.c.DataDir)
		}
	}
	// A and B take each other's place: what a commit waits for must not
	// change with a failover.
	if a.SyncMode == SyncAsync || a.SyncMode != b.SyncMode || a.SyncQuorum != b.SyncQuorum ||
		a.SyncTimeout != b.SyncTimeout || a.OnSyncTimeout != b.OnSyncTimeout || a.DurabilityFloor != b.DurabilityFloor {
		t.Errorf("pair-a.hcl and pair-b.hcl differ in sync_mode, sync_quorum, sync_timeout, on_sync_timeout or durability_floor, or are async: %+v / %+v",
			[]any{a.SyncMode, a.SyncQuorum, a.SyncTimeout, a.OnSyncTimeout, a.DurabilityFloor},
			[]any{b.SyncMode, b.SyncQuorum, b.SyncTimeout, b.OnSyncTimeout, b.DurabilityFloor})
	}
	// Each counts only the other towards its quorum: the diskless reader
	// never stands in for the node a failover promotes.
	if !slices.Equal(a.SyncStandbys, []string{b.Node}) || !slices.Equal(b.SyncStandbys, []string{a.Node}) {
		t.Errorf("sync_standbys: pair-a.hcl %q, pair-b.hcl %q; each must name only its partner", a.SyncStandbys, b.SyncStandbys)
	}
	// One address per node, on the port it listens on.
	addrs := map[string]string{}
	known := func(name, addr, where string) {
		if prev, ok := addrs[name]; ok && prev != addr {
			t.Errorf("%s names %s at %s, elsewhere at %s", where, name, addr, prev)
		}
		addrs[name] = addr
	}
	for file, c := range map[string]*Config{"pair-a.hcl": a, "pair-b.hcl": b, "diskless.hcl": r} {
		for _, p := range c.Peers {
			known(p.Name, p.Addr, file)
		}
	}
	known(b.Node, r.BootstrapFrom, "diskless.hcl's bootstrap_from")
	for file, c := range map[string]*Config{"pair-a.hcl": a, "pair-b.hcl": b, "diskless.hcl": r} {
		_, port, err := net.SplitHostPort(c.Listen)
		if err != nil {
			t.Fatalf("%s: listen %q: %v", file, c.Listen, err)
		}
		if _, peerPort, _ := net.SplitHostPort(addrs[c.Node]); peerPort != port {
			t.Errorf("%s listens on port %s; its peers dial %s", file, port, addrs[c.Node])
		}
	}
}

// loadDoc loads a configuration file of docs/ with Load.
func loadDoc(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
