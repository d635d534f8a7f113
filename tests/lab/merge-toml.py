#!/usr/bin/env python3
"""Merges simple TOML (tables of `key = value` lines) for the lab's configurations: the
tables of EXTRA that BASE has get their keys replaced or added; other tables (and arrays
of tables) are appended. Prints the result.

usage: merge-toml.py BASE EXTRA
"""
import sys


def sections(text):
    result = [["", []]]
    for line in text.splitlines():
        if line.lstrip().startswith("["):
            result.append([line.strip(), []])
        else:
            result[-1][1].append(line)
    return result


def key(line):
    name, equals, _ = line.partition("=")
    name = name.strip()
    return name if equals and name and not name.startswith("#") else None


base = sections(open(sys.argv[1]).read())
for header, lines in sections(open(sys.argv[2]).read()):
    target = next((s for s in base if s[0] == header and not header.startswith("[[")), None)
    if target is None:
        base.append([header, lines])
        continue
    for line in lines:
        name = key(line)
        if name:
            target[1] = [old for old in target[1] if key(old) != name]
        target[1].append(line)
for header, lines in base:
    if header:
        print(header)
    for line in lines:
        print(line)
