#!/usr/bin/env python3
"""Labels the flows of one lab scenario (the CSV of `mldefender flows --format csv`).

usage: label-flows.py FLOWS.csv OUT.csv SCENARIO CATEGORY EXPECTED

Writes OUT.csv: every flow kept, with three columns appended: label (attack|benign),
category (CATEGORY for attack flows, "benign" for benign ones) and scenario (SCENARIO).
EXPECTED (attack|benign) is the scenario's side: flows of the other side are kept with
their own label, and counted as unexpected. Prints one line of counts:
  flows=N attack=N benign=N dropped=N unexpected=N

The label rule, by construction of the lab (tests/lab/lab.sh), on a flow's two endpoints
(source = initiator, and destination), in this order:
  1. dropped: IPv6 with a link-local, multicast or unspecified endpoint, or IPv4 to a
     multicast or broadcast address from a lab address: neighbour discovery, router
     solicitations, MLD: the namespaces' own housekeeping, made by neither side.
  2. dropped: the gateway itself is an endpoint (10.66.{1,2,9}.1, fd66:{1,2,9}::1): not
     forwarded traffic (e.g. neighbour-unreachability probes). No scenario targets it.
  3. attack: an endpoint is in the attacker's network (10.66.2.0/24, fd66:2::/64), or is
     not a lab address at all: a spoofed source (hping3 --rand-source), or the server's
     answer to one. Either endpoint, not only the source, so that the server's ICMP
     errors to the attacker (port unreachable during a UDP scan, a separate flow) are
     attack too.
  4. benign: an endpoint is the client (10.66.1.2, fd66:1::2).
  5. dropped: anything else (the server with another lab address; never seen so far).
Dropped flows are neither side's traffic: labelling them benign would teach a model that
whatever rides along with an attack (e.g. neighbour discovery during a flood) is normal.
"""
import csv
import ipaddress
import sys

ATTACKER_NETS = [ipaddress.ip_network("10.66.2.0/24"), ipaddress.ip_network("fd66:2::/64")]
CLIENT = {ipaddress.ip_address(a) for a in ("10.66.1.2", "fd66:1::2")}
SERVER = {ipaddress.ip_address(a) for a in ("10.66.9.2", "fd66:9::2")}
GATEWAY = {ipaddress.ip_address(a) for a in
           ("10.66.1.1", "10.66.2.1", "10.66.9.1", "fd66:1::1", "fd66:2::1", "fd66:9::1")}
LAB_NETS = [ipaddress.ip_network(n) for n in
            ("10.66.1.0/24", "10.66.2.0/24", "10.66.9.0/24", "fd66:1::/64", "fd66:2::/64", "fd66:9::/64")]
LAB_HOSTS = CLIENT | SERVER | GATEWAY


def is_lab_address(address):
    # Lab addresses are the nodes' own; anything else, even inside a lab subnet, is spoofed.
    return address in LAB_HOSTS or any(address in net for net in ATTACKER_NETS)


def is_housekeeping(src, dst):
    if src.version == 6:
        return any(a.is_link_local or a.is_multicast or a.is_unspecified for a in (src, dst))
    broadcast = dst == ipaddress.ip_address("255.255.255.255") or any(
        dst == net.broadcast_address for net in LAB_NETS if net.version == 4)
    return (dst.is_multicast or broadcast) and is_lab_address(src)


def classify(src, dst):
    """'attack', 'benign', or None (dropped)."""
    if is_housekeeping(src, dst):
        return None
    if src in GATEWAY or dst in GATEWAY:
        return None
    for address in (src, dst):
        if any(address in net for net in ATTACKER_NETS) or not is_lab_address(address):
            return "attack"
    if src in CLIENT or dst in CLIENT:
        return "benign"
    return None


def main():
    if len(sys.argv) != 6 or sys.argv[5] not in ("attack", "benign"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    flows_path, out_path, scenario, category, expected = sys.argv[1:]
    counts = {"flows": 0, "attack": 0, "benign": 0, "dropped": 0, "unexpected": 0}
    with open(flows_path, newline="") as source, open(out_path, "w", newline="") as out:
        reader = csv.reader(source)
        writer = csv.writer(out, lineterminator="\n")
        try:
            header = next(reader)
        except StopIteration:
            print(f"label-flows: {flows_path} is empty (no CSV header)", file=sys.stderr)
            return 1
        for column in ("Src IP", "Dst IP"):
            if column not in header:
                print(f"label-flows: {flows_path} has no '{column}' column", file=sys.stderr)
                return 1
        src_col, dst_col = header.index("Src IP"), header.index("Dst IP")
        writer.writerow(header + ["label", "category", "scenario"])
        for line, row in enumerate(reader, start=2):
            try:
                src = ipaddress.ip_address(row[src_col])
                dst = ipaddress.ip_address(row[dst_col])
            except (IndexError, ValueError) as exc:
                print(f"label-flows: {flows_path} line {line}: {exc}", file=sys.stderr)
                return 1
            label = classify(src, dst)
            if label is None:
                counts["dropped"] += 1
                continue
            counts["flows"] += 1
            counts[label] += 1
            if label != expected:
                counts["unexpected"] += 1
            writer.writerow(row + [label, category if label == "attack" else "benign", scenario])
    print(" ".join(f"{key}={value}" for key, value in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
