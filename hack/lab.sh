#!/usr/bin/env bash
# The anvil lab, host-agent edition: a controller on its embedded store plus
# N simulated machines, each a real anvil-agent process in host mode that may
# touch only its own loop device. Everything lives under .lab/ and is removed
# by `hack/lab.sh down`.
#
#   hack/lab.sh up     start (LAB_MACHINES=3, LAB_PORT=7443, LAB_DISK_MIB=1024,
#                      LAB_DIR=.lab, LAB_BIN=bin)
#   hack/lab.sh down   stop everything and detach the loop devices
#   hack/lab.sh env    print the exports that point anvilctl at the lab
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lab=${LAB_DIR:-$root/.lab}
bin=${LAB_BIN:-$root/bin}
n=${LAB_MACHINES:-3}
port=${LAB_PORT:-7443}
disk_mib=${LAB_DISK_MIB:-1024}
addr=127.0.0.1:$port

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

lab_env() {
  echo "export ANVIL_CONTROLLER=$addr ANVIL_CA=$lab/controller/ca.crt ANVIL_TOKEN_FILE=$lab/controller/admin.token"
}

down() {
  if [ -d "$lab" ]; then
    for pidf in "$lab"/*.pid; do
      [ -e "$pidf" ] || continue
      kill "$(cat "$pidf")" 2>/dev/null || true
    done
    sleep 0.5
    for pidf in "$lab"/*.pid; do
      [ -e "$pidf" ] || continue
      kill -9 "$(cat "$pidf")" 2>/dev/null || true
      rm -f "$pidf"
    done
    if [ -f "$lab/loops" ]; then
      while read -r dev img; do
        # Detach only loop devices the lab attached to its own images.
        if losetup -nO BACK-FILE "$dev" 2>/dev/null | grep -qF "$img"; then
          losetup -d "$dev"
        fi
      done <"$lab/loops"
    fi
    rm -rf "$lab"
  fi
  say "lab removed"
}

up() {
  [ "$(id -u)" -eq 0 ] || { echo "lab: loop devices need root" >&2; exit 1; }
  [ -x "$bin/anvil-controller" ] || { echo "lab: run make build first (make lab does)" >&2; exit 1; }
  if [ -d "$lab" ]; then
    say "removing the previous lab"
    down
  fi
  mkdir -p "$lab/controller"
  : >"$lab/loops"

  say "starting anvil-controller on $addr (data in $lab/controller)"
  "$bin/anvil-controller" --data-dir "$lab/controller" --listen "$addr" --heartbeat-interval 5s \
    >"$lab/controller.log" 2>&1 &
  echo $! >"$lab/controller.pid"
  for _ in $(seq 100); do
    [ -s "$lab/controller/admin.token" ] && grep -q "controller listening" "$lab/controller.log" && break
    kill -0 "$(cat "$lab/controller.pid")" 2>/dev/null || { cat "$lab/controller.log"; exit 1; }
    sleep 0.1
  done
  eval "$(lab_env)"

  for i in $(seq 1 "$n"); do
    img=$lab/disk-$i.img
    truncate -s "${disk_mib}M" "$img"
    dev=$(losetup --find --show "$img")
    echo "$dev $img" >>"$lab/loops"
    uuid=$(printf 'anvil-lab-%d' "$i" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
    say "machine $i: uuid $uuid, disk $dev"
    "$bin/anvil-agent" --mode host --controller "$addr" --ca "$lab/controller/ca.crt" \
      --boot-token "$(cat "$lab/controller/boot.token")" --disks "$dev" --machine-uuid "$uuid" \
      >"$lab/agent-$i.log" 2>&1 &
    echo $! >"$lab/agent-$i.pid"
  done

  say "waiting for $n machines to be Ready"
  start=$(date +%s)
  while :; do
    ready=$("$bin/anvilctl" machine ls --state ready -o json | grep -c '"uuid"' || true)
    [ "$ready" -ge "$n" ] && break
    if [ $(($(date +%s) - start)) -gt 120 ]; then
      echo "lab: only $ready of $n machines Ready after 120 s; logs in $lab" >&2
      "$bin/anvilctl" machine ls || true
      exit 1
    fi
    sleep 0.5
  done
  "$bin/anvilctl" machine ls
  say "$n machines Ready in $(($(date +%s) - start)) s. Point anvilctl at the lab with:"
  lab_env
  echo "Logs: $lab/*.log. Remove everything with: make lab-down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) lab_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
