#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with Prometheus's own Python parser
(prometheus_client, PyPI) and checks the naming conventions of
https://prometheus.io/docs/practices/naming/: a prefix for the application, counters
ending in _total, base units (seconds, bytes) rather than milli- or kilo-, histograms with
cumulative buckets ending at +Inf. Prints one JSON object: every sample as
[name, labels, value], each family's type, and the problems found.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
result = {"families": {}, "samples": [], "problems": []}
for family in text_string_to_metric_families(text):
    result["families"][family.name] = family.type
    if not family.name.startswith("mldefender_"):
        result["problems"].append(f"{family.name}: no mldefender_ prefix")
    for unit in ("_milliseconds", "_microseconds", "_kilobytes", "_megabytes", "_ms", "_us"):
        if unit in family.name:
            result["problems"].append(f"{family.name}: not a base unit ({unit})")
    buckets = []
    for sample in family.samples:
        result["samples"].append([sample.name, sample.labels, sample.value])
        if family.type == "counter" and not (sample.name.endswith("_total") or sample.name.endswith("_created")):
            result["problems"].append(f"{sample.name}: a counter's sample must end in _total")
        if family.type == "histogram" and sample.name.endswith("_bucket"):
            buckets.append((float(sample.labels["le"]), sample.value))
    if family.type == "histogram":
        if not buckets or buckets[-1][0] != float("inf"):
            result["problems"].append(f"{family.name}: no +Inf bucket")
        if any(later[1] < earlier[1] for earlier, later in zip(buckets, buckets[1:])):
            result["problems"].append(f"{family.name}: buckets are not cumulative")
print(json.dumps(result))
