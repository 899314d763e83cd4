#!/usr/bin/env bash
# Fetches the kernel the agent initramfs is built for: Debian's generic
# amd64 kernel, through apt only (`apt-get download linux-image-amd64`, then
# the versioned linux-image-6.1.0-NN-amd64 package it depends on), unpacked
# with `dpkg-deb -x`. Not the cloud kernel: that one has no IPMI driver (the
# agent enrolls the BMC through /dev/ipmi0) and none of a server's NICs or
# storage controllers. It leaves in the cache directory
#
#   vmlinuz            the kernel
#   modules/*.ko       the modules the initramfs loads (MODULES below) and
#                      every module they depend on (their modinfo depends=),
#                      uncompressed: the kernel has no in-kernel module
#                      decompression, so .ko.xz/.ko.zst are unpacked here
#   release            the kernel release (uname -r) and package version
#
# The cache (default ${ANVIL_CACHE:-/var/cache/anvil}/kernel, or the first
# argument) is used as it is when complete for the same module list; set
# ANVIL_KERNEL_REFRESH=1 to fetch the newest kernel apt knows of.
set -euo pipefail

dir=${1:-${ANVIL_CACHE:-/var/cache/anvil}/kernel}
# Module names as the kernel knows them ('-' and '_' are the same).
# efivarfs: the agent keeps the installed disk in a UEFI machine's boot
# order through it (agent/efiboot); on BIOS machines it refuses to load
# (ENODEV), which the agent skips.
# ipmi_si + ipmi_devintf: the in-band BMC (/dev/ipmi0, agent/bmcenroll); on
# a machine without one ipmi_si finds nothing and the agent says so.
# nvme, ahci: servers' disks (built into the cloud kernel, modules here).
# igb, ixgbe, i40e, bnxt_en, tg3, e1000e: common server NICs.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  failover net_failover virtio_net virtio_blk virtio_rng virtio_scsi sd_mod efivarfs
  nvme_core nvme ahci ipmi_msghandler ipmi_si ipmi_devintf
  igb ixgbe i40e bnxt_en tg3 e1000e)
flavour=linux-image-amd64
stamp_modules="$flavour modules: ${MODULES[*]}"

if [ -z "${ANVIL_KERNEL_REFRESH:-}" ] && [ -s "$dir/vmlinuz" ] && [ -s "$dir/release" ] &&
  grep -qxF "$stamp_modules" "$dir/release"; then
  echo "fetch-kernel: cached $(head -n1 "$dir/release") in $dir"
  exit 0
fi

for t in apt-get apt-cache dpkg-deb strings; do
  command -v "$t" >/dev/null || { echo "fetch-kernel: $t is required (hack/install-deps.sh)" >&2; exit 1; }
done

# The versioned image package the meta package depends on.
resolve() { apt-cache depends $flavour 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "fetch-kernel: apt knows no $flavour; run apt-get update as root" >&2; exit 1; }
  apt-get update -qq
  pkg=$(resolve || true)
  [ -n "$pkg" ] || { echo "fetch-kernel: $flavour has no linux-image-* dependency" >&2; exit 1; }
fi
release=${pkg#linux-image-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt drops privileges to _apt for the download; let it write there.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
(cd "$work" && apt-get download -q "$flavour" "$pkg" >/dev/null)
deb=$(ls "$work"/"$pkg"_*.deb)
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -x "$deb" "$work/x"
moddir=$work/x/lib/modules/$release
[ -f "$work/x/boot/vmlinuz-$release" ] || { echo "fetch-kernel: $deb has no boot/vmlinuz-$release" >&2; exit 1; }
[ -d "$moddir/kernel" ] || { echo "fetch-kernel: $deb has no $moddir/kernel" >&2; exit 1; }

# Index the package's modules by name ('-' → '_', compression suffix off).
declare -A path
while IFS= read -r f; do
  b=${f##*/}
  b=${b%.xz}; b=${b%.zst}; b=${b%.ko}
  path[${b//-/_}]=$f
done < <(find "$moddir/kernel" -type f \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' \))

out=$work/out
mkdir -p "$out/modules"
# Copies one module (uncompressed) and returns its depends= list.
copy_module() {
  local name=$1 src=${path[$1]} dst=$out/modules/$1.ko
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *) cp "$src" "$dst" ;;
  esac
  strings -a "$dst" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}
declare -A done_
queue=("${MODULES[@]}")
while [ "${#queue[@]}" -gt 0 ]; do
  m=${queue[0]//-/_}
  queue=("${queue[@]:1}")
  [ -z "$m" ] || [ -n "${done_[$m]:-}" ] && continue
  if [ -z "${path[$m]:-}" ]; then
    if grep -q "/${m//_/[-_]}\.ko\$" "$moddir/modules.builtin"; then
      done_[$m]=builtin
      continue
    fi
    if [ "$m" = virtio_rng ]; then # optional
      echo "fetch-kernel: $release has no virtio_rng module; skipped" >&2
      done_[$m]=absent
      continue
    fi
    echo "fetch-kernel: $release has no module $m" >&2
    exit 1
  fi
  deps=$(copy_module "$m")
  done_[$m]=copied
  # shellcheck disable=SC2206
  queue+=($deps)
done

cp "$work/x/boot/vmlinuz-$release" "$out/vmlinuz"
printf '%s %s\n%s\n' "$release" "$version" "$stamp_modules" >"$out/release"

# Replace the cache contents only once everything is in place.
mkdir -p "$dir"
rm -rf "$dir/modules" "$dir/vmlinuz" "$dir/release"
mv "$out/modules" "$out/vmlinuz" "$dir/"
mv "$out/release" "$dir/release"
echo "fetch-kernel: $release $version: vmlinuz and $(ls "$dir/modules" | wc -l) modules in $dir"
