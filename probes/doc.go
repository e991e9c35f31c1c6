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
//   - Shared (the default): one long-lived socket per address family (and
//     network namespace) for all targets, raw (CAP_NET_RAW) or ICMP datagram (ping_group_range). One
//     reader goroutine per socket sleeps in recvmmsg until replies come; a
//     reply is matched to its request in O(1) through the cycle number and
//     packet index the request carried in its payload (with a random magic
//     of the prober, so other processes' pings and late replies of earlier
//     cycles are ignored), and accepted only from the address it was sent
//     to. A raw socket gets a BPF filter on the echo-reply type and the
//     prober's ICMP ID, so the kernel drops everyone else's ICMP. Sends are
//     paced (max_packets_per_second) and rounds spaced, and a cycle ends as
//     soon as every reply is in.
//     Each Target names the network namespace it is probed from ("" is the
//     exporter's own; else an ovnmeta-/qdhcp- namespace under
//     Options.NetnsDir, whose addresses are not routable from the host and
//     overlap between networks). Shared keeps one raw socket per
//     (namespace, family), opened once on a locked OS thread that entered the
//     namespace and came back (package netns): no probe switches namespaces.
//     A reply counts only on its target's socket, so the same address on two
//     networks is two targets. Each cycle stats every targeted namespace and
//     compares it with the namespace its sockets live in (SIOCGSKNS when
//     opened): a namespace deleted and recreated gets new sockets, one gone
//     or no longer targeted has them closed, reader and all. The targets of
//     a missing namespace are Result.Unprobed no_namespace; no_privilege when
//     entering or opening was refused (CAP_SYS_ADMIN, CAP_NET_RAW; counted
//     in Stats.NamespaceErrors). Pacing is one budget over all namespaces.
//     200 namespaces of 50 addresses cost no more CPU than 10,000
//     addresses in one namespace and 2-3.5 MiB more memory, 1.16-1.25
//     times the engine's own (bench/netns, docs/performance.md).
//   - ProBing: a short-lived github.com/prometheus-community/pro-bing Pinger
//     per target and cycle, at most 128 at a time, each with a distinct ICMP
//     ID (pro-bing picks them at random, and random 16-bit IDs collide often
//     between concurrent pingers), RecordRtts and RecordTTLs off (they grow
//     without bound otherwise). It probes no namespace target (Unprobed
//     engine_unsupported): a socket per probe would need a namespace
//     switch per probe.
//
// Shared is the default because it costs a third to a quarter of ProBing's
// CPU per probe and lost no reply in the benchmarks (bench/run.sh); the
// figures, and fping's, smokeping_prober's and blackbox_exporter's on the
// same targets, are in docs/performance.md.
package probes
