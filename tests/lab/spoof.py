#!/usr/bin/env python3
"""Sends one UDP packet (port 7007) from each spoofed SOURCE out of IFACE to the
gateway's MAC, to DEST; prints how many it sent.

usage: spoof.py IFACE GATEWAY_MAC DEST SOURCE...
"""
import sys

from scapy.all import IP, UDP, Ether, IPv6, Raw, conf, sendp

iface, mac, dest = sys.argv[1:4]
conf.verb = 0
packets = []
for source in sys.argv[4:]:
    if ":" in source:
        packets.append(Ether(dst=mac) / IPv6(src=source, dst=dest if ":" in dest else "fd66:9::2") / UDP(sport=40100, dport=7007) / Raw(b"spoofed"))
    else:
        packets.append(Ether(dst=mac) / IP(src=source, dst=dest if ":" not in dest else "10.66.9.2") / UDP(sport=40100, dport=7007) / Raw(b"spoofed"))
sendp(packets, iface=iface)
print(len(packets))
