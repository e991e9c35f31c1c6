// Package probes sends ICMP echo requests to many addresses and reports, per
// address, how many were sent, how many answered in time, and their round-trip
// times. It knows nothing about Nova or Prometheus: addresses in, results out,
// a context to cancel.
//
// Sockets are raw (Options.Privileged; CAP_NET_RAW) or ICMP datagram
// sockets (net.ipv4.ping_group_range); Options.Auto tries a raw socket first
// and falls back to a datagram one when the raw one is refused, and the
// engine logs which it uses. (blackbox_exporter does the reverse on Linux: a
// datagram socket first, a raw one when that is refused or don't-fragment
// is asked for.)
//
// Two engines implement Engine:
//
//   - Shared (the default): one long-lived socket per address family for all
//     targets, raw (CAP_NET_RAW) or ICMP datagram (ping_group_range). One
//     reader goroutine per socket sleeps in recvmmsg until replies come; a
//     reply is matched to its request in O(1) through the cycle number and
//     packet index the request carried in its payload (with a random magic
//     of the prober, so other processes' pings and late replies of earlier
//     cycles are ignored), and accepted only from the address it was sent
//     to. A raw socket gets a BPF filter on the echo-reply type and the
//     prober's ICMP ID, so the kernel drops everyone else's ICMP. Sends are
//     paced (max_packets_per_second) and rounds spaced, and a cycle ends as
//     soon as every reply is in.
//   - ProBing: a short-lived github.com/prometheus-community/pro-bing Pinger
//     per target and cycle, at most 128 at a time, each with a distinct ICMP
//     ID (pro-bing picks them at random, and random 16-bit IDs collide often
//     between concurrent pingers), RecordRtts and RecordTTLs off (they grow
//     without bound otherwise).
//
// Shared is the default because it costs a third to a quarter of ProBing's
// CPU per probe and lost no reply in the benchmarks (bench/run.sh); the
// figures, and fping's, smokeping_prober's and blackbox_exporter's on the
// same targets, are in docs/performance.md.
package probes
