#!/usr/bin/env python3
"""Sends the packets an attacker uses to slip past a parser, from SRC4/SRC6, out of
IFACE to the gateway's MAC; prints how many it sent.

usage: evasion.py IFACE GATEWAY_MAC SRC4 SRC6

Destination: the lab server 10.66.9.2 / fd66:9::2, port 8080. Many of these are
forwarded by the gateway's kernel and accepted by the server's stack when the XDP
program lets them through: a denied source must never get them past it.
"""
import sys

from scapy.all import IP, TCP, UDP, Ether, IPv6, IPv6ExtHdrDestOpt, Raw, conf, sendp

iface, mac, src4, src6 = sys.argv[1:5]
conf.verb = 0
eth = Ether(dst=mac)
dst4, dst6 = "10.66.9.2", "fd66:9::2"
packets = []

# An IPv6 SYN behind 9 Destination Options headers (one more than the program follows).
chain = IPv6(src=src6, dst=dst6)
for _ in range(9):
    chain = chain / IPv6ExtHdrDestOpt()
packets.append(eth / chain / TCP(sport=40001, dport=8080, flags="S", seq=1000))
# An IPv4 SYN in tiny fragments: the first holds only 8 bytes of the TCP header.
syn = bytes(TCP(sport=40002, dport=8080, flags="S", seq=2000))
packets.append(eth / IP(src=src4, dst=dst4, proto=6, id=4242, flags="MF", frag=0) / Raw(syn[:8]))
packets.append(eth / IP(src=src4, dst=dst4, proto=6, id=4242, frag=1) / Raw(syn[8:]))
# An unknown transport protocol.
packets.append(eth / IP(src=src4, dst=dst4, proto=253) / Raw(b"x" * 32))
# A later fragment on its own.
packets.append(eth / IP(src=src4, dst=dst4, proto=17, id=4343, frag=100) / Raw(b"y" * 24))
# A UDP header whose length field is too short (malformed).
packets.append(eth / IP(src=src4, dst=dst4) / UDP(sport=40003, dport=53, len=4) / Raw(b"abcd"))

sendp(packets, iface=iface)
print(len(packets))
