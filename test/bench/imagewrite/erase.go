package main

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/anvil-metal/anvil/agent/erase"
)

// eraseChild overwrites dev the way the agent's full erase does when the
// device cannot zero itself.
func eraseChild(ctx context.Context, dev string) error {
	res, err := erase.Overwrite(ctx, dev, 2, nil) // as agent/executor runs it
	if err != nil {
		return err
	}
	return printJSON(res)
}

// eraseBench compares agent/erase.Overwrite with dd on fresh loop devices
// of the same size, disk-backed, median of runs taken in turns.
func eraseBench(self, dir string, size int64, runs int) error {
	fmt.Printf("\nfull overwrite of a %d MiB loop device (sparse file in %s), median of %d\n", size>>20, dir, runs)
	img := testImage{RawSize: size}
	fresh := func(fn func(dev string) (measurement, error)) (measurement, error) {
		dev, detach, err := loop(dir, img.RawSize)
		if err != nil {
			return measurement{}, err
		}
		defer detach()
		return fn(dev)
	}
	ms, err := interleaved(runs,
		func() (measurement, error) {
			return fresh(func(dev string) (measurement, error) {
				m, out, err := measure(exec.Command(self, "-child", "erase", dev))
				if err != nil {
					return m, fmt.Errorf("%v: %s", err, out)
				}
				return m, nil
			})
		},
		func() (measurement, error) {
			return fresh(func(dev string) (measurement, error) {
				return shell(fmt.Sprintf("dd if=/dev/zero of=%s bs=4M oflag=direct status=none; sync %s", dev, dev))
			})
		})
	if err != nil {
		return err
	}
	a, b := ms[0], ms[1]
	mbps := func(m measurement) float64 { return float64(size) / m.Wall.Seconds() / 1e6 }
	fmt.Printf("%-52s %7.2fs %9.0f MB/s\n", "anvil erase.Overwrite (8 MiB O_DIRECT x2, fdatasync)", a.Wall.Seconds(), mbps(a))
	fmt.Printf("%-52s %7.2fs %9.0f MB/s\n", "dd if=/dev/zero bs=4M oflag=direct; sync", b.Wall.Seconds(), mbps(b))
	fmt.Printf("ratio anvil vs dd: %.2fx of dd's throughput (target >= 0.9)\n", b.Wall.Seconds()/a.Wall.Seconds())
	return nil
}
