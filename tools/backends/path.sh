#!/usr/bin/env bash
# Print where tools/backends/build.sh puts (or put) the binary of one back end: jaeger or collector.
#
#   tools/backends/path.sh jaeger
#
# The folder is outside the work tree (override it with KILOSTAR_BACKENDS_DIR); the file name ends
# in a hash of the module's go.mod, go.sum and Go sources, so a change of pinned versions names a
# new binary and the old one is simply not used any more.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:?usage: path.sh jaeger|collector}"
module="$here/$name"
[[ -f "$module/go.mod" ]] || { echo "path.sh: no Go module $module" >&2; exit 2; }
dir="${KILOSTAR_BACKENDS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kilostar-otel/backends}"
hash="$(cd "$module" && cat go.mod go.sum $(ls ./*.go 2>/dev/null) | sha256sum | cut -c1-16)"
echo "$dir/$name-$hash"
