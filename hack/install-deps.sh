#!/usr/bin/env bash
# Installs what building and testing anvil needs on a fresh Debian machine.
# Idempotent: installs only what is missing. Needs root (CI and the lab run
# as root).
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
# protoc finds the well-known types (google/protobuf/*.proto) there.
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v losetup >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
command -v zstd >/dev/null && command -v pzstd >/dev/null || need+=(zstd) # pzstd ships in the zstd package
command -v curl >/dev/null || need+=(curl)
command -v gcc >/dev/null || need+=(gcc)
# Disk pipeline tests: partition tables and filesystem checks, and the
# codecs' reference tools for the format tests and the image benchmark.
command -v sfdisk >/dev/null || need+=(fdisk)
command -v e2fsck >/dev/null || need+=(e2fsprogs)
command -v fsck.vfat >/dev/null || need+=(dosfstools)
# Quick-erase tests (agent/erase): the volumes whose signatures it must
# clear inside partitions, made by their own tools and found by wipefs.
command -v pvcreate >/dev/null || need+=(lvm2)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
command -v cryptsetup >/dev/null || need+=(cryptsetup-bin)
command -v bzip2 >/dev/null || need+=(bzip2)
command -v xz >/dev/null || need+=(xz-utils)
# The agent initramfs and the QEMU boot test: apt and dpkg-deb fetch and
# unpack the kernel (hack/fetch-kernel.sh; strings reads module depends=),
# the image ships Debian's CA bundle, QEMU runs it (virtio-net-pci needs
# iPXE's option ROM even when booting -kernel).
command -v strings >/dev/null || need+=(binutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || need+=(ipxe-qemu)
# iPXE for PXE ROMs and UEFI PXE clients, served by the controller over
# TFTP (undionly.kpxe, snponly.efi); OVMF, the lab's UEFI firmware.
[ -e /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
# GRUB for installed systems (agent/bootloader/mkgrub): grub-mkimage and
# the UEFI and BIOS modules; grub-bios-setup (grub-pc-bin) checks the BIOS
# install byte for byte.
command -v grub-mkimage >/dev/null || need+=(grub-common)
[ -e /usr/lib/grub/x86_64-efi/linux.mod ] || need+=(grub-efi-amd64-bin)
[ -e /usr/lib/grub/i386-pc/boot.img ] || need+=(grub-pc-bin)
# Firewall tests: nft for the baseline and for reading rulesets back, and
# etcd + kubectl for the end-to-end test against a real kube-apiserver
# (hack/build-kube-apiserver.sh builds that one from the module proxy).
command -v nft >/dev/null || need+=(nftables)
command -v etcd >/dev/null || need+=(etcd-server)
command -v kubectl >/dev/null || need+=(kubectl)
# The firewall image's units are checked by systemd-analyze verify
# (images/firewall), which Debian ships in the systemd package.
command -v systemd-analyze >/dev/null || need+=(systemd)
# The lab's proxy-mode test: another DHCP server leases the addresses.
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
# LLDP: agent/lldp's tests and the lab's switch (test/labkit) run lldpd.
command -v lldpd >/dev/null || need+=(lldpd)
# The PostgreSQL store's tests start their own server (initdb + pg_ctl as
# an unprivileged user in a temporary directory, unix socket only).
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need+=(postgresql)
# The IPMI driver's tests (controller/bmc) run OpenIPMI's BMC simulator.
command -v ipmi_sim >/dev/null || need+=(openipmi)
# The Debian image (make images-debian) is bootstrapped from Debian's mirror.
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's lldpd package starts the daemon on every interface of the
  # host; the tests and the lab run their own, in their namespaces.
  if [[ " ${need[*]} " == *" lldpd "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now lldpd.service
  fi
  # Likewise Debian's postgresql package starts a cluster of the host's.
  if [[ " ${need[*]} " == *" postgresql "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now postgresql.service
  fi
fi
command -v go >/dev/null || { echo "install-deps: Go is required (https://go.dev/doc/install)" >&2; exit 1; }
go mod download
