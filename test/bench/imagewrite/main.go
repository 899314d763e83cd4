// Command imagewrite benchmarks the agent's image writer against the ways
// other provisioning tools write images, in one run on the same image, the
// same loopback HTTP server and fresh loop devices (make bench; results in
// docs/benchmarks.md):
//
//	(a) anvil: agent/image.Install, fetching with parallel Range requests,
//	    decoding zstd on several cores, hashing while streaming, skipping
//	    zero blocks on the (erased) target;
//	(b) curl | zstd -d | dd bs=4M oflag=direct (MAAS/Tinkerbell style);
//	(c) metal-hammer style: download to tmpfs, sha256sum, then decompress
//	    onto the target;
//	(d) the limit: zstd -d > /dev/null on the same file.
//
// The image is compressed twice, and every candidate runs on each: with
// zstd -3 -T0 (one frame, decoded on one core by everyone) and with
// pzstd -3 (independent frames: anvil decodes several at once, zstd -d
// still one after the other).
//
// Each candidate runs as its own process, so its peak RSS is its own. It
// also measures a full-disk overwrite (agent/erase) against
// dd if=/dev/zero oflag=direct bs=4M.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		dir    = flag.String("dir", "/var/tmp/anvil-bench", "work directory (image cache, loop backing files)")
		size   = flag.Int64("size", 2<<30, "raw image size in bytes")
		small  = flag.Int64("small", 512<<20, "a second, smaller image: peak RSS must not grow with image size (0: skip)")
		runs   = flag.Int("runs", 3, "runs per candidate (the median is reported)")
		zero   = flag.Float64("zero", 0.45, "fraction of the image in all-zero blocks")
		eraseB = flag.Int64("erase-size", 2<<30, "device size for the erase benchmark (0: skip)")
		child  = flag.String("child", "", "internal: run one anvil candidate (write|erase) and print JSON")
		target = flag.String("targets", "disk,ram", "where the loop devices' backing files live: disk (the work directory) and/or ram (/dev/shm)")
		comps  = flag.String("compress", "zstd,pzstd", "how the image is compressed: zstd (zstd -3 -T0: one frame) and/or pzstd (pzstd -3: independent frames)")
	)
	flag.Parse()
	if *child != "" {
		if err := runChild(*child, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, "imagewrite child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*dir, strings.Split(*target, ","), strings.Split(*comps, ","), *size, *small, *runs, *zero, *eraseB); err != nil {
		fmt.Fprintln(os.Stderr, "imagewrite:", err)
		os.Exit(1)
	}
}

// measurement is one candidate run.
type measurement struct {
	Wall   time.Duration
	MaxRSS int64 // KiB
	// CPU is user+system time of the candidate's processes.
	CPU time.Duration
}

func run(dir string, targets, comps []string, size, small int64, runs int, zero float64, eraseSize int64) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (loop devices)")
	}
	for _, tool := range []string{"curl", "zstd", "pzstd", "dd", "losetup", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (hack/install-deps.sh installs it)", tool)
		}
	}
	for _, c := range comps {
		if c != "zstd" && c != "pzstd" {
			return fmt.Errorf("-compress %q: want zstd and/or pzstd", c)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	sizes := []int64{size}
	if small > 0 && small < size {
		sizes = append(sizes, small)
	}
	var peak []string
	for i, sz := range sizes {
		t0 := time.Now()
		base, err := generate(dir, sz, zero)
		if err != nil {
			return fmt.Errorf("generate image: %w", err)
		}
		for k, c := range comps {
			if k > 0 {
				t0 = time.Now()
			}
			img := base
			if c == "pzstd" {
				if img, err = pzstdVariant(base); err != nil {
					return fmt.Errorf("compress the image with pzstd: %w", err)
				}
			}
			fmt.Printf("\nimage: %d MiB raw (%.0f%% zero blocks), %d MiB %s -3, ready in %s\n",
				img.RawSize>>20, 100*img.Zero, img.ZstSize>>20, c, time.Since(t0).Round(time.Second))
			url, stop, err := serve(img.Zst)
			if err != nil {
				return err
			}
			if i > 0 {
				// Only the anvil writer, to show its peak RSS at another size.
				m, err := median(runs, func() (measurement, error) { return anvilWrite(self, dir, img, url) })
				stop()
				if err != nil {
					return err
				}
				peak = append(peak, fmt.Sprintf("%d MiB image, %s: %d MiB", img.RawSize>>20, c, m.MaxRSS>>10))
				continue
			}
			for _, t := range targets {
				backing, what := dir, "loop devices on sparse files in "+dir+" (the host disk)"
				if t == "ram" {
					backing, what = "/dev/shm", "loop devices on sparse files in /dev/shm (RAM: the pipeline, not the host disk, is the limit)"
				}
				fmt.Printf("\n%s image; targets: %s\n", c, what)
				res, err := compare(self, backing, img, url, runs)
				if err != nil {
					stop()
					return err
				}
				peak = append(peak, fmt.Sprintf("%d MiB image, %s, %s: %d MiB", img.RawSize>>20, c, t, res["a"].MaxRSS>>10))
				report(img, res)
			}
			stop()
		}
	}
	fmt.Printf("peak RSS of (a): %s\n", strings.Join(peak, ", "))
	if eraseSize > 0 {
		return eraseBench(self, dir, eraseSize, runs)
	}
	return nil
}

func compare(self, dir string, img testImage, url string, runs int) (map[string]measurement, error) {
	tmpfs := "/dev/shm"
	cands := []struct {
		key string
		fn  func() (measurement, error)
	}{
		{"a", func() (measurement, error) { return anvilWrite(self, dir, img, url) }},
		{"b", func() (measurement, error) {
			return onFreshDisk(dir, img, func(dev string) (measurement, error) {
				return shell(fmt.Sprintf("set -o pipefail; curl -sSf %q | zstd -dc | dd of=%s bs=4M oflag=direct iflag=fullblock status=none", url, dev))
			})
		}},
		{"c", func() (measurement, error) {
			return onFreshDisk(dir, img, func(dev string) (measurement, error) {
				f := filepath.Join(tmpfs, "anvil-bench-image.zst")
				defer os.Remove(f)
				want := strings.TrimPrefix(img.ZstSum, "sha256:")
				return shell(fmt.Sprintf("set -o pipefail; curl -sSf -o %s %q && echo '%s  %s' | sha256sum -c --quiet && zstd -dc %s | dd of=%s bs=4M oflag=direct iflag=fullblock status=none",
					f, url, want, f, f, dev))
			})
		}},
		{"d", func() (measurement, error) { return shell(fmt.Sprintf("zstd -dc %s > /dev/null", img.Zst)) }},
	}
	var fns []func() (measurement, error)
	for _, c := range cands {
		fns = append(fns, func() (measurement, error) {
			m, err := c.fn()
			if err != nil {
				err = fmt.Errorf("candidate (%s): %w", c.key, err)
			}
			return m, err
		})
	}
	ms, err := interleaved(runs, fns...)
	if err != nil {
		return nil, err
	}
	res := map[string]measurement{}
	for i, c := range cands {
		res[c.key] = ms[i]
	}
	return res, nil
}

func report(img testImage, r map[string]measurement) {
	mbps := func(m measurement) float64 { return float64(img.RawSize) / m.Wall.Seconds() / 1e6 }
	fmt.Printf("%-52s %8s %9s %9s %9s\n", "candidate (median)", "time", "MB/s raw", "CPU", "peak RSS")
	names := map[string]string{
		"a": "(a) anvil image.Install",
		"b": "(b) curl | zstd -d | dd bs=4M oflag=direct",
		"c": "(c) download to tmpfs, sha256sum, zstd -d | dd",
		"d": "(d) zstd -d > /dev/null (limit)",
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		m := r[k]
		fmt.Printf("%-52s %7.2fs %9.0f %8.2fs %5d MiB\n", names[k], m.Wall.Seconds(), mbps(m), m.CPU.Seconds(), m.MaxRSS>>10)
	}
	a := r["a"].Wall.Seconds()
	fmt.Printf("ratio (a) vs (b): %.2fx faster (target >= 2.0)\n", r["b"].Wall.Seconds()/a)
	fmt.Printf("ratio (a) vs (c): %.2fx faster (target >= 3.0)\n", r["c"].Wall.Seconds()/a)
	fmt.Printf("ratio (a) vs (d): %.2fx of the limit's speed (target >= 0.8)\n", r["d"].Wall.Seconds()/a)
}

// median runs fn n times and returns the run with the median wall time.
func median(n int, fn func() (measurement, error)) (measurement, error) {
	ms, err := interleaved(n, fn)
	if err != nil {
		return measurement{}, err
	}
	return ms[0], nil
}

// interleaved runs the candidates n times each, taking turns (a, b, c,
// a, b, c, ...) so that a drifting machine or a disk still writing back
// an earlier run's pages weighs on all of them alike, and returns each
// one's run with the median wall time.
func interleaved(n int, fns ...func() (measurement, error)) ([]measurement, error) {
	runs := make([][]measurement, len(fns))
	for range max(n, 1) {
		for i, fn := range fns {
			// Start every run with no dirty pages from the previous one
			// being written back underneath it.
			syscall.Sync()
			m, err := fn()
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], m)
		}
	}
	out := make([]measurement, len(fns))
	for i, ms := range runs {
		slices.SortFunc(ms, func(a, b measurement) int { return int(a.Wall - b.Wall) })
		out[i] = ms[len(ms)/2]
	}
	return out, nil
}

func anvilWrite(self, dir string, img testImage, url string) (measurement, error) {
	return onFreshDisk(dir, img, func(dev string) (measurement, error) {
		m, out, err := measure(exec.Command(self, "-child", "write", url, img.ZstSum, dev))
		if err != nil {
			return m, fmt.Errorf("%v: %s", err, out)
		}
		return m, nil
	})
}

// onFreshDisk runs fn on a new loop device backed by a new sparse file (it
// reads as zeroes, as after an erase), then checks the written image.
func onFreshDisk(dir string, img testImage, fn func(dev string) (measurement, error)) (measurement, error) {
	dev, detach, err := loop(dir, img.RawSize+(64<<20))
	if err != nil {
		return measurement{}, err
	}
	defer detach()
	m, err := fn(dev)
	if err != nil {
		return m, err
	}
	sum, err := rangeSum(dev, 1<<20, img.RawSize-(2<<20))
	if err != nil {
		return m, err
	}
	if sum != img.RawSum {
		return m, fmt.Errorf("the disk written does not hold the image (sha256 %s, want %s)", sum, img.RawSum)
	}
	return m, nil
}

func loop(dir string, size int64) (string, func(), error) {
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		return "", nil, err
	}
	name := f.Name()
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		os.Remove(name)
		return "", nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", name).CombinedOutput()
	if err != nil {
		os.Remove(name)
		return "", nil, fmt.Errorf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	return dev, func() {
		_ = exec.Command("losetup", "--detach", dev).Run()
		os.Remove(name)
	}, nil
}

func shell(script string) (measurement, error) {
	m, out, err := measure(exec.Command("bash", "-c", script))
	if err != nil {
		return m, fmt.Errorf("%s: %v: %s", script, err, out)
	}
	return m, nil
}

// measure runs cmd and returns its wall time and peak RSS (the largest of
// the process and the children it waited for).
func measure(cmd *exec.Cmd) (measurement, []byte, error) {
	start := time.Now()
	out, err := cmd.CombinedOutput()
	m := measurement{Wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSS = ru.Maxrss
	}
	m.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return m, out, err
}

// serve serves path over loopback HTTP with Range support.
func serve(path string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/" + filepath.Base(path), func() { _ = srv.Shutdown(context.Background()) }, nil
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}
