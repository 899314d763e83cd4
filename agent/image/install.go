// Package image installs an OS image onto a disk in one streaming pass:
// fetch → hash → detect and decode → write. The checksum is computed while
// the bytes stream (sha256 or sha512 of the file as the catalogue lists it),
// the detected format must match the declared one, and an install that
// fails after the first byte reached the disk, or whose image does not
// decode or verify, destroys the disk's partition tables, so a
// half-written or unverified image can never boot (nor the one the disk
// held before). A format refused before decoding leaves the disk alone.
//
// A raw image is also crash-safe: the writer zeroes the disk's first and
// last MiB before streaming and holds the image's first and last MiB
// (MBR, both GPT headers and entry arrays) in memory until the digest
// matched (diskwrite.Options.HoldBack), so a process killed or a machine
// powered off mid-install leaves a disk without a partition table, never
// a valid GPT over a partial image. A tarball install is ordered the same
// way: the TarInstaller writes the filesystems onto a disk whose tables it
// zeroed, and the GPT and boot code only when Install commits it.
package image

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/anvil-metal/anvil/agent/erase"
	"github.com/anvil-metal/anvil/agent/image/diskwrite"
	"github.com/anvil-metal/anvil/agent/image/format"
	"github.com/anvil-metal/anvil/agent/image/growpart"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

// Errors callers branch on.
var (
	// ErrChecksum is an image whose digest differs from the catalogue's.
	ErrChecksum = errors.New("image checksum mismatch")
	// ErrBadChecksumSpec is a checksum that is not "sha256:<hex>" or
	// "sha512:<hex>".
	ErrBadChecksumSpec = errors.New("invalid image checksum")
)

// Request is one install.
type Request struct {
	URL string
	// Checksum is "sha256:<hex>" or "sha512:<hex>"; required.
	Checksum string
	// Format is the catalogue's declared format (UNSPECIFIED: detect).
	Format anvilv1.ImageFormat
	// Target is the disk (block device, or an image file in tests).
	Target string
	// Zeroed says the target reads as zeroes, so zero blocks are skipped.
	Zeroed bool
	// KernelArgs are the install's extra kernel arguments, for the boot
	// configuration a tarball install writes (a raw image keeps its own).
	KernelArgs string
}

// Source opens the image at url and returns its size (-1 if unknown).
type Source func(ctx context.Context, url string) (io.ReadCloser, int64, error)

// TarInstaller lays a root filesystem tarball onto the target disk and
// returns a summary and a commit; zeroed says the target reads as zeroes;
// args are the install's extra kernel arguments for the boot
// configuration it writes. Until commit runs, the disk must carry no
// partition table nor boot code (rootfs.Prepare); Install calls it only
// once the archive's digest matched.
type TarInstaller func(ctx context.Context, target string, zeroed bool, tar io.Reader, args string) (summary string, commit func() error, err error)

// Options wire the stages.
type Options struct {
	Source Source
	// Tar handles tar payloads; nil refuses them.
	Tar    TarInstaller
	Write  diskwrite.Options
	Decode format.DecodeOptions
	// Grow tunes the partition table fit after a raw write (room kept at
	// the disk's end for agent/seed).
	Grow growpart.Options
	// Progress receives (bytes fetched, image file size) at least every
	// ProgressEvery while installing; size is 0 when unknown.
	Progress      func(done, total uint64)
	ProgressEvery time.Duration
}

// Result says what Install did.
type Result struct {
	Format format.Format
	// Digest is "algo:hex" of the fetched file (verified).
	Digest string
	// Fetched bytes of the image file; Image bytes after decoding.
	Fetched, Image int64
	// Written and Skipped bytes on the disk (raw images).
	Written, Skipped int64
	Duration         time.Duration
	// Grow says what happened to the partition table after a raw write.
	Grow growpart.Result
	// Tar is the tar installer's summary.
	Tar string
}

// ParseChecksum parses "sha256:<hex>" or "sha512:<hex>".
func ParseChecksum(s string) (hash.Hash, []byte, error) {
	algo, hexsum, ok := strings.Cut(s, ":")
	if !ok {
		return nil, nil, fmt.Errorf("%w %q: want sha256:<hex> or sha512:<hex>", ErrBadChecksumSpec, s)
	}
	var h hash.Hash
	switch strings.ToLower(algo) {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return nil, nil, fmt.Errorf("%w %q: unknown algorithm %q", ErrBadChecksumSpec, s, algo)
	}
	want, err := hex.DecodeString(hexsum)
	if err != nil || len(want) != h.Size() {
		return nil, nil, fmt.Errorf("%w %q: want %d hex digits for %s", ErrBadChecksumSpec, s, 2*h.Size(), algo)
	}
	return h, want, nil
}

// Install streams the image onto req.Target.
func Install(ctx context.Context, req Request, o Options) (res Result, err error) {
	start := time.Now()
	h, want, err := ParseChecksum(req.Checksum)
	if err != nil {
		return res, err
	}
	declared, isDeclared, err := format.FromProto(req.Format)
	if err != nil {
		return res, err
	}
	if o.Source == nil {
		return res, errors.New("image install: no source configured")
	}
	src, size, err := o.Source(ctx, req.URL)
	if err != nil {
		return res, fmt.Errorf("open image %s: %w", req.URL, err)
	}
	defer src.Close()
	cr := newHashingReader(src, h, 1<<20, 4)
	defer cr.Close()
	stop := reportProgress(ctx, o, cr, size)
	defer stop()

	// Once the target changed, or the image's data proved bad, any
	// failure must leave the target unbootable.
	touched := false
	defer func() {
		if err != nil && touched {
			if derr := Destroy(ctx, req.Target); derr != nil {
				err = errors.Join(err, derr)
			} else {
				err = fmt.Errorf("%w (partition tables on %s destroyed: the disk boots neither a partial image nor the one it held)", err, req.Target)
			}
		}
	}()
	dec, err := format.Open(cr, declared, isDeclared, o.Decode)
	if err != nil {
		err = fmt.Errorf("image %s: %w", req.URL, err)
		if refused(err) {
			return res, err // nothing decoded: the disk is left as it was
		}
		// The image did not decode: whether the decoder failed on the
		// first bytes (a frame decoded whole before it is written) or
		// after writing some, the outcome is the same.
		touched, err = badImage(ctx, cr, h, want, req, err, nil)
		return res, err
	}
	// The decoder's goroutines may be waiting for the source: closing
	// the source first ends that wait when the install failed early.
	defer func() { src.Close(); dec.Close() }()
	res.Format = dec.Format

	// A raw image's first and last MiB stay in the writer's memory until
	// the digest matched (diskwrite.Options.HoldBack): no crash before
	// the commit below leaves a partition table on the disk.
	var w *diskwrite.Writer
	var commitTar func() error
	defer func() {
		if err != nil && w != nil {
			w.Abort(err)
		}
	}()
	switch dec.Format.Payload {
	case format.Raw:
		w, res.Image, err = writeRaw(ctx, req, o, dec, &touched)
	case format.Tar:
		if o.Tar == nil {
			return res, fmt.Errorf("%w: this agent cannot install %s images", format.ErrUnsupported, dec.Format)
		}
		touched = true
		res.Tar, commitTar, err = o.Tar(ctx, req.Target, req.Zeroed, dec, req.KernelArgs)
	}
	if err != nil {
		bad, berr := badImage(ctx, cr, h, want, req, err, dec)
		touched, err = touched || bad, berr
		return res, err
	}
	// Hash every byte of the file, even past the end of the compressed
	// stream (a trailing frame or garbage must not escape the checksum).
	// A tar installer stops at the archive's end: stop the decoder's
	// read-ahead first.
	dec.Close()
	if _, err = io.Copy(io.Discard, cr); err != nil {
		return res, fmt.Errorf("read the rest of %s: %w", req.URL, err)
	}
	res.Fetched = cr.Count()
	got := h.Sum(nil)
	res.Digest = algoOf(req.Checksum) + ":" + hex.EncodeToString(got)
	if string(got) != string(want) {
		return res, fmt.Errorf("%w: %s has %s, the catalogue says %s", ErrChecksum, req.URL, res.Digest, req.Checksum)
	}
	if size >= 0 && res.Fetched != size {
		return res, fmt.Errorf("image %s: fetched %d bytes, the server announced %d", req.URL, res.Fetched, size)
	}
	if w != nil {
		// Verified: now the held-back partition tables and boot code.
		if err = w.Close(); err != nil {
			w = nil
			return res, fmt.Errorf("commit image %s to %s: %w", req.URL, req.Target, err)
		}
		st := w.Stats()
		res.Written, res.Skipped = st.Written, st.Skipped
		w = nil
	}
	if commitTar != nil {
		// Verified: now the partition table and the BIOS boot code.
		if err = commitTar(); err != nil {
			return res, fmt.Errorf("commit image %s to %s: %w", req.URL, req.Target, err)
		}
	}
	if dec.Format.Payload == format.Raw {
		if res.Grow, err = growTarget(req.Target, o.Grow); err != nil {
			return res, err
		}
	}
	if o.Progress != nil {
		o.Progress(uint64(res.Fetched), uint64(max(size, res.Fetched)))
	}
	res.Duration = time.Since(start)
	return res, nil
}

// refused tells a format refusal (unsupported, mismatching the
// declaration, too short to tell), decided before any of the image is
// decoded, from a failure of the image's data.
func refused(err error) bool {
	return errors.Is(err, format.ErrUnsupported) || errors.Is(err, format.ErrMismatch) || errors.Is(err, format.ErrTooShort)
}

// badImage explains a failure while decoding or writing: a stream that
// does not decode is most often a file that is not the catalogue's, so
// the rest of it is hashed to say so. It returns whether the file was
// read to its end (the failure lies in the image's
// bytes, not in the transport) and the error to report. Disk errors and cancellation are
// reported as they are. dec, when set, is closed first: its goroutines
// stop reading cr.
func badImage(ctx context.Context, cr *hashingReader, h hash.Hash, want []byte, req Request, err error, dec *format.Stream) (bool, error) {
	var errno syscall.Errno
	if ctx.Err() != nil || errors.As(err, &errno) {
		return false, err
	}
	if dec != nil {
		dec.Close()
	}
	if _, derr := io.Copy(io.Discard, cr); derr != nil {
		return false, err
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return true, fmt.Errorf("%w: %s has %s:%s, the catalogue says %s (decoding failed: %v)", ErrChecksum, req.URL, algoOf(req.Checksum), hex.EncodeToString(got), req.Checksum, err)
	}
	return true, err
}

// algoOf is the lower-case algorithm name of "algo:hex".
func algoOf(checksum string) string {
	algo, _, _ := strings.Cut(checksum, ":")
	return strings.ToLower(algo)
}

// writeRaw streams r onto the target and returns the open writer, which
// still holds the image's first and last MiB: the caller closes it (the
// commit) once the image verified, or aborts it. touched becomes true
// once the device is open for writing.
func writeRaw(ctx context.Context, req Request, o Options, r io.Reader, touched *bool) (*diskwrite.Writer, int64, error) {
	wo := o.Write
	wo.Zeroed = req.Zeroed
	wo.HoldBack = true
	w, err := diskwrite.Open(req.Target, wo)
	if errors.Is(err, diskwrite.ErrInvalidate) {
		*touched = true // half the old tables may be gone: destroy the rest
	}
	if err != nil {
		return nil, 0, err
	}
	*touched = true
	n, err := diskwrite.CopyContext(ctx, w, r)
	if err != nil {
		w.Abort(err)
		return nil, n, fmt.Errorf("write image to %s at byte %d: %w", req.Target, n, err)
	}
	return w, n, nil
}

func growTarget(target string, o growpart.Options) (growpart.Result, error) {
	d, err := openSize(target)
	if err != nil {
		return growpart.Result{}, err
	}
	return growpart.Grow(target, d.size, int(d.lbs), o)
}

// Destroy clears both partition tables (the first and last MiB) even when
// ctx was cancelled, so a disk whose install failed after Install returned
// (a later step such as the first-boot seed) cannot boot either.
func Destroy(ctx context.Context, target string) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if _, err := erase.ClearTables(dctx, target); err != nil {
		return fmt.Errorf("destroy partition tables on %s after a failed install: %w", target, err)
	}
	return nil
}

// reportProgress calls o.Progress every o.ProgressEvery until stop.
func reportProgress(ctx context.Context, o Options, cr *hashingReader, size int64) (stop func()) {
	if o.Progress == nil {
		return func() {}
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	total := uint64(max(size, 0))
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				o.Progress(uint64(cr.Count()), total)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
