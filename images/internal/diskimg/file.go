package diskimg

import (
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem"
)

// WriteFile creates the file name (slash-separated, relative to the root;
// parents made as needed) on fsys with contents b. Names are passed to
// go-diskfs relative: its ext4 refuses absolute ones, its FAT takes both.
func WriteFile(fsys filesystem.FileSystem, name string, b []byte) error {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if dir := path.Dir(name); dir != "." {
		// go-diskfs Mkdir is mkdir -p.
		if err := fsys.Mkdir(dir); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
	}
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if n, err := f.Write(b); err != nil || n != len(b) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("short write: %d of %d bytes", n, len(b))
		}
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	return nil
}
