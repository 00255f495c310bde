package conf

import (
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// key is one configuration key: its file name, its help, and the field it
// sets. The flag is the name with dashes and the environment variable is
// MMDB_ and the name in capitals.
type key struct {
	name  string
	help  string
	field func(c *Config) any // a pointer to the field
}

// keys lists every key, in the order docs/configuration.md gives them.
var keys = []key{
	{"node", "this node's name, unique among its peers", func(c *Config) any { return &c.Node }},
	{"listen", "the gRPC address to serve on (host:port; port 0 picks one)", func(c *Config) any { return &c.Listen }},
	{"data_dir", "the directory for the log and checkpoint images; empty for a diskless node", func(c *Config) any { return &c.DataDir }},
	{"log_level", "trace, debug, info, warn, error or off", func(c *Config) any { return &c.LogLevel }},
	{"log_format", "text or json", func(c *Config) any { return &c.LogFormat }},
	{"max_message_bytes", "the largest gRPC message the server takes or sends", func(c *Config) any { return &c.MaxMessageBytes }},
	{"max_scan_rows", "the most rows one Scan returns", func(c *Config) any { return &c.MaxScanRows }},
	{"max_value_bytes", "the largest string or bytes value a request may carry", func(c *Config) any { return &c.MaxValueBytes }},
	{"max_open_transactions", "the most interactive transactions open at once", func(c *Config) any { return &c.MaxOpenTransactions }},
	{"max_tx_bytes", "the most memory one interactive transaction may hold for its writes and reads", func(c *Config) any { return &c.MaxTxBytes }},
	{"tx_idle_timeout", "how long an interactive transaction may stay idle before it is rolled back", func(c *Config) any { return &c.TxIdleTimeout }},
	{"shutdown_timeout", "how long a graceful shutdown waits for in-flight requests", func(c *Config) any { return &c.ShutdownTimeout }},
	{"metrics_addr", "the HTTP address (host:port) that serves Prometheus metrics at /metrics, without authentication; empty for none", func(c *Config) any { return &c.MetricsAddr }},
	{"durability", "what a commit waits for: no-log, mmap-log or fsync-log", func(c *Config) any { return &c.Durability }},
	{"durability_floor", "the weakest durability a transaction may ask for", func(c *Config) any { return &c.DurabilityFloor }},
	{"log_channels", "the log's channel directories, one per channel", func(c *Config) any { return &c.LogChannels }},
	{"log_segment_bytes", "the size of each log segment file, preallocated", func(c *Config) any { return &c.LogSegmentBytes }},
	{"mmap_sync_interval", "how often mmap-log flushes its mapped files", func(c *Config) any { return &c.MmapSyncInterval }},
	{"recovery_ignore_corruption", "start despite corruption in the log, keeping what precedes it", func(c *Config) any { return &c.RecoveryIgnoreCorruption }},
	{"checkpoint_interval", "the time between checkpoints", func(c *Config) any { return &c.CheckpointInterval }},
	{"checkpoint_log_bytes", "new log bytes that start a checkpoint", func(c *Config) any { return &c.CheckpointLogBytes }},
	{"log_retention_bytes", "log kept past the last checkpoint for standbys", func(c *Config) any { return &c.LogRetentionBytes }},
	{"bootstrap_from", "the node a diskless node loads its initial image from", func(c *Config) any { return &c.BootstrapFrom }},
	{"role", "primary, standby or propagator", func(c *Config) any { return &c.Role }},
	{"peer", "another node: name=host:port (a peer block in the file)", func(c *Config) any { return &c.Peers }},
	{"sync_mode", "what a commit waits for from standbys: async, received-ack or applied-ack", func(c *Config) any { return &c.SyncMode }},
	{"sync_quorum", "how many standbys must acknowledge a commit", func(c *Config) any { return &c.SyncQuorum }},
	{"sync_standbys", "the standbys whose acknowledgements count towards sync_quorum; empty for every standby", func(c *Config) any { return &c.SyncStandbys }},
	{"sync_timeout", "how long a commit waits for its quorum", func(c *Config) any { return &c.SyncTimeout }},
	{"on_sync_timeout", "degrade or block when the quorum does not answer in time", func(c *Config) any { return &c.OnSyncTimeout }},
	{"tls_cert_file", "the node's TLS certificate (PEM), for serving and for dialling peers", func(c *Config) any { return &c.TLSCertFile }},
	{"tls_key_file", "the node's TLS private key (PEM)", func(c *Config) any { return &c.TLSKeyFile }},
	{"tls_ca_file", "the CA (PEM) that signs the nodes' and operators' certificates; turns peer authentication on", func(c *Config) any { return &c.TLSCAFile }},
	{"tls_client_auth", "every connection must present a certificate signed by tls_ca_file", func(c *Config) any { return &c.TLSClientAuth }},
	{"tls_admin_names", "certificate names, besides the node's and its peers', allowed admin RPCs and image fetches", func(c *Config) any { return &c.TLSAdminNames }},
	{"auth_token_file", "the clients' bearer tokens, lines \"name token\"; clients without a valid one are refused", func(c *Config) any { return &c.AuthTokenFile }},
}

func lookupKey(name string) (key, bool) {
	for _, k := range keys {
		if k.name == name {
			return k, true
		}
	}
	return key{}, false
}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }
func envName(key string) string  { return "MMDB_" + strings.ToUpper(key) }

// setString sets a key from its text form (an environment variable or a
// flag). Lists are comma-separated; peers are name=host:port.
func (c *Config) setString(k key, s string) error {
	switch p := k.field(c).(type) {
	case *string:
		*p = s
	case *int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 500ms or 30s", s)
		}
		*p = d
	case *[]string:
		*p = splitList(s)
	case *[]Peer:
		var peers []Peer
		for _, item := range splitList(s) {
			name, addr, ok := strings.Cut(item, "=")
			if !ok {
				return fmt.Errorf("%q is not name=host:port", item)
			}
			peers = append(peers, Peer{Name: strings.TrimSpace(name), Addr: strings.TrimSpace(addr)})
		}
		*p, c.peerOrigins = peers, nil // all set where the key is
	default:
		panic(fmt.Sprintf("conf: key %s has an unhandled field type %T", k.name, p))
	}
	return nil
}

// text is a key's value in the form setString reads.
func (c *Config) text(k key) string {
	switch p := k.field(c).(type) {
	case *string:
		return *p
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	case *[]Peer:
		items := make([]string, len(*p))
		for i, peer := range *p {
			items[i] = peer.Name + "=" + peer.Addr
		}
		return strings.Join(items, ",")
	default:
		panic(fmt.Sprintf("conf: key %s has an unhandled field type %T", k.name, p))
	}
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// LoadFile reads an HCL file over the configuration: top-level attributes
// for the keys, one `peer "name" { addr = "host:port" }` block per peer,
// and a `tls { ... }` block for the keys tls_*, without the prefix.
// Unknown keys and values of the wrong type are errors naming the file and
// line.
func (c *Config) LoadFile(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("conf: read %s: %w", path, err)
	}
	return c.loadHCL(src, path)
}

func (c *Config) loadHCL(src []byte, filename string) error {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return fmt.Errorf("conf: %w", diags)
	}
	body := f.Body.(*hclsyntax.Body)
	var errs []Problem
	fail := func(r hcl.Range, key, format string, args ...any) {
		errs = append(errs, Problem{Key: key, Origin: where(r), Msg: fmt.Sprintf(format, args...)})
	}
	c.loadAttrs(body.Attributes, "", fail)
	var (
		peers     []Peer
		peerLines []string
	)
	tlsBlocks := 0
	for _, b := range body.Blocks {
		if b.Type == "tls" {
			if tlsBlocks++; tlsBlocks > 1 || len(b.Labels) != 0 || len(b.Body.Blocks) != 0 {
				fail(b.TypeRange, b.Type, "one tls block, without labels, holding attributes: tls { cert_file = \"...\" }")
				continue
			}
			c.loadAttrs(b.Body.Attributes, tlsPrefix, fail)
			continue
		}
		if b.Type != "peer" || len(b.Labels) != 1 {
			fail(b.TypeRange, b.Type, "unknown block; the blocks are peer \"name\" { addr = \"host:port\" } and tls { ... }")
			continue
		}
		p := Peer{Name: b.Labels[0]}
		for _, inner := range b.Body.Blocks {
			fail(inner.TypeRange, "peer", "a peer block holds one string attribute, addr, and no %s block", inner.Type)
		}
		for name, a := range b.Body.Attributes {
			v, diags := a.Expr.Value(nil)
			if name != "addr" || diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
				fail(a.SrcRange, "peer", "a peer block holds one string attribute, addr")
				continue
			}
			p.Addr = v.AsString()
		}
		peers = append(peers, p)
		peerLines = append(peerLines, where(b.DefRange()))
		c.setOrigin("peer", where(b.DefRange()))
	}
	if peers != nil {
		c.Peers, c.peerOrigins = peers, peerLines
	}
	return c.loadFailures(errs)
}

// tlsPrefix starts the keys the file sets in its tls block: cert_file
// there is the key tls_cert_file (the flag -tls-cert-file).
const tlsPrefix = "tls_"

// loadAttrs sets the keys of a body's attributes, in the order of their
// lines: the top level's, or with prefix tlsPrefix the tls block's.
func (c *Config) loadAttrs(body hclsyntax.Attributes, prefix string, fail func(hcl.Range, string, string, ...any)) {
	attrs := make([]*hclsyntax.Attribute, 0, len(body))
	for _, a := range body {
		attrs = append(attrs, a)
	}
	slices.SortFunc(attrs, func(a, b *hclsyntax.Attribute) int { return a.SrcRange.Start.Line - b.SrcRange.Start.Line })
	for _, a := range attrs {
		k, ok := lookupKey(prefix + a.Name)
		switch {
		case prefix == "" && ok && strings.HasPrefix(a.Name, tlsPrefix):
			fail(a.NameRange, a.Name, "in the file it goes in the tls block: tls { %s = ... }", strings.TrimPrefix(a.Name, tlsPrefix))
			continue
		case !ok || k.name == "peer":
			fail(a.NameRange, prefix+a.Name, "unknown key")
			continue
		}
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			fail(a.SrcRange, k.name, "%s", diags.Error())
			continue
		}
		if err := c.setValue(k, v); err != nil {
			fail(a.SrcRange, k.name, "%v", err)
			continue
		}
		c.setOrigin(k.name, where(a.SrcRange))
	}
}

func where(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }

// setValue sets a key from an HCL value: strings, whole numbers, bools,
// durations as strings ("30s"), and lists of strings.
func (c *Config) setValue(k key, v cty.Value) error {
	if v.IsNull() || !v.IsKnown() {
		return errors.New("needs a value")
	}
	switch p := k.field(c).(type) {
	case *string:
		if v.Type() != cty.String {
			return fmt.Errorf("needs a string, not %s", v.Type().FriendlyName())
		}
		*p = v.AsString()
	case *int64:
		if v.Type() != cty.Number {
			return fmt.Errorf("needs a whole number, not %s", v.Type().FriendlyName())
		}
		n, acc := v.AsBigFloat().Int64()
		if acc != big.Exact {
			return fmt.Errorf("%s is not a whole number in range", v.AsBigFloat().String())
		}
		*p = n
	case *bool:
		if v.Type() != cty.Bool {
			return fmt.Errorf("needs true or false, not %s", v.Type().FriendlyName())
		}
		*p = v.True()
	case *time.Duration:
		if v.Type() != cty.String {
			return fmt.Errorf("needs a duration string such as \"30s\", not %s", v.Type().FriendlyName())
		}
		return c.setString(k, v.AsString())
	case *[]string:
		if !v.Type().IsTupleType() && !v.Type().IsListType() {
			return fmt.Errorf("needs a list of strings, not %s", v.Type().FriendlyName())
		}
		var list []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.Type() != cty.String || e.IsNull() {
				return errors.New("needs a list of strings")
			}
			list = append(list, e.AsString())
		}
		*p = list
	default:
		panic(fmt.Sprintf("conf: key %s has an unhandled field type %T", k.name, p))
	}
	return nil
}

// LoadEnv applies the MMDB_* variables of environ (os.Environ's form).
// A variable naming no key is an error, so that a typo is not ignored.
func (c *Config) LoadEnv(environ []string) error {
	var errs []Problem
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "MMDB_") {
			continue
		}
		k, ok := lookupKey(strings.ToLower(strings.TrimPrefix(name, "MMDB_")))
		if !ok {
			errs = append(errs, Problem{Key: name, Origin: "env " + name, Msg: "no such configuration key"})
			continue
		}
		if err := c.setString(k, val); err != nil {
			errs = append(errs, Problem{Key: k.name, Origin: "env " + name, Msg: err.Error()})
			continue
		}
		c.setOrigin(k.name, "env "+name)
	}
	return c.loadFailures(errs)
}

// Flags are the configuration keys registered on a flag.FlagSet.
type Flags struct {
	fs  *flag.FlagSet
	set map[string]*flagValue
}

// flagValue holds a flag's text until Apply; repeated list flags append.
// Until the flag is given it shows the key's default, for the help.
type flagValue struct {
	isBool bool
	list   bool
	def    string
	vals   []string
}

func (v *flagValue) String() string {
	if v.vals == nil {
		return v.def
	}
	return strings.Join(v.vals, ",")
}
func (v *flagValue) Set(s string) error {
	if v.list {
		v.vals = append(v.vals, s)
	} else {
		v.vals = []string{s}
	}
	return nil
}
func (v *flagValue) IsBoolFlag() bool { return v.isBool }

// RegisterFlags adds a flag for every key to fs, whose help shows the
// key's default.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs, set: map[string]*flagValue{}}
	def := DefaultConfig()
	for _, k := range keys {
		v := &flagValue{def: def.text(k)}
		switch k.field(def).(type) {
		case *bool:
			v.isBool = true
		case *[]string, *[]Peer:
			v.list = true
		}
		f.set[k.name] = v
		fs.Var(v, flagName(k.name), k.help)
	}
	return f
}

// Apply sets the keys whose flags were given on the command line.
func (f *Flags) Apply(c *Config) error {
	var errs []Problem
	f.fs.Visit(func(fl *flag.Flag) {
		name := strings.ReplaceAll(fl.Name, "-", "_")
		v, ok := f.set[name]
		if !ok {
			return
		}
		k, _ := lookupKey(name)
		if err := c.setString(k, strings.Join(v.vals, ",")); err != nil {
			errs = append(errs, Problem{Key: k.name, Origin: "flag -" + fl.Name, Msg: err.Error()})
			return
		}
		c.setOrigin(k.name, "flag -"+fl.Name)
	})
	return c.loadFailures(errs)
}

// Load builds a node's configuration: the defaults, then the file at path
// (if not empty), then environ's MMDB_* variables, then the flags given,
// and validates the result. It reports the problems of every stage at
// once: a key that fails to load keeps its earlier value and the stages
// after it go on. Validate runs unless the file could not be read or
// parsed, when what it would judge is not what the file says; it leaves
// out the keys that failed to load (unless a later stage set them) and the
// checks that read them, whose complaints would be about values nobody
// asked for.
func Load(path string, environ []string, flags *Flags) (*Config, error) {
	c := DefaultConfig()
	var errs []error
	validate := true
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			errs = append(errs, err)
			validate = errors.As(err, new(Problem)) // the file parsed; some keys are wrong
		}
	}
	errs = append(errs, c.LoadEnv(environ))
	if flags != nil {
		errs = append(errs, flags.Apply(c))
	}
	if validate {
		errs = append(errs, c.Validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("conf: invalid configuration:\n%w", err)
	}
	return c, nil
}
