#!/usr/bin/env bash
# Builds kube-apiserver from the Go module proxy (k8s.io/kubernetes is a Go
# module; Debian 12 ships no kube-apiserver) for the end-to-end tests in
# test/kubeapi, and caches the binary at
#
#   ${ANVIL_CACHE:-/var/cache/anvil}/kube/kube-apiserver-v$VERSION
#
# The module zip lacks staging/src and vendor/, so the module is copied to a
# writable work directory under the cache, go.work and vendor/ are removed and
# every `k8s.io/X => ./staging/src/k8s.io/X` replace becomes a requirement of
# the published k8s.io/X at the matching v0.MINOR.PATCH. The build sets the
# version through -ldflags (kubectl cannot parse an empty version).
#
# Idempotent: when the binary exists it only prints its path. On success the
# work directory (~2 GB with build outputs) is removed; the module cache keeps
# the zip, so a rebuild needs no new download. Prints the binary's path last.
set -euo pipefail

VERSION=${KUBE_VERSION:-1.34.4}
cache=${ANVIL_CACHE:-/var/cache/anvil}/kube
bin=$cache/kube-apiserver-v$VERSION
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-kube-apiserver: go not found in PATH" >&2; exit 1; }
mkdir -p "$cache"
work=$cache/build-v$VERSION
rm -rf "$work"
start=$(date +%s)

cd "$cache"
echo "build-kube-apiserver: downloading k8s.io/kubernetes@v$VERSION" >&2
moddir=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$moddir" ] || [ ! -f "$moddir/go.mod" ]; then
  echo "build-kube-apiserver: go mod download gave no module directory for k8s.io/kubernetes@v$VERSION" >&2
  exit 1
fi

cp -r "$moddir" "$work"
chmod -R u+w "$work"
cd "$work"
rm -rf go.work go.work.sum vendor

# Staging modules are published as k8s.io/X v0.MINOR.PATCH.
staging_version=v0.${VERSION#*.}
mapfile -t staged < <(awk '$0 ~ /=> \.\/staging\/src\// { for (i = 1; i <= NF; i++) if ($i == "=>") print $(i-1) }' go.mod)
if [ "${#staged[@]}" -eq 0 ]; then
  echo "build-kube-apiserver: no staging replaces found in $work/go.mod" >&2
  exit 1
fi
edits=()
for m in "${staged[@]}"; do
  edits+=("-dropreplace=$m" "-require=$m@$staging_version")
done
go mod edit "${edits[@]}"

major=${VERSION%%.*}
minor=${VERSION#*.}
minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=v$VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"

echo "build-kube-apiserver: building kube-apiserver v$VERSION in $work (cold: ~5 min, ~2.2 GB RAM)" >&2
GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
  go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" ./cmd/kube-apiserver
"$bin.tmp" --version >&2
mv "$bin.tmp" "$bin"

cd "$cache"
rm -rf "$work"
echo "build-kube-apiserver: built in $(($(date +%s) - start)) s" >&2
echo "$bin"
