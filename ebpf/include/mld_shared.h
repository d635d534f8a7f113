/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0 */
/*
 * The contract between the kernel side (XDP program) and user space.
 *
 * Every struct here is mirrored exactly once in Rust with #[repr(C)]
 * (appliance/packet/src/record.rs); a test compiles this header and checks that
 * sizes and field offsets agree. Change both together, and bump
 * MLD_PACKET_RECORD_VERSION when the layout changes.
 *
 * All multi-byte integers are in host byte order; addresses are in network byte
 * order (as on the wire). IPv4 addresses occupy the first 4 bytes of the 16-byte
 * address fields; the other 12 bytes are zero.
 */
#ifndef MLD_SHARED_H
#define MLD_SHARED_H

#include <linux/types.h>

#define MLD_PACKET_RECORD_VERSION 1

/* mld_packet_record.direction */
#define MLD_DIR_UNKNOWN 0
#define MLD_DIR_FROM_LAN 1
#define MLD_DIR_FROM_WAN 2

/* mld_packet_record.flags */
#define MLD_PKT_TRUNCATED 0x01 /* fewer bytes captured than on the wire (snaplen) */

/* TCP flag bits as in byte 13 of the TCP header */
#define MLD_TCP_FIN 0x01
#define MLD_TCP_SYN 0x02
#define MLD_TCP_RST 0x04
#define MLD_TCP_PSH 0x08
#define MLD_TCP_ACK 0x10
#define MLD_TCP_URG 0x20
#define MLD_TCP_ECE 0x40
#define MLD_TCP_CWR 0x80

/*
 * One packet, as the flow table needs it. Produced by the pcap reader and by
 * the XDP program's ring buffer. 72 bytes, 8-byte aligned.
 */
struct mld_packet_record {
	__u64 ts_ns;          /* capture time; pcap: ns since the Unix epoch, XDP: CLOCK_BOOTTIME ns */
	__u8 src_addr[16];    /* source address, network byte order */
	__u8 dst_addr[16];    /* destination address, network byte order */
	__u32 ifindex;        /* interface the packet arrived on (0 when unknown) */
	__u32 wire_len;       /* frame length on the wire, link-layer header included */
	__u16 src_port;       /* TCP/UDP source port; 0 for other protocols */
	__u16 dst_port;       /* TCP/UDP destination port; 0 for other protocols */
	__u16 ip_len;         /* IP packet length from the IP header: v4 total length, v6 40 + payload length */
	__u16 ip_header_len;  /* IP header bytes, IPv6 extension headers included */
	__u16 l4_header_len;  /* TCP header (data offset * 4), UDP 8, ICMP 8, else 0 */
	__u16 payload_len;    /* ip_len - ip_header_len - l4_header_len */
	__u16 tcp_window;     /* TCP window field (unscaled); 0 for other protocols */
	__u8 ip_version;      /* 4 or 6 */
	__u8 protocol;        /* IP protocol number of the transport header (after extension headers) */
	__u8 tcp_flags;       /* MLD_TCP_* bits; 0 for other protocols */
	__u8 ttl;             /* IPv4 TTL or IPv6 hop limit */
	__u8 direction;       /* MLD_DIR_* */
	__u8 flags;           /* MLD_PKT_* */
	__u8 _pad[4];         /* explicit padding, always zero */
};

/*
 * Key of the allow and deny LPM tries. Every address is stored as IPv6: IPv4 as
 * ::ffff:a.b.c.d with prefixlen + 96, so one trie serves both families.
 */
struct mld_lpm_key {
	__u32 prefixlen;      /* bits of addr that must match, 0..=128 */
	__u8 addr[16];        /* network byte order */
};

/* Value of the deny trie. */
struct mld_deny_value {
	__u64 expires_ns;     /* CLOCK_BOOTTIME ns after which the entry no longer drops; 0 = never */
	__u32 reason;         /* MLD_REASON_*: which drop counter to bump */
	__u32 _pad;           /* explicit padding, always zero */
};

/* Deny reasons (mld_deny_value.reason); values >= MLD_REASONS count as MLD_REASON_OTHER. */
#define MLD_REASON_MANUAL 0
#define MLD_REASON_SCAN 1
#define MLD_REASON_FLOOD 2
#define MLD_REASON_BRUTE_FORCE 3
#define MLD_REASON_SLOW 4
#define MLD_REASON_OTHER 5
#define MLD_REASONS 8

/* Index of each per-CPU counter in the mld_counters array. */
#define MLD_CTR_PASSED 0          /* IP packets passed (allowlisted ones included) */
#define MLD_CTR_ALLOWED 1         /* packets whose source is allowlisted */
#define MLD_CTR_DROPPED 2         /* packets dropped (all reasons) */
#define MLD_CTR_MALFORMED 3       /* malformed or truncated packets (passed unless their source is denied or spoofed) */
#define MLD_CTR_RING_FULL 4       /* packet records lost because the ring buffer was full */
#define MLD_CTR_NOT_IP 5          /* non-IP frames and later IP fragments, passed */
#define MLD_CTR_EXPIRED 6         /* packets from a source whose deny entry had expired, passed */
#define MLD_CTR_SPOOFED 7         /* packets whose source cannot be behind their ingress interface, dropped */
#define MLD_CTR_DROP_REASON 8     /* MLD_CTR_DROP_REASON + reason: drops per reason */
#define MLD_CTR_GUARD (MLD_CTR_DROP_REASON + MLD_REASONS) /* first packets dropped by a destination's guard */
#define MLD_COUNTERS (MLD_CTR_GUARD + 1)

/* mld_iface_value.source_check: which sources may arrive on an interface. */
#define MLD_SRC_CHECK_OFF 0       /* any source */
#define MLD_SRC_CHECK_STRICT 1    /* only sources the mld_sources trie permits here (a LAN: strict uRPF) */
#define MLD_SRC_CHECK_LOOSE 2     /* any source the mld_sources trie does not forbid here (a WAN) */

/* Value of the interface map (ifindex -> role), for the packet record's direction. */
struct mld_iface_value {
	__u32 direction;      /* MLD_DIR_* of packets arriving on this interface */
	__u32 source_check;   /* MLD_SRC_CHECK_* */
};

/*
 * Key of the source-check trie: the ingress interface, then the source address
 * (IPv4-mapped as in mld_lpm_key). prefixlen counts the 32 ifindex bits too, so an
 * entry always names one interface: prefixlen = 32 + address prefix length.
 */
struct mld_src_key {
	__u32 prefixlen;      /* 32..=160 */
	__u32 ifindex;        /* host byte order; always matched whole */
	__u8 addr[16];        /* network byte order */
};

/* Value of the source-check trie. */
#define MLD_SRC_PERMIT 1          /* this prefix may appear as a source on this interface */
#define MLD_SRC_FORBID 2          /* it may not (the box's own addresses, the LAN's prefixes on a WAN) */

/*
 * The per-destination guard against random-source floods (docs/detection.md). Key of
 * the guard hash: one service, the destination address (IPv4-mapped as in
 * mld_lpm_key), port and protocol. Only first packets are judged: a TCP SYN without
 * ACK, or any UDP datagram, to a guarded service.
 */
/* Capacities: destinations guarded at once; known-good sources remembered (LRU). */
#define MLD_GUARD_ENTRIES 1024
#define MLD_GOOD_ENTRIES 65536

struct mld_guard_key {
	__u8 addr[16];        /* destination, network byte order, IPv4-mapped */
	__u16 port;           /* destination port, host byte order */
	__u8 protocol;        /* 6 (TCP) or 17 (UDP) */
	__u8 _pad;            /* explicit padding, always zero */
};

/*
 * Value of the guard hash, written by user space when the destination goes under
 * attack; the counters are added to by the XDP program (atomic adds).
 *
 * The token bucket is kept as its theoretical arrival time (GCRA, the same bucket):
 * tat_ns is when the bucket would be full again; a first packet from a source that
 * is not known good passes when tat_ns - now < burst_ns (there is a token), and then
 * moves tat_ns on by interval_ns (takes one); the bucket refills with the clock
 * (CLOCK_BOOTTIME, bpf_ktime_get_boot_ns). tat_ns is read and written without a lock:
 * CPUs racing on one entry may each take the same token, so the rate can be exceeded
 * by at most one packet per CPU per race (documented, accepted).
 */
struct mld_guard_value {
	__u64 interval_ns;    /* ns per token: 1e9 / rate */
	__u64 burst_ns;       /* burst * interval_ns: how far tat_ns may run ahead of now */
	__u64 tat_ns;         /* theoretical arrival time (CLOCK_BOOTTIME ns) */
	__u64 expires_ns;     /* the guard lapses by itself at this CLOCK_BOOTTIME ns (user space renews it) */
	__u64 good_within_ns; /* a source is known good when mld_good saw it good within this */
	__u64 passed;         /* first packets from unknown sources let through (a token) */
	__u64 dropped;        /* first packets from unknown sources dropped (no token) */
	__u64 known_passed;   /* first packets from known-good sources, passed without a token */
};

#endif /* MLD_SHARED_H */
