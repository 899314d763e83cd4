package executor

import (
	"context"
	"fmt"
	"os"

	"github.com/anvil-metal/anvil/agent/blockdev"
	"github.com/anvil-metal/anvil/agent/erase"
)

// DefaultMethods wires the erase implementations of this agent.
func DefaultMethods() EraseMethods {
	return EraseMethods{
		Steps: map[StepKind]func(context.Context, string, ProgressFunc) (string, error){
			StepQuick: func(ctx context.Context, path string, p ProgressFunc) (string, error) {
				res, err := erase.Quick(ctx, path)
				if err != nil {
					return "", err
				}
				p(uint64(res.Bytes), uint64(res.Bytes))
				return res.Method, nil
			},
		},
		Size: func(path string) (int64, error) {
			d, err := blockdev.Open(path, os.O_RDONLY)
			if err != nil {
				return 0, fmt.Errorf("size of %s: %w", path, err)
			}
			defer d.Close()
			return d.Size, nil
		},
	}
}
