#!/usr/bin/env bash
# build-static.sh OUT: builds mmdbd as a static binary at OUT, checks that
# it is static, and smoke-tests it. The Dockerfile's build stage runs it,
# and so does .ci/run, so CI tests the image's build steps.
#
#   1. go build with CGO_ENABLED=0 and -trimpath, keeping the build and VCS
#      information that `mmdbd status` reports as the version;
#   2. checks that `go version -m OUT` says CGO_ENABLED=0, and that the ELF
#      file has no program interpreter (PT_INTERP) and no dynamic section
#      (PT_DYNAMIC), read from its headers with od (no readelf or file
#      needed); when built from a git checkout, that it carries the
#      revision;
#   3. runs `OUT help`, starts `OUT serve` on a kernel-chosen loopback port
#      with a temporary data dir, waits for its "serving" line, runs
#      `OUT status` against it, stops it with SIGTERM and checks that it
#      exits 0 after its "stopped" line.
#
# It builds for the machine it runs on (the smoke test runs the binary).
# Needs Go and coreutils (od, mktemp); nothing else.
set -euo pipefail
shopt -s inherit_errexit

die() {
	echo "build-static: $*" >&2
	exit 1
}

if [ $# -ne 1 ] || [ -z "$1" ]; then
	die "usage: scripts/build-static.sh OUT"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out_dir=$(dirname "$1")
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
out="$out_dir/${1##*/}"
cd "$root"
start=$SECONDS

# No MMDB_* variable of the caller's may change the smoke test's node (a
# variable that names no key would even stop it).
while IFS= read -r var; do
	unset "$var"
done < <(compgen -e | grep '^MMDB_' || true)

# 1. Build. -buildvcs=auto overrides a GOFLAGS=-buildvcs=false: Go stamps
# the module version and VCS revision when it finds a .git directory and
# git works, which is what `mmdbd status` reports.
want_revision=false
if [ -d .git ] && command -v git >/dev/null 2>&1; then
	if git status --porcelain >/dev/null 2>&1; then
		want_revision=true
	else
		die "git status fails in $root, so go build would too; fix the checkout (e.g. git config --global --add safe.directory $root)"
	fi
elif [ -e .git ]; then
	echo "build-static: $root/.git is not a directory (a git worktree?) or git is missing: Go stamps no VCS revision, the version reads (devel)" >&2
fi
echo "+ CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o $out ./cmd/mmdbd"
CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o "$out" ./cmd/mmdbd \
	|| die "go build failed"

# 2. Check that it is static.
info=$(go version -m "$out") || die "go version -m $out failed"
grep -qE '^[[:space:]]+build[[:space:]]+CGO_ENABLED=0$' <<<"$info" \
	|| die "go version -m $out does not show CGO_ENABLED=0:"$'\n'"$info"
grep -qE '^[[:space:]]+build[[:space:]]+-trimpath=true$' <<<"$info" \
	|| die "go version -m $out does not show -trimpath=true"
grep -qE '^[[:space:]]+path[[:space:]]+github\.com/mmdb/mmdb/cmd/mmdbd$' <<<"$info" \
	|| die "go version -m $out does not name github.com/mmdb/mmdb/cmd/mmdbd"
revision=$(sed -n 's/^[[:space:]]*build[[:space:]]*vcs\.revision=//p' <<<"$info")
if $want_revision && [ -z "$revision" ]; then
	die "$out carries no vcs.revision although $root is a git checkout"
fi

# read_bytes FILE OFFSET COUNT: sets bytes to the COUNT bytes at OFFSET,
# in decimal. (Functions set variables instead of printing, so that a die
# in them is not lost in a command substitution's subshell.)
read_bytes() {
	local got
	got=$(od -An -v -tu1 -j "$2" -N "$3" "$1") || die "od $1 failed"
	read -r -a bytes <<<"$got"
	[ "${#bytes[@]}" -eq "$3" ] || die "$1 is too short for an ELF file (wanted $3 bytes at $2)"
}

# read_uint FILE OFFSET SIZE: sets uint to the unsigned integer of SIZE
# bytes at OFFSET, in the ELF file's byte order (elf_data).
read_uint() {
	local i
	read_bytes "$1" "$2" "$3"
	uint=0
	if [ "$elf_data" -eq 1 ]; then # little-endian
		for ((i = $3 - 1; i >= 0; i--)); do uint=$((uint * 256 + bytes[i])); done
	else
		for ((i = 0; i < $3; i++)); do uint=$((uint * 256 + bytes[i])); done
	fi
}

read_bytes "$out" 0 6
[ "${bytes[*]:0:4}" = "127 69 76 70" ] || die "$out is not an ELF file"
elf_class=${bytes[4]} elf_data=${bytes[5]}
case "$elf_data" in
1 | 2) ;;
*) die "$out: unknown ELF byte order $elf_data" ;;
esac
case "$elf_class" in
1) off_phoff=28 size_phoff=4 off_phentsize=42 off_phnum=44 ;; # ELF32
2) off_phoff=32 size_phoff=8 off_phentsize=54 off_phnum=56 ;; # ELF64
*) die "$out: unknown ELF class $elf_class" ;;
esac
read_uint "$out" "$off_phoff" "$size_phoff"
phoff=$uint
read_uint "$out" "$off_phentsize" 2
phentsize=$uint
read_uint "$out" "$off_phnum" 2
phnum=$uint
if [ "$phnum" -eq 0 ] || [ "$phnum" -ge 65535 ]; then
	die "$out: $phnum program headers; cannot check them"
fi
for ((i = 0; i < phnum; i++)); do
	read_uint "$out" $((phoff + i * phentsize)) 4 # p_type
	case "$uint" in
	2) die "$out has a dynamic section (PT_DYNAMIC): it is not a static binary" ;;
	3) die "$out names a program interpreter (PT_INTERP): it is dynamically linked" ;;
	esac
done
echo "build-static: $out is static ($phnum program headers, none PT_INTERP or PT_DYNAMIC; CGO_ENABLED=0); revision ${revision:-none}"

# 3. Smoke test.
help=$("$out" help) || die "$out help exited $?"
grep -q '^usage: mmdbd' <<<"$help" || die "$out help printed no usage:"$'\n'"$help"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mmdbd-smoke.XXXXXX") || die "mktemp failed"
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
log="$tmp/serve.log"
: >"$log"
"$out" serve -listen 127.0.0.1:0 -data-dir "$tmp/data" -log-format text -log-level info 2>"$log" &
pid=$!

addr=
for ((i = 0; i < 300; i++)); do # 30 s
	addr=$(sed -n '/serving: addr=/{s/.*serving: addr=\([^ ]*\).*/\1/p;q}' "$log")
	[ -n "$addr" ] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		rc=0
		wait "$pid" || rc=$?
		pid=
		die "$out serve exited ($rc) before serving:"$'\n'"$(cat "$log")"
	fi
	sleep 0.1
done
[ -n "$addr" ] || die "$out serve did not log \"serving\" within 30s:"$'\n'"$(cat "$log")"

status=$("$out" status -addr "$addr" 2>&1) || die "$out status -addr $addr exited $?:"$'\n'"$status"
grep -qE '^role[[:space:]]+primary$' <<<"$status" || die "$out status -addr $addr shows no role primary:"$'\n'"$status"

kill -TERM "$pid" || die "could not send SIGTERM to $out serve ($pid)"
for ((i = 0; i < 300; i++)); do # 30 s
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
	die "$out serve did not exit within 30s of SIGTERM:"$'\n'"$(cat "$log")"
fi
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || die "$out serve exited $rc after SIGTERM:"$'\n'"$(cat "$log")"
grep -q 'stopped' "$log" || die "$out serve logged no \"stopped\" line:"$'\n'"$(cat "$log")"

echo "build-static: smoke test passed (help, serve on $addr, status, SIGTERM); $((SECONDS - start))s in all"
