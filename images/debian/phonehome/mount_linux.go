package phonehome

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ReadSeedFile mounts the seed filesystem on dev read-only (vfat, else
// iso9660: NoCloud allows both) on a fresh directory in tmp, reads name
// from it and unmounts it. A missing file is reported with fs.ErrNotExist.
func ReadSeedFile(dev, tmp, name string) (b []byte, err error) {
	dir, err := os.MkdirTemp(tmp, "anvil-seed-")
	if err != nil {
		return nil, fmt.Errorf("mount point for the seed: %w", err)
	}
	defer func() {
		if rerr := os.Remove(dir); err == nil && rerr != nil {
			err = fmt.Errorf("remove seed mount point: %w", rerr)
		}
	}()
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	var merrs []error
	mounted := false
	for _, fstype := range []string{"vfat", "iso9660"} {
		if err := unix.Mount(dev, dir, fstype, flags, ""); err != nil {
			merrs = append(merrs, fmt.Errorf("mount -t %s -o ro %s %s: %w", fstype, dev, dir, err))
			continue
		}
		mounted = true
		break
	}
	if !mounted {
		return nil, errors.Join(merrs...)
	}
	defer func() {
		if uerr := unix.Unmount(dir, 0); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmount %s: %w", dir, uerr))
		}
	}()
	b, err = os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("seed %s: %w", dev, err)
	}
	return b, nil
}

// KernelRelease is uname -r.
func KernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
