#!/usr/bin/env bash
# Builds the Debian 12 image (make images-debian), as root:
#
#   1. debootstrap bookworm, variant minbase, from DEBIAN_MIRROR; then apt
#      in the chroot installs PACKAGES (no recommends) with security
#      updates. Downloaded packages are cached in $ANVIL_CACHE/debootstrap.
#   2. The overlay (images/debian/overlay: cloud-init NoCloud-only
#      datasource, the anvil-phone-home unit) and the phone-home helper
#      are added, the unit and networkd enabled; per-machine state (SSH
#      host keys, machine-id, logs, apt lists) and docs are removed.
#   3. The tree is archived (tar, numeric owners, sorted) and installed
#      onto a sparse DEBIAN_IMAGE_MIB image with anvil's own rootfs
#      installer (cmd/debian-raw: GPT, FAT32 ESP, ext4 root, fstab and
#      kexec manifest by PARTUUID), whose boot configuration is then
#      looked up as the agent would.
#   4. Both are compressed with pzstd (zstd frames a few MiB each);
#      catalogue entries are written.
#
# Outputs in $OUT (default images/out): debian-12.raw (sparse, kept for
# the tests), debian-12.raw.zst + debian-12.json, debian-12.tar.zst +
# debian-12-tar.json.
#
# RECIPE=FILE builds a variant of this image (images/firewall/recipe.sh):
# a bash file sourced before anything is built, which may set
#   image_id        the output files' and catalogue entries' name
#                   (default debian-12; ID.raw, ID.json, ID-tar.json ...)
#   image_hostname  /etc/hostname (default debian)
#   image_packages  an array of packages installed besides PACKAGES
#   image_features  an array of catalogue features ("machine", "firewall");
#                   the entries carry "features" only when it is not empty
# and may define recipe_configure, run after this image's own
# configuration and before per-machine state is removed, with $root,
# $work, $repo, log, die and in_root at hand.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${OUT:-$repo/images/out}
cache=${ANVIL_CACHE:-/var/cache/anvil}/debootstrap
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
level=${ZSTD_LEVEL:-19}
image_mib=${DEBIAN_IMAGE_MIB:-2048}
image_id=debian-12
image_hostname=debian
image_packages=()
image_features=()
packages=(
  systemd systemd-sysv udev dbus
  linux-image-cloud-amd64 initramfs-tools
  cloud-init
  # cloud-init renders network-config v2 through netplan (which keeps
  # match: name: globs) into systemd-networkd; resolved serves DNS.
  netplan.io systemd-resolved iproute2
  openssh-server ca-certificates e2fsprogs dosfstools
)

log_name=debian
log() { printf '[%s %(%T)T] %s\n' "$log_name" -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -n "${RECIPE:-}" ]; then
  [ -r "$RECIPE" ] || die "recipe $RECIPE not readable"
  # shellcheck source=/dev/null
  . "$RECIPE"
  packages+=("${image_packages[@]}")
  log_name=$image_id
  log "recipe $RECIPE"
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
for t in debootstrap zstd pzstd go tar sha256sum findmnt; do
  command -v "$t" >/dev/null || die "$t not found (make deps installs it)"
done

start=$(date +%s)
mkdir -p "$out" "$cache/debs" "$cache/archives/partial"
work=$(mktemp -d "/var/tmp/anvil-$image_id.XXXXXX")
root=$work/root

# unmount_all unmounts everything below $root, deepest first.
unmount_all() {
  local m failed=0
  while read -r m; do
    [ -n "$m" ] || continue
    umount "$m" || { log "cannot unmount $m"; failed=1; }
  done < <(findmnt -rn -o TARGET | grep -E "^$root(/|$)" | sort -r || true)
  return "$failed"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if unmount_all; then
    # --one-file-system: never follow into a mount that is still there.
    rm -rf --one-file-system "$work"
  else
    log "left $work in place: something below it is still mounted"
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

log "debootstrap $suite (minbase) from $mirror into $root"
debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 40 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
unmount_all # debootstrap leaves nothing mounted on success; make sure

# Keep docs, man pages and translations out of everything installed from
# here on (copyright files stay).
cp "$here/overlay/etc/dpkg/dpkg.cfg.d/anvil-nodoc" "$root/etc/dpkg/dpkg.cfg.d/"
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SOURCES
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90anvil-norecommends"

mount -t proc proc "$root/proc"
mount --bind "$cache/archives" "$root/var/cache/apt/archives"
log "apt: ${packages[*]}"
{
  in_root apt-get update -q
  in_root apt-get -y -q dist-upgrade
  in_root apt-get -y -q install "${packages[@]}"
} >"$work/apt.log" 2>&1 || { tail -n 40 "$work/apt.log" >&2; die "apt in the chroot failed (log above)"; }
umount "$root/var/cache/apt/archives" # the cache stays; the image gets an empty dir
umount "$root/proc"

log "configure"
phbin=$work/anvil-phone-home
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$phbin" ./images/debian/cmd/anvil-phone-home)
install -m 0755 "$phbin" "$root/usr/local/sbin/anvil-phone-home"
install -m 0644 "$here/overlay/etc/cloud/cloud.cfg.d/90-anvil.cfg" "$root/etc/cloud/cloud.cfg.d/"
install -m 0644 "$here/overlay/etc/systemd/system/anvil-phone-home.service" "$root/etc/systemd/system/"
in_root systemctl enable anvil-phone-home.service systemd-networkd.service systemd-resolved.service >>"$work/apt.log" 2>&1
echo "$image_hostname" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
if declare -F recipe_configure >/dev/null; then
  log "configure: recipe"
  recipe_configure
fi
# The installer writes fstab by PARTUUID; without this placeholder it
# keeps nothing as fstab.anvil-orig.
rm -f "$root/etc/fstab"
# Per-machine state: regenerated on first boot (systemd: machine-id;
# cloud-init: SSH host keys).
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id" "$root/usr/sbin/policy-rc.d"
: >"$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
  "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache \
  "$root"/var/lib/cloud/*
find "$root/var/log" -type f -delete
find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian
kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
[ -n "$kver" ] && [ -s "$root/boot/initrd.img-$kver" ] || die "no kernel and initrd in $root/boot"
log "kernel $kver, tree $(du -sh --apparent-size "$root" | cut -f1)"

log "tar"
tarfile=$work/$image_id.tar
tar --create --file "$tarfile" --directory "$root" --numeric-owner --sort=name \
  --xattrs --xattrs-include='*' --one-file-system .

log "raw image (${image_mib} MiB, anvil's rootfs installer)"
raw=$out/$image_id.raw
rm -f "$raw"
(cd "$repo" && go run ./images/debian/cmd/debian-raw -tar "$tarfile" -o "$raw" -mib "$image_mib")

# pzstd writes independent frames (a few MiB of image each, 32 MiB at
# most at level 19), which anvil-agent decodes on several cores at once;
# any zstd decoder reads the file as usual.
log "pzstd -$level"
pzstd -q -f -p "$(nproc)" "-$level" "$raw" -o "$out/$image_id.raw.zst"
pzstd -q -f -p "$(nproc)" "-$level" "$tarfile" -o "$out/$image_id.tar.zst"

catalogue() { # id file format
  local sum features="" f
  sum=$(sha256sum "$out/$2" | cut -d' ' -f1)
  for f in "${image_features[@]}"; do
    features+="${features:+,}\"$f\""
  done
  printf '{"id":"%s","file":"%s","checksum":"sha256:%s","format":"%s","os":"debian","version":"12"%s}\n' \
    "$1" "$2" "$sum" "$3" "${features:+,\"features\":[$features]}"
}
catalogue "$image_id" "$image_id.raw.zst" raw-zstd >"$out/$image_id.json"
catalogue "$image_id-tar" "$image_id.tar.zst" tar-zstd >"$out/$image_id-tar.json"

log "done in $(( $(date +%s) - start )) s:"
for f in "$image_id.raw" "$image_id.raw.zst" "$image_id.tar.zst"; do
  printf '  %-28s %6d MiB (%d MiB allocated)\n' "$f" "$(( $(stat -c %s "$out/$f") >> 20 ))" "$(( $(du -k "$out/$f" | cut -f1) >> 10 ))" >&2
done
printf '  tree: %d MiB in the tar\n' "$(( $(stat -c %s "$tarfile") >> 20 ))" >&2
