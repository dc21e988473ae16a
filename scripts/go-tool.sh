# Sourced (not run) by the scripts that build a Go tool from the Go module
# proxy into .cache/ (gitignored): charts/build-helm.sh, test/gitops/build.sh,
# test/monitoring/build-promtool.sh. What they share is here: the cache key,
# the check for Go, a build into a .partial file that is renamed into place
# only when complete (a killed build leaves no half binary), the messages.
# A caller sets GO_TOOL_NAME (its name in messages), computes its key with
# go_tool_key, prints and exits through go_tool_cached when the binary is
# there, and otherwise defines a function with the go commands and hands it
# to go_tool_build. Only Go (>= 1.26) and the Go module proxy are needed.
#
# GO_TOOL_KEY_ONLY=1 makes a caller print its cache key and exit without
# building: the key can be compared across changes to these scripts.

GO_TOOL_LIB="${BASH_SOURCE[0]}"

# go_tool_key FILE... [-- TEXT...]: 16 hex digits of the sha256 of the FILEs'
# contents, then each TEXT on a line (a version). Callers hash themselves and
# this file, so a changed recipe builds beside the old binary, not over it.
go_tool_key() {
  local files=() texts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    files+=("$1")
    shift
  done
  [ "${1:-}" = -- ] && shift
  texts=("$@")
  {
    cat "${files[@]}"
    [ ${#texts[@]} -eq 0 ] || printf '%s\n' "${texts[@]}"
  } | sha256sum | cut -c1-16
}

# go_tool_cached BIN KEY [KEYFILE]: prints the key and exits under
# GO_TOOL_KEY_ONLY=1; prints BIN and exits when it is built, for KEY (a
# KEYFILE holding KEY, when the path itself does not carry the key).
go_tool_cached() {
  local bin="$1" key="$2" keyfile="${3:-}"
  if [ "${GO_TOOL_KEY_ONLY:-}" = 1 ]; then
    echo "$key"
    exit 0
  fi
  [ -x "$bin" ] || return 0
  if [ -n "$keyfile" ] && [ "$(cat "$keyfile" 2>/dev/null || true)" != "$key" ]; then return 0; fi
  echo "$bin"
  exit 0
}

# go_tool_build BIN WHAT FUNCTION [KEYFILE KEY] [HINT]: builds BIN with FUNCTION
# (run in a subshell, in a throw-away directory GO_TOOL_MOD outside the
# repository, writing GO_TOOL_OUT), renames it into place, records KEY in
# KEYFILE if given, and prints BIN. WHAT describes it in the messages
# ("helm v3.22.0"); HINT is added to the failure message.
go_tool_build() {
  local bin="$1" what="$2" fn="$3" keyfile="${4:-}" key="${5:-}" hint="${6:-}"
  if ! command -v go >/dev/null 2>&1; then
    echo "$GO_TOOL_NAME: Go is not installed; install Go >= 1.26 (Debian: apt-get install golang, or from the Go toolchain) and retry" >&2
    exit 1
  fi
  echo "$GO_TOOL_NAME: building $what into $bin (a cold build takes minutes on 2 cores)" >&2
  mkdir -p "$(dirname "$bin")"
  GO_TOOL_MOD="$(mktemp -d "${TMPDIR:-/tmp}/go-tool.XXXXXX")"
  GO_TOOL_OUT="$bin.partial.$$"
  # shellcheck disable=SC2064 # expanded now: the paths of this build
  trap "rm -rf '$GO_TOOL_MOD' '$GO_TOOL_OUT'" EXIT
  export GO_TOOL_MOD GO_TOOL_OUT GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
  # Not `if ! (...)`: inside a tested command bash ignores set -e, and a failed `go get` would
  # run on into `go build`.
  local rc=0
  set +e
  (
    set -e
    "$fn"
  )
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    echo "$GO_TOOL_NAME: building $what failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))${hint:+ $hint}" >&2
    exit 1
  fi
  mv -f "$GO_TOOL_OUT" "$bin"
  [ -z "$keyfile" ] || echo "$key" >"$keyfile"
  echo "$bin"
}
