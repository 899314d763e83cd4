package inventory

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/anvil-metal/anvil/agent/disks/diskkind"
)

// Block device majors that the kernel assigns statically to one driver
// (Documentation/admin-guide/devices.txt).
const (
	majorRAMDisk = 1
	majorLoop    = 7
	majorMD      = 9
	majorSCSICD  = 11
	majorNBD     = 43
	majorDRBD    = 147
)

// SCSI peripheral device types (SPC-4 table 49) that the sr driver
// handles: write-once and CD/DVD.
const (
	scsiTypeWORM = "4"
	scsiTypeROM  = "5"
)

// genhdFlagCD is GENHD_FL_CD in the hex "capability" attribute of kernels
// before 5.18 (later kernels print 0 there).
const genhdFlagCD = 0x8

// blockFacts is what sysfs and procfs say about one block device, as far
// as its kind is concerned.
type blockFacts struct {
	name string
	// major is the device number's major, -1 when unknown; majorName is
	// the driver that registered it in /proc/devices ("" when unknown).
	major     int
	majorName string
	// dm, md and loop are set when /sys/block/NAME/{dm,md,loop} exist:
	// only device-mapper, MD RAID and loop devices have them.
	dm, md, loop bool
	// virtualBlock is set when the device lives in
	// /sys/devices/virtual/block: it has no parent device on any bus.
	virtualBlock bool
	// scsiType is device/type (the SCSI peripheral device type), "" when
	// absent.
	scsiType string
	// capability is the hex capability attribute, 0 when absent.
	capability uint64
}

// kindOf decides a block device's kind ([diskkind.Disk], Virtual or
// Optical) from its facts: a device-mapper, MD or loop device, a device
// without a parent device (/sys/devices/virtual/block) or one whose major
// belongs to a virtual driver is virtual; a device of the SCSI CD-ROM
// major, of SCSI type CD/DVD or WORM, or flagged CD is optical. Only when
// sysfs says none of this does the name decide ([diskkind.FromName]), so
// that a tree missing those attributes still never makes dm-0 a disk.
func kindOf(f blockFacts) string {
	switch {
	case f.dm, f.md, f.loop, f.virtualBlock:
		return diskkind.Virtual
	case f.major == majorSCSICD, f.majorName == "sr",
		f.scsiType == scsiTypeROM, f.scsiType == scsiTypeWORM,
		f.capability&genhdFlagCD != 0:
		return diskkind.Optical
	}
	switch f.major {
	case majorRAMDisk, majorLoop, majorMD, majorNBD, majorDRBD:
		return diskkind.Virtual
	}
	switch f.majorName {
	case "device-mapper", "md", "mdp", "loop", "ramdisk", "zram", "nbd", "drbd", "rbd", "bcache", "ubd":
		return diskkind.Virtual
	}
	return diskkind.FromName(f.name)
}

// BlockKind returns the kind of the block device name ("sda", "dm-0") on
// the running machine: [diskkind.Disk], [diskkind.Virtual] or
// [diskkind.Optical].
func BlockKind(name string) (string, error) {
	return blockKind(liveRoot, name)
}

// blockKind classifies /sys/block/NAME under root.
func blockKind(root, name string) (string, error) {
	majors, err := blockMajors(root)
	if err != nil {
		return "", err
	}
	return kindOf(blockFactsFrom(root, name, majors)), nil
}

func blockFactsFrom(root, name string, majors map[int]string) blockFacts {
	blk := filepath.Join(root, "sys", "block", name)
	f := blockFacts{name: name, major: -1}
	if maj, _, ok := strings.Cut(readAttr(filepath.Join(blk, "dev")), ":"); ok {
		if n, err := strconv.Atoi(maj); err == nil && n >= 0 {
			f.major = n
			f.majorName = majors[n]
		}
	}
	isDir := func(p string) bool {
		fi, err := os.Stat(filepath.Join(blk, p))
		return err == nil && fi.IsDir()
	}
	f.dm, f.md, f.loop = isDir("dm"), isDir("md"), isDir("loop")
	if real, err := resolveLink(blk); err == nil {
		f.virtualBlock = strings.HasPrefix(devicesRel(root, real), "virtual/block/")
	}
	f.scsiType = readAttr(filepath.Join(blk, "device", "type"))
	if c, err := strconv.ParseUint(readAttr(filepath.Join(blk, "capability")), 16, 64); err == nil {
		f.capability = c
	}
	return f
}

// blockMajors reads the "Block devices:" section of /proc/devices under
// root: major number → driver name. It is nil when the file is absent (ghw
// snapshots do not hold it).
func blockMajors(root string) (map[int]string, error) {
	path := filepath.Join(root, "proc", "devices")
	file, err := os.Open(path)
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, errAttr(path, err)
	}
	defer file.Close()
	m, err := parseBlockMajors(bufio.NewScanner(file))
	if err != nil {
		return nil, errAttr(path, err)
	}
	return m, nil
}

func parseBlockMajors(s *bufio.Scanner) (map[int]string, error) {
	out := map[int]string{}
	inBlock := false
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		switch {
		case line == "":
			continue
		case strings.HasSuffix(line, "devices:"):
			inBlock = line == "Block devices:"
			continue
		case !inBlock:
			continue
		}
		num, name, ok := strings.Cut(line, " ")
		if n, err := strconv.Atoi(num); ok && err == nil {
			out[n] = strings.TrimSpace(name)
		}
	}
	return out, s.Err()
}
