// SPDX-License-Identifier: GPL-2.0
/*
 * ml-defender's XDP program: sees every packet arriving on the gateway's interfaces,
 * drops packets from denied sources (unless allowlisted), and hands a compact record
 * of every other IP packet to user space through a ring buffer.
 *
 * Rules (the user-space decoder, appliance/packet/src/decode.rs, applies the same):
 * Ethernet with up to two VLAN tags; IPv4 and IPv6 (extension headers skipped, at most
 * 8); TCP, UDP, ICMP, ICMPv6 headers read; lengths from the IP header.
 *
 * The source decides first. As soon as the fixed IP header gives the source address
 * (20 bytes of IPv4, 40 of IPv6, version checked), the source is judged, whatever
 * follows: malformed, truncated, fragmented, an unknown protocol, too many extension
 * headers. Order: the source check of the ingress interface (a source that cannot be
 * behind it: drop, counted as spoofed), the allow trie (match: pass), the deny trie
 * (unexpired match: drop, counted per reason; expired: pass, counted). Only then is
 * the rest of the parse looked at: a malformed packet from a source that was not
 * dropped is counted and passed, never recorded; a later fragment is passed; every
 * other packet is recorded and passed. A frame too short to hold the fixed IP header
 * has no source: it is counted as malformed and passed (the kernel's IP layer drops
 * it).
 *
 * After the source checks, a destination under attack (an entry in mld_guard, written
 * by user space during a random-source flood) judges first packets (TCP SYN without
 * ACK, UDP datagrams) to it: a source known good (mld_good: it completed a handshake
 * recently, filled by user space from two-way evidence) passes; any other takes a
 * token from the destination's bucket or is dropped (counted per guard and as
 * MLD_CTR_GUARD). Allowlisted sources are never judged. Only SYN and UDP packets look
 * the guard up, and only while some service is guarded (mld_guard_on).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "mld_shared.h"

char LICENSE[] SEC("license") = "GPL";

/* Default ring size; user space sets the configured one at load. Benchmarks override it. */
#ifndef MLD_RING_BYTES
#define MLD_RING_BYTES (1 << 22)
#endif

/* The allowlist: two tries, one in force (mld_allow_sel[0]: 0 for mld_allow, 1 for
 * mld_allow_next). User space fills the other one and flips the selector with one
 * write, so a new allowlist takes effect whole, between two packets. */
struct mld_allow_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct mld_lpm_key);
	__type(value, __u32);
};

struct mld_allow_trie mld_allow SEC(".maps");
struct mld_allow_trie mld_allow_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mld_allow_sel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct mld_lpm_key);
	__type(value, struct mld_deny_value);
} mld_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MLD_RING_BYTES); /* user space sets the configured size at load */
} mld_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MLD_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} mld_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct mld_iface_value);
} mld_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct mld_src_key);
	__type(value, __u32);
} mld_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MLD_GUARD_ENTRIES);
	__type(key, struct mld_guard_key);
	__type(value, struct mld_guard_value);
} mld_guard SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MLD_GOOD_ENTRIES);
	__type(key, __u8[16]);  /* source address, IPv4-mapped */
	__type(value, __u64);   /* CLOCK_BOOTTIME ns it was last seen good */
} mld_good SEC(".maps");

/* Index 0: how many services are guarded (user space keeps it): 0 skips the guard
 * hash lookup (an inlined array load instead of a hash of the key). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} mld_guard_on SEC(".maps");

/* The source is in the allowlist in force. */
static __always_inline int allowlisted(const struct mld_lpm_key *key)
{
	__u32 zero = 0;
	__u32 *selector = bpf_map_lookup_elem(&mld_allow_sel, &zero);

	if (selector && *selector)
		return bpf_map_lookup_elem(&mld_allow_next, key) != NULL;
	return bpf_map_lookup_elem(&mld_allow, key) != NULL;
}

enum parse_result {
	PARSE_PACKET,
	PARSE_FRAGMENT, /* a later fragment: addresses known, no transport header */
	PARSE_NOT_IP,
	PARSE_MALFORMED, /* rec->ip_version != 0: the source is known all the same */
};

/* Wake the reader when this much data is waiting (about 900 records). */
#define MLD_RING_WAKEUP_BYTES (64 * 1024)
/* A record in the ring: the record and the ring's 8-byte header. */
#define MLD_RING_SLOT_BYTES (sizeof(struct mld_packet_record) + 8)

#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_ICMPV6_ 58
#define ETH_P_QINQ_OLD 0x9100
#define MAX_VLAN_TAGS 2
#define MAX_EXT_HEADERS 8

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&mld_counters, &index);
	if (value)
		*value += 1;
}

static __always_inline __u16 load_be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline int parse_transport(__u8 *l4, void *data_end, __u32 ip_payload_len,
					    struct mld_packet_record *rec)
{
	__u32 header_len = 0;

	switch (rec->protocol) {
	case IPPROTO_TCP:
		if (ip_payload_len < 20 || (void *)(l4 + 20) > data_end)
			return PARSE_MALFORMED;
		header_len = (__u32)(l4[12] >> 4) * 4;
		if (header_len < 20 || header_len > ip_payload_len)
			return PARSE_MALFORMED;
		rec->src_port = load_be16(l4);
		rec->dst_port = load_be16(l4 + 2);
		rec->tcp_flags = l4[13];
		rec->tcp_window = load_be16(l4 + 14);
		break;
	case IPPROTO_UDP: {
		__u32 udp_len;
		if (ip_payload_len < 8 || (void *)(l4 + 8) > data_end)
			return PARSE_MALFORMED;
		udp_len = load_be16(l4 + 4);
		if (udp_len < 8 || udp_len > ip_payload_len)
			return PARSE_MALFORMED;
		rec->src_port = load_be16(l4);
		rec->dst_port = load_be16(l4 + 2);
		header_len = 8;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		if (ip_payload_len < 8 || (void *)(l4 + 4) > data_end)
			return PARSE_MALFORMED;
		header_len = 8;
		break;
	default:
		break;
	}
	rec->l4_header_len = header_len;
	rec->payload_len = ip_payload_len - header_len;
	return PARSE_PACKET;
}

static __always_inline int parse_ipv4(__u8 *l3, void *data_end, __u32 wire_l3_len,
				      struct mld_packet_record *rec)
{
	__u32 header_len, total_len;

	if ((void *)(l3 + 20) > data_end)
		return PARSE_MALFORMED;
	if ((l3[0] >> 4) != 4)
		return PARSE_MALFORMED;
	/* The source is known from here on: the caller judges it whatever follows. */
	rec->ip_version = 4;
	rec->ttl = l3[8];
	rec->protocol = l3[9];
	__builtin_memcpy(rec->src_addr, l3 + 12, 4);
	__builtin_memcpy(rec->dst_addr, l3 + 16, 4);
	header_len = (__u32)(l3[0] & 0x0f) * 4;
	if (header_len < 20 || header_len > wire_l3_len)
		return PARSE_MALFORMED;
	total_len = load_be16(l3 + 2);
	if (total_len < header_len || total_len > wire_l3_len)
		return PARSE_MALFORMED;
	rec->ip_len = total_len;
	rec->ip_header_len = header_len;
	if (load_be16(l3 + 6) & 0x1fff)
		return PARSE_FRAGMENT;
	/* header_len <= wire_l3_len <= 65535 + 14: a bounded offset the verifier accepts. */
	return parse_transport(l3 + (header_len & 0x3f), data_end, total_len - header_len, rec);
}

static __always_inline int parse_ipv6(__u8 *l3, void *data_end, __u32 wire_l3_len,
				      struct mld_packet_record *rec)
{
	__u32 total_len, offset = 40;
	__u8 next_header;
	__u8 *cursor;

	if ((void *)(l3 + 40) > data_end)
		return PARSE_MALFORMED;
	if ((l3[0] >> 4) != 6)
		return PARSE_MALFORMED;
	/* The source is known from here on: the caller judges it whatever follows. */
	rec->ip_version = 6;
	rec->ttl = l3[7];
	__builtin_memcpy(rec->src_addr, l3 + 8, 16);
	__builtin_memcpy(rec->dst_addr, l3 + 24, 16);
	total_len = 40 + load_be16(l3 + 4);
	next_header = l3[6];
	if ((total_len == 40 && next_header == 0) || total_len > wire_l3_len)
		return PARSE_MALFORMED;
	rec->ip_len = total_len;

	cursor = l3 + 40;
#pragma unroll
	for (int i = 0; i < MAX_EXT_HEADERS + 1; i++) {
		__u32 len;
		if (next_header != 0 && next_header != 43 && next_header != 44 && next_header != 51 &&
		    next_header != 60 && next_header != 135)
			break;
		if (i == MAX_EXT_HEADERS)
			return PARSE_MALFORMED;
		if ((void *)(cursor + 8) > data_end)
			return PARSE_MALFORMED;
		if (next_header == 44) {
			len = 8;
			if (load_be16(cursor + 2) >> 3) {
				rec->protocol = cursor[0];
				return PARSE_FRAGMENT;
			}
		} else if (next_header == 51) {
			len = ((__u32)cursor[1] + 2) * 4;
		} else {
			len = ((__u32)cursor[1] + 1) * 8;
		}
		if (offset + len > total_len)
			return PARSE_MALFORMED;
		next_header = cursor[0];
		offset += len;
		cursor += len & 0x7ff;
	}
	rec->protocol = next_header;
	rec->ip_header_len = offset;
	return parse_transport(cursor, data_end, total_len - offset, rec);
}

static __always_inline int parse(struct xdp_md *ctx, struct mld_packet_record *rec)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *cursor = data;
	__u32 wire_len = (__u32)(data_end - data);
	__u16 ethertype;

	if ((void *)(cursor + 14) > data_end)
		return PARSE_MALFORMED;
	ethertype = load_be16(cursor + 12);
	cursor += 14;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS + 1; i++) {
		if (ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD_ && ethertype != ETH_P_QINQ_OLD)
			break;
		if (i == MAX_VLAN_TAGS)
			return PARSE_NOT_IP;
		if ((void *)(cursor + 4) > data_end)
			return PARSE_MALFORMED;
		ethertype = load_be16(cursor + 2);
		cursor += 4;
	}
	rec->wire_len = wire_len;
	if (ethertype == ETH_P_IP)
		return parse_ipv4(cursor, data_end, (__u32)(data_end - (void *)cursor), rec);
	if (ethertype == ETH_P_IPV6)
		return parse_ipv6(cursor, data_end, (__u32)(data_end - (void *)cursor), rec);
	return PARSE_NOT_IP;
}

/* 1 when the source cannot be behind the interface it arrived on. */
static __always_inline int spoofed(const struct mld_iface_value *iface, __u32 ifindex, const __u8 *addr)
{
	struct mld_src_key key = { .prefixlen = 160, .ifindex = ifindex };
	__u32 *verdict;

	if (!iface || iface->source_check == MLD_SRC_CHECK_OFF)
		return 0;
	__builtin_memcpy(key.addr, addr, 16);
	verdict = bpf_map_lookup_elem(&mld_sources, &key);
	if (verdict && *verdict == MLD_SRC_FORBID)
		return 1;
	if (iface->source_check == MLD_SRC_CHECK_STRICT)
		return !verdict || *verdict != MLD_SRC_PERMIT;
	return 0;
}

/*
 * 1 when the packet is a first packet (TCP SYN without ACK, or UDP) to a guarded
 * destination, from a source not known good, and the destination's bucket has no
 * token left. `src` is the IPv4-mapped source.
 */
static __always_inline int guard_drops(const struct mld_packet_record *rec, const __u8 *src)
{
	struct mld_guard_key gkey = {};
	struct mld_guard_value *guard;
	__u64 now, tat, *good;
	__u32 zero = 0, *active;

	if (rec->protocol == IPPROTO_TCP) {
		if ((rec->tcp_flags & (MLD_TCP_SYN | MLD_TCP_ACK)) != MLD_TCP_SYN)
			return 0;
	} else if (rec->protocol != IPPROTO_UDP) {
		return 0;
	}
	active = bpf_map_lookup_elem(&mld_guard_on, &zero);
	if (!active || *active == 0)
		return 0;
	if (rec->ip_version == 4) {
		gkey.addr[10] = 0xff;
		gkey.addr[11] = 0xff;
		__builtin_memcpy(&gkey.addr[12], rec->dst_addr, 4);
	} else {
		__builtin_memcpy(gkey.addr, rec->dst_addr, 16);
	}
	gkey.port = rec->dst_port;
	gkey.protocol = rec->protocol;
	guard = bpf_map_lookup_elem(&mld_guard, &gkey);
	if (!guard)
		return 0;
	now = bpf_ktime_get_boot_ns();
	if (now >= guard->expires_ns)
		return 0;
	good = bpf_map_lookup_elem(&mld_good, src);
	if (good && (*good >= now || now - *good <= guard->good_within_ns)) {
		__sync_fetch_and_add(&guard->known_passed, 1);
		return 0;
	}
	/* The token bucket as its theoretical arrival time (mld_shared.h); racy by design. */
	tat = guard->tat_ns;
	if (tat < now)
		tat = now;
	if (tat - now >= guard->burst_ns) {
		__sync_fetch_and_add(&guard->dropped, 1);
		return 1;
	}
	guard->tat_ns = tat + guard->interval_ns;
	__sync_fetch_and_add(&guard->passed, 1);
	return 0;
}

SEC("xdp")
int mld_xdp(struct xdp_md *ctx)
{
	struct mld_packet_record rec = {};
	struct mld_lpm_key key = { .prefixlen = 128 };
	struct mld_deny_value *deny;
	struct mld_iface_value *iface;
	__u32 ifindex = ctx->ingress_ifindex;
	__u64 avail;
	int wakeup, allowed = 0;
	int parsed = parse(ctx, &rec);

	if (parsed == PARSE_NOT_IP) {
		count(MLD_CTR_NOT_IP);
		return XDP_PASS;
	}
	if (parsed == PARSE_MALFORMED)
		count(MLD_CTR_MALFORMED);
	if (rec.ip_version == 0) /* too short for the fixed IP header: no source to judge */
		return XDP_PASS;

	/* The source decides first, whatever the rest of the packet is. */
	if (rec.ip_version == 4) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], rec.src_addr, 4);
	} else {
		__builtin_memcpy(key.addr, rec.src_addr, 16);
	}
	iface = bpf_map_lookup_elem(&mld_ifaces, &ifindex);
	if (spoofed(iface, ifindex, key.addr)) {
		count(MLD_CTR_SPOOFED);
		count(MLD_CTR_DROPPED);
		return XDP_DROP;
	}
	if (allowlisted(&key)) {
		count(MLD_CTR_ALLOWED);
		allowed = 1;
	} else {
		deny = bpf_map_lookup_elem(&mld_deny, &key);
		if (deny) {
			if (deny->expires_ns == 0 || bpf_ktime_get_boot_ns() < deny->expires_ns) {
				__u32 reason = deny->reason < MLD_REASONS ? deny->reason : MLD_REASON_OTHER;
				count(MLD_CTR_DROPPED);
				count(MLD_CTR_DROP_REASON + reason);
				return XDP_DROP;
			}
			count(MLD_CTR_EXPIRED);
		}
	}

	if (parsed == PARSE_MALFORMED)
		return XDP_PASS;
	if (parsed == PARSE_FRAGMENT) {
		count(MLD_CTR_NOT_IP);
		count(MLD_CTR_PASSED);
		return XDP_PASS;
	}
	/* A destination under a random-source flood: first packets of unknown sources are rate-limited. */
	if (!allowed && guard_drops(&rec, key.addr)) {
		count(MLD_CTR_GUARD);
		count(MLD_CTR_DROPPED);
		return XDP_DROP;
	}
	rec.ts_ns = bpf_ktime_get_boot_ns();
	rec.ifindex = ifindex;
	if (iface)
		rec.direction = iface->direction;
	/*
	 * Wake the reader once, when a batch has built up: a wake-up per packet costs a
	 * context switch per packet, and a wake-up for every packet past the threshold
	 * (a reader that lags) costs even more. The reader also polls on a short timeout,
	 * so a trickle of packets, or a missed crossing, is still read promptly.
	 */
	avail = bpf_ringbuf_query(&mld_events, BPF_RB_AVAIL_DATA);
	wakeup = avail >= MLD_RING_WAKEUP_BYTES && avail < MLD_RING_WAKEUP_BYTES + 2 * MLD_RING_SLOT_BYTES;
	if (bpf_ringbuf_output(&mld_events, &rec, sizeof(rec), wakeup ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP))
		count(MLD_CTR_RING_FULL);
	count(MLD_CTR_PASSED);
	return XDP_PASS;
}
