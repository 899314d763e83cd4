package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/anvil-metal/anvil/controller/sizes"
	"github.com/anvil-metal/anvil/controller/store"
	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

type imageAPI struct {
	anvilv1.UnimplementedImageServiceServer
	*Server
}

var _ anvilv1.ImageServiceServer = (*imageAPI)(nil)

func (a *imageAPI) CreateImage(ctx context.Context, req *anvilv1.CreateImageRequest) (*anvilv1.Image, error) {
	img := proto.CloneOf(req.GetImage())
	img.CreatedAt = timestamppb.New(a.now())
	err := a.store.Tx(ctx, func(tx store.Tx) error { return tx.CreateImage(ctx, img) })
	if err != nil {
		return nil, toStatus(fmt.Errorf("create image %s: %w", img.GetId(), err))
	}
	return img, nil
}

func (a *imageAPI) ListImages(ctx context.Context, _ *anvilv1.ListImagesRequest) (*anvilv1.ListImagesResponse, error) {
	var out []*anvilv1.Image
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListImages(ctx)
		return err
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("list images: %w", err))
	}
	return &anvilv1.ListImagesResponse{Images: out}, nil
}

func (a *imageAPI) GetImage(ctx context.Context, req *anvilv1.GetImageRequest) (*anvilv1.Image, error) {
	var out *anvilv1.Image
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.GetImage(ctx, req.GetId())
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

// DeleteImage refuses to delete an image that an allocation still uses.
func (a *imageAPI) DeleteImage(ctx context.Context, req *anvilv1.DeleteImageRequest) (*anvilv1.DeleteImageResponse, error) {
	err := a.store.Tx(ctx, func(tx store.Tx) error {
		if _, err := tx.GetImage(ctx, req.GetId()); err != nil {
			return err
		}
		yes := true
		ms, err := tx.ListMachines(ctx, store.MachineFilter{Allocated: &yes})
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Allocation.GetImageId() == req.GetId() {
				return status.Errorf(codes.FailedPrecondition, "image %s is in use by machine %s", req.GetId(), m.ID)
			}
		}
		return tx.DeleteImage(ctx, req.GetId())
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("delete image %s: %w", req.GetId(), err))
	}
	return &anvilv1.DeleteImageResponse{}, nil
}

type sizeAPI struct {
	anvilv1.UnimplementedSizeServiceServer
	*Server
}

var _ anvilv1.SizeServiceServer = (*sizeAPI)(nil)

// CreateSize checks the size's rules and that it overlaps no existing size,
// then re-matches every machine's size.
func (a *sizeAPI) CreateSize(ctx context.Context, req *anvilv1.CreateSizeRequest) (*anvilv1.Size, error) {
	sz := proto.CloneOf(req.GetSize())
	err := a.store.Tx(ctx, func(tx store.Tx) error {
		all, err := tx.ListSizes(ctx)
		if err != nil {
			return err
		}
		for _, s := range all {
			if s.GetId() == sz.GetId() {
				return fmt.Errorf("size %s: %w", sz.GetId(), store.ErrAlreadyExists)
			}
		}
		if err := sizes.CheckNew(all, sz); err != nil {
			if !errors.Is(err, sizes.ErrOverlap) {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			return err
		}
		if err := tx.CreateSize(ctx, sz); err != nil {
			return err
		}
		return rematch(ctx, tx, append(all, sz))
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("create size %s: %w", sz.GetId(), err))
	}
	return sz, nil
}

// rematch recomputes every machine's size after the size list changed.
func rematch(ctx context.Context, tx store.Tx, all []*anvilv1.Size) error {
	ms, err := tx.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		return err
	}
	for _, m := range ms {
		if id := sizes.Match(all, m.Inventory); id != m.SizeID {
			m.SizeID = id
			if err := tx.UpdateMachine(ctx, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *sizeAPI) ListSizes(ctx context.Context, _ *anvilv1.ListSizesRequest) (*anvilv1.ListSizesResponse, error) {
	var out []*anvilv1.Size
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListSizes(ctx)
		return err
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("list sizes: %w", err))
	}
	return &anvilv1.ListSizesResponse{Sizes: out}, nil
}

func (a *sizeAPI) GetSize(ctx context.Context, req *anvilv1.GetSizeRequest) (*anvilv1.Size, error) {
	var out *anvilv1.Size
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.GetSize(ctx, req.GetId())
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

func (a *sizeAPI) DeleteSize(ctx context.Context, req *anvilv1.DeleteSizeRequest) (*anvilv1.DeleteSizeResponse, error) {
	err := a.store.Tx(ctx, func(tx store.Tx) error {
		if err := tx.DeleteSize(ctx, req.GetId()); err != nil {
			return err
		}
		all, err := tx.ListSizes(ctx)
		if err != nil {
			return err
		}
		return rematch(ctx, tx, all)
	})
	if err != nil {
		return nil, toStatus(fmt.Errorf("delete size %s: %w", req.GetId(), err))
	}
	return &anvilv1.DeleteSizeResponse{}, nil
}
