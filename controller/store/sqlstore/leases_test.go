package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anvil-metal/anvil/controller/boot/dhcp"
	"github.com/anvil-metal/anvil/controller/store/sqlstore/pgtest"
)

// The DHCP server takes the store's book as it is.
var _ dhcp.LeaseBook = (*LeaseBook)(nil)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func pool(start, end string) (netip.Addr, netip.Addr) {
	return netip.MustParseAddr(start), netip.MustParseAddr(end)
}

func mustOffer(t *testing.T, b *LeaseBook, mac string, now time.Time, ttl time.Duration) netip.Addr {
	t.Helper()
	ip, err := b.Offer(t.Context(), mac, now, ttl)
	if err != nil {
		t.Fatalf("Offer(%s): %v", mac, err)
	}
	return ip
}

func renew(t *testing.T, b *LeaseBook, mac string, ip netip.Addr, now time.Time, ttl time.Duration) bool {
	t.Helper()
	ok, err := b.Renew(t.Context(), mac, ip, now, ttl)
	if err != nil {
		t.Fatalf("Renew(%s, %v): %v", mac, ip, err)
	}
	return ok
}

// leaseBookSuite is the lease book's behaviour, run against SQLite and
// PostgreSQL; open returns a new store on a fresh database.
func leaseBookSuite(t *testing.T, open func(t *testing.T) *Store) {
	t.Run("SameAddressAgainAndPreferred", func(t *testing.T) {
		st := open(t)
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.40"))
		// The preferred address is the one the in-memory book picks on
		// an empty pool: one hash of the MAC for both books.
		mem := dhcp.NewLeases(pool("10.0.0.10", "10.0.0.40"))
		for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "02:00:00:ab:cd:ef"} {
			want, err := mem.Offer(t.Context(), mac, t0, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if got := mustOffer(t, b, mac, t0, time.Minute); got != want {
				t.Errorf("%s: offered %v, want its preferred %v", mac, got, want)
			}
		}
		a := mustOffer(t, b, "52:54:00:00:00:01", t0, time.Minute)
		// Again while it lives, again after it lapsed (nobody took it),
		// and for the MAC written in upper case.
		for _, at := range []time.Time{t0.Add(30 * time.Second), t0.Add(time.Hour)} {
			if got := mustOffer(t, b, "52:54:00:00:00:01", at, time.Minute); got != a {
				t.Errorf("offer at %v: %v, want %v", at, got, a)
			}
		}
		if got := mustOffer(t, b, "02:00:00:AB:CD:EF", t0.Add(time.Hour), time.Minute); got != mustOffer(t, b, "02:00:00:ab:cd:ef", t0.Add(time.Hour), time.Minute) {
			t.Errorf("upper-case MAC: %v, a lease of its own", got)
		}
	})

	t.Run("ExhaustedPoolAndExpiredReuse", func(t *testing.T) {
		st := open(t)
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.11"))
		a1 := mustOffer(t, b, "52:54:00:00:00:01", t0, time.Minute)
		a2 := mustOffer(t, b, "52:54:00:00:00:02", t0, 10*time.Minute)
		if a1 == a2 {
			t.Fatalf("two MACs got %v", a1)
		}
		_, err := b.Offer(t.Context(), "52:54:00:00:00:03", t0.Add(30*time.Second), time.Minute)
		if !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("third MAC on a pool of two: %v, want ErrPoolExhausted", err)
		}
		// The first lease lapses: its address goes to the third MAC, and
		// the first can neither renew it nor get it back.
		later := t0.Add(2 * time.Minute)
		if got := mustOffer(t, b, "52:54:00:00:00:03", later, time.Minute); got != a1 {
			t.Fatalf("third MAC after the first lease lapsed: %v, want %v", got, a1)
		}
		if renew(t, b, "52:54:00:00:00:01", a1, later, time.Hour) {
			t.Error("the first MAC renewed an address another MAC holds")
		}
		if _, err := b.Offer(t.Context(), "52:54:00:00:00:01", later, time.Minute); !errors.Is(err, ErrPoolExhausted) {
			t.Errorf("first MAC on the full pool again: %v, want ErrPoolExhausted", err)
		}
	})

	t.Run("Renew", func(t *testing.T) {
		st := open(t)
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.20"))
		mac := "52:54:00:00:00:01"
		a := mustOffer(t, b, mac, t0, 2*time.Minute)
		other := netip.MustParseAddr("10.0.0.21")
		if a == other {
			t.Fatal("offered an address outside the pool")
		}
		if renew(t, b, mac, other, t0, time.Hour) {
			t.Error("renewed an address never offered")
		}
		if renew(t, b, "52:54:00:00:00:02", a, t0, time.Hour) {
			t.Error("another MAC renewed the lease")
		}
		if !renew(t, b, mac, a, t0.Add(time.Minute), time.Hour) {
			t.Fatal("the lease's own MAC could not renew it")
		}
		// Renewed for an hour: live well after the offer's two minutes.
		if !renew(t, b, mac, a, t0.Add(50*time.Minute), time.Hour) {
			t.Error("renewal did not extend the lease")
		}
		if renew(t, b, mac, a, t0.Add(3*time.Hour), time.Hour) {
			t.Error("renewed a lapsed lease")
		}
	})

	t.Run("Release", func(t *testing.T) {
		st := open(t)
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.10"))
		a := mustOffer(t, b, "52:54:00:00:00:01", t0, time.Hour)
		if err := b.Release(t.Context(), "52:54:00:00:00:01"); err != nil {
			t.Fatal(err)
		}
		if err := b.Release(t.Context(), "52:54:00:00:00:09"); err != nil {
			t.Errorf("release without a lease: %v", err)
		}
		if got := mustOffer(t, b, "52:54:00:00:00:02", t0.Add(time.Second), time.Hour); got != a {
			t.Errorf("after release: %v, want %v", got, a)
		}
		if renew(t, b, "52:54:00:00:00:01", a, t0.Add(time.Second), time.Hour) {
			t.Error("a released lease was renewed")
		}
	})

	t.Run("PoolChanged", func(t *testing.T) {
		st := open(t)
		mac := "52:54:00:00:00:01"
		old := st.LeaseBook(pool("10.0.0.10", "10.0.0.20"))
		a := mustOffer(t, old, mac, t0, time.Hour)
		// The operator moves the pool: the MAC's lease outside it is
		// neither renewed nor offered again; it gets an address inside.
		b := st.LeaseBook(pool("10.0.1.10", "10.0.1.20"))
		if renew(t, b, mac, a, t0.Add(time.Minute), time.Hour) {
			t.Error("renewed a lease outside the pool")
		}
		got := mustOffer(t, b, mac, t0.Add(time.Minute), time.Hour)
		if start, end := b.Pool(); got.Less(start) || end.Less(got) {
			t.Errorf("offered %v outside %v-%v", got, start, end)
		}
		var n int
		if err := st.write.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM dhcp_leases").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%d lease rows for one MAC, want 1", n)
		}
	})

	// The one statement that takes an address: it changes no row while a
	// live lease holds the address (what a controller that read the
	// table before another's offer meets), and takes an expired one.
	t.Run("ClaimTakesOnlyAFreeOrExpiredAddress", func(t *testing.T) {
		st := open(t)
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.10"))
		a := mustOffer(t, b, "52:54:00:00:00:01", t0, time.Minute)
		claim := func(at time.Time) int64 {
			t.Helper()
			res, err := st.write.ExecContext(t.Context(), st.d.rebind(qLeaseClaim), ip4(a), "52:54:00:00:00:02", at.Add(time.Hour).UnixNano(), at.UnixNano())
			if err != nil {
				t.Fatal(err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := claim(t0.Add(59 * time.Second)); n != 0 {
			t.Errorf("claim of a live lease changed %d rows", n)
		}
		if !renew(t, b, "52:54:00:00:00:01", a, t0.Add(59*time.Second), time.Minute) {
			t.Error("the holder lost its live lease to a claim")
		}
		if n := claim(t0.Add(3 * time.Minute)); n != 1 {
			t.Errorf("claim of an expired lease changed %d rows, want 1", n)
		}
		if !renew(t, b, "52:54:00:00:00:02", a, t0.Add(3*time.Minute), time.Minute) {
			t.Error("the claimant does not hold the address it took")
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		st := open(t)
		ctx := t.Context()
		b := st.LeaseBook(pool("10.0.0.10", "10.0.0.20"))
		if _, err := b.Offer(ctx, "not-a-mac", t0, time.Minute); err == nil {
			t.Error("offer to a malformed MAC")
		}
		if _, err := b.Offer(ctx, "52:54:00:00:00:01", t0, 0); err == nil {
			t.Error("offer with no lease time")
		}
		if _, err := b.Renew(ctx, "52:54:00:00:00:01", netip.MustParseAddr("::1"), t0, time.Minute); err == nil {
			t.Error("renewal of an IPv6 address")
		}
		for _, p := range [][2]string{{"10.0.0.20", "10.0.0.10"}, {"::1", "::2"}} {
			bad := st.LeaseBook(pool(p[0], p[1]))
			if _, err := bad.Offer(ctx, "52:54:00:00:00:01", t0, time.Minute); err == nil {
				t.Errorf("offer from pool %v-%v", p[0], p[1])
			}
		}
		// A database that is gone: an error, no address.
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if ip, err := b.Offer(ctx, "52:54:00:00:00:01", t0, time.Minute); err == nil {
			t.Errorf("offer on a closed store: %v", ip)
		}
		if _, err := b.Renew(ctx, "52:54:00:00:00:01", netip.MustParseAddr("10.0.0.10"), t0, time.Minute); err == nil {
			t.Error("renewal on a closed store")
		}
		if err := b.Release(ctx, "52:54:00:00:00:01"); err == nil {
			t.Error("release on a closed store")
		}
	})
}

func TestLeaseBookSQLite(t *testing.T) {
	leaseBookSuite(t, func(t *testing.T) *Store {
		return openTest(t, filepath.Join(t.TempDir(), "anvil.db"))
	})
}

func TestLeaseBookPostgres(t *testing.T) {
	c := pgtest.New(t)
	leaseBookSuite(t, func(t *testing.T) *Store {
		return openPostgresTest(t, c.DSN(c.NewDatabase(t)))
	})
}

// openPostgresTest opens a store (one more controller) on dsn, closed when
// the test ends.
func openPostgresTest(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := OpenPostgres(t.Context(), dsn, WithLogger(slog.New(slog.DiscardHandler)), testFeedKey)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// Leases live in the database: a restarted controller offers each MAC the
// address it had.
func TestLeaseBookSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anvil.db")
	first, err := OpenSQLite(t.Context(), path, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	start, end := pool("10.0.0.10", "10.0.0.12")
	had := map[string]netip.Addr{}
	for i := range 3 {
		mac := fmt.Sprintf("52:54:00:00:00:%02x", i)
		had[mac] = mustOffer(t, first.LeaseBook(start, end), mac, t0, time.Hour)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	b := openTest(t, path).LeaseBook(start, end)
	for mac, a := range had {
		if !renew(t, b, mac, a, t0.Add(time.Minute), time.Hour) {
			t.Errorf("%s lost its lease on %v across the restart", mac, a)
		}
	}
	if _, err := b.Offer(t.Context(), "52:54:00:00:00:ff", t0.Add(time.Minute), time.Hour); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("a new MAC on the restarted controller's full pool: %v, want ErrPoolExhausted", err)
	}
}

// raceOffers offers every MAC on every book at once (a broadcast DISCOVER
// heard by each replica) and checks the outcome: each MAC got one address
// from every book or none from any, no address went to two MACs, exactly
// min(MACs, pool) MACs got one, and the table says the same.
func raceOffers(t *testing.T, db *sql.DB, books []*LeaseBook, macs, size int) {
	t.Helper()
	type result struct {
		mac string
		ip  netip.Addr
		err error
	}
	results := make(chan result, macs*len(books))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range macs {
		mac := fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		for _, b := range books {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ip, err := b.Offer(context.Background(), mac, t0, time.Hour)
				results <- result{mac, ip, err}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(results)

	got := map[string]netip.Addr{}
	owner := map[netip.Addr]string{}
	failed := map[string]bool{}
	for r := range results {
		if r.err != nil {
			if !errors.Is(r.err, ErrPoolExhausted) {
				t.Errorf("%s: %v", r.mac, r.err)
			}
			failed[r.mac] = true
			continue
		}
		if prev, ok := got[r.mac]; ok && prev != r.ip {
			t.Errorf("%s offered %v and %v", r.mac, prev, r.ip)
		}
		got[r.mac] = r.ip
		if o, ok := owner[r.ip]; ok && o != r.mac {
			t.Errorf("%v offered to %s and %s", r.ip, o, r.mac)
		}
		owner[r.ip] = r.mac
	}
	for mac := range failed {
		if _, ok := got[mac]; ok {
			t.Errorf("%s got an address from one replica and none from another", mac)
		}
	}
	if want := min(macs, size); len(got) != want {
		t.Errorf("%d MACs got an address, want %d (%d MACs, pool of %d)", len(got), want, macs, size)
	}
	rows, err := db.QueryContext(t.Context(), "SELECT ip, mac FROM dhcp_leases")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var ip int64
		var mac string
		if err := rows.Scan(&ip, &mac); err != nil {
			t.Fatal(err)
		}
		n++
		if got[mac] != addr4(ip) {
			t.Errorf("table: %s holds %v, offered %v", mac, addr4(ip), got[mac])
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(got) {
		t.Errorf("table holds %d leases, %d were offered", n, len(got))
	}
}

// Three replicas on one PostgreSQL database offer to 150 MACs at once on
// a pool of 100: the store's own book (its single write connection) and
// two books on connection pools of their own (8 connections each, as two
// more controller processes would have: OpenPostgres still refuses a
// second store on one database). No address goes to two MACs.
func TestLeaseBookPostgresConcurrentReplicas(t *testing.T) {
	c := pgtest.New(t)
	dsn := c.DSN(c.NewDatabase(t))
	st := openPostgresTest(t, dsn)
	start, end := pool("10.0.0.1", "10.0.0.100")
	books := []*LeaseBook{st.LeaseBook(start, end)}
	for range 2 {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(8)
		t.Cleanup(func() { db.Close() })
		books = append(books, newLeaseBook(db, postgresDialect(), start, end))
	}
	raceOffers(t, st.write, books, 150, 100)
}

// The same race on SQLite: one controller, two books, many goroutines.
func TestLeaseBookSQLiteConcurrent(t *testing.T) {
	st := openTest(t, filepath.Join(t.TempDir(), "anvil.db"))
	start, end := pool("10.0.0.1", "10.0.0.100")
	raceOffers(t, st.write, []*LeaseBook{st.LeaseBook(start, end), st.LeaseBook(start, end)}, 150, 100)
}
