#!/usr/bin/env bash
# Runs lab scenarios through the running appliance and reports, per scenario: whether the
# attacker was blocked, the time from the attack's start to the first packet the XDP
# program dropped, and any benign source blocked. Each scenario gets a fresh lab and a
# fresh supervisor (empty deny map, fresh detection state): scenarios are independent
# (a blocked scanner can leave a server's half-open sessions behind).
#
# usage (as root, after scripts/setup and a release build):
#   tests/lab/eval.sh [--markdown FILE] [--extra-toml FILE] [--stop-after-block SECS] [SCENARIO...]
#                                                                      (default: all)
#
# --stop-after-block SECS stops an attack scenario SECS seconds after its first dropped
# packet, once the attacker is in the deny map (its JSON then says "stopped_early"): a
# blocked scanner retries into silence until its own time-out, which proves nothing more
# (CI uses it; the published tables do not).
#
# Prints one JSON object per scenario on stdout (tests parse it) and a table on stderr;
# --markdown also writes the table to FILE. Besides the table's columns the JSON has, per
# blocked lab address, the first block decision's engine and scores (block_decisions), the
# model's scores of each lab address's logged flows (model_flows) and the SHA-256 of the
# models that scored them (model_sha256); tests/lab/lofo.sh reads them. --extra-toml merges settings into the lab's
# configuration (e.g. [response] mode = "dry-run"). Environment: MLD_EVAL_LAB (lab ID,
# default "ev$$" cut to 8), MLD_BIN (default target/release/mldefender), MLD_EVAL_KEEP (a
# directory: each scenario's signed log and supervisor log are copied to DIR/SCENARIO/).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
markdown="" extra="" stop_after=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --markdown) markdown=$(realpath -m "${2:?--markdown FILE}"); shift 2 ;;
        --extra-toml) extra=$(realpath "${2:?--extra-toml FILE}"); shift 2 ;;
        --stop-after-block)
            stop_after=${2:?--stop-after-block SECS}
            [[ "$stop_after" =~ ^[0-9]{1,4}$ ]] || { echo "eval: --stop-after-block needs whole seconds, not '$stop_after'" >&2; exit 2; }
            stop_after=$((10#$stop_after))
            shift 2 ;;
        --) shift; break ;;
        -*) echo "eval: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
bin=${MLD_BIN:-$repo/target/release/mldefender}
[[ -x "$bin" ]] || { echo "eval: $bin is missing: cargo build --release first" >&2; exit 1; }
lab=${MLD_EVAL_LAB:-ev$$}
lab=${lab:0:8}
mapfile -t all < <(tests/lab/scenario.sh list | awk 'NR > 1 {print $1}')
scenarios=("$@")
((${#scenarios[@]})) || scenarios=("${all[@]}")
work=$(mktemp -d)
attacker=10.66.2.2

say() { echo "eval: $*" >&2; }
supervisor_pid=""
stop_supervisor() {
    [[ -n "$supervisor_pid" ]] || return 0
    kill -TERM "$supervisor_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$supervisor_pid" 2>/dev/null; do
        ((SECONDS < deadline)) || { say "supervisor did not stop; killing it"; kill -KILL "$supervisor_pid" 2>/dev/null || true; break; }
        sleep 0.05
    done
    wait "$supervisor_pid" 2>/dev/null || true
    supervisor_pid=""
}
cleanup() {
    set +e
    stop_supervisor
    tests/lab/lab.sh down "$lab" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
# A process and its descendants, parents first.
tree_pids() { # tree_pids PID
    local child
    echo "$1"
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        tree_pids "$child"
    done
}
# Ends a process and all its descendants (a scenario's tools run under nsenter and
# timeout, in process groups of their own): the tree is frozen from the top, so that no
# parent starts another child meanwhile, then sent TERM and thawed.
end_tree() { # end_tree PID
    local pids
    pids=$(tree_pids "$1")
    kill -STOP $pids 2>/dev/null || true
    pids=$(tree_pids "$1")
    kill -STOP $pids 2>/dev/null || true
    kill -TERM $pids 2>/dev/null || true
    kill -CONT $pids 2>/dev/null || true
}

state=/run/mldefender-lab-$lab
for scenario in "${scenarios[@]}"; do
    read -r _ label category _ < <(tests/lab/scenario.sh list | awk -v n="$scenario" '$1 == n') \
        || { say "unknown scenario $scenario"; exit 2; }
    tests/lab/lab.sh down "$lab" >/dev/null 2>&1 || true
    tests/lab/lab.sh up "$lab" >/dev/null
    tests/lab/lab.sh config "$lab" > "$work/lab-base.toml"
    if [[ -n "$extra" ]]; then
        python3 tests/lab/merge-toml.py "$work/lab-base.toml" "$extra" > "$work/lab.toml"
    else
        cp "$work/lab-base.toml" "$work/lab.toml"
    fi
    if [[ "$label" == spoofed ]]; then
        # Forged sources must reach detection: the source check off on the attacker's link
        # (as on a shared segment, or for forged outside addresses on a WAN); with it on,
        # the XDP program drops them first (docs/security.md).
        sed "/^name = \"mld${lab}ga\"$/a source-check = \"off\"" "$work/lab.toml" > "$work/lab-spoofed.toml"
        grep -q '^source-check = "off"$' "$work/lab-spoofed.toml" || { say "could not turn the attacker link's source check off"; exit 1; }
        mv "$work/lab-spoofed.toml" "$work/lab.toml"
    fi
    "$bin" config check "$work/lab.toml" >/dev/null
    nsenter --net="/var/run/netns/mld${lab}g" "$bin" supervise --config "$work/lab.toml" \
        > "$work/supervise.out" 2> "$work/supervise-$scenario.log" &
    supervisor_pid=$!
    deadline=$((SECONDS + 30))
    until "$bin" status --config "$work/lab.toml" --json 2>/dev/null | grep -q '"ready":true'; do
        if ! kill -0 "$supervisor_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            say "the supervisor did not become ready for $scenario:"; tail -20 "$work/supervise-$scenario.log" >&2; exit 1
        fi
        sleep 0.05
    done
    started=$(now_ms)
    MLD_SCENARIO_ALLOW_BLOCKED=1 tests/lab/scenario.sh "$lab" "$scenario" > "$work/scenario.out" 2>&1 &
    scenario_pid=$!
    first_drop="" stopped_early=false next_check=0
    while kill -0 "$scenario_pid" 2>/dev/null; do
        if [[ -z "$first_drop" ]]; then
            dropped=$("$bin" counters --config "$work/lab.toml" --json 2>/dev/null | grep -o '"dropped":[0-9]*' | head -1 | cut -d: -f2 || true)
            ((${dropped:-0} > 0)) && first_drop=$(now_ms)
        elif [[ -n "$stop_after" && "$label" == attack ]] && (($(now_ms) >= first_drop + stop_after * 1000 && $(now_ms) >= next_check)); then
            next_check=$(($(now_ms) + 500))
            listed=$("$bin" block list --config "$work/lab.toml" 2>/dev/null || true)
            if awk -v entry="$attacker/32" 'NR > 1 && $1 == entry {found = 1} END {exit !found}' <<<"$listed"; then
                say "$scenario: the attacker is blocked; stopping the scenario ${stop_after} s after the first drop"
                stopped_early=true
                end_tree "$scenario_pid"
                break
            fi
        fi
        sleep 0.02
    done
    scenario_ok=true
    if [[ "$stopped_early" == true ]]; then
        wait "$scenario_pid" 2>/dev/null || true
    else
        wait "$scenario_pid" || { scenario_ok=false; say "$scenario did not run as intended:"; tail -5 "$work/scenario.out" >&2; }
    fi
    # Late decisions: flows that end after the traffic (close linger, idle timeout).
    sleep 2
    blocks=$("$bin" block list --config "$work/lab.toml" 2>/dev/null | awk 'NR > 1 {print $1}' | sort -u | tr '\n' ' ')
    stop_supervisor
    "$bin" log verify "$state/log" --key "$state/keys/log.key" > "$work/verify.out" || { say "the log does not verify after $scenario"; cat "$work/verify.out" >&2; exit 1; }
    if [[ -n "${MLD_EVAL_KEEP:-}" ]]; then
        mkdir -p "$MLD_EVAL_KEEP/$scenario"
        cp -r "$state/log" "$work/supervise-$scenario.log" "$work/scenario.out" "$MLD_EVAL_KEEP/$scenario/"
    fi
    python3 - "$state/log" "$scenario" "$label" "$category" "$started" "${first_drop:-}" "$scenario_ok" "$blocks" "$attacker" "$work/supervise-$scenario.log" "$stopped_early" <<'PY' >> "$work/results.jsonl"
import glob, json, sys
log, scenario, label, category, started, first_drop, ok, blocks, attacker, supervisor_log, stopped_early = sys.argv[1:]
decisions = {}
# Per blocked lab address (not spoofed ones), its first block decision: which engine decided
# and with what scores.
# And every model that scored a flow (tests/lab/lofo.sh checks its models were the ones used).
engines, models, scores = {}, set(), {}
# Where the time goes: the attacker's first packet (the earliest start of its logged flows:
# flow events are capped per second, so an upper bound), in packet time, and the detect
# task's first block (or would-block) of the attacker, from its log line's wall-clock
# time, against the wall clock the tool was started at. (An event's own time is its flow's
# last packet, which can be well before the decision.)
import datetime, re
first_packet_us, decided_us = None, None
decision = re.compile(r"^(\S+)Z +INFO +(?:block source=|decision source=)" + re.escape(attacker) + r"(?: action=\"would-block\")?[ ,]")
for line in open(supervisor_log, errors="replace"):
    match = decision.match(line)
    if match and ("INFO block source=" in line or 'action="would-block"' in line):
        when = datetime.datetime.fromisoformat(match.group(1)).replace(tzinfo=datetime.timezone.utc)
        decided_us = int(when.timestamp() * 1_000_000)
        break
for path in sorted(glob.glob(log + "/events-*.jsonl")):
    for line in open(path):
        record = json.loads(line)
        if record.get("type") != "event":
            continue
        if record.get("model_sha256"):
            models.add(record["model_sha256"])
        if record["src_ip"] == attacker and record.get("flow_first_seen_us"):
            first_packet_us = min(first_packet_us or record["flow_first_seen_us"], record["flow_first_seen_us"])
        if record["action"] == "observe":
            # The model's score of each logged flow of a lab address (flow events are capped
            # per second: a sample in floods); "flagged": at or above the default
            # detect.model-threshold, 0.5.
            if record.get("score_model") is not None and record["src_ip"].startswith(("10.66.", "fd66:")):
                seen = scores.setdefault(record["src_ip"], {"scored": 0, "flagged": 0, "max": 0.0})
                seen["scored"] += 1
                seen["flagged"] += record["score_model"] >= 0.5
                seen["max"] = max(seen["max"], record["score_model"])
            continue
        decisions.setdefault(record["action"], []).append(record["src_ip"])
        if record["action"] in ("block", "would-block") and record["src_ip"].startswith(("10.66.", "fd66:")) \
                and record["src_ip"] not in engines:
            why = record.get("provenance", "").rpartition("; policy ")[2]
            engines[record["src_ip"]] = {
                "engine": record.get("authoritative_source"), "category": record.get("category"),
                "score_fast": record.get("score_fast"), "score_model": record.get("score_model"),
                "why": why,
            }
blocked = sorted(set(decisions.get("block", []) + decisions.get("would-block", [])))
lab_benign = ("10.66.1.", "10.66.9.", "fd66:1:", "fd66:9:")
print(json.dumps({
    "scenario": scenario, "label": label, "category": category,
    "scenario_ran": ok == "true",
    "stopped_early": stopped_early == "true",
    "attacker_blocked": attacker in blocked,
    "first_drop_ms": (int(first_drop) - int(started)) if first_drop else None,
    "first_packet_ms": (first_packet_us // 1000 - int(started)) if first_packet_us else None,
    "decision_ms": (decided_us // 1000 - int(started)) if decided_us else None,
    "blocked_sources": blocked,
    "benign_blocked": [s for s in blocked if s.startswith(lab_benign)],
    "deny_entries": blocks.split(),
    "alerts": sorted(set(decisions.get("alert", []))),
    "refused": sorted(set(decisions.get("refused", []))),
    "breaker_open": len(decisions.get("breaker-open", [])),
    "block_decisions": engines,
    "model_sha256": sorted(models),
    "model_flows": scores,
}))
PY
    tail -1 "$work/results.jsonl"
    say "$(tail -1 "$work/results.jsonl")"
done

python3 - "$work/results.jsonl" "$(uname -r)" "$(nproc)" > "$work/table.md" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"| scenario | label | category | attacker blocked | attack start → first drop | of which: start → first packet, → decision | benign sources blocked | alerts |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    blocked = "yes" if r["attacker_blocked"] else ("n/a (forged sources)" if r["scenario"].endswith("-rand") or r["label"] == "spoofed" else ("—" if r["label"] == "benign" else "**no**"))
    drop = f'{r["first_drop_ms"]} ms' if r["first_drop_ms"] is not None else "—"
    benign = ", ".join(r["benign_blocked"]) or "none"
    alerts = r["alerts"]
    alerts = ", ".join(alerts) if len(alerts) <= 4 else f"{len(alerts)} sources (e.g. {', '.join(alerts[:2])})"
    split = "—"
    if r.get("first_packet_ms") is not None and r.get("decision_ms") is not None:
        split = f'{r["first_packet_ms"]} ms, {r["decision_ms"] - r["first_packet_ms"]} ms'
    print(f'| {r["scenario"]} | {r["label"]} | {r["category"]} | {blocked} | {drop} | {split} | {benign} | {alerts or "—"} |')
PY
cat "$work/table.md" >&2
[[ -n "$markdown" ]] && cp "$work/table.md" "$markdown"
exit 0
