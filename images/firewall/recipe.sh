# shellcheck shell=bash
# The firewall image's recipe for images/debian/build.sh (which sources it,
# see its header): the Debian 12 image plus nftables, IP forwarding, the
# anvil-firewall binary and its units. Its catalogue entries carry the
# "firewall" feature only: the image forwards by design, so it is not
# offered for plain machines (debian-12 is).
#
# What the image does at boot (docs/firewall-image.md):
#   - systemd-sysctl turns forwarding on (etc/sysctl.d/90-anvil-firewall.conf);
#   - anvil-firewall-guard.service, before any network is up, loads
#     etc/anvil-firewall/guard.nft: table inet anvil, forwarding nothing;
#   - cloud-init's write_files puts /etc/default/anvil-firewall (the flags)
#     and /etc/anvil-firewall/kubeconfig from the machine's user-data;
#   - anvil-firewall.service starts when /etc/default/anvil-firewall exists
#     and replaces the guard table with the cluster's ruleset atomically.

image_id=debian-12-firewall
image_hostname=firewall
image_packages=(nftables)
image_features=(firewall)

# recipe_configure runs inside images/debian/build.sh after the Debian
# image's configuration ($root, $work, $repo, log, die, in_root).
recipe_configure() {
  local fw=$repo/images/firewall f
  log "anvil-firewall ${VERSION:-dev}"
  (cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-dev}" \
    -o "$work/anvil-firewall" ./firewall/cmd/anvil-firewall)
  install -m 0755 "$work/anvil-firewall" "$root/usr/local/bin/anvil-firewall"
  # The overlay's files, root-owned, 0644, whatever the checkout's modes.
  while IFS= read -r -d '' f; do
    install -D -m 0644 "$fw/overlay/$f" "$root/$f"
  done < <(cd "$fw/overlay" && find . -type f -print0 | sort -z)
  [ -x "$root/usr/sbin/nft" ] || die "nftables did not install /usr/sbin/nft"
  # Debian's nftables.service loads /etc/nftables.conf, which begins with
  # "flush ruleset": it would remove the guard (and anvil's table) at boot.
  in_root systemctl disable nftables.service >>"$work/apt.log" 2>&1
  in_root systemctl enable anvil-firewall-guard.service anvil-firewall.service >>"$work/apt.log" 2>&1
}
