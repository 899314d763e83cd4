#!/usr/bin/env bash
# Installs what building and testing anvil needs on a fresh Debian machine.
# Idempotent: installs only what is missing. Needs root (CI and the lab run
# as root).
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v losetup >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v zstd >/dev/null || need+=(zstd)
command -v curl >/dev/null || need+=(curl)
command -v gcc >/dev/null || need+=(gcc)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "install-deps: Go is required (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
