#!/usr/bin/env bash
# Regenerates the Go code for proto/anvil/v1 into OUT (default: proto/).
# Plugins are the versions pinned as tools in go.mod; protoc is Debian's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/proto}
tools=$root/.tools
mkdir -p "$tools" "$out"
cd "$root"
go build -o "$tools/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$tools/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
command -v protoc >/dev/null || { echo "protoc missing: run hack/install-deps.sh" >&2; exit 1; }
protoc -I proto \
  --plugin=protoc-gen-go="$tools/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$tools/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  proto/anvil/v1/*.proto
