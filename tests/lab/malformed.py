#!/usr/bin/env python3
"""Sends malformed packets out of IFACE to MAC with scapy; prints how many it sent.

usage: malformed.py IFACE GATEWAY_MAC

Each packet must be counted as malformed by the XDP program and passed (not dropped,
not recorded). Destination: the lab server 10.66.9.2 / fd66:9::2.
"""
import sys

from scapy.all import IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrDestOpt, Raw, conf, sendp

iface, mac = sys.argv[1], sys.argv[2]
conf.verb = 0
eth = Ether(dst=mac)
src4, dst4 = "10.66.2.2", "10.66.9.2"
packets = []

# Truncated TCP header: the IP header says 8 bytes of TCP follow.
packets.append(eth / IP(src=src4, dst=dst4, proto=6, len=28) / Raw(b"\x9c\x40\x00\x50\x00\x00\x00\x01"))
# Bad IHL: 3 words (< 5).
bad_ihl = bytearray(bytes(eth / IP(src=src4, dst=dst4) / UDP(sport=1, dport=53) / Raw(b"x" * 10)))
bad_ihl[14] = 0x43
packets.append(Ether(bytes(bad_ihl)))
# IP total length larger than the frame.
packets.append(eth / IP(src=src4, dst=dst4, len=1400) / UDP(sport=1, dport=53) / Raw(b"x" * 10))
# Zero-length UDP (length field 0).
packets.append(eth / IP(src=src4, dst=dst4) / UDP(sport=1, dport=53, len=0) / Raw(b"abc"))
# TCP data offset 2 (< 5).
packets.append(eth / IP(src=src4, dst=dst4) / TCP(sport=1, dport=80, dataofs=2))
# IPv6 with a chain of 9 extension headers (more than the 8 we follow).
chain = IPv6(src="fd66:2::2", dst="fd66:9::2")
for _ in range(9):
    chain = chain / IPv6ExtHdrDestOpt()
packets.append(eth / chain / UDP(sport=1, dport=53) / Raw(b"x"))
# IPv6 extension header whose length runs past the packet.
cut = bytearray(bytes(eth / IPv6(src="fd66:2::2", dst="fd66:9::2") / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=53)))
cut[14 + 40 + 1] = 200
packets.append(Ether(bytes(cut)))
# Frame cut inside the IPv4 header.
packets.append(Ether(bytes(eth / IP(src=src4, dst=dst4))[:14 + 12]))

sendp(packets, iface=iface)
print(len(packets))
