#!/bin/sh
# mkfixture.sh DIR — writes the hand-made sysfs/procfs tree of a QEMU Q35 lab
# VM used by the inventory tests (testdata/machine-a). It has an NVMe disk, a
# virtio-blk disk, a virtio-scsi disk (wwid, vpd_pg80), an ATA disk on AHCI
# (vpd_pg89, and udev data so that ghw's own values are tested too), a
# loop device with a backing file, an unbacked loop, zram and ram devices, a
# virtio NIC (link up, 10 Gbit/s), an e1000e NIC (link down, speed -1), a
# bridge, lo, a GPU with a DRM card behind a root port, a VGA device with no
# driver, 4 online CPUs (1 socket, 2 cores, 2 threads each) plus an offline
# one, 8 GiB of memory and SMBIOS types 0-3 (chassis type 17, "Main server chassis"). Values follow what Linux 6.1
# shows for such a VM; ids and names are those of pci.ids.
set -eu
D=${1:?usage: mkfixture.sh DIR}
rm -rf "$D"
mkdir -p "$D"
cd "$D"

w() { # w FILE CONTENT: write CONTENT and a newline to FILE
	mkdir -p "$(dirname "$1")"
	printf '%s\n' "$2" >"$1"
}
l() { # l LINK TARGET
	mkdir -p "$(dirname "$1")"
	ln -s "$2" "$1"
}

# SMBIOS (QEMU -smbios type=0..3)
I=sys/class/dmi/id
w $I/product_uuid 6F1C3B2A-9D4E-4B7A-8C21-0123456789AB
w $I/sys_vendor QEMU
w $I/product_name 'Standard PC (Q35 + ICH9, 2009)'
w $I/product_version pc-q35-7.2
w $I/product_serial anvil-lab-01
w $I/product_sku anvil-vm-large
w $I/product_family anvil-lab
w $I/bios_vendor SeaBIOS
w $I/bios_version 1.16.2-debian-1.16.2-1
w $I/bios_date 04/01/2014
w $I/board_vendor anvil
w $I/board_name lab-board
w $I/board_serial BOARD-0001
w $I/board_version 1.0
w $I/board_asset_tag ''
w $I/chassis_vendor QEMU
w $I/chassis_type 17
w $I/chassis_serial CHASSIS-0001
w $I/chassis_version pc-q35-7.2
w $I/chassis_asset_tag rack-a-u07

# CPUs: cpu0-3 online (package 0, cores 0 and 1, two threads each), cpu4 offline
C=sys/devices/system/cpu
for n in 0 1 2 3 4; do
	w $C/cpu$n/topology/physical_package_id 0
	w $C/cpu$n/topology/core_id $((n % 2))
done
for n in 1 2 3; do w $C/cpu$n/online 1; done
w $C/cpu4/online 0
w $C/online 0-3
: >proc_cpuinfo
for n in 0 1 2 3; do
	cat >>proc_cpuinfo <<CPU
processor	: $n
vendor_id	: GenuineIntel
cpu family	: 6
model		: 85
model name	: Intel(R) Xeon(R) Gold 6230R CPU @ 2.10GHz
physical id	: 0
siblings	: 4
core id		: $((n % 2))
cpu cores	: 2
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov

CPU
done
mkdir -p proc/self
mv proc_cpuinfo proc/cpuinfo
cat >proc/meminfo <<'MEM'
MemTotal:        8131236 kB
MemFree:         7902212 kB
MemAvailable:    7860448 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
Hugetlb:               0 kB
MEM
w proc/self/mounts 'rootfs / rootfs rw 0 0'

# Memory: 8 online blocks of 1 GiB = 8 GiB
M=sys/devices/system/memory
w $M/block_size_bytes 40000000
for n in 0 1 2 3 4 5 6 7; do w $M/memory$n/state online; done

# PCI
P=sys/devices/pci0000:00
mkdir -p sys/bus/pci/drivers/pcieport sys/bus/pci/drivers/nvme sys/bus/pci/drivers/virtio-pci \
	sys/bus/pci/drivers/e1000e sys/bus/pci/drivers/ahci sys/bus/pci/drivers/nvidia \
	sys/bus/virtio/drivers/virtio_net sys/bus/virtio/drivers/virtio_blk sys/bus/virtio/drivers/virtio_scsi
pci() { # pci PATH(below $P) VENDOR DEVICE CLASS SUBVENDOR SUBDEVICE DRIVER
	dir=$P/$1
	addr=$(basename "$1")
	up=$(echo "$1" | sed 's|[^/]*|..|g')/../.. # from $dir back to sys/
	w $dir/vendor 0x$2
	w $dir/device 0x$3
	w $dir/class 0x$4
	w $dir/subsystem_vendor 0x$5
	w $dir/subsystem_device 0x$6
	w $dir/revision 0x00
	w $dir/numa_node -1
	w $dir/modalias "$(printf 'pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s' \
		"$(echo "$2" | tr a-f A-F)" "$(echo "$3" | tr a-f A-F)" "$(echo "$5" | tr a-f A-F)" \
		"$(echo "$6" | tr a-f A-F)" "$(echo "$4" | cut -c1-2 | tr a-f A-F)" \
		"$(echo "$4" | cut -c3-4 | tr a-f A-F)" "$(echo "$4" | cut -c5-6 | tr a-f A-F)")"
	l $dir/subsystem $up/bus/pci
	[ -z "$7" ] || l $dir/driver $up/bus/pci/drivers/$7
	l sys/bus/pci/devices/$addr ../../../devices/pci0000:00/$1
}
pci 0000:00:00.0 8086 29c0 060000 1af4 1100 ''
pci 0000:00:01.0 1b36 000c 060400 0000 0000 pcieport
pci 0000:00:01.0/0000:01:00.0 10de 2204 030000 10de 1454 nvidia
pci 0000:00:02.0 1234 1111 030000 1af4 1100 ''
pci 0000:00:03.0 1af4 1041 020000 1af4 1100 virtio-pci
pci 0000:00:04.0 1b36 0010 010802 1af4 1100 nvme
pci 0000:00:05.0 1af4 1042 018000 1af4 1100 virtio-pci
pci 0000:00:06.0 1af4 1048 010000 1af4 1100 virtio-pci
pci 0000:00:07.0 8086 10d3 020000 8086 0000 e1000e
pci 0000:00:1f.2 8086 2922 010601 1af4 1100 ahci

# GPU: DRM card of the GeForce (the VGA device at 00:02.0 has no driver)
mkdir -p $P/0000:00:01.0/0000:01:00.0/drm/card0
l sys/class/drm/card0 ../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/drm/card0

virtio() { # virtio PCIPATH N DEVICEID DRIVER
	v=$P/$1/virtio$2
	w $v/vendor 0x1af4
	w $v/device 0x000$3
	l $v/driver ../../../../bus/virtio/drivers/$4
	l $v/subsystem ../../../../bus/virtio
}
virtio 0000:00:03.0 0 1 virtio_net
virtio 0000:00:05.0 1 2 virtio_blk
virtio 0000:00:06.0 2 8 virtio_scsi

blk() { # blk DEVPATH(below sys/devices) MAJ:MIN SECTORS ROT LBS PBS
	b=sys/devices/$1
	name=$(basename "$1")
	w $b/dev $2
	w $b/size $3
	w $b/removable 0
	w $b/ro 0
	w $b/queue/rotational $4
	w $b/queue/logical_block_size $5
	w $b/queue/physical_block_size $6
	l sys/block/$name ../devices/$1
}
# NVMe, 1 GiB, one partition
N=pci0000:00/0000:00:04.0/nvme/nvme0
w sys/devices/$N/model 'QEMU NVMe Ctrl                          '
w sys/devices/$N/serial 'NVME0001            '
w sys/devices/$N/firmware_rev 7.2.0
blk $N/nvme0n1 259:0 2097152 0 512 512
w sys/devices/$N/nvme0n1/wwid eui.525400000000abcd
w sys/devices/$N/nvme0n1/nsid 1
l sys/devices/$N/nvme0n1/device ../../nvme0
w sys/devices/$N/nvme0n1/nvme0n1p1/dev 259:1
w sys/devices/$N/nvme0n1/nvme0n1p1/size 2093056
w sys/devices/$N/nvme0n1/nvme0n1p1/start 2048
# virtio-blk, 2 GiB
V=pci0000:00/0000:00:05.0/virtio1
blk $V/block/vda 253:0 4194304 1 512 512
w sys/devices/$V/block/vda/serial VDA-SERIAL-1
l sys/devices/$V/block/vda/device ../../../virtio1
# virtio-scsi scsi-hd, 4 GiB, 4k physical sectors
S=pci0000:00/0000:00:06.0/virtio2/host0/target0:0:0/0:0:0:0
w sys/devices/$S/vendor 'QEMU    '
w sys/devices/$S/model 'QEMU HARDDISK   '
w sys/devices/$S/rev 2.5+
w sys/devices/$S/wwid naa.5000C50015EA71AC
printf '\000\200\000\014SCSI-SERIAL1' >sys/devices/$S/vpd_pg80
blk $S/block/sda 8:0 8388608 1 512 4096
l sys/devices/$S/block/sda/device ../../../0:0:0:0
# SATA SSD on AHCI, 8 GiB; udev ran on this one
A=pci0000:00/0000:00:1f.2/ata1/host1/target1:0:0/1:0:0:0
w sys/devices/$A/vendor 'ATA     '
w sys/devices/$A/model 'Samsung SSD 870 '
w sys/devices/$A/rev 2B6Q
w sys/devices/$A/wwid naa.5002538E40A1B2C3
printf '\000\200\000\024S5Y1NX0R123456A     ' >sys/devices/$A/vpd_pg80
printf '\000\211\002\070' >sys/devices/$A/vpd_pg89
blk $A/block/sdb 8:16 16777216 0 512 512
l sys/devices/$A/block/sdb/device ../../../1:0:0:0
mkdir -p run/udev/data
cat >run/udev/data/b8:16 <<'UDEV'
S:disk/by-id/ata-Samsung_SSD_870_EVO_1TB_S5Y1NX0R123456A
E:ID_ATA=1
E:ID_TYPE=disk
E:ID_BUS=ata
E:ID_MODEL=Samsung_SSD_870_EVO_1TB
E:ID_SERIAL=Samsung_SSD_870_EVO_1TB_S5Y1NX0R123456A
E:ID_SERIAL_SHORT=S5Y1NX0R123456A
E:ID_WWN=0x5002538e40a1b2c3
E:ID_WWN_WITH_EXTENSION=0x5002538e40a1b2c3
E:ID_PATH=pci-0000:00:1f.2-ata-1.0
UDEV
# loop0 backed by a file, loop1 unbacked, zram0 and ram0
blk virtual/block/loop0 7:0 1048576 0 512 512
w sys/devices/virtual/block/loop0/loop/backing_file /var/lib/anvil/disk0.img
blk virtual/block/loop1 7:1 0 0 512 512
blk virtual/block/zram0 252:0 1048576 0 4096 4096
blk virtual/block/ram0 1:0 8192 0 512 4096

# NICs
net() { # net DEVPATH(below sys/devices) MAC ASSIGN MTU OPER CARRIER SPEED
	n=sys/devices/$1
	w $n/address "$2"
	w $n/addr_assign_type $3
	w $n/mtu $4
	w $n/operstate $5
	w $n/carrier $6
	w $n/speed $7
	w $n/duplex full
	l sys/class/net/$(basename "$1") ../../devices/$1
}
net pci0000:00/0000:00:03.0/virtio0/net/eth0 52:54:00:12:34:56 0 1500 up 1 10000
l sys/devices/pci0000:00/0000:00:03.0/virtio0/net/eth0/device ../../../virtio0
net pci0000:00/0000:00:07.0/net/enp0s7 52:54:00:AB:CD:EF 0 9000 down 0 -1
l sys/devices/pci0000:00/0000:00:07.0/net/enp0s7/device ../../../0000:00:07.0
net virtual/net/br0 ae:9d:4c:11:22:33 3 1500 down 0 -1
net virtual/net/lo 00:00:00:00:00:00 0 65536 unknown 1 -1

# git keeps no empty directories: give them the uevent file sysfs has.
find . -type d -empty -exec touch {}/uevent \;
