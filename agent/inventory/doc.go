// Package inventory collects the hardware inventory of the machine that
// anvil-agent runs on into an [anvilv1.Inventory]: the SMBIOS system
// identity (DMTF DSP0134 type 1, whose UUID is the machine's identity in
// anvil), BIOS, baseboard and chassis (types 0, 2 and 3), CPUs, memory,
// disks, NICs, PCI devices and GPUs.
//
// It reads Linux sysfs and procfs through github.com/jaypipes/ghw, and reads
// sysfs directly for what ghw leaves empty inside an initramfs without udev:
// disk model, serial, WWN, bus path, controller type and kind (physical
// disk, virtual or optical, from device numbers, /proc/devices and the
// device's place in sysfs), NIC driver, speed, MTU and link state, and PCI
// ids when no pci.ids database is available.
// Link state comes from rtnetlink when enabled.
//
// [Collect] reads the live machine, a directory laid out like the root of a
// Linux system ([WithRoot]) or a ghw snapshot ([WithSnapshot]). Every sysfs
// reader comes as an exported function on the live root, such as
// [DiskFromSysfs], and an unexported twin taking the root directory, which
// the tests run on fixture trees.
package inventory
