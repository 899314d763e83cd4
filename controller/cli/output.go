package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	anvilv1 "github.com/anvil-metal/anvil/proto/anvil/v1"
)

type outputFormat int

const (
	formatTable outputFormat = iota
	formatJSON
	formatYAML
)

func parseFormat(s string) (outputFormat, error) {
	switch s {
	case "", "table":
		return formatTable, nil
	case "json":
		return formatJSON, nil
	case "yaml":
		return formatYAML, nil
	}
	return 0, fmt.Errorf("output format %q: want table, json or yaml", s)
}

// app is what a command runs with: the API clients, the output and the
// clock.
type app struct {
	machines anvilv1.MachineServiceClient
	images   anvilv1.ImageServiceClient
	sizes    anvilv1.SizeServiceClient

	out, errOut io.Writer
	format      outputFormat
	now         func() time.Time

	backoffMin, backoffMax time.Duration
}

// print writes m as JSON or YAML, or calls table for the table format.
func (a *app) print(m proto.Message, table func(w io.Writer) error) error {
	switch a.format {
	case formatJSON:
		b, err := marshalJSON(m, true)
		if err != nil {
			return err
		}
		_, err = a.out.Write(b)
		return err
	case formatYAML:
		b, err := marshalYAML(m)
		if err != nil {
			return err
		}
		_, err = a.out.Write(b)
		return err
	}
	return table(a.out)
}

// marshalJSON renders m with protojson using the proto field names, either
// indented or on one line, and normalizes the white space (protojson varies
// it on purpose) so that the output is byte-stable.
func marshalJSON(m proto.Message, indent bool) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var buf bytes.Buffer
	if indent {
		err = json.Indent(&buf, raw, "", "  ")
	} else {
		err = json.Compact(&buf, raw)
	}
	if err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// marshalYAML renders m's protojson form as block-style YAML, keeping the
// field order of the JSON.
func marshalYAML(m proto.Message) ([]byte, error) {
	js, err := marshalJSON(m, false)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("convert JSON to YAML: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockStyle clears the flow and quoting styles parsed from JSON so that the
// encoder writes block collections and plain scalars. A string keeps its
// quotes where yaml.v3 quotes it when marshalling a Go string: where it
// would read as another type, also in YAML 1.1 ("no", "52:54:00:12:34:56").
func blockStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		if b, err := yaml.Marshal(n.Value); err == nil && (b[0] == '"' || b[0] == '\'') {
			n.Style = yaml.DoubleQuotedStyle
		}
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// newTable returns a tabwriter for aligned columns.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// row writes cells separated by tabs; empty cells become "-".
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = oneLine(cells[i])
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// kvBlock writes "key:  value" lines, aligned, each indented by indent.
type kvBlock struct {
	indent string
	rows   [][2]string
}

func (b *kvBlock) add(key, value string) {
	if value == "" {
		value = "-"
	}
	b.rows = append(b.rows, [2]string{key, oneLine(value)})
}

func (b *kvBlock) write(w io.Writer) error {
	tw := newTable(w)
	for _, r := range b.rows {
		fmt.Fprintf(tw, "%s%s:\t%s\n", b.indent, r[0], r[1])
	}
	return tw.Flush()
}

// oneLine replaces tabs and line breaks, which would break the table layout.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '\t', '\n', '\r':
			return ' '
		}
		return r
	}, s)
}
