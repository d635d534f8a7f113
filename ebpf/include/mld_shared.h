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

#endif /* MLD_SHARED_H */
