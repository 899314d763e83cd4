package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func imageCommands() *group {
	return &group{
		name:    "image",
		summary: "Manage the OS images machines are installed with",
		cmds:    []*command{imageAdd(), imageList(), imageShow(), imageDelete()},
	}
}

func imageAdd() *command {
	return &command{
		name: "add", aliases: []string{"create"}, minArgs: 1, maxArgs: 1,
		args:    "ID --url URL --checksum sha256:HEX --format FORMAT",
		summary: "Register an image",
		setup: func(fs *flag.FlagSet) action {
			img := &anvilv1.Image{}
			fs.StringVar(&img.Url, "url", "", "`url` the agent downloads the image from (required)")
			fs.StringVar(&img.Checksum, "checksum", "", "checksum of the image as served, `sha256:hex` or sha512:hex (required)")
			fs.Var(enumFlag[anvilv1.ImageFormat]{&img.Format}, "format",
				"image `format`: "+strings.Join(enumChoices[anvilv1.ImageFormat](), ", ")+" (required)")
			fs.Var(enumListFlag[anvilv1.ImageFeature]{&img.Features}, "feature",
				"what the image is for: "+strings.Join(enumChoices[anvilv1.ImageFeature](), ", ")+" (repeatable)")
			fs.StringVar(&img.Os, "os", "", "operating system `name`, e.g. debian")
			fs.StringVar(&img.Version, "version", "", "operating system `version`")
			fs.StringVar(&img.Description, "description", "", "free-form `text`")
			return func(ctx context.Context, a *app, args []string) error {
				img.Id = args[0]
				switch {
				case img.Url == "":
					return usagef("--url is required")
				case img.Checksum == "":
					return usagef("--checksum is required")
				case img.Format == anvilv1.ImageFormat_IMAGE_FORMAT_UNSPECIFIED:
					return usagef("--format is required")
				}
				if _, _, err := anvilv1.ParseChecksum(img.Checksum); err != nil {
					return usageError{err.Error()}
				}
				created, err := a.images.CreateImage(ctx, &anvilv1.CreateImageRequest{Image: img})
				if err != nil {
					return err
				}
				return a.print(created, func(w io.Writer) error { return a.imageTable(w, []*anvilv1.Image{created}) })
			}
		},
	}
}

func imageList() *command {
	return &command{
		name: "ls", aliases: []string{"list"}, summary: "List images",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, _ []string) error {
				resp, err := a.images.ListImages(ctx, &anvilv1.ListImagesRequest{})
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error { return a.imageTable(w, resp.GetImages()) })
			}
		},
	}
}

func imageShow() *command {
	return &command{
		name: "show", aliases: []string{"get", "describe"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Show an image",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				img, err := a.images.GetImage(ctx, &anvilv1.GetImageRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(img, func(w io.Writer) error {
					var b kvBlock
					b.add("ID", img.GetId())
					b.add("URL", img.GetUrl())
					b.add("Checksum", img.GetChecksum())
					b.add("Format", kebab(img.GetFormat()))
					b.add("Features", features(img.GetFeatures()))
					b.add("OS", img.GetOs())
					b.add("Version", img.GetVersion())
					b.add("Description", img.GetDescription())
					b.add("Created", timeAndAge(img.GetCreatedAt(), a.now()))
					return b.write(w)
				})
			}
		},
	}
}

func imageDelete() *command {
	return &command{
		name: "rm", aliases: []string{"delete"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Delete an image",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				resp, err := a.images.DeleteImage(ctx, &anvilv1.DeleteImageRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "image %s deleted\n", args[0])
					return err
				})
			}
		},
	}
}

func (a *app) imageTable(w io.Writer, imgs []*anvilv1.Image) error {
	now := a.now()
	tw := newTable(w)
	row(tw, "ID", "OS", "VERSION", "FORMAT", "FEATURES", "CHECKSUM", "AGE", "URL")
	for _, img := range imgs {
		row(tw, img.GetId(), img.GetOs(), img.GetVersion(), kebab(img.GetFormat()), features(img.GetFeatures()),
			truncate(img.GetChecksum(), 20), since(img.GetCreatedAt(), now), img.GetUrl())
	}
	return tw.Flush()
}

func features(fs []anvilv1.ImageFeature) string {
	var s []string
	for _, f := range fs {
		s = append(s, kebab(f))
	}
	return strings.Join(s, ",")
}
