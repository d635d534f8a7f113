#!/usr/bin/env python3
"""Benchmark helper: plays a node's detect task on its fleet socket and hands the fleet
task COUNT block decisions (100.64.0.0/10 addresses from START on), SPACING_MS apart (0:
all at once). Run as the detect task's user (the fleet task admits no one else):

    setpriv --reuid=mld-detect --regid=mld-detect --clear-groups \
        tests/fleet/inject.py SOCKET START COUNT SPACING_MS

Frames as mld-ipc writes them: a 4-byte big-endian length, then JSON."""
import ipaddress
import json
import socket
import struct
import sys
import time

path, start, count, spacing_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
base = int(ipaddress.IPv4Address("100.64.0.0"))
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(path)
for index in range(start, start + count):
    now_ms = int(time.time() * 1000)
    message = {
        "type": "decided",
        "prefix": f"{ipaddress.IPv4Address(base + 1 + index)}/32",
        "reason": "scan",
        "expires_unix_ms": now_ms + 600_000,
        "decided_unix_ms": now_ms,
        "event_id": f"bench-{index}",
    }
    body = json.dumps(message).encode()
    conn.sendall(struct.pack(">I", len(body)) + body)
    if spacing_ms > 0:
        time.sleep(spacing_ms / 1000)
# Stay until the fleet task has read everything (it reads every few ms).
time.sleep(1)
conn.close()
