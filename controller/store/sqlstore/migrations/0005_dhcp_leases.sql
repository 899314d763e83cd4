-- 0005: the DHCP leases of full mode (controller/boot/dhcp, leases.go),
-- shared by every controller on the database, so two never hand out one
-- address.
--   ip      the IPv4 address as an integer (a.b.c.d is a<<24|b<<16|c<<8|d),
--           the primary key: an address has one holder;
--   mac     the client's hardware address, lower-case hex with colons,
--           unique: a MAC holds one address;
--   expires UTC unix nanoseconds. An expired lease stays its MAC's until
--           another MAC takes the address.
-- At most one row per address of the pools ever configured: a MAC gets a
-- row only for a free address of the pool.
CREATE TABLE dhcp_leases (
	ip      BIGINT PRIMARY KEY,
	mac     TEXT NOT NULL UNIQUE,
	expires BIGINT NOT NULL
);
