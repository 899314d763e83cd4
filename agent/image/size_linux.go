package image

import (
	"os"

	"github.com/anvil-metal/anvil/agent/blockdev"
)

type sized struct {
	size, lbs int64
}

func openSize(path string) (sized, error) {
	d, err := blockdev.Open(path, os.O_RDONLY)
	if err != nil {
		return sized{}, err
	}
	defer d.Close()
	return sized{d.Size, d.LogicalBlock}, nil
}
