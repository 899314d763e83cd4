package tiny

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Catalogue is the image's catalogue entry (tiny.json), what `anvilctl
// image add` needs: the file relative to the catalogue, its checksum and
// declared format, plus the raw image's checksum and what went into it.
type Catalogue struct {
	ID string `json:"id"`
	// File is the compressed image, relative to the catalogue.
	File     string `json:"file"`
	Checksum string `json:"checksum"`
	Format   string `json:"format"`
	Size     int64  `json:"size"`
	// RawFile is the uncompressed image, relative to the catalogue.
	RawFile     string `json:"raw_file"`
	RawChecksum string `json:"raw_checksum"`
	RawSize     int64  `json:"raw_size"`
	OS          string `json:"os"`
	Version     string `json:"version"`
	Kernel      string `json:"kernel"`
	Cmdline     string `json:"cmdline"`
	// Epoch is the files' time stamp, seconds since 1970 (UTC).
	Epoch int64 `json:"epoch"`
}

// Sums are the sizes and sha256 digests (hex) of the two image files.
type Sums struct {
	RawBytes, ZstBytes   int64
	RawSHA256, ZstSHA256 string
}

// NewCatalogue describes the image built from in.
func NewCatalogue(in Inputs, s Sums) Catalogue {
	return Catalogue{
		ID:   "anvil-tiny",
		File: ZstFile, Checksum: "sha256:" + s.ZstSHA256, Format: "raw-zstd", Size: s.ZstBytes,
		RawFile: RawFile, RawChecksum: "sha256:" + s.RawSHA256, RawSize: s.RawBytes,
		OS: "anvil-tiny", Version: in.Version, Kernel: in.KernelRelease, Cmdline: Cmdline, Epoch: in.Epoch.Unix(),
	}
}

// EpochTime is Epoch as a time.
func (c Catalogue) EpochTime() time.Time { return time.Unix(c.Epoch, 0).UTC() }

// JSON renders the entry, indented, with a final newline.
func (c Catalogue) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode catalogue: %w", err)
	}
	return append(b, '\n'), nil
}

// ReadCatalogue reads tiny.json.
func ReadCatalogue(path string) (Catalogue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Catalogue{}, fmt.Errorf("read catalogue: %w", err)
	}
	var c Catalogue
	if err := json.Unmarshal(b, &c); err != nil {
		return Catalogue{}, fmt.Errorf("parse catalogue %s: %w", path, err)
	}
	return c, nil
}

// compressFile writes raw zstd-compressed to zst and returns both files'
// sizes and digests. One encoder goroutine and a fixed level make the
// output a function of the input alone.
func compressFile(raw, zst string) (s Sums, err error) {
	in, err := os.Open(raw)
	if err != nil {
		return s, fmt.Errorf("open %s: %w", raw, err)
	}
	defer in.Close()
	out, err := os.Create(zst)
	if err != nil {
		return s, fmt.Errorf("create %s: %w", zst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", zst, cerr)
		}
	}()
	zh := sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, zh)}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return s, fmt.Errorf("zstd encoder: %w", err)
	}
	rh := sha256.New()
	n, err := io.Copy(enc, io.TeeReader(in, rh))
	if err != nil {
		enc.Close()
		return s, fmt.Errorf("compress %s: %w", raw, err)
	}
	if err := enc.Close(); err != nil {
		return s, fmt.Errorf("compress %s: %w", raw, err)
	}
	return Sums{RawBytes: n, ZstBytes: cw.n, RawSHA256: hex.EncodeToString(rh.Sum(nil)), ZstSHA256: hex.EncodeToString(zh.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
