#!/usr/bin/env bash
# Builds the firewall image (make images-firewall), as root: the Debian 12
# image's build (images/debian/build.sh) with this directory's recipe
# (recipe.sh: nftables, forwarding, anvil-firewall and its units).
#
# Outputs in $OUT (default images/out): debian-12-firewall.raw (sparse,
# kept for the tests), debian-12-firewall.raw.zst +
# debian-12-firewall.json, debian-12-firewall.tar.zst +
# debian-12-firewall-tar.json; both entries carry "features":["firewall"].
# The same environment as images/debian/build.sh applies (DEBIAN_MIRROR,
# DEBIAN_IMAGE_MIB, ZSTD_LEVEL, ANVIL_CACHE), plus VERSION, the version
# anvil-firewall reports.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPE=$here/recipe.sh exec "$here/../debian/build.sh" "$@"
