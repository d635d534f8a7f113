#!/usr/bin/env python3
"""Reference Community IDs (PyPI `communityid`, the specification's own package).

Reads JSON objects with src_ip, src_port, dst_ip, dst_port, protocol on stdin, one per
line; writes the Community ID of each, one per line.
"""
import json
import sys

import communityid

generator = communityid.CommunityID(seed=0)
for line in sys.stdin:
    flow = json.loads(line)
    protocol = flow["protocol"]
    if protocol == 6:
        tpl = communityid.FlowTuple.make_tcp(flow["src_ip"], flow["dst_ip"], flow["src_port"], flow["dst_port"])
    elif protocol == 17:
        tpl = communityid.FlowTuple.make_udp(flow["src_ip"], flow["dst_ip"], flow["src_port"], flow["dst_port"])
    else:
        tpl = communityid.FlowTuple(protocol, flow["src_ip"], flow["dst_ip"])
    print(generator.calc(tpl))
