// Package firewall is the real-traffic test bed of anvil-firewall: three
// network namespaces joined by veth pairs — "cluster" (pod addresses),
// "fw" (the forwarding firewall, with interfaces cluster0 and uplink0) and
// "outside" — with TCP, UDP-echo and SCTP servers in the cluster and
// outside namespaces and a client that reports whether a NEW connection
// (or an ICMP echo, answered by the kernel) from a given source address
// got through the firewall. Its tests apply
// compiled rulesets in the fw namespace and compare every observed verdict
// with the reference evaluator (firewall/oracle); test/bench/fwconn uses it
// to measure the new-connection rate through the firewall.
//
// Everything here needs Linux and root, and touches only the namespaces it
// creates (and always deletes). Addresses are from the private (RFC 1918,
// RFC 4193) and documentation (RFC 5737, RFC 3849) ranges.
package firewall
