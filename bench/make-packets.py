#!/usr/bin/env python3
"""Writes the benchmark's test packets (one raw Ethernet frame per file) into DIR.

usage: make-packets.py DIR
Files: deny-udp4 (source 10.0.0.66, denied), allow-udp4 (10.0.0.77, allowlisted),
pass-udp4 (10.0.0.99, unlisted), pass-udp6 (fd00::99), pass-vlan-udp4 (10.0.0.99 behind
an 802.1Q tag). All 64-byte-class UDP frames to port 53.
"""
import os
import sys

from scapy.all import IP, UDP, Dot1Q, Ether, IPv6, Raw

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
payload = Raw(b"x" * 18)
frames = {
    "deny-udp4": eth / IP(src="10.0.0.66", dst="10.0.0.1") / UDP(sport=5000, dport=53) / payload,
    "allow-udp4": eth / IP(src="10.0.0.77", dst="10.0.0.1") / UDP(sport=5000, dport=53) / payload,
    "pass-udp4": eth / IP(src="10.0.0.99", dst="10.0.0.1") / UDP(sport=5000, dport=53) / payload,
    "pass-udp6": eth / IPv6(src="fd00::99", dst="fd00::1") / UDP(sport=5000, dport=53) / payload,
    "pass-vlan-udp4": eth / Dot1Q(vlan=100) / IP(src="10.0.0.99", dst="10.0.0.1") / UDP(sport=5000, dport=53) / payload,
}
for name, frame in frames.items():
    with open(os.path.join(out, name), "wb") as handle:
        handle.write(bytes(frame))
