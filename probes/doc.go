// Package probes sends ICMP echo requests to many addresses and reports, per
// address, how many were sent, how many answered in time, and their round-trip
// times. It knows nothing about Nova or Prometheus: addresses in, results out,
// a context to cancel.
//
// Two engines implement Prober:
//
//   - Shared (the default): one long-lived socket per address family for all
//     targets, raw (CAP_NET_RAW) or ICMP datagram (ping_group_range). One
//     reader goroutine per socket blocks in recvmmsg; a reply is matched to
//     its request through the cycle number and packet index the request
//     carried in its payload, and accepted only from the address it was sent
//     to. A raw socket gets a BPF filter on the echo-reply type and the
//     prober's ICMP ID, so the kernel drops everyone else's ICMP.
//   - ProBing: a short-lived github.com/prometheus-community/pro-bing Pinger
//     per target and cycle, a bounded number at a time, with distinct IDs.
//
// Why Shared is the default is measured in docs/performance.md.
package probes
