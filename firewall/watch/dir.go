package watch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Dir reads NetworkPolicies, Pods, Namespaces and Services from the
// manifests in a directory: every *.yaml, *.yml and *.json file directly in
// it (names starting with "." are skipped, so a ConfigMap volume's
// "..data" links and editors' swap files are not read; symlinks are
// followed). A file holds one or more YAML documents separated by "---"
// (or one JSON object), each an object of one of those kinds or a List of
// them (v1 List or the kind's own list), decoded with client-go's scheme,
// strictly: an unknown apiVersion, kind or field is an error. Namespaced
// objects without a namespace are in "default".
//
// Dir polls every Options.Poll and notifies at start and whenever the
// content of the directory changed (and every Options.Resync). A file that
// cannot be read or decoded is reported in Update.Errors, naming the file
// and the document, and the objects of its last good version are kept:
// bad input never removes anything. The other files apply normally.
type Dir struct {
	dir    string
	opts   Options
	decode runtime.Decoder
}

// NewDir returns a Source reading the manifests in dir.
func NewDir(dir string, opts Options) *Dir {
	return &Dir{
		dir:    dir,
		opts:   opts.withDefaults(),
		decode: serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer(),
	}
}

// manifestFile is what Dir knows of one file.
type manifestFile struct {
	sum    [sha256.Size]byte // of the content last read
	read   bool              // sum is valid
	good   bool              // objs is from a good version
	objs   []object          // of the last good version
	errs   []error           // of the current version; nil when good
	readOK bool              // the current version could be read
}

// object is one decoded object and where it came from.
type object struct {
	kind, namespace, name string
	doc                   string // "document N" or "document N, item M"
	obj                   runtime.Object
}

// Run polls until ctx ends; see Source. It returns at once when the
// directory cannot be read at start.
func (d *Dir) Run(ctx context.Context, notify func(Update)) error {
	files := map[string]*manifestFile{}
	u, sum, err := d.scan(files)
	if err != nil {
		return err
	}
	d.opts.Logger.Info("manifests read", "dir", d.dir, "files", len(files), "policies", len(u.Snapshot.Policies),
		"pods", len(u.Snapshot.Pods), "namespaces", len(u.Snapshot.Namespaces), "services", len(u.Snapshot.Services),
		"errors", len(u.Errors))
	notify(u)

	poll := time.NewTicker(d.opts.Poll)
	defer poll.Stop()
	var resyncC <-chan time.Time
	var resync *time.Timer
	if d.opts.Resync > 0 {
		resync = time.NewTimer(d.opts.Resync)
		defer resync.Stop()
		resyncC = resync.C
	}
	last := u
	var dirErr error
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-resyncC:
			notify(last)
			resync.Reset(d.opts.Resync)
			continue
		case <-poll.C:
		}
		u, s, err := d.scan(files)
		if err != nil {
			// The directory itself is unreadable (being remounted?): keep
			// the last state and say so, once.
			if dirErr == nil || dirErr.Error() != err.Error() {
				dirErr = err
				d.opts.Logger.Warn("manifest directory unreadable; keeping the last state", "dir", d.dir, "err", err)
				last = Update{Snapshot: last.Snapshot, Errors: append(append([]error(nil), last.Errors...), err)}
				sum = [sha256.Size]byte{}
				notify(last)
				if resync != nil {
					resync.Reset(d.opts.Resync)
				}
			}
			continue
		}
		dirErr = nil
		if s == sum {
			continue
		}
		sum, last = s, u
		d.opts.Logger.Debug("manifests changed", "dir", d.dir, "files", len(files), "policies", len(u.Snapshot.Policies),
			"pods", len(u.Snapshot.Pods), "errors", len(u.Errors))
		notify(u)
		if resync != nil {
			resync.Reset(d.opts.Resync)
		}
	}
}

// scan reads the directory, decodes the files whose content changed and
// returns the merged state with a hash of what was read.
func (d *Dir) scan(files map[string]*manifestFile) (Update, [sha256.Size]byte, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return Update{}, [sha256.Size]byte{}, fmt.Errorf("read manifest directory: %w", err)
	}
	h := sha256.New()
	var names []string
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !isManifest(name) {
			continue
		}
		p := filepath.Join(d.dir, name)
		fi, err := os.Stat(p)
		if err == nil && !fi.Mode().IsRegular() {
			continue // a directory named x.yaml
		}
		names = append(names, name)
		seen[name] = true
		f := files[name]
		if f == nil {
			f = &manifestFile{}
			files[name] = f
		}
		var data []byte
		if err == nil {
			data, err = os.ReadFile(p)
		}
		fmt.Fprintf(h, "%q\x00", name)
		if err != nil {
			f.readOK, f.read = false, false
			f.errs = []error{fmt.Errorf("read %s: %w", p, err)}
			fmt.Fprintf(h, "error %v\x00", err)
			continue
		}
		s := sha256.Sum256(data)
		h.Write(s[:])
		if f.read && f.sum == s && f.readOK {
			continue
		}
		f.sum, f.read, f.readOK = s, true, true
		objs, errs := d.parse(p, data)
		f.errs = errs
		if len(errs) == 0 {
			f.objs, f.good = objs, true
		}
	}
	for name := range files {
		if !seen[name] {
			delete(files, name)
		}
	}
	sort.Strings(names)

	var u Update
	where := map[string]string{} // kind/namespace/name → file and document
	for _, name := range names {
		f := files[name]
		p := filepath.Join(d.dir, name)
		for _, e := range f.errs {
			if f.good {
				e = fmt.Errorf("%w (keeping the %d objects of the file's last good version)", e, len(f.objs))
			}
			u.Errors = append(u.Errors, e)
		}
		for _, o := range f.objs {
			key := o.kind + " " + o.namespace + "/" + o.name
			if o.namespace == "" {
				key = o.kind + " " + o.name
			}
			at := p + ": " + o.doc
			if prev, dup := where[key]; dup {
				u.Errors = append(u.Errors, fmt.Errorf("%s: %s is defined again (first in %s); ignoring this one", at, key, prev))
				continue
			}
			where[key] = at
			switch x := o.obj.(type) {
			case *networkingv1.NetworkPolicy:
				u.Snapshot.Policies = append(u.Snapshot.Policies, *x)
			case *corev1.Pod:
				u.Snapshot.Pods = append(u.Snapshot.Pods, *x)
			case *corev1.Namespace:
				u.Snapshot.Namespaces = append(u.Snapshot.Namespaces, *x)
			case *corev1.Service:
				u.Snapshot.Services = append(u.Snapshot.Services, *x)
			}
		}
	}
	sortSnapshot(&u.Snapshot)
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return u, sum, nil
}

func isManifest(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// parse decodes every document of a file. Any error makes the whole file
// bad (its objects are not used); each names the file and the document.
func (d *Dir) parse(path string, data []byte) ([]object, []error) {
	var objs []object
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("document %d", n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", path, where, err))
			break
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", path, where, err))
			continue
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
			continue // empty document (only comments, or a trailing ---)
		}
		got, err := d.decodeObject(j, where)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		for _, o := range got {
			if o.name == "" {
				errs = append(errs, fmt.Errorf("%s: %s: %s has no metadata.name", path, o.doc, o.kind))
				continue
			}
			objs = append(objs, o)
		}
	}
	return objs, errs
}

// decodeObject decodes one JSON object (expanding lists).
func (d *Dir) decodeObject(j []byte, where string) ([]object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, fmt.Errorf("%s: not an object: %w", where, err)
	}
	if tm.Kind == "" {
		return nil, fmt.Errorf("%s: no kind", where)
	}
	if tm.APIVersion == "" {
		return nil, fmt.Errorf("%s: %s has no apiVersion", where, tm.Kind)
	}
	obj, _, err := d.decode.Decode(j, nil, nil)
	if runtime.IsNotRegisteredError(err) {
		return nil, fmt.Errorf("%s: %s %s is not a kind this firewall knows (want NetworkPolicy, Pod, Namespace, Service or a List of them)",
			where, tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", where, tm.APIVersion, tm.Kind, err)
	}
	var items [][]byte
	switch x := obj.(type) {
	case *networkingv1.NetworkPolicy:
		defaultNamespace(&x.ObjectMeta)
		return []object{{kind: "NetworkPolicy", namespace: x.Namespace, name: x.Name, doc: where, obj: x}}, nil
	case *corev1.Pod:
		defaultNamespace(&x.ObjectMeta)
		return []object{{kind: "Pod", namespace: x.Namespace, name: x.Name, doc: where, obj: x}}, nil
	case *corev1.Service:
		defaultNamespace(&x.ObjectMeta)
		return []object{{kind: "Service", namespace: x.Namespace, name: x.Name, doc: where, obj: x}}, nil
	case *corev1.Namespace:
		return []object{{kind: "Namespace", name: x.Name, doc: where, obj: x}}, nil
	case *corev1.List:
		for _, it := range x.Items {
			items = append(items, it.Raw)
		}
	case *networkingv1.NetworkPolicyList:
		return listOf(x.Items, where, func(p *networkingv1.NetworkPolicy) object {
			defaultNamespace(&p.ObjectMeta)
			return object{kind: "NetworkPolicy", namespace: p.Namespace, name: p.Name, obj: p}
		}), nil
	case *corev1.PodList:
		return listOf(x.Items, where, func(p *corev1.Pod) object {
			defaultNamespace(&p.ObjectMeta)
			return object{kind: "Pod", namespace: p.Namespace, name: p.Name, obj: p}
		}), nil
	case *corev1.ServiceList:
		return listOf(x.Items, where, func(s *corev1.Service) object {
			defaultNamespace(&s.ObjectMeta)
			return object{kind: "Service", namespace: s.Namespace, name: s.Name, obj: s}
		}), nil
	case *corev1.NamespaceList:
		return listOf(x.Items, where, func(n *corev1.Namespace) object {
			return object{kind: "Namespace", name: n.Name, obj: n}
		}), nil
	default:
		return nil, fmt.Errorf("%s: %s %s is not supported (want NetworkPolicy, Pod, Namespace, Service or a List of them)",
			where, tm.APIVersion, tm.Kind)
	}
	var out []object
	for i, raw := range items {
		at := fmt.Sprintf("%s, item %d", where, i+1)
		if len(bytes.TrimSpace(raw)) == 0 {
			return nil, fmt.Errorf("%s: empty list item", at)
		}
		got, err := d.decodeObject(raw, at)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func listOf[T any](items []T, where string, f func(*T) object) []object {
	out := make([]object, 0, len(items))
	for i := range items {
		o := f(&items[i])
		o.doc = fmt.Sprintf("%s, item %d", where, i+1)
		out = append(out, o)
	}
	return out
}

func defaultNamespace(m *metav1.ObjectMeta) {
	if m.Namespace == "" {
		m.Namespace = metav1.NamespaceDefault
	}
}
