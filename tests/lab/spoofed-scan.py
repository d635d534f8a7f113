#!/usr/bin/env python3
"""A distributed scan from many spoofed sources, for the circuit-breaker test: each of
SOURCES addresses in 198.18.0.0/15 (RFC 2544 benchmarking space) sends SYNs to PORTS
distinct ports of the lab server, so each source on its own looks like a port scan.

usage: spoofed-scan.py IFACE GATEWAY_MAC SOURCES PORTS [SOURCE_ADDRESS [DEST]]   (Debian python3-scapy: /usr/bin/python3)

With SOURCE_ADDRESS, every source is that address (give SOURCES = 1), and DEST
(default 10.66.9.2) is the target.

Prints how many packets it sent. Run it in the attacker node.
"""
import sys

from scapy.all import IP, TCP, Ether, conf, sendp

iface, mac, sources, ports = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fixed = sys.argv[5] if len(sys.argv) > 5 else None
dest = sys.argv[6] if len(sys.argv) > 6 else "10.66.9.2"
conf.verb = 0
packets = [
    Ether(dst=mac) / IP(src=fixed or f"198.18.{index // 250}.{index % 250 + 1}", dst=dest) / TCP(sport=40000 + index, dport=1000 + port, flags="S", seq=index * 1000 + port)
    for index in range(sources)
    for port in range(ports)
]
sendp(packets, iface=iface, inter=0)
print(len(packets))
