// Package nocloud reads and writes the seed an installed system finds its
// identity in: a cloud-init NoCloud data source (cloud-init's
// doc/rtd/reference/datasources/nocloud.rst: a filesystem labelled CIDATA
// holding meta-data, user-data and network-config), which anvil extends
// with anvil/phone-home.json, {"url": ..., "token": ...}, where the
// installed system reports that it booted (POST with Authorization: Bearer
// <token>).
//
// anvil-agent appends the seed to the disk it installed as a last GPT
// partition named "cidata" with a FAT filesystem labelled "CIDATA". Find
// looks for it on block devices or image files with go-diskfs, by either
// mark, without udev or mount; Append writes one onto a disk image (the
// tests use it to play the agent's part). This file is the pure core.
package nocloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Marks of the seed and its file names.
const (
	// Label is the filesystem label of the seed (NoCloud: "cidata" or
	// "CIDATA"; FAT labels are upper case).
	Label = "CIDATA"
	// PartitionName is the GPT partition name anvil gives the seed.
	PartitionName = "cidata"

	MetaDataFile      = "meta-data"
	UserDataFile      = "user-data"
	NetworkConfigFile = "network-config"
	PhoneHomeFile     = "anvil/phone-home.json"
)

// ErrNotFound is no seed on any device looked at.
var ErrNotFound = errors.New("no NoCloud seed (GPT partition \"cidata\" or filesystem label \"CIDATA\")")

// Seed is the content of a seed filesystem. Missing files are empty
// (PhoneHome nil).
type Seed struct {
	MetaData, UserData, NetworkConfig []byte
	PhoneHome                         *PhoneHome
}

// PhoneHome is anvil/phone-home.json: where to report that the system
// booted, and the bearer token to report with.
type PhoneHome struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// Validate reports every problem of p.
func (p PhoneHome) Validate() error {
	var errs []error
	u, err := url.Parse(p.URL)
	switch {
	case p.URL == "":
		errs = append(errs, errors.New("phone-home url is empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("phone-home url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("phone-home url %q: want http or https", p.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("phone-home url %q has no host", p.URL))
	}
	if strings.TrimSpace(p.Token) == "" {
		errs = append(errs, errors.New("phone-home token is empty"))
	} else if strings.ContainsAny(p.Token, " \t\r\n") {
		errs = append(errs, errors.New("phone-home token contains white space"))
	}
	return errors.Join(errs...)
}

// ParsePhoneHome parses and validates anvil/phone-home.json.
func ParsePhoneHome(b []byte) (PhoneHome, error) {
	var p PhoneHome
	if err := json.Unmarshal(b, &p); err != nil {
		return PhoneHome{}, fmt.Errorf("parse %s: %w", PhoneHomeFile, err)
	}
	if err := p.Validate(); err != nil {
		return PhoneHome{}, fmt.Errorf("%s: %w", PhoneHomeFile, err)
	}
	return p, nil
}

// MetaData is the part of NoCloud's meta-data (YAML) anvil uses.
type MetaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

// ParseMetaData parses meta-data. Unknown keys are ignored; an empty
// document is an empty MetaData.
func ParseMetaData(b []byte) (MetaData, error) {
	var m MetaData
	if err := yaml.Unmarshal(b, &m); err != nil {
		return MetaData{}, fmt.Errorf("parse %s: %w", MetaDataFile, err)
	}
	return m, nil
}

// ReadFS reads a seed from its filesystem. meta-data is required (NoCloud
// does not use a seed without it); the other files are optional.
func ReadFS(fsys fs.FS) (Seed, error) {
	var s Seed
	for _, f := range []struct {
		name     string
		dst      *[]byte
		required bool
	}{{MetaDataFile, &s.MetaData, true}, {UserDataFile, &s.UserData, false}, {NetworkConfigFile, &s.NetworkConfig, false}} {
		b, ok, err := readOptional(fsys, f.name)
		switch {
		case err != nil:
			return Seed{}, err
		case !ok && f.required:
			return Seed{}, fmt.Errorf("read %s: %w", f.name, fs.ErrNotExist)
		}
		*f.dst = b
	}
	b, ok, err := readOptional(fsys, PhoneHomeFile)
	if err != nil {
		return Seed{}, err
	}
	if ok {
		p, err := ParsePhoneHome(b)
		if err != nil {
			return Seed{}, err
		}
		s.PhoneHome = &p
	}
	return s, nil
}

// readOptional reads name if it exists. Existence is decided by listing
// the directories on the way: go-diskfs's filesystems do not report a
// missing file as fs.ErrNotExist.
func readOptional(fsys fs.FS, name string) ([]byte, bool, error) {
	dir := "."
	for _, part := range strings.Split(name, "/") {
		entries, err := fs.ReadDir(fsys, dir)
		if err != nil {
			return nil, false, fmt.Errorf("list %s: %w", dir, err)
		}
		if !slices.ContainsFunc(entries, func(e fs.DirEntry) bool { return e.Name() == part }) {
			return nil, false, nil
		}
		dir = path.Join(dir, part)
	}
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", name, err)
	}
	return b, true, nil
}

// Files returns the seed's files by path, as a seed filesystem holds them.
func (s Seed) Files() (map[string][]byte, error) {
	files := map[string][]byte{MetaDataFile: s.MetaData, UserDataFile: s.UserData}
	if s.NetworkConfig != nil {
		files[NetworkConfigFile] = s.NetworkConfig
	}
	if s.PhoneHome != nil {
		if err := s.PhoneHome.Validate(); err != nil {
			return nil, err
		}
		b, err := json.Marshal(s.PhoneHome)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", PhoneHomeFile, err)
		}
		files[PhoneHomeFile] = append(b, '\n')
	}
	return files, nil
}

// isSeed says whether a partition with GPT name name and a filesystem
// labelled label is a seed, and by which mark.
func isSeed(name, label string) (string, bool) {
	switch {
	case strings.EqualFold(strings.TrimSpace(name), PartitionName):
		return "GPT partition name " + PartitionName, true
	case strings.EqualFold(strings.TrimSpace(label), Label):
		return "filesystem label " + Label, true
	}
	return "", false
}
