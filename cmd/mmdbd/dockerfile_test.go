package main

// The Dockerfile cannot be built here (no Docker engine in CI), so this
// test holds it to what it promises (docs/operations.md, "Running in
// Docker"): a multi-stage build whose build stage runs the script CI runs
// (scripts/build-static.sh), a minimal final stage running mmdbd as a
// non-root user that owns the data dir volume, the ports of the default
// config exposed, a HEALTHCHECK that runs mmdbd status, exec forms only
// (the final image has no shell), and a default config that loads.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/mmdb/mmdb/conf"
)

// repoRoot is the repository, from this package's directory.
var repoRoot = filepath.Join("..", "..")

// dfInstruction is one Dockerfile instruction: its name in capitals, its
// leading --flags, and the rest.
type dfInstruction struct {
	line  int
	cmd   string
	flags map[string]string
	args  string
}

// dfStage is a build stage: FROM image [AS name] and what follows.
type dfStage struct {
	index       int
	image, name string
	ins         []dfInstruction
}

var (
	escapeRE      = regexp.MustCompile(`^#\s*escape\s*=`)
	instructionRE = regexp.MustCompile(`^(\S+)\s*(.*)$`)
	flagRE        = regexp.MustCompile(`^--([a-z-]+)(?:=(\S*))?\s*(.*)$`)
)

// parseDockerfile parses the subset of the Dockerfile syntax mmdb's
// Dockerfile uses: comments, line continuations with a backslash, flags
// before the arguments. A parser directive other than syntax (escape=)
// is refused rather than misread.
func parseDockerfile(src []byte) ([]*dfStage, error) {
	var (
		stages  []*dfStage
		logical strings.Builder
		start   int
		header  = true // parser directives come first
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			if header && escapeRE.MatchString(trimmed) {
				return nil, fmt.Errorf("line %d: the escape directive is not supported here", n)
			}
			continue // comments, also inside a continuation
		}
		header = false
		if logical.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if strings.HasSuffix(trimmed, `\`) {
			logical.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		logical.WriteString(trimmed)
		ins, err := parseInstruction(start, logical.String())
		logical.Reset()
		if err != nil {
			return nil, err
		}
		if ins.cmd == "FROM" {
			f := strings.Fields(ins.args)
			st := &dfStage{index: len(stages)}
			switch {
			case len(f) == 1:
				st.image = f[0]
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				st.image, st.name = f[0], f[2]
			default:
				return nil, fmt.Errorf("line %d: FROM %s: want FROM image [AS name]", start, ins.args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if ins.cmd == "ARG" {
				continue
			}
			return nil, fmt.Errorf("line %d: %s before the first FROM", start, ins.cmd)
		}
		st := stages[len(stages)-1]
		st.ins = append(st.ins, ins)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if logical.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a continuation", start)
	}
	return stages, nil
}

func parseInstruction(line int, text string) (dfInstruction, error) {
	m := instructionRE.FindStringSubmatch(text)
	ins := dfInstruction{line: line, cmd: strings.ToUpper(m[1]), flags: map[string]string{}}
	rest := m[2]
	for {
		f := flagRE.FindStringSubmatch(rest)
		if f == nil {
			break
		}
		ins.flags[f[1]], rest = f[2], f[3]
	}
	ins.args = strings.TrimSpace(rest)
	if ins.args == "" {
		return ins, fmt.Errorf("line %d: %s without arguments", line, ins.cmd)
	}
	return ins, nil
}

// execForm parses an instruction's JSON (exec) form; the final image has
// no shell to run a shell form.
func execForm(ins dfInstruction, args string) ([]string, error) {
	var argv []string
	if !strings.HasPrefix(args, "[") || json.Unmarshal([]byte(args), &argv) != nil || len(argv) == 0 {
		return nil, fmt.Errorf("line %d: %s %s is not in exec form [\"...\", ...]: the image has no shell", ins.line, ins.cmd, args)
	}
	return argv, nil
}

// find returns a stage's instructions named cmd.
func (s *dfStage) find(cmd string) []dfInstruction {
	var out []dfInstruction
	for _, ins := range s.ins {
		if ins.cmd == cmd {
			out = append(out, ins)
		}
	}
	return out
}

// copies returns a COPY's sources and destination.
func copies(ins dfInstruction) (srcs []string, dst string) {
	f := strings.Fields(ins.args)
	if strings.HasPrefix(ins.args, "[") {
		if json.Unmarshal([]byte(ins.args), &f) != nil {
			return nil, ""
		}
	}
	if len(f) < 2 {
		return nil, ""
	}
	return f[:len(f)-1], f[len(f)-1]
}

// cleanDir compares paths in a Dockerfile: /var/lib/mmdb/ is /var/lib/mmdb.
func cleanDir(p string) string { return path.Clean(p) }

// readDockerfile parses the repository's Dockerfile.
func readDockerfile(t *testing.T) []*dfStage {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(src)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages; want a build stage and a final one", len(stages))
	}
	final := stages[len(stages)-1]

	// The final stage: its entrypoint is mmdbd, copied from a build stage.
	var entry []string
	var err error
	if e := final.find("ENTRYPOINT"); len(e) != 1 {
		t.Fatalf("Dockerfile: the final stage has %d ENTRYPOINTs, want 1", len(e))
	} else if entry, err = execForm(e[0], e[0].args); err != nil {
		t.Fatal(err)
	}
	if len(entry) != 1 || path.Base(entry[0]) != "mmdbd" || !path.IsAbs(entry[0]) {
		t.Fatalf("Dockerfile: ENTRYPOINT %q, want the absolute path of mmdbd alone", entry)
	}
	bin := entry[0]
	var build *dfStage
	var builtAt string
	for _, c := range final.find("COPY") {
		if srcs, dst := copies(c); dst == bin && len(srcs) == 1 && c.flags["from"] != "" {
			from := c.flags["from"]
			for _, s := range stages[:len(stages)-1] {
				if s.name == from || fmt.Sprint(s.index) == from {
					build, builtAt = s, srcs[0]
				}
			}
		}
	}
	if build == nil {
		t.Fatalf("Dockerfile: the final stage does not COPY --from a build stage to %s, the ENTRYPOINT", bin)
	}

	// The build stage: Go of go.mod's version, the repository copied in,
	// and the script CI runs building what the final stage copies.
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := regexp.MustCompile(`^(docker\.io/(library/)?)?golang:` + regexp.QuoteMeta(string(goVersion[1])) + `([.-]|$)`); !want.MatchString(build.image) {
		t.Errorf("Dockerfile: the build stage is FROM %s; want golang:%s (go.mod's go version)", build.image, goVersion[1])
	}
	copiesRepo := false
	for _, c := range build.find("COPY") {
		if srcs, _ := copies(c); c.flags["from"] == "" && slices.Contains(srcs, ".") {
			copiesRepo = true
		}
	}
	if !copiesRepo {
		t.Errorf("Dockerfile: the build stage does not COPY the repository (COPY . ...)")
	}
	const script = "scripts/build-static.sh"
	runsScript := false
	for _, r := range build.find("RUN") {
		f := strings.Fields(r.args)
		for i, w := range f {
			if strings.TrimPrefix(w, "./") == script && i+1 < len(f) && cleanDir(f[i+1]) == cleanDir(builtAt) {
				runsScript = true
			}
		}
	}
	if !runsScript {
		t.Errorf("Dockerfile: the build stage does not RUN %s %s (the binary the final stage copies)", script, builtAt)
	}
	if st, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(script))); err != nil {
		t.Error(err)
	} else if st.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", script)
	}
	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(script) + `\s`).Match(ci) {
		t.Errorf(".ci/run does not run %s: CI would not test the image's build steps", script)
	}

	// A minimal final stage.
	distroless := strings.HasPrefix(final.image, "gcr.io/distroless/static")
	if !distroless && final.image != "scratch" {
		t.Errorf("Dockerfile: the final stage is FROM %s; want gcr.io/distroless/static* or scratch", final.image)
	}
	if len(final.find("RUN")) > 0 {
		t.Errorf("Dockerfile: the final stage RUNs commands; it has no shell")
	}

	// A non-root user.
	users := final.find("USER")
	if len(users) == 0 {
		t.Fatal("Dockerfile: the final stage sets no USER: it would run as root")
	}
	user := users[len(users)-1].args
	uid, _, _ := strings.Cut(user, ":")
	if uid == "root" || uid == "0" || uid == "" {
		t.Errorf("Dockerfile: USER %s is root", user)
	}
	if final.image == "scratch" {
		hasPasswd := false
		for _, c := range final.find("COPY") {
			if _, dst := copies(c); dst == "/etc/passwd" {
				hasPasswd = true
			}
		}
		if !hasPasswd {
			t.Errorf("Dockerfile: a scratch image needs an /etc/passwd naming USER %s", user)
		}
	}

	// CMD and HEALTHCHECK read the config the final stage copies in.
	var cmd []string
	if c := final.find("CMD"); len(c) != 1 {
		t.Fatalf("Dockerfile: the final stage has %d CMDs, want 1", len(c))
	} else if cmd, err = execForm(c[0], c[0].args); err != nil {
		t.Fatal(err)
	}
	cfgPath := flagValue(cmd, "-config")
	if len(cmd) == 0 || cmd[0] != "serve" || cfgPath == "" {
		t.Fatalf("Dockerfile: CMD %q; want serve -config FILE", cmd)
	}
	var health []string
	if h := final.find("HEALTHCHECK"); len(h) != 1 {
		t.Fatalf("Dockerfile: the final stage has %d HEALTHCHECKs, want 1", len(h))
	} else {
		m := instructionRE.FindStringSubmatch(h[0].args)
		kind, args := m[1], m[2]
		if strings.ToUpper(kind) != "CMD" {
			t.Fatalf("Dockerfile: HEALTHCHECK %s: want HEALTHCHECK [options] CMD [...]", h[0].args)
		}
		if health, err = execForm(h[0], strings.TrimSpace(args)); err != nil {
			t.Fatal(err)
		}
	}
	if len(health) < 2 || health[0] != bin || health[1] != "status" || flagValue(health, "-config") != cfgPath {
		t.Fatalf("Dockerfile: HEALTHCHECK CMD %q; want [%q, \"status\", \"-config\", %q]", health, bin, cfgPath)
	}
	var cfgSrc string
	for _, c := range final.find("COPY") {
		if srcs, dst := copies(c); dst == cfgPath && len(srcs) == 1 && c.flags["from"] == "" {
			cfgSrc = srcs[0]
		}
	}
	if cfgSrc == "" {
		t.Fatalf("Dockerfile: the final stage does not COPY a file of the repository to %s, the config CMD and HEALTHCHECK read", cfgPath)
	}

	// The data dir, the ports: those of the config.
	cfgFile := filepath.Join(repoRoot, filepath.FromSlash(cfgSrc))
	cfgText, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatalf("Dockerfile copies %s: %v", cfgSrc, err)
	}
	attrs := hclStrings(t, cfgText, cfgSrc)
	dataDir := attrs["data_dir"]
	if !path.IsAbs(dataDir) {
		t.Errorf("%s: data_dir %q; want an absolute path, the image's VOLUME", cfgSrc, dataDir)
	}
	var volumes []string
	for _, v := range final.find("VOLUME") {
		if strings.HasPrefix(v.args, "[") {
			var list []string
			if err := json.Unmarshal([]byte(v.args), &list); err != nil {
				t.Errorf("Dockerfile line %d: VOLUME %s: %v", v.line, v.args, err)
			}
			volumes = append(volumes, list...)
		} else {
			volumes = append(volumes, strings.Fields(v.args)...)
		}
	}
	if !slices.ContainsFunc(volumes, func(v string) bool { return cleanDir(v) == cleanDir(dataDir) }) {
		t.Errorf("Dockerfile: VOLUME %q does not hold %s's data_dir %s", volumes, cfgSrc, dataDir)
	}
	owned := false
	for _, c := range final.find("COPY") {
		if _, dst := copies(c); cleanDir(dst) == cleanDir(dataDir) && c.flags["chown"] == user {
			owned = true
		}
	}
	if !owned {
		t.Errorf("Dockerfile: no COPY --chown=%s creates the data dir %s: the user could not write it", user, dataDir)
	}
	var exposed []string
	for _, e := range final.find("EXPOSE") {
		for _, p := range strings.Fields(e.args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	for _, key := range []string{"listen", "metrics_addr"} {
		host, port, err := net.SplitHostPort(attrs[key])
		if err != nil {
			t.Errorf("%s: %s %q: %v", cfgSrc, key, attrs[key], err)
			continue
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			t.Errorf("%s: %s %q: want every interface (0.0.0.0), or nothing outside the container reaches it", cfgSrc, key, attrs[key])
		}
		if !slices.Contains(exposed, port) {
			t.Errorf("Dockerfile: EXPOSE %q lacks %s's %s port %s", exposed, cfgSrc, key, port)
		}
	}

	// Nothing the build needs is left out of the context.
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/mmdbd/main.go", script, cfgSrc, ".git"} {
		if pattern := dockerIgnored(string(ignore), need); pattern != "" {
			t.Errorf(".dockerignore leaves out %s (pattern %q)", need, pattern)
		}
	}

	// The commands parse with mmdbd's own flags (-h stops at the flags),
	// and the config loads.
	for _, argv := range [][]string{cmd, health[1:]} {
		var stderr bytes.Buffer
		if code := run(append(slices.Clone(argv), "-h"), nil, io.Discard, &stderr); code != 0 {
			t.Errorf("Dockerfile: mmdbd %s does not parse (exit %d):\n%s", strings.Join(argv, " "), code, stderr.String())
		}
	}
	if _, err := conf.Load(cfgFile, nil, nil); err != nil {
		t.Errorf("%s does not load: %v", cfgSrc, err)
	}
}

// TestDockerDocsMatchTheImage: the docker commands the docs show fit the
// image: they publish (-p HOST:CONTAINER) only ports the Dockerfile
// EXPOSEs, and a configuration is mounted (-v SRC:/etc/mmdb...) as the
// directory /etc/mmdb, never as a single file, which editors replace
// under a bind mount so that a SIGHUP would not see the change
// (docs/operations.md, "Running in Docker").
func TestDockerDocsMatchTheImage(t *testing.T) {
	stages := readDockerfile(t)
	var exposed []string
	for _, e := range stages[len(stages)-1].find("EXPOSE") {
		for _, p := range strings.Fields(e.args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	publish := regexp.MustCompile(`-p\s+(?:[\d.]+:)?\d+:(\d+)`)
	mount := regexp.MustCompile(`-v\s+[^\s:]+:(/etc/mmdb[^\s:)\x60]*)`)
	for _, doc := range []string{"README.md", "Dockerfile", "docs/operations.md", "docs/examples/docker.hcl"} {
		text, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(doc)))
		if err != nil {
			t.Fatal(err)
		}
		published, mounted := publish.FindAllSubmatch(text, -1), mount.FindAllSubmatch(text, -1)
		if doc == "docs/operations.md" && (len(published) == 0 || len(mounted) == 0) {
			t.Errorf("%s: found %d -p and %d -v /etc/mmdb: the patterns no longer match the docs", doc, len(published), len(mounted))
		}
		for _, m := range published {
			if !slices.Contains(exposed, string(m[1])) {
				t.Errorf("%s: %s publishes port %s; the image EXPOSEs %q", doc, m[0], m[1], exposed)
			}
		}
		for _, m := range mounted {
			if cleanDir(string(m[1])) != "/etc/mmdb" {
				t.Errorf("%s: %s mounts a file; mount the directory /etc/mmdb, or a SIGHUP does not see an edited file", doc, m[0])
			}
		}
	}
}

// flagValue returns the value after a flag in argv.
func flagValue(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// hclStrings returns the string attributes at the top of an HCL file.
func hclStrings(t *testing.T, src []byte, name string) map[string]string {
	t.Helper()
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	out := map[string]string{}
	for n, a := range f.Body.(*hclsyntax.Body).Attributes {
		if v, diags := a.Expr.Value(nil); !diags.HasErrors() && v.Type() == cty.String && !v.IsNull() {
			out[n] = v.AsString()
		}
	}
	return out
}

// dockerIgnored returns the .dockerignore pattern that leaves out name (a
// path from the context's root), or "". Patterns start at the root; a
// pattern leaving out a directory leaves out what it holds; * and ? stay
// within a path element, ** crosses them; a later !pattern takes a path
// back in.
func dockerIgnored(ignore, name string) string {
	matched := ""
	for _, line := range strings.Split(ignore, "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		negate := strings.HasPrefix(p, "!")
		p = path.Clean(strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/"))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("(/.*)?$")
		if regexp.MustCompile(re.String()).MatchString(name) {
			if negate {
				matched = ""
			} else {
				matched = line
			}
		}
	}
	return matched
}
