package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/filesystem"
)

// ErrDuplicate is an archive that names an entry twice.
var ErrDuplicate = errors.New("duplicate archive entry")

// The installed system's fstab, and where the archive's own is kept.
const (
	fstab     = "etc/fstab"
	fstabKept = "etc/fstab.anvil-orig"
)

// Counts says what the extraction did, entry by entry kind.
type Counts struct {
	Dirs, Files, Symlinks int
	// Bytes of regular file content written.
	Bytes int64
	// HardLinks written as copies (go-diskfs cannot link).
	HardLinks int
	// Special entries (device nodes, FIFOs) skipped: devtmpfs provides
	// /dev in the installed system.
	Special int
	// Xattrs is the number of entries whose extended attributes were not
	// kept.
	Xattrs int
	// ESPSkipped are links and special files below the ESP mount, which
	// FAT cannot hold.
	ESPSkipped int
}

func (c Counts) String() string {
	s := fmt.Sprintf("%d files (%d MiB), %d directories, %d symlinks", c.Files, c.Bytes>>20, c.Dirs, c.Symlinks)
	var notes []string
	if c.HardLinks > 0 {
		notes = append(notes, fmt.Sprintf("%d hard links written as copies", c.HardLinks))
	}
	if c.Special > 0 {
		notes = append(notes, fmt.Sprintf("%d device nodes/FIFOs skipped (devtmpfs provides /dev)", c.Special))
	}
	if c.Xattrs > 0 {
		notes = append(notes, fmt.Sprintf("extended attributes of %d entries not kept", c.Xattrs))
	}
	if c.ESPSkipped > 0 {
		notes = append(notes, fmt.Sprintf("%d links/special files under the ESP skipped (FAT cannot hold them)", c.ESPSkipped))
	}
	if len(notes) > 0 {
		s += "; " + strings.Join(notes, ", ")
	}
	return s
}

// extractor writes archive entries onto the two filesystems.
type extractor struct {
	layout Layout
	root   filesystem.FileSystem
	esp    filesystem.FileSystem
	buf    []byte
	// made records what exists on each filesystem, by path: 'd', 'f', 'l'.
	made [2]map[string]byte
	// dirs get their metadata last: adding entries must not disturb it.
	dirs   []dirMeta
	counts Counts
	// hasManifest says the archive brings its own anvil/boot.json.
	hasManifest bool
	// fstabKept says the archive's /etc/fstab was written as fstabKept.
	fstabKept bool
}

type dirMeta struct {
	name     string
	mode     os.FileMode
	uid, gid int
	mtime    time.Time
}

func newExtractor(l Layout, root, esp filesystem.FileSystem) *extractor {
	return &extractor{layout: l.withDefaults(), root: root, esp: esp, buf: make([]byte, 1<<20),
		made: [2]map[string]byte{{}, {}}}
}

func (x *extractor) fsFor(t Target) (filesystem.FileSystem, map[string]byte) {
	if t == ESP {
		return x.esp, x.made[1]
	}
	return x.root, x.made[0]
}

// extract reads the archive to its end-of-archive marker.
func (x *extractor) extract(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive after %d entries: %w", x.entries(), err)
		}
		if err := x.entry(h, tr); err != nil {
			return fmt.Errorf("archive entry %q: %w", h.Name, err)
		}
	}
	return x.finishDirs()
}

func (x *extractor) entries() int {
	c := x.counts
	return c.Dirs + c.Files + c.Symlinks + c.HardLinks + c.Special
}

func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	t, p := Route(h.Name, x.layout)
	if t == Skip {
		return nil
	}
	if p == "anvil/boot.json" {
		x.hasManifest = true
	}
	if t == Root && p == fstab {
		// The installer writes its own fstab; the archive's is kept.
		p, x.fstabKept = fstabKept, true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			x.counts.Xattrs++
			break
		}
	}
	fsys, made := x.fsFor(t)
	switch h.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir:
		if err := x.mkdirAll(fsys, made, p); err != nil {
			return err
		}
		x.counts.Dirs++
		if t == Root {
			x.dirs = append(x.dirs, dirMeta{p, h.FileInfo().Mode(), h.Uid, h.Gid, h.ModTime})
		}
		return nil
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still use '\x00'
		if err := x.writeFile(fsys, made, p, r, h.Size); err != nil {
			return err
		}
		x.counts.Files++
		x.counts.Bytes += h.Size
		if t == Root {
			return x.meta(p, h)
		}
		return nil
	case tar.TypeSymlink:
		if t == ESP {
			x.counts.ESPSkipped++
			return nil
		}
		if err := x.prepare(fsys, made, p); err != nil {
			return err
		}
		if err := fsys.Symlink(h.Linkname, p); err != nil {
			return fmt.Errorf("symlink -> %s: %w", h.Linkname, err)
		}
		made[p] = 'l'
		x.counts.Symlinks++
		return nil
	case tar.TypeLink:
		lt, lp := Route(h.Linkname, x.layout)
		if t == ESP || lt != t {
			x.counts.ESPSkipped++
			return nil
		}
		if made[lp] != 'f' {
			return fmt.Errorf("hard link to %q, which is not a regular file earlier in the archive", h.Linkname)
		}
		if err := x.copyFile(fsys, made, lp, p); err != nil {
			return err
		}
		x.counts.HardLinks++
		return x.meta(p, h)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if t == ESP {
			x.counts.ESPSkipped++
		} else {
			x.counts.Special++
		}
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", h.Typeflag)
	}
}

// mkdirAll makes p and its parents (go-diskfs Mkdir is mkdir -p).
func (x *extractor) mkdirAll(fsys filesystem.FileSystem, made map[string]byte, p string) error {
	switch made[p] {
	case 'd':
		return nil
	case 0:
	default:
		return fmt.Errorf("directory %s: a file or link of that name is already in the archive", p)
	}
	for d := path.Dir(p); d != "." && d != ""; d = path.Dir(d) {
		if k := made[d]; k != 0 && k != 'd' {
			return fmt.Errorf("directory %s: %s is a file or link earlier in the archive", p, d)
		}
	}
	if err := fsys.Mkdir(p); err != nil {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	for d := p; d != "." && d != ""; d = path.Dir(d) {
		made[d] = 'd'
	}
	return nil
}

// prepare makes p's parent. A name the archive already produced is
// refused: go-diskfs v1.9.4 cannot remove an entry without corrupting the
// filesystem (its Remove leaves the inode allocated while freeing its
// blocks), so a later member cannot replace an earlier one as tar would.
func (x *extractor) prepare(fsys filesystem.FileSystem, made map[string]byte, p string) error {
	if dir := path.Dir(p); dir != "." {
		if err := x.mkdirAll(fsys, made, dir); err != nil {
			return err
		}
	}
	switch made[p] {
	case 0:
		return nil
	case 'd':
		return fmt.Errorf("%s is a directory earlier in the archive", p)
	}
	return fmt.Errorf("%w: %s is already in the archive", ErrDuplicate, p)
}

func (x *extractor) writeFile(fsys filesystem.FileSystem, made map[string]byte, p string, r io.Reader, size int64) error {
	if err := x.prepare(fsys, made, p); err != nil {
		return err
	}
	f, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	made[p] = 'f'
	n, err := io.CopyBuffer(onlyWriter{f}, r, x.buf)
	if err == nil && n != size {
		err = fmt.Errorf("wrote %d of %d bytes", n, size)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// copyFile writes a copy of the already extracted file from to p.
func (x *extractor) copyFile(fsys filesystem.FileSystem, made map[string]byte, from, p string) error {
	src, err := fsys.OpenFile(from, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("open link target %s: %w", from, err)
	}
	defer src.Close()
	st, err := fs.Stat(fsys, from)
	if err != nil {
		return fmt.Errorf("stat link target %s: %w", from, err)
	}
	return x.writeFile(fsys, made, p, onlyReader{src}, st.Size())
}

// meta applies the header's mode, owner and times to a file on the root
// filesystem.
func (x *extractor) meta(p string, h *tar.Header) error {
	if err := x.root.Chmod(p, h.FileInfo().Mode()); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	if err := x.root.Chown(p, h.Uid, h.Gid); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if err := x.root.Chtimes(p, h.ModTime, timeOr(h.AccessTime, h.ModTime), h.ModTime); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}

// finishDirs applies directory metadata, deepest first.
func (x *extractor) finishDirs() error {
	sort.SliceStable(x.dirs, func(i, j int) bool { return strings.Count(x.dirs[i].name, "/") > strings.Count(x.dirs[j].name, "/") })
	for _, d := range x.dirs {
		if x.made[0][d.name] != 'd' {
			continue // replaced by a later entry
		}
		if err := x.root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", d.name, err)
		}
		if err := x.root.Chown(d.name, d.uid, d.gid); err != nil {
			return fmt.Errorf("chown %s: %w", d.name, err)
		}
		if err := x.root.Chtimes(d.name, d.mtime, d.mtime, d.mtime); err != nil {
			return fmt.Errorf("set times of %s: %w", d.name, err)
		}
	}
	return nil
}

// regularFiles lists the root filesystem's regular files from the archive.
func (x *extractor) regularFiles() map[string]bool {
	out := map[string]bool{}
	for p, k := range x.made[0] {
		if k == 'f' {
			out[p] = true
		}
	}
	return out
}

// writeText writes a small file the installer adds (fstab, manifest).
func (x *extractor) writeText(t Target, p string, b []byte) error {
	fsys, made := x.fsFor(t)
	if err := x.writeFile(fsys, made, p, strings.NewReader(string(b)), int64(len(b))); err != nil {
		return err
	}
	if t == Root {
		now := time.Now()
		return errors.Join(x.root.Chmod(p, 0o644), x.root.Chtimes(p, now, now, now))
	}
	return nil
}

func timeOr(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so io.CopyBuffer uses
// its large buffer: go-diskfs files cost a metadata update per call.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }
