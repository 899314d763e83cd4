// Package pgtest runs a throwaway PostgreSQL cluster for tests: Debian's
// postgresql (initdb and pg_ctl under /usr/lib/postgresql/N/bin), started
// as an unprivileged user in a temporary directory, listening on a unix
// socket only. Each test gets a database of its own.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// Cluster is a running PostgreSQL server.
type Cluster struct {
	dir, bin, socket string
	n                atomic.Int32
	stop             sync.Once
	stopErr          error
}

// New starts a cluster for t and stops it when t ends (or at Stop).
func New(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// unprivileged is the user the server runs as when the tests run as root
// (PostgreSQL refuses to run as root).
const unprivileged = 65534 // nobody

// Start initializes and starts a cluster; stop it with Stop.
func Start() (*Cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		return nil, fmt.Errorf("no PostgreSQL server (/usr/lib/postgresql/*/bin/pg_ctl): install Debian's postgresql (hack/install-deps.sh)")
	}
	sort.Strings(bins)
	c := &Cluster{bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "anvil-pg-")
	if err != nil {
		return nil, err
	}
	c.dir, c.socket = dir, filepath.Join(dir, "sock")
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(dir, "data"), c.socket} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(d, unprivileged, unprivileged); err != nil {
				return nil, err
			}
		}
	}
	if err := c.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "anvil", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		c.remove()
		return nil, err
	}
	if err := c.Resume(); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// Halt stops the server the way a crash would (immediate mode: no
// checkpoint, every session cut), keeping its files for Resume.
func (c *Cluster) Halt() error {
	return c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
}

// Resume starts the server (again, after Halt: it recovers from its WAL).
func (c *Cluster) Resume() error {
	if err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-l", filepath.Join(c.socket, "server.log"), "-w", "-t", "60",
		"-o", "-k "+c.socket+" -c listen_addresses='' -F -c max_connections=200", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.socket, "server.log"))
		return fmt.Errorf("%w\n%s", err, log)
	}
	return nil
}

// run runs a PostgreSQL tool as the unprivileged user.
func (c *Cluster) run(tool string, args ...string) error {
	cmd := exec.Command(filepath.Join(c.bin, tool), args...)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivileged, Gid: unprivileged}}
	}
	cmd.Dir = c.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, out)
	}
	return nil
}

// Stop stops the server at once and removes its files; later calls do
// nothing.
func (c *Cluster) Stop() error {
	c.stop.Do(func() {
		c.stopErr = c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
		if c.stopErr != nil && c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "status") != nil {
			c.stopErr = nil // halted already
		}
		c.remove()
	})
	return c.stopErr
}

func (c *Cluster) remove() { os.RemoveAll(c.dir) } //nolint:errcheck // a temporary directory

// DSN is the connection string of database name.
func (c *Cluster) DSN(name string) string {
	return fmt.Sprintf("host=%s user=anvil dbname=%s sslmode=disable", c.socket, name)
}

// URL is the postgres:// URL of database name (the form
// anvil-controller --store takes).
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://anvil@/%s?host=%s&sslmode=disable", name, c.socket)
}

// NewDatabase creates an empty database for t and returns its name.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", c.n.Add(1))
	db, err := sql.Open("pgx", c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return name
}
