package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

func sizeCommands() *group {
	return &group{
		name:    "size",
		summary: "Manage sizes, the hardware classes machines are sorted into",
		cmds:    []*command{sizeAdd(), sizeList(), sizeShow(), sizeDelete()},
	}
}

func sizeAdd() *command {
	return &command{
		name: "add", aliases: []string{"create"}, minArgs: 1, maxArgs: 1,
		args:    "ID [--cores MIN[-MAX][:GLOB]] [--memory MIN[-MAX]] [--storage MIN[-MAX][:GLOB]] [--gpu MIN[-MAX][:GLOB]]",
		summary: "Define a size; a single number means exactly that many, sizes take units (4GiB, 500G, 1TiB)",
		setup: func(fs *flag.FlagSet) action {
			size := &anvilv1.Size{}
			fs.StringVar(&size.Description, "description", "", "free-form `text`")
			fs.Var(constraintFlag{anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES, &size.Constraints}, "cores",
				"physical CPU cores, `MIN[-MAX][:GLOB]`; GLOB matches the CPU model (repeatable)")
			fs.Var(constraintFlag{anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY, &size.Constraints}, "memory",
				"total memory, `MIN[-MAX]`, e.g. 64GiB-128GiB")
			fs.Var(constraintFlag{anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE, &size.Constraints}, "storage",
				"total size of non-removable disks, `MIN[-MAX][:GLOB]`; GLOB selects the disk models that count (repeatable)")
			fs.Var(constraintFlag{anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU, &size.Constraints}, "gpu",
				"number of GPUs, `MIN[-MAX][:GLOB]`; GLOB selects the GPU models that count (repeatable)")
			return func(ctx context.Context, a *app, args []string) error {
				size.Id = args[0]
				if len(size.Constraints) == 0 {
					return usagef("give at least one of --cores, --memory, --storage, --gpu")
				}
				created, err := a.sizes.CreateSize(ctx, &anvilv1.CreateSizeRequest{Size: size})
				if err != nil {
					return err
				}
				return a.print(created, func(w io.Writer) error { return sizeTable(w, []*anvilv1.Size{created}) })
			}
		},
	}
}

func sizeList() *command {
	return &command{
		name: "ls", aliases: []string{"list"}, summary: "List sizes",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, _ []string) error {
				resp, err := a.sizes.ListSizes(ctx, &anvilv1.ListSizesRequest{})
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error { return sizeTable(w, resp.GetSizes()) })
			}
		},
	}
}

func sizeShow() *command {
	return &command{
		name: "show", aliases: []string{"get", "describe"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Show a size",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				size, err := a.sizes.GetSize(ctx, &anvilv1.GetSizeRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(size, func(w io.Writer) error {
					var b kvBlock
					b.add("ID", size.GetId())
					b.add("Description", size.GetDescription())
					if err := b.write(w); err != nil {
						return err
					}
					fmt.Fprintf(w, "\nConstraints:\n")
					tw := newTable(w)
					row(tw, "  TYPE", "MIN", "MAX", "MODEL")
					for _, c := range size.GetConstraints() {
						lo, hi := constraintBounds(c)
						glob := c.GetModelGlob()
						if glob == "" {
							glob = "*"
						}
						row(tw, "  "+kebab(c.GetType()), lo, hi, glob)
					}
					return tw.Flush()
				})
			}
		},
	}
}

func sizeDelete() *command {
	return &command{
		name: "rm", aliases: []string{"delete"}, args: "ID", minArgs: 1, maxArgs: 1,
		summary: "Delete a size",
		setup: func(fs *flag.FlagSet) action {
			return func(ctx context.Context, a *app, args []string) error {
				resp, err := a.sizes.DeleteSize(ctx, &anvilv1.DeleteSizeRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return a.print(resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "size %s deleted\n", args[0])
					return err
				})
			}
		},
	}
}

func sizeTable(w io.Writer, sizes []*anvilv1.Size) error {
	tw := newTable(w)
	row(tw, "ID", "CORES", "MEMORY", "STORAGE", "GPU", "DESCRIPTION")
	for _, s := range sizes {
		byType := map[anvilv1.ConstraintType][]string{}
		for _, c := range s.GetConstraints() {
			byType[c.GetType()] = append(byType[c.GetType()], formatConstraint(c))
		}
		cell := func(t anvilv1.ConstraintType) string { return strings.Join(byType[t], ", ") }
		row(tw, s.GetId(),
			cell(anvilv1.ConstraintType_CONSTRAINT_TYPE_CORES), cell(anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY),
			cell(anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE), cell(anvilv1.ConstraintType_CONSTRAINT_TYPE_GPU),
			s.GetDescription())
	}
	return tw.Flush()
}

// constraintFlag parses MIN[-MAX][:GLOB] into a constraint of one type,
// appended to the size's list. Memory and storage bounds are byte sizes
// (parseBytes); memory takes no GLOB.
type constraintFlag struct {
	typ anvilv1.ConstraintType
	p   *[]*anvilv1.Constraint
}

func (f constraintFlag) String() string {
	if f.p == nil {
		return ""
	}
	var s []string
	for _, c := range *f.p {
		if c.GetType() == f.typ {
			s = append(s, formatConstraint(c))
		}
	}
	return strings.Join(s, ",")
}

func (f constraintFlag) Set(s string) error {
	c, err := parseConstraint(f.typ, s)
	if err != nil {
		return err
	}
	*f.p = append(*f.p, c)
	return nil
}

func parseConstraint(typ anvilv1.ConstraintType, s string) (*anvilv1.Constraint, error) {
	spec, glob, hasGlob := strings.Cut(strings.TrimSpace(s), ":")
	if hasGlob {
		if typ == anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY {
			return nil, fmt.Errorf("%q: memory takes no model glob", s)
		}
		if glob == "" {
			return nil, fmt.Errorf("%q: empty model glob after ':'", s)
		}
		if _, err := path.Match(glob, ""); err != nil {
			return nil, fmt.Errorf("%q: model glob: %w", s, err)
		}
	}
	parse := func(v string) (uint64, error) {
		if typ == anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY || typ == anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE {
			return parseBytes(v)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", v)
		}
		return n, nil
	}
	lo, hi, isRange := strings.Cut(spec, "-")
	minV, err := parse(lo)
	if err != nil {
		return nil, err
	}
	maxV := minV
	if isRange {
		if maxV, err = parse(hi); err != nil {
			return nil, err
		}
		if minV > maxV {
			return nil, fmt.Errorf("%q: minimum is above maximum", s)
		}
	}
	return &anvilv1.Constraint{Type: typ, Min: minV, Max: maxV, ModelGlob: glob}, nil
}

// constraintBounds renders min and max as the command line takes them.
func constraintBounds(c *anvilv1.Constraint) (lo, hi string) {
	switch c.GetType() {
	case anvilv1.ConstraintType_CONSTRAINT_TYPE_MEMORY, anvilv1.ConstraintType_CONSTRAINT_TYPE_STORAGE:
		return exactBytes(c.GetMin()), exactBytes(c.GetMax())
	}
	return strconv.FormatUint(c.GetMin(), 10), strconv.FormatUint(c.GetMax(), 10)
}

// formatConstraint renders c as MIN[-MAX][:GLOB], the form parseConstraint
// reads.
func formatConstraint(c *anvilv1.Constraint) string {
	lo, hi := constraintBounds(c)
	s := lo
	if hi != lo {
		s += "-" + hi
	}
	if g := c.GetModelGlob(); g != "" {
		s += ":" + g
	}
	return s
}
