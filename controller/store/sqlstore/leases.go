package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"time"
)

// ErrPoolExhausted is a DHCP pool whose every address has a live lease.
var ErrPoolExhausted = errors.New("address pool exhausted")

// maxLeaseAttempts bounds how often Offer looks for a free address again
// after another controller took the one it chose. Each lost attempt means
// some other MAC got an address, so only a storm of concurrent offers on an
// almost full pool reaches it; the DHCP client then retries.
const maxLeaseAttempts = 64

// LeaseBook is the DHCP full mode's address book (controller/boot/dhcp's
// LeaseBook) kept in the dhcp_leases table, so every controller on the
// database leases from one book.
//
// Each method is a few single statements, no transaction held across
// them; what keeps two controllers apart is the table's constraints and
// statements that check and change a row at once:
//
//   - the address is the primary key and the MAC unique, so no address
//     has two holders and no MAC two addresses, whatever runs at once;
//   - an address is taken by one upsert (INSERT ... ON CONFLICT (ip) DO
//     UPDATE ... WHERE the old lease has expired). On PostgreSQL at READ
//     COMMITTED a concurrent upsert of the same address waits for the
//     first to commit and then evaluates its WHERE on the row the first
//     wrote, a live lease, so it changes nothing and Offer looks again;
//   - a lease is extended only by an UPDATE that names its MAC (and, for
//     a renewal, its address and that it is live), so a lease another MAC
//     took meanwhile is never extended for the old one.
//
// Times are the callers' clocks: controllers sharing a book need clocks
// in step (NTP), well within the lease time.
type LeaseBook struct {
	db         *sql.DB
	d          *dialect
	start, end netip.Addr
	lo, hi     int64
	// err is the pool's fault, if any, returned by every method.
	err error
}

// LeaseBook returns the database's DHCP lease book for the pool [start,
// end] (IPv4, both ends included). Its statements run on the store's write
// connection.
func (s *Store) LeaseBook(start, end netip.Addr) *LeaseBook {
	return newLeaseBook(s.write, s.d, start, end)
}

func newLeaseBook(db *sql.DB, d *dialect, start, end netip.Addr) *LeaseBook {
	b := &LeaseBook{db: db, d: d, start: start, end: end}
	if !start.Is4() || !end.Is4() || end.Less(start) {
		b.err = fmt.Errorf("DHCP pool %v-%v: want two IPv4 addresses, start first", start, end)
		return b
	}
	b.lo, b.hi = ip4(start), ip4(end)
	return b
}

func ip4(a netip.Addr) int64 {
	v := a.As4()
	return int64(v[0])<<24 | int64(v[1])<<16 | int64(v[2])<<8 | int64(v[3])
}

func addr4(v int64) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

const (
	// qLeaseExtend extends mac's lease inside the pool, lapsed or not:
	// while the row is the MAC's, nobody else took the address.
	qLeaseExtend = "UPDATE dhcp_leases SET expires = ? WHERE mac = ? AND ip BETWEEN ? AND ? RETURNING ip"
	// qLeaseDropOutside forgets mac's lease outside the pool (the pool
	// was changed since): the MAC gets an address of the pool instead.
	qLeaseDropOutside = "DELETE FROM dhcp_leases WHERE mac = ? AND (ip < ? OR ip > ?)"
	qLeaseLive        = "SELECT ip, mac FROM dhcp_leases WHERE ip BETWEEN ? AND ? AND expires > ?"
	// qLeaseClaim takes ip for mac when it is free or its lease expired;
	// it changes no row when a live lease holds ip.
	qLeaseClaim = `INSERT INTO dhcp_leases (ip, mac, expires) VALUES (?, ?, ?)
ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, expires = excluded.expires
WHERE dhcp_leases.expires <= ?`
	qLeaseRenew   = "UPDATE dhcp_leases SET expires = ? WHERE ip = ? AND mac = ? AND expires > ? AND ip BETWEEN ? AND ?"
	qLeaseRelease = "DELETE FROM dhcp_leases WHERE mac = ?"
)

// Pool returns the book's pool.
func (b *LeaseBook) Pool() (start, end netip.Addr) { return b.start, b.end }

// check validates the pool, mac and ttl, and returns mac in its canonical
// form (lower-case hex with colons).
func (b *LeaseBook) check(mac string, ttl time.Duration) (string, error) {
	if b.err != nil {
		return "", b.err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("MAC %q: %w", mac, err)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("lease time %v: want a positive duration", ttl)
	}
	return hw.String(), nil
}

// Offer returns mac's address, reserved until now+ttl: the one it holds in
// the pool if the row is still its own, else its preferred address (from
// a hash of the MAC) or the next one after it that is free or expired.
func (b *LeaseBook) Offer(ctx context.Context, mac string, now time.Time, ttl time.Duration) (netip.Addr, error) {
	ip, err := b.offer(ctx, mac, now, ttl)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("DHCP lease offer to %s in %v-%v: %w", mac, b.start, b.end, err)
	}
	return ip, nil
}

func (b *LeaseBook) offer(ctx context.Context, mac string, now time.Time, ttl time.Duration) (netip.Addr, error) {
	mac, err := b.check(mac, ttl)
	if err != nil {
		return netip.Addr{}, err
	}
	expires, at := now.Add(ttl).UTC().UnixNano(), now.UTC().UnixNano()
	for range maxLeaseAttempts {
		var held int64
		err := b.db.QueryRowContext(ctx, b.d.rebind(qLeaseExtend), expires, mac, b.lo, b.hi).Scan(&held)
		if err == nil {
			return addr4(held), nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return netip.Addr{}, fmt.Errorf("extend the lease: %w", err)
		}
		if _, err := b.db.ExecContext(ctx, b.d.rebind(qLeaseDropOutside), mac, b.lo, b.hi); err != nil {
			return netip.Addr{}, fmt.Errorf("drop a lease outside the pool: %w", err)
		}
		live, mine, err := b.live(ctx, mac, at)
		if err != nil {
			return netip.Addr{}, err
		}
		if mine {
			// Another controller gave this MAC an address since the
			// extension found none: the next round extends that one.
			continue
		}
		ip, ok := b.free(mac, live)
		if !ok {
			return netip.Addr{}, fmt.Errorf("%w: %d addresses, all leased", ErrPoolExhausted, b.hi-b.lo+1)
		}
		res, err := b.db.ExecContext(ctx, b.d.rebind(qLeaseClaim), ip, mac, expires, at)
		if err != nil {
			if b.d.uniqueViolation(err) {
				// Another controller gave this MAC an address
				// meanwhile: the next round extends that one.
				continue
			}
			return netip.Addr{}, fmt.Errorf("claim %v: %w", addr4(ip), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("claim %v: %w", addr4(ip), err)
		}
		if n == 1 {
			return addr4(ip), nil
		}
		// Another MAC took ip since live was read: look again.
	}
	return netip.Addr{}, fmt.Errorf("no address won in %d attempts: every chosen address was taken by a concurrent offer", maxLeaseAttempts)
}

// live returns the addresses of the pool with a lease live at at, and
// whether one of them is mac's.
func (b *LeaseBook) live(ctx context.Context, mac string, at int64) (live map[int64]bool, mine bool, err error) {
	rows, err := b.db.QueryContext(ctx, b.d.rebind(qLeaseLive), b.lo, b.hi, at)
	if err != nil {
		return nil, false, fmt.Errorf("read the live leases: %w", err)
	}
	defer rows.Close()
	live = map[int64]bool{}
	for rows.Next() {
		var ip int64
		var holder string
		if err := rows.Scan(&ip, &holder); err != nil {
			return nil, false, fmt.Errorf("read the live leases: %w", err)
		}
		live[ip] = true
		mine = mine || holder == mac
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read the live leases: %w", err)
	}
	return live, mine, nil
}

// free returns mac's preferred address, or the first after it (wrapping
// around the pool) that is not in live.
func (b *LeaseBook) free(mac string, live map[int64]bool) (int64, bool) {
	size := b.hi - b.lo + 1
	h := fnv.New32a()
	h.Write([]byte(mac))
	first := int64(h.Sum32()) % size
	for i := range size {
		if ip := b.lo + (first+i)%size; !live[ip] {
			return ip, true
		}
	}
	return 0, false
}

// Renew extends mac's live lease on ip, an address of the pool, to
// now+ttl, and reports whether mac held one.
func (b *LeaseBook) Renew(ctx context.Context, mac string, ip netip.Addr, now time.Time, ttl time.Duration) (bool, error) {
	canon, err := b.check(mac, ttl)
	if err == nil && !ip.Is4() {
		err = fmt.Errorf("address %v: want IPv4", ip)
	}
	if err != nil {
		return false, fmt.Errorf("DHCP lease renewal of %v for %s: %w", ip, mac, err)
	}
	res, err := b.db.ExecContext(ctx, b.d.rebind(qLeaseRenew),
		now.Add(ttl).UTC().UnixNano(), ip4(ip), canon, now.UTC().UnixNano(), b.lo, b.hi)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil {
			return n == 1, nil
		}
	}
	return false, fmt.Errorf("DHCP lease renewal of %v for %s: %w", ip, mac, err)
}

// Release ends mac's lease, if it has one.
func (b *LeaseBook) Release(ctx context.Context, mac string) error {
	canon, err := b.check(mac, time.Second)
	if err == nil {
		_, err = b.db.ExecContext(ctx, b.d.rebind(qLeaseRelease), canon)
	}
	if err != nil {
		return fmt.Errorf("DHCP lease release for %s: %w", mac, err)
	}
	return nil
}
