#!/usr/bin/env bash
# Build the real back ends the tests and `make jaeger` run: Jaeger v2 and an OpenTelemetry
# Collector, each from its pinned Go module in this folder, once, into the folder path.sh names.
# A binary that is already there is reused; nothing is downloaded when both are built.
#
#   tools/backends/build.sh            # both
#   tools/backends/build.sh collector  # one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(jaeger collector)

# Go's usual install folder, for shells whose PATH lacks it.
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build.sh: Go (>= 1.26) is needed to build the back ends" >&2; exit 1; }

for name in "${names[@]}"; do
    out="$("$here/path.sh" "$name")"
    mkdir -p "$(dirname "$out")"
    # One build at a time per binary, also across concurrent `make` runs.
    exec {lock}>"$out.lock"
    flock "$lock"
    if [[ -x "$out" ]]; then
        echo "$name: $out (built before)"
    else
        case "$name" in
            jaeger) package=github.com/jaegertracing/jaeger/cmd/jaeger ;;  # the `tool` of the module
            *) package=. ;;
        esac
        echo "$name: building $out (the first build takes minutes) ..."
        start=$SECONDS
        (cd "$here/$name" && go build -mod=readonly -buildvcs=false -ldflags="-s -w" -o "$out.tmp" "$package")
        mv -f "$out.tmp" "$out"
        echo "$name: built in $((SECONDS - start))s"
    fi
    exec {lock}>&-
done
