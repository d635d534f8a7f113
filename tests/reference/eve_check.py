#!/usr/bin/env python3
"""Checks EVE lines (stdin) the way a consumer would read them.

Each line must be a JSON object that validates against eve-schema.json (jsonschema, PyPI);
its timestamps must parse in Suricata's format; its community_id must equal what the
specification's own package (communityid, PyPI) computes from the 5-tuple; the chain
position (mldefender.seq) must increase. Prints one JSON summary line.
"""
import datetime
import json
import pathlib
import sys

import communityid
import jsonschema

schema = json.loads((pathlib.Path(__file__).parent / "eve-schema.json").read_text())
validator = jsonschema.Draft202012Validator(schema)
generator = communityid.CommunityID(seed=0)
PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "IPv6-ICMP": 58}
summary = {"lines": 0, "event_types": {}, "alert_actions": {}, "errors": [], "community_ids_checked": 0, "blocked_sources": []}
last_seq = None


def error(number, message):
    if len(summary["errors"]) < 20:
        summary["errors"].append(f"line {number}: {message}")


for number, line in enumerate(sys.stdin, 1):
    summary["lines"] += 1
    try:
        record = json.loads(line)
    except ValueError as problem:
        error(number, f"not JSON: {problem}")
        continue
    for problem in validator.iter_errors(record):
        error(number, f"{'/'.join(map(str, problem.path))}: {problem.message}")
    kind = record.get("event_type")
    summary["event_types"][kind] = summary["event_types"].get(kind, 0) + 1
    for stamp in [record.get("timestamp"), (record.get("flow") or {}).get("start"), (record.get("flow") or {}).get("end")]:
        if stamp is not None:
            try:
                datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
            except ValueError as problem:
                error(number, f"timestamp {stamp!r}: {problem}")
    if "alert" in record:
        action = record["alert"]["action"]
        summary["alert_actions"][action] = summary["alert_actions"].get(action, 0) + 1
        if action == "blocked":
            summary["blocked_sources"].append(record["src_ip"])
    protocol = PROTOCOLS.get(record.get("proto"))
    if kind in ("alert", "flow") and protocol is not None:
        if protocol in (6, 17):
            tpl = communityid.FlowTuple(protocol, record["src_ip"], record["dest_ip"], record["src_port"], record["dest_port"])
        else:
            tpl = None  # ICMP's id uses type and code, which EVE does not carry here
        if tpl is not None:
            expected = generator.calc(tpl)
            summary["community_ids_checked"] += 1
            if record["community_id"] != expected:
                error(number, f"community_id {record['community_id']} != {expected}")
    seq = (record.get("mldefender") or {}).get("seq")
    if not isinstance(seq, int):
        error(number, "no chain position (mldefender.seq)")
    elif last_seq is not None and seq <= last_seq:
        error(number, f"chain position {seq} after {last_seq}")
    else:
        last_seq = seq
print(json.dumps(summary))
