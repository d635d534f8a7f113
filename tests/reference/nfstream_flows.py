#!/usr/bin/env python3
"""Reference flow extraction with nfstream (someone else's extractor, C engine).

usage: nfstream_flows.py CAPTURE --idle-timeout-secs N --active-timeout-secs N

Writes one JSON object per flow to stdout with the fields the parity test compares.
accounting_mode=3 makes nfstream's packet sizes transport payload bytes, which is what
CICFlowMeter (and ml-defender) call "packet length"; bytes are read with mode 1 (IP).
"""
import argparse
import json
import sys

from nfstream import NFStreamer


def flows(path, idle, active, accounting_mode):
    streamer = NFStreamer(
        source=path,
        decode_tunnels=False,
        statistical_analysis=True,
        splt_analysis=0,
        n_dissections=0,
        accounting_mode=accounting_mode,
        idle_timeout=idle,
        active_timeout=active,
    )
    return list(streamer)


def key(flow):
    return (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol, flow.bidirectional_first_seen_ms)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("capture")
    parser.add_argument("--idle-timeout-secs", type=int, required=True)
    parser.add_argument("--active-timeout-secs", type=int, required=True)
    args = parser.parse_args()
    payload = flows(args.capture, args.idle_timeout_secs, args.active_timeout_secs, 3)
    ip_level = {key(flow): flow for flow in flows(args.capture, args.idle_timeout_secs, args.active_timeout_secs, 1)}
    for flow in payload:
        record = {}
        for name in flow.keys():
            value = getattr(flow, name, None)
            if isinstance(value, (int, float, str)) and name != "id":
                record[name] = value
        ip_flow = ip_level.get(key(flow))
        record["src2dst_ip_bytes"] = ip_flow.src2dst_bytes if ip_flow else None
        record["dst2src_ip_bytes"] = ip_flow.dst2src_bytes if ip_flow else None
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
