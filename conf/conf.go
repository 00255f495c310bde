// Package conf is mmdbd's configuration. A Config starts from
// DefaultConfig, then takes an HCL file, then MMDB_* environment variables,
// then command-line flags, each overriding the one before; Validate checks
// the result and names, for every problem, the key and where it was set
// (file and line, variable or flag).
//
// Every key has the three spellings: `data_dir` in the file, `-data-dir` as a
// flag and MMDB_DATA_DIR in the environment. docs/configuration.md documents
// each key; keys.go lists them.
package conf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Config is a node's configuration. Fields are named after their keys.
type Config struct {
	Node                string
	Listen              string
	DataDir             string
	LogLevel            string
	LogFormat           string
	MaxMessageBytes     int64
	MaxScanRows         int64
	MaxValueBytes       int64
	MaxOpenTransactions int64
	MaxTxBytes          int64
	TxIdleTimeout       time.Duration
	ShutdownTimeout     time.Duration
	MetricsAddr         string

	// Durability and the log (issue #4).
	Durability       string
	DurabilityFloor  string
	LogChannels      []string
	LogSegmentBytes  int64
	MmapSyncInterval time.Duration
	// RecoveryIgnoreCorruption lets recovery keep what precedes corruption
	// in the log and set the rest aside, instead of refusing to start.
	RecoveryIgnoreCorruption bool

	// Checkpoints (issue #5).
	CheckpointInterval time.Duration
	CheckpointLogBytes int64
	LogRetentionBytes  int64
	BootstrapFrom      string
	// FromImage is no key: serve -from-image sets it, to start a node
	// once from an image file (mmdbd image fetch).
	FromImage string

	// Replication (issue #6).
	Role       string
	Peers      []Peer
	SyncMode   string
	SyncQuorum int64
	// SyncStandbys names the standbys whose acknowledgements count
	// towards SyncQuorum; empty means every standby counts.
	SyncStandbys  []string
	SyncTimeout   time.Duration
	OnSyncTimeout string

	// Security (issue #7): the tls block in the file.
	TLSCertFile   string
	TLSKeyFile    string
	TLSCAFile     string
	TLSClientAuth bool
	TLSAdminNames []string
	AuthTokenFile string

	// origin records where each key was last set, for messages;
	// peerOrigins where each of Peers was, when the file's peer blocks
	// set them; failed the keys whose last setting failed to load.
	origin      map[string]string
	peerOrigins []string
	failed      map[string]bool
}

// Peer is another node of the cluster.
type Peer struct {
	Name string
	Addr string
}

// The values of the enumerated keys.
const (
	DurabilityNoLog    = "no-log"
	DurabilityMmapLog  = "mmap-log"
	DurabilityFsyncLog = "fsync-log"

	RolePrimary    = "primary"
	RoleStandby    = "standby"
	RolePropagator = "propagator"

	SyncAsync       = "async"
	SyncReceivedAck = "received-ack"
	SyncAppliedAck  = "applied-ack"
)

// durabilities lists the levels from weakest to strongest.
var durabilities = []string{DurabilityNoLog, DurabilityMmapLog, DurabilityFsyncLog}

// DefaultConfig returns the embedded defaults: a primary on 127.0.0.1:7700
// with its data in ./mmdb-data and no log.
func DefaultConfig() *Config {
	return &Config{
		Node:                "mmdb",
		Listen:              "127.0.0.1:7700",
		DataDir:             "./mmdb-data",
		LogLevel:            "info",
		LogFormat:           "text",
		MaxMessageBytes:     4 << 20,
		MaxScanRows:         10000,
		MaxValueBytes:       32 << 10,
		MaxOpenTransactions: 10000,
		MaxTxBytes:          64 << 20,
		TxIdleTimeout:       30 * time.Second,
		ShutdownTimeout:     10 * time.Second,

		Durability:       DurabilityNoLog,
		DurabilityFloor:  DurabilityNoLog,
		LogSegmentBytes:  64 << 20,
		MmapSyncInterval: time.Second,

		CheckpointInterval: 5 * time.Minute,
		CheckpointLogBytes: 1 << 30,
		LogRetentionBytes:  4 << 30,

		Role:          RolePrimary,
		SyncMode:      SyncAsync,
		SyncQuorum:    1,
		SyncTimeout:   2 * time.Second,
		OnSyncTimeout: "degrade",

		origin: map[string]string{},
	}
}

// LogDirs returns the log's channel directories: log_channels, or one
// channel in data_dir/log; none on a diskless node.
func (c *Config) LogDirs() []string {
	switch {
	case c.DataDir == "":
		return nil
	case len(c.LogChannels) > 0:
		return c.LogChannels
	}
	return []string{filepath.Join(c.DataDir, "log")}
}

// PeerAt returns the name of the peer at addr, and false if no peer is
// there: the name a node's certificate must carry when it is dialled.
func (c *Config) PeerAt(addr string) (string, bool) { return PeerAt(c.Peers, addr) }

// PeerAt returns the name of the one of peers at addr, and false if
// none is there.
func PeerAt(peers []Peer, addr string) (string, bool) {
	for _, p := range peers {
		if p.Addr == addr {
			return p.Name, true
		}
	}
	return "", false
}

// Origin says where key was last set: "mmdb.hcl:3", "env MMDB_LISTEN",
// "flag -listen", or "default".
func (c *Config) Origin(key string) string {
	if o, ok := c.origin[key]; ok {
		return o
	}
	return "default"
}

// IsSet reports whether key was set anywhere but the defaults.
func (c *Config) IsSet(key string) bool {
	_, ok := c.origin[key]
	return ok
}

// reloaded are the keys a running node takes again from its file on
// SIGHUP (docs/configuration.md); the others need a restart.
var reloaded = map[string]bool{
	"role": true, "peer": true, "sync_mode": true, "sync_quorum": true, "sync_standbys": true, "sync_timeout": true, "on_sync_timeout": true,
}

// RestartOnly returns the keys a running node does not take on SIGHUP
// whose values differ between c, the configuration the node runs with,
// and next, its configuration read again, each with where next sets it
// ("log_level (node.hcl:3)"): the node keeps c's values until a restart.
func (c *Config) RestartOnly(next *Config) []string {
	var out []string
	for _, k := range keys {
		if !reloaded[k.name] && c.text(k) != next.text(k) {
			out = append(out, fmt.Sprintf("%s (%s)", k.name, next.Origin(k.name)))
		}
	}
	return out
}

// peerOrigin says where Peers[i] was set: its peer block in the file,
// or where the key peer was.
func (c *Config) peerOrigin(i int) string {
	if len(c.peerOrigins) == len(c.Peers) {
		return c.peerOrigins[i]
	}
	return c.Origin("peer")
}

func (c *Config) setOrigin(key, where string) {
	if c.origin == nil {
		c.origin = map[string]string{}
	}
	c.origin[key] = where
	delete(c.failed, key) // a later setting replaces the one that failed
}

// loadFailures records the keys of a stage's problems (the file's, the
// environment's, the flags') as failed to load, each keeping its earlier
// value, which is not what the operator asked for; and returns the
// problems as one error.
func (c *Config) loadFailures(problems []Problem) error {
	if len(problems) > 0 && c.failed == nil {
		c.failed = map[string]bool{}
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		c.failed[p.Key] = true
		errs[i] = p
	}
	return errors.Join(errs...)
}

// loaded reports whether none of keys failed to load: a check that reads
// one that did would judge a value nobody asked for.
func (c *Config) loaded(keys ...string) bool {
	for _, k := range keys {
		if c.failed[k] {
			return false
		}
	}
	return true
}

// Problem is one thing Validate found wrong.
type Problem struct {
	Key    string
	Origin string
	Msg    string
}

func (p Problem) Error() string { return fmt.Sprintf("%s: %s: %s", p.Origin, p.Key, p.Msg) }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate checks every key and the keys against each other. It reports all
// problems at once, each a Problem naming the key and where it was set.
// A key that failed to load (LoadFile, LoadEnv, Flags.Apply reported it)
// is not judged, nor are the checks that read it with other keys: its
// value is an earlier one, and a problem found with it would only hide
// the load's.
func (c *Config) Validate() error {
	var errs []error
	badAt := func(origin, key, format string, args ...any) {
		if c.loaded(key) {
			errs = append(errs, Problem{Key: key, Origin: origin, Msg: fmt.Sprintf(format, args...)})
		}
	}
	bad := func(key, format string, args ...any) { badAt(c.Origin(key), key, format, args...) }
	if !nameRE.MatchString(c.Node) {
		bad("node", "%q is not a node name: 1 to 64 letters, digits, '.', '_' or '-', the first a letter or digit", c.Node)
	}
	c.checkAddr(bad, "listen", c.Listen, true)
	c.checkAddr(bad, "metrics_addr", c.MetricsAddr, false)
	c.checkAddr(bad, "bootstrap_from", c.BootstrapFrom, false)
	if c.loaded("listen") && samePort(c.Listen, c.MetricsAddr) {
		bad("metrics_addr", "%q takes the port of listen %q (%s): the metrics endpoint needs a port of its own", c.MetricsAddr, c.Listen, c.Origin("listen"))
	}
	if c.BootstrapFrom != "" && c.FromImage != "" {
		bad("bootstrap_from", "set together with -from-image %s: a node starts from one image", c.FromImage)
	}
	oneOf(bad, "log_level", c.LogLevel, "trace", "debug", "info", "warn", "error", "off")
	oneOf(bad, "log_format", c.LogFormat, "text", "json")
	// A message must hold a whole row (up to 32 KiB) with room to spare.
	between(bad, "max_message_bytes", c.MaxMessageBytes, 64<<10, 1<<30)
	between(bad, "max_scan_rows", c.MaxScanRows, 1, 1<<24)
	between(bad, "max_value_bytes", c.MaxValueBytes, 1, 1<<30)
	if c.loaded("max_message_bytes") && c.MaxValueBytes > c.MaxMessageBytes/2 {
		bad("max_value_bytes", "%d is more than half of max_message_bytes (%d)", c.MaxValueBytes, c.MaxMessageBytes)
	}
	between(bad, "max_open_transactions", c.MaxOpenTransactions, 1, 1<<24)
	between(bad, "max_tx_bytes", c.MaxTxBytes, 1<<20, 1<<40)
	atLeast(bad, "tx_idle_timeout", c.TxIdleTimeout, minTxIdleTimeout, "the node checks for idle transactions every quarter of it")
	atLeast(bad, "shutdown_timeout", c.ShutdownTimeout, minShutdownTimeout, "less gives in-flight calls no time to finish")

	oneOf(bad, "durability", c.Durability, durabilities...)
	oneOf(bad, "durability_floor", c.DurabilityFloor, durabilities...)
	if c.loaded("durability") && DurabilityRank(c.DurabilityFloor) > DurabilityRank(c.Durability) {
		bad("durability_floor", "%q is stronger than durability %q", c.DurabilityFloor, c.Durability)
	}
	if c.loaded("durability") && c.DataDir == "" && c.Durability != DurabilityNoLog {
		bad("data_dir", "empty (a diskless node) needs durability %q, not %q", DurabilityNoLog, c.Durability)
	}
	seen := map[string]string{} // each directory, cleaned, the channel that names it
	for _, ch := range c.LogChannels {
		// Segment files are named by their number alone: two channels
		// in one directory ("/d" and "/d/", "log" and "./log") would
		// write over each other's segments.
		dir := filepath.Clean(ch)
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		switch first, ok := seen[dir]; {
		case ch == "":
			bad("log_channels", "each channel needs its own non-empty directory; one is empty")
		case ok:
			bad("log_channels", "each channel needs its own directory; %q and %q are the same directory", first, ch)
		}
		seen[dir] = ch
	}
	if c.loaded("data_dir") && c.DataDir == "" && len(c.LogChannels) > 0 {
		bad("log_channels", "set, but data_dir is empty (a diskless node), which keeps no log")
	}
	if len(c.LogChannels) > 64 {
		bad("log_channels", "%d channels; at most 64", len(c.LogChannels))
	}
	between(bad, "log_segment_bytes", c.LogSegmentBytes, 1<<20, math.MaxUint32)
	if c.MmapSyncInterval != 0 {
		atLeast(bad, "mmap_sync_interval", c.MmapSyncInterval, minMmapSyncInterval, "each interval syncs every channel's mapped files; 0 syncs only when a segment is full")
	}
	atLeast(bad, "checkpoint_interval", c.CheckpointInterval, minCheckpointInterval, "a checkpoint writes the whole database")
	between(bad, "checkpoint_log_bytes", c.CheckpointLogBytes, 1<<20, 1<<50)
	between(bad, "log_retention_bytes", c.LogRetentionBytes, 0, 1<<50)

	oneOf(bad, "role", c.Role, RolePrimary, RoleStandby, RolePropagator)
	names := map[string]bool{}
	if c.loaded("node") {
		names[c.Node] = true
	}
	at := map[string]int{} // each address the index of the first peer there
	for i, p := range c.Peers {
		badPeer := func(key, format string, args ...any) { badAt(c.peerOrigin(i), key, format, args...) }
		if !nameRE.MatchString(p.Name) || names[p.Name] {
			badPeer("peer", "%q is not a valid peer name, or repeats the node's or another peer's", p.Name)
		}
		names[p.Name] = true
		c.checkAddr(badPeer, "peer", p.Addr, true)
		if p.Addr == "" {
			continue
		}
		// The node knows a peer it dials by its address (PeerAt): of
		// two peers at one address, the second's link would always be
		// refused, its certificate checked for the first's name.
		if j, ok := at[p.Addr]; ok {
			badPeer("peer", "%q has the address %q of the peer %q (%s): each peer is another node, at its own address", p.Name, p.Addr, c.Peers[j].Name, c.peerOrigin(j))
		} else {
			at[p.Addr] = i
		}
		if c.loaded("listen") && p.Addr == c.Listen {
			badPeer("peer", "%q has the address %q this node listens on (listen, %s): a peer is another node", p.Name, p.Addr, c.Origin("listen"))
		}
	}
	oneOf(bad, "sync_mode", c.SyncMode, SyncAsync, SyncReceivedAck, SyncAppliedAck)
	between(bad, "sync_quorum", c.SyncQuorum, 0, 64)
	// More standbys than peers may answer: those behind a propagator
	// count too. A standby or propagator commits with these settings
	// once promoted (mmdbd promote reads no file), so it needs peers as
	// a primary does; SIGHUP refuses such a file for every role too.
	if c.loaded("sync_mode", "peer") && c.SyncMode != SyncAsync && c.SyncQuorum > 0 && len(c.Peers) == 0 {
		bad("sync_quorum", "%d standbys must acknowledge but no peers are configured", c.SyncQuorum)
	}
	counted := map[string]bool{}
	for _, n := range c.SyncStandbys {
		if !nameRE.MatchString(n) || (n == c.Node && c.loaded("node")) || counted[n] {
			bad("sync_standbys", "%q is not a node name, or is this node's, or repeats", n)
		}
		counted[n] = true
	}
	if c.loaded("sync_standbys") && len(c.SyncStandbys) > 0 && c.SyncQuorum > int64(len(c.SyncStandbys)) {
		bad("sync_quorum", "%d standbys must acknowledge but sync_standbys names only %d", c.SyncQuorum, len(c.SyncStandbys))
	}
	atLeast(bad, "sync_timeout", c.SyncTimeout, minSyncTimeout, "less is no time for a standby to answer")
	oneOf(bad, "on_sync_timeout", c.OnSyncTimeout, "degrade", "block")

	c.validateSecurity(bad)
	return errors.Join(errs...)
}

// DurabilityRank orders durability levels, weakest first; -1 for an unknown
// level.
func DurabilityRank(level string) int {
	for i, l := range durabilities {
		if l == level {
			return i
		}
	}
	return -1
}

func (c *Config) checkAddr(bad func(string, string, ...any), key, addr string, required bool) {
	if addr == "" {
		if required {
			bad(key, "an address (host:port) is required")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		bad(key, "%q is not host:port: %v", addr, err)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && key != "listen" && key != "metrics_addr") {
		bad(key, "%q: port %q is not a number from 1 to 65535", addr, port)
	}
}

// samePort reports whether two listen addresses (host:port) would take
// the same port: the same non-zero port, on the same host or with either
// host a wildcard (empty, 0.0.0.0, ::).
func samePort(a, b string) bool {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return ha == hb || wild(ha) || wild(hb)
}

func oneOf(bad func(string, string, ...any), key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func between(bad func(string, string, ...any), key string, v, lo, hi int64) {
	if v < lo || v > hi {
		bad(key, "%d is out of range [%d, %d]", v, lo, hi)
	}
}

// The least the duration keys may be (docs/configuration.md): a tiny
// interval or timeout would have the node spin on its timer (the idle
// transaction reaper, the mmap-log sync, the checkpoint loop) or give
// nothing the time to happen (a standby's answer, a graceful shutdown).
const (
	minTxIdleTimeout      = 10 * time.Millisecond
	minShutdownTimeout    = 100 * time.Millisecond
	minMmapSyncInterval   = 10 * time.Millisecond
	minCheckpointInterval = 10 * time.Millisecond
	minSyncTimeout        = time.Millisecond
)

// atLeast refuses a duration below lo, saying why lo is the least.
func atLeast(bad func(string, string, ...any), key string, d, lo time.Duration, why string) {
	if d < lo {
		bad(key, "%s is less than %s, the least it may be: %s", d, lo, why)
	}
}

// validateSecurity checks the tls block and auth_token_file together.
func (c *Config) validateSecurity(bad func(string, string, ...any)) {
	if c.loaded("tls_cert_file", "tls_key_file") && (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		// Name the one that was set, and where.
		set, unset := "tls_cert_file", "tls_key_file"
		if c.TLSCertFile == "" {
			set, unset = unset, set
		}
		bad(set, "set without %s: tls_cert_file and tls_key_file go together", unset)
	}
	if c.loaded("tls_cert_file") && c.TLSCAFile != "" && c.TLSCertFile == "" {
		bad("tls_ca_file", "set without tls_cert_file: a node that checks its callers' certificates serves TLS with its own")
	}
	if c.loaded("tls_ca_file") && c.TLSClientAuth && c.TLSCAFile == "" {
		bad("tls_client_auth", "needs tls_ca_file to verify the certificates it requires")
	}
	if c.loaded("tls_ca_file") && len(c.TLSAdminNames) > 0 && c.TLSCAFile == "" {
		bad("tls_admin_names", "needs tls_ca_file: without it nobody is checked")
	}
	for _, n := range c.TLSAdminNames {
		if n == "" {
			bad("tls_admin_names", "holds an empty name")
		}
	}
	if c.loaded("tls_ca_file") && c.AuthTokenFile != "" && c.TLSCAFile == "" {
		bad("auth_token_file", "needs tls_cert_file and tls_ca_file: tokens must not travel in the clear, and peers and operators authenticate with certificates")
	}
}
