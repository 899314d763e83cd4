// Package format recognises OS image formats by their magic bytes and opens
// the matching decompressor. It is the pure core of the image path: no I/O
// beyond the reader it is handed.
//
// Detection has two levels. The outer level is the compression container,
// recognised by its magic number: zstd (RFC 8878 §3.1.1, 0xFD2FB528 and
// skippable frames), gzip (RFC 1952, 1F 8B 08), xz (.xz file format 1.2,
// FD 37 7A 58 5A 00), LZ4 frame (LZ4 Frame Format 1.6, 0x184D2204) and
// bzip2 ("BZh1".."BZh9"). The inner level, read from the decompressed
// stream, tells a POSIX tar archive ("ustar" at offset 257, POSIX.1-2001)
// from a raw disk image. Formats anvil does not write (qcow2, VMDK, VHDX,
// VDI, zip, 7z) are recognised only to be refused by name.
//
// Headers are read before the image's checksum can be verified, so what
// they ask for is bounded: a zstd frame whose Window_Size (RFC 8878
// §3.1.1.1.2), or an xz block whose LZMA2 dictionary (.xz File Format
// 1.2 §5.3.1), exceeds DecodeOptions.MaxWindow (128 MiB by default) fails
// with ErrWindowTooLarge before a decoder allocates it. The other formats
// bound their memory themselves: gzip's window is 32 KiB, an LZ4 frame's
// blocks at most 4 MiB, bzip2's blocks at most 900 kB.
//
// A declared format that disagrees with the detected one is an error, never
// a guess (the lesson of Ironic's CVE-2024-44082: a "raw" image that was
// really qcow2 pointed the converter at host files).
package format

import (
	"bytes"
	"errors"
	"fmt"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Compression is the outer container of an image.
type Compression int

// Compressions anvil can decode.
const (
	None Compression = iota
	Zstd
	Gzip
	Xz
	Lz4
	Bzip2
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case Gzip:
		return "gzip"
	case Xz:
		return "xz"
	case Lz4:
		return "lz4"
	case Bzip2:
		return "bzip2"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// Payload is what the (decompressed) stream holds.
type Payload int

// Payloads.
const (
	// Raw is a whole-disk image written block for block.
	Raw Payload = iota
	// Tar is a root filesystem archive.
	Tar
)

func (p Payload) String() string {
	if p == Tar {
		return "tar"
	}
	return "raw"
}

// Format is a detected or declared image format.
type Format struct {
	Compression Compression
	Payload     Payload
}

func (f Format) String() string {
	if f.Compression == None {
		return f.Payload.String()
	}
	return f.Payload.String() + "+" + f.Compression.String()
}

// Errors callers branch on.
var (
	// ErrUnsupported is a format anvil recognises but does not write.
	ErrUnsupported = errors.New("unsupported image format")
	// ErrMismatch is a declared format that disagrees with the bytes.
	ErrMismatch = errors.New("declared image format does not match the image")
	// ErrTooShort is a stream that ends before any format can be told.
	ErrTooShort = errors.New("image too short to detect its format")
)

// SniffLen is how many leading bytes Sniff and SniffPayload need at most.
const SniffLen = 512

type magic struct {
	off   int
	bytes []byte
	name  string
}

// refused are container formats recognised only to be named in the error.
var refused = []magic{
	{0, []byte("QFI\xfb"), "qcow2"},
	{0, []byte("KDMV"), "VMDK"},
	{0, []byte("# Disk DescriptorFile"), "VMDK descriptor"},
	{0, []byte("vhdxfile"), "VHDX"},
	{64, []byte("\x7f\x10\xda\xbe"), "VDI"},
	{0, []byte("conectix"), "VHD (dynamic)"},
	{0, []byte("PK\x03\x04"), "zip"},
	{0, []byte("7z\xbc\xaf\x27\x1c"), "7z"},
}

// Sniff tells the compression of an image from its first bytes (up to
// SniffLen; fewer when the image is shorter). eof says the stream has no
// more bytes than head, so a short head is the whole image.
func Sniff(head []byte, eof bool) (Compression, error) {
	if len(head) == 0 {
		return None, ErrTooShort
	}
	for _, m := range refused {
		if hasAt(head, m.off, m.bytes) {
			return None, fmt.Errorf("%w: %s", ErrUnsupported, m.name)
		}
	}
	switch {
	case hasAt(head, 0, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd, nil
	case len(head) >= 4 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18 && head[0]&0xf0 == 0x50:
		// A zstd skippable frame (magic 0x184D2A5?) may precede the data.
		return Zstd, nil
	case hasAt(head, 0, []byte{0x1f, 0x8b, 0x08}):
		return Gzip, nil
	case hasAt(head, 0, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return Xz, nil
	case hasAt(head, 0, []byte{0x04, 0x22, 0x4d, 0x18}):
		return Lz4, nil
	case hasAt(head, 0, []byte{0x02, 0x21, 0x4c, 0x18}):
		return None, fmt.Errorf("%w: legacy LZ4 (use the LZ4 frame format)", ErrUnsupported)
	case len(head) >= 4 && hasAt(head, 0, []byte("BZh")) && head[3] >= '1' && head[3] <= '9':
		return Bzip2, nil
	}
	if len(head) < 6 && !eof {
		return None, ErrTooShort
	}
	return None, nil
}

// SniffPayload tells a tar archive from a raw disk image, given the first
// bytes of the decompressed stream.
func SniffPayload(head []byte, eof bool) (Payload, error) {
	if len(head) >= 263 {
		if m := head[257:263]; bytes.Equal(m, []byte("ustar\x00")) || bytes.Equal(m, []byte("ustar ")) {
			return Tar, nil
		}
		return Raw, nil
	}
	if !eof {
		return Raw, ErrTooShort
	}
	if len(head) == 0 {
		return Raw, fmt.Errorf("%w: the image is empty", ErrTooShort)
	}
	return Raw, nil
}

func hasAt(b []byte, off int, m []byte) bool {
	return len(b) >= off+len(m) && bytes.Equal(b[off:off+len(m)], m)
}

// FromProto maps the catalogue's declared format. UNSPECIFIED means
// "whatever the bytes say" and returns ok=false.
func FromProto(f anvilv1.ImageFormat) (Format, bool, error) {
	switch f {
	case anvilv1.ImageFormat_IMAGE_FORMAT_UNSPECIFIED:
		return Format{}, false, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW:
		return Format{None, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW_ZSTD:
		return Format{Zstd, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW_GZIP:
		return Format{Gzip, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW_XZ:
		return Format{Xz, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW_LZ4:
		return Format{Lz4, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_RAW_BZIP2:
		return Format{Bzip2, Raw}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_TAR:
		return Format{None, Tar}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_TAR_ZSTD:
		return Format{Zstd, Tar}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_TAR_GZIP:
		return Format{Gzip, Tar}, true, nil
	case anvilv1.ImageFormat_IMAGE_FORMAT_TAR_XZ:
		return Format{Xz, Tar}, true, nil
	}
	return Format{}, false, fmt.Errorf("%w: declared format %v", ErrUnsupported, f)
}

// Check compares a detected format with the declared one (if any).
func Check(declared Format, isDeclared bool, detected Format) error {
	if isDeclared && declared != detected {
		return fmt.Errorf("%w: declared %s, detected %s", ErrMismatch, declared, detected)
	}
	return nil
}
