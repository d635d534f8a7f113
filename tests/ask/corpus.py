#!/usr/bin/env python3
"""Collects the decisions of kept lab runs into the text index's evaluation corpus.

usage: corpus.py KEEP_DIR... > tests/ask/decisions.jsonl

Each KEEP_DIR holds one directory per scenario (tests/lab/eval.sh with MLD_EVAL_KEEP), each with
the signed log of that scenario's run. Every decision record (an event whose action is not
`observe`) is written once, in scenario order, with `scenario` (the scenario that produced
it: the label the questions are judged by) and a new `seq` (unique across runs). The
records are otherwise as the detect task logged them. The supervisor's `config` record
(one per start: no scenario's traffic made it) is left out.
"""
import json
import pathlib
import sys

seq = 0
scenarios = [path for keep in sys.argv[1:] for path in sorted(pathlib.Path(keep).iterdir()) if path.is_dir()]
for scenario in scenarios:
    for log in sorted((scenario / "log").glob("events-*.jsonl")):
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("type") != "event" or record.get("action") in ("observe", "config"):
                continue
            seq += 1
            record["seq"] = seq
            record["scenario"] = scenario.name
            print(json.dumps(record, separators=(",", ":")))
