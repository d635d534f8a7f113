#!/usr/bin/env bash
# Leave-one-family-out evaluation of the whole detector in the lab (issue 14).
#
# The attack scenarios of the training data (data/lab) fall into families: their category
# (scan, flood, bruteforce, slow). For each family F this script
#   1. trains the models with every training scenario of F held out
#      (models/train.sh --no-loso --heldout <F's scenarios> --out WORK/models-F): the
#      models have never seen that kind of attack, and see all other attacks and all
#      benign traffic;
#   2. signs them with an ephemeral key made for this run (mldefender model keygen/sign)
#      and checks them as the detect task would (mldefender model check);
#   3. runs tests/lab/eval.sh on the scenarios (default: all of tests/lab/scenario.sh list)
#      with [detect] models-dir and model-public-key pointing at those models: a fresh lab
#      and appliance per scenario, the fast-path rules unchanged.
# Then it combines the runs into one row per scenario, measured in the run where the
# scenario's own family was held out; benign scenarios (in training in every run) and
# attacks whose family was not held out report the worst case over the runs; scenarios
# that are not in the training data at all are marked "never in training" (worst case).
# And a summary per held-out family. See docs/detection.md ("Leave one family out").
#
# usage (as root, after scripts/setup and a build):
#   tests/lab/lofo.sh [OPTIONS] [SCENARIO...]          (default: every scenario)
#
# options:
#   --families a,b     hold out only these families, one run each (default: every attack
#                      category in the training data)
#   --markdown FILE    also write the tables (markdown) to FILE
#   --policy NAME      run the appliance with [detect] policy = NAME (agree, tiered,
#                      either, fast, model); "model" shows what the models decide alone
#   --extra-toml FILE  more settings for the lab's configuration (merged under the
#                      script's own [detect] settings)
#   --data DIR         training data (default data/lab of this checkout)
#   --work DIR         keep models, keys, logs and per-run results in DIR (created; must
#                      be empty; readable by the detect task's user: not under /root);
#                      default: a temporary directory, removed at the end
#   --combine DIR      only make the tables and JSON lines again from the --work DIR of
#                      a finished run (no lab, no root)
#   -h, --help         this text
#
# Output: one JSON object per scenario ("type": "scenario") and per held-out family
# ("type": "family") on stdout; the tables on stderr (and in --markdown FILE); progress
# on stderr. Environment: MLD_BIN (default target/release/mldefender), passed to eval.sh;
# MLD_EVAL_LAB (the lab ID eval.sh uses).
#
# Time: training ~10 s per family; each scenario ~15-25 s in the lab. Every scenario runs
# once per family: a full run (18 scenarios x 4 families) takes about 20-30 minutes.
# Exit status: 0 done; 1 a step failed (the message says which, with its log); 2 bad usage.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { echo "lofo: $*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '/^# usage/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
bad_usage() { say "$*"; echo "(tests/lab/lofo.sh --help for usage)" >&2; exit 2; }

# The tables and JSON lines from a work directory's results (run.args, eval-F.jsonl, ...).
combine() {
    local args
    mapfile -t args < "$work/run.args"
    ((${#args[@]} == 11)) || die "$work/run.args is incomplete: the run did not finish"
    python3 - "$work" "${args[@]}" "$work/table.md" <<'PY' || die "combining the results failed"
import json, statistics, sys
from collections import Counter

(work, date, families, scenarios, policy, binary, data, kernel, cores,
 runs, lab_seconds, total_seconds, table) = sys.argv[1:]
families = families.split(",")
scenarios = scenarios.split(",")
listed = {}
for line in open(f"{work}/lab-scenarios.txt"):
    name, label, category = line.split()
    listed[name] = (label, category)
training = dict(line.split() for line in open(f"{work}/training.txt"))
results = {f: {} for f in families}
for f in families:
    for line in open(f"{work}/eval-{f}.jsonl"):
        row = json.loads(line)
        results[f][row["scenario"]] = row
ATTACKER = "10.66.2.2"
ATTACKER_HOSTS = ("10.66.2.2", "fd66:2::2")
CLIENT_HOSTS = ("10.66.1.2", "fd66:1::2")


def model_view(row, hosts):
    """The model's scores of the logged flows of these hosts: flagged (>= 0.5), scored, max."""
    if "model_flows" not in row:
        return {"scored": None, "flagged": None, "max": None}  # an eval.sh without it
    flows = [row["model_flows"].get(h) for h in hosts]
    flows = [f for f in flows if f]
    if not flows:
        return {"scored": 0, "flagged": 0, "max": None}
    return {"scored": sum(f["scored"] for f in flows), "flagged": sum(f["flagged"] for f in flows),
            "max": max(f["max"] for f in flows)}


def model_text(view):
    if view["scored"] is None:
        return "not reported"
    if not view["scored"]:
        return "no flow scored"
    return f"{view['flagged']}/{view['scored']} flows ≥ 0.5 (max {view['max']:.2f})"


def spoofed(name):
    return name.endswith("-rand")


def engine(row):
    decision = row.get("block_decisions", {}).get(ATTACKER)
    return decision["engine"] if decision and row["attacker_blocked"] else None


def run_summary(row):
    decision = row.get("block_decisions", {}).get(ATTACKER)
    return {
        "scenario_ran": row["scenario_ran"],
        "attacker_blocked": row["attacker_blocked"],
        "first_drop_ms": row["first_drop_ms"],
        "engine": engine(row),
        "decision": decision,
        "benign_blocked": row["benign_blocked"],
        "benign_decisions": {s: row.get("block_decisions", {}).get(s) for s in row["benign_blocked"]},
        "alerts": row["alerts"],
        "model_on_attacker": model_view(row, ATTACKER_HOSTS),
        "model_on_client": model_view(row, CLIENT_HOSTS),
    }


rows = []
for name in scenarios:
    label, category = listed[name]
    in_training = name in training
    family = training.get(name, category)
    per_run = {f: results[f][name] for f in families}
    if label == "attack" and in_training and family in families:
        held, measured = f"yes: {family} held out", [family]
    elif not in_training:
        held, measured = "never in training", families
    else:
        held, measured = "no: in training in every run", families
    used = [per_run[f] for f in measured]
    drops = [r["first_drop_ms"] for r in used]
    benign = {}
    for f in measured:
        for host in per_run[f]["benign_blocked"]:
            benign.setdefault(host, []).append(f)
    # The model's view of the traffic of the scenario's own side: the attacker's flows in
    # an attack, the client's in benign traffic; worst case: the run where it flagged the
    # attacker least, or the client most.
    side = ATTACKER_HOSTS if label == "attack" else CLIENT_HOSTS
    views = [model_view(r, side) for r in used]
    share = lambda v: v["flagged"] / v["scored"] if v["scored"] else 0.0  # noqa: E731
    view = (min if label == "attack" else max)(views, key=share)
    rows.append({
        "type": "scenario",
        "scenario": name,
        "label": label,
        "family": family,
        "in_training_data": in_training,
        "held_out": held,
        "measured_with": measured,
        "worst_case": len(measured) > 1,
        "scenario_ran": all(r["scenario_ran"] for r in used),
        # Worst case over the runs measured: blocked in every one, the slowest first drop.
        "attacker_blocked": all(r["attacker_blocked"] for r in used),
        "blocked_in_runs": [f for f in measured if per_run[f]["attacker_blocked"]],
        "first_drop_ms": None if any(d is None for d in drops) else max(drops),
        "engines": sorted({e for e in (engine(r) for r in used) if e}),
        "model_scores_at_block": [r["block_decisions"][ATTACKER]["score_model"] for r in used
                                  if r["attacker_blocked"] and ATTACKER in r.get("block_decisions", {})],
        "model_flows": view,
        "benign_blocked": benign,
        "runs": {f: run_summary(per_run[f]) for f in families},
    })


def ms(value):
    return "—" if value is None else f"{value} ms"


out = []
out.append(f"Leave-one-family-out, {date}: "
           f"families held out {', '.join(families)}; policy {policy}; training data {data}; "
           f"`{binary}`; kernel {kernel}, {cores} cores; {runs} lab runs in {lab_seconds} s "
           f"({int(lab_seconds) / max(int(runs), 1):.1f} s per scenario run), {total_seconds} s in all.")
out.append("")
out.append("| scenario | label | family | held out of training | attacker blocked | decided by (model score then) "
           "| attack start → first drop | benign sources blocked | model on the scenario's own flows |")
out.append("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    worst = f" (worst of {len(r['measured_with'])} runs)" if r["worst_case"] else ""
    if r["label"] == "benign":
        blocked = "—"
    elif spoofed(r["scenario"]):
        blocked = "n/a (spoofed sources)"
    elif r["attacker_blocked"]:
        blocked = "yes"
    elif r["blocked_in_runs"]:
        blocked = f"**no** (only in {', '.join(r['blocked_in_runs'])})"
    elif any(ATTACKER in r["runs"][f]["alerts"] for f in r["measured_with"]):
        blocked = "**no** (alerts only)"
    else:
        blocked = "**no**"
    if not r["scenario_ran"]:
        blocked += " (scenario did not run as intended)"
    benign = "; ".join(f"**{h}** ({', '.join(fs)})" for h, fs in r["benign_blocked"].items()) or "none"
    drop = ms(r["first_drop_ms"]) if r["label"] == "attack" else "—"
    if r["label"] == "attack" and not r["attacker_blocked"] and r["first_drop_ms"] is not None:
        drop += " (no block: other drops, e.g. spoofed packets at the source check)"
    at_block = ", ".join("none yet" if m is None else f"{m:.2f}" for m in r["model_scores_at_block"])
    decided = f"{', '.join(r['engines'])} ({at_block})" if r["engines"] else "—"
    out.append(f"| {r['scenario']} | {r['label']} | {r['family']} | {r['held_out']}{worst} | {blocked} | "
               f"{decided} | {drop} | {benign} | {model_text(r['model_flows'])} |")

summaries = []
for f in families:
    held = [r for r in rows if r["label"] == "attack" and r["in_training_data"] and r["family"] == f]
    counted = [r for r in held if not spoofed(r["scenario"])]
    blocked = [r for r in counted if r["runs"][f]["attacker_blocked"]]
    drops = [r["runs"][f]["first_drop_ms"] for r in blocked if r["runs"][f]["first_drop_ms"] is not None]
    engines = Counter(r["runs"][f]["engine"] for r in blocked)
    benign = sorted({(s, h) for s in scenarios for h in results[f][s]["benign_blocked"]})
    others = [r for r in rows if r["label"] == "attack" and r["in_training_data"] and r["family"] != f
              and not spoofed(r["scenario"])]
    flagged = [r for r in counted if r["runs"][f]["model_on_attacker"]["flagged"]]
    summaries.append({
        "type": "family",
        "family": f,
        "heldout_scenarios": sorted(n for n, k in training.items() if k == f),
        "heldout_run": [r["scenario"] for r in held],
        "attacks": len(counted),
        "blocked": len(blocked),
        "missed": [r["scenario"] for r in counted if r not in blocked],
        "spoofed_not_counted": [r["scenario"] for r in held if spoofed(r["scenario"])],
        "median_first_drop_ms": statistics.median(drops) if drops else None,
        "max_first_drop_ms": max(drops) if drops else None,
        "engines": dict(engines),
        "model_flagged_attacker": len(flagged),
        "benign_hosts_blocked": [{"scenario": s, "host": h} for s, h in benign],
        "other_attacks": len(others),
        "other_attacks_blocked": sum(r["runs"][f]["attacker_blocked"] for r in others),
    })
out.append("")
out.append("| family held out | held-out attacks blocked | median → first drop | max → first drop | decided by | "
           "model flagged the attacker | benign hosts blocked (any scenario, this run) | attacks of other families blocked |")
out.append("|---|---|---|---|---|---|---|---|")
for s in summaries:
    missed = f" (missed: {', '.join(s['missed'])})" if s["missed"] else ""
    spoof = f"; {', '.join(s['spoofed_not_counted'])} not counted (spoofed)" if s["spoofed_not_counted"] else ""
    engines = ", ".join(f"{e} {n}" for e, n in sorted(s["engines"].items(), key=lambda x: str(x[0]))) or "—"
    benign = ", ".join(f"{b['host']} in {b['scenario']}" for b in s["benign_hosts_blocked"])
    benign = f"**{len(s['benign_hosts_blocked'])}**: {benign}" if benign else "0"
    median = "—" if s["median_first_drop_ms"] is None else f"{s['median_first_drop_ms']:.0f} ms"
    out.append(f"| {s['family']} | {s['blocked']}/{s['attacks']}{missed}{spoof} | {median} | "
               f"{ms(s['max_first_drop_ms'])} | {engines} | {s['model_flagged_attacker']}/{s['attacks']} | {benign} | "
               f"{s['other_attacks_blocked']}/{s['other_attacks']} |")
never = [r for r in rows if not r["in_training_data"] and r["label"] == "attack" and not spoofed(r["scenario"])]
if never:
    out.append("")
    out.append(f"Never in training (new scenarios, worst of {len(families)} runs): "
               f"{sum(r['attacker_blocked'] for r in never)}/{len(never)} attacks blocked "
               f"({', '.join(r['scenario'] for r in never)}).")

for item in rows + summaries:
    print(json.dumps(item))
with open(table, "w") as handle:
    handle.write("\n".join(out) + "\n")
PY
    cat "$work/table.md" >&2
    if [[ -n "$markdown" ]]; then
        cp "$work/table.md" "$markdown"
        say "wrote $markdown"
    fi
}

# Paths given are relative to where the script is started; then it works from the repository.
markdown="" families_arg="" policy="" user_extra="" data="$repo/data/lab" keep="" combine_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --markdown) [[ $# -ge 2 ]] || bad_usage "--markdown needs a FILE"; markdown=$(realpath -m "$2"); shift 2 ;;
        --families) [[ $# -ge 2 ]] || bad_usage "--families needs a list, e.g. scan,flood"; families_arg=$2; shift 2 ;;
        --policy) [[ $# -ge 2 ]] || bad_usage "--policy needs a NAME"; policy=$2; shift 2 ;;
        --extra-toml) [[ $# -ge 2 ]] || bad_usage "--extra-toml needs a FILE"; user_extra=$(realpath "$2") || bad_usage "no such file: $2"; shift 2 ;;
        --data) [[ $# -ge 2 ]] || bad_usage "--data needs a DIR"; data=$(realpath -m "$2"); shift 2 ;;
        --work) [[ $# -ge 2 ]] || bad_usage "--work needs a DIR"; keep=$(realpath -m "$2"); shift 2 ;;
        --combine) [[ $# -ge 2 ]] || bad_usage "--combine needs a DIR"; combine_dir=$(realpath -m "$2"); shift 2 ;;
        --) shift; break ;;
        -*) bad_usage "unknown option $1" ;;
        *) break ;;
    esac
done
requested=("$@")
cd "$repo"

case "$policy" in
    ""|agree|tiered|either|fast|model) ;;
    *) bad_usage "--policy must be agree, tiered, either, fast or model, not '$policy'" ;;
esac
[[ -z "$user_extra" || -f "$user_extra" ]] || bad_usage "--extra-toml $user_extra is not a file"
[[ -d "$data" ]] || bad_usage "--data $data is not a directory"
[[ -z "$markdown" || -d "$(dirname "$markdown")" ]] || bad_usage "--markdown: directory $(dirname "$markdown") does not exist"
if [[ -n "$combine_dir" ]]; then
    [[ -f "$combine_dir/run.args" ]] || bad_usage "--combine: $combine_dir is not the --work directory of a finished run"
    work=$combine_dir
    combine
    exit 0
fi
((EUID == 0)) || die "run as root (the lab needs network namespaces and XDP)"
command -v python3 >/dev/null || die "python3 is missing"
bin=${MLD_BIN:-$repo/target/release/mldefender}
[[ -x "$bin" ]] || die "$bin is missing: build first (cargo build --release), or set MLD_BIN"
"$bin" model sign --help >/dev/null 2>&1 || die "$bin has no 'model sign': rebuild it"
export MLD_BIN=$bin

# --- The scenarios: the lab's list, the training data's, and the ones to run -----------

work=""
eval_pid=""
cleanup() {
    local status=$?
    set +e
    if [[ -n "$eval_pid" ]] && kill -0 "$eval_pid" 2>/dev/null; then
        # eval.sh's own exit trap stops its supervisor and takes its lab down.
        kill -TERM "$eval_pid" 2>/dev/null
        wait "$eval_pid" 2>/dev/null
    fi
    if [[ -n "$work" && -z "$keep" ]]; then
        rm -rf "$work"
    elif [[ -n "$work" ]]; then
        say "kept $work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

if [[ -n "$keep" ]]; then
    mkdir -p "$keep"
    [[ -z "$(ls -A "$keep")" ]] || bad_usage "--work $keep is not empty"
    work=$keep
else
    work=$(mktemp -d /tmp/mld-lofo.XXXXXX)
fi
# The detect task runs as an unprivileged user and must read the models here.
chmod 0755 "$work"

tests/lab/scenario.sh list | awk 'NR > 1 {print $1, $2, $3}' > "$work/lab-scenarios.txt"
[[ -s "$work/lab-scenarios.txt" ]] || die "tests/lab/scenario.sh list gave no scenarios"

# Which scenarios the training data holds, and each one's kind, by train.py's rule: the most
# common category of its attack flows (ties: alphabetically first), or benign.
say "reading the training data in $data"
python3 - "$data" > "$work/training.txt" <<'PY' || die "could not read the training data in $data"
import collections, csv, gzip, os, sys

kinds = collections.defaultdict(collections.Counter)
files = 0
for folder, dirs, names in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(names):
        if not (name.endswith(".csv") or name.endswith(".csv.gz")):
            continue
        path = os.path.join(folder, name)
        with (gzip.open if name.endswith(".gz") else open)(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if not {"label", "category", "scenario", "Flow ID"} <= set(header):
                continue  # not a labelled flow CSV (e.g. summary.csv), as train.py
            files += 1
            label, category, scenario = (header.index(c) for c in ("label", "category", "scenario"))
            for row in reader:
                counts = kinds[row[scenario]]  # every scenario, also one without attack flows
                if row[label] == "attack":
                    counts[row[category]] += 1
if not files:
    sys.exit(f"no labelled flow CSVs under {sys.argv[1]}")
for scenario in sorted(kinds):
    attack = kinds[scenario]
    if attack:
        top = max(attack.values())
        print(scenario, sorted(k for k, n in attack.items() if n == top)[0])
    else:
        print(scenario, "benign")
PY
[[ -s "$work/training.txt" ]] || die "no scenarios in the training data in $data"

if ((${#requested[@]})); then
    for name in "${requested[@]}"; do
        grep -q "^$name " "$work/lab-scenarios.txt" || bad_usage "unknown scenario '$name' (see: tests/lab/scenario.sh list)"
    done
    scenarios=("${requested[@]}")
else
    mapfile -t scenarios < <(awk '{print $1}' "$work/lab-scenarios.txt")
fi

# Families: the attack kinds of the training data, in a fixed order.
mapfile -t all_families < <(awk '$2 != "benign" {print $2}' "$work/training.txt" | sort -u \
    | awk 'BEGIN {o["scan"]=1; o["flood"]=2; o["bruteforce"]=3; o["slow"]=4} {print (o[$1] ? o[$1] : 9), $1}' | sort -k1,1n -k2 | awk '{print $2}')
((${#all_families[@]})) || die "the training data has no attack scenarios"
if [[ -n "$families_arg" ]]; then
    mapfile -t families < <(tr ',' '\n' <<<"$families_arg" | awk 'NF && !seen[$0]++')
    for family in "${families[@]}"; do
        printf '%s\n' "${all_families[@]}" | grep -qx "$family" \
            || bad_usage "'$family' is not a family of the training data (families: ${all_families[*]})"
    done
else
    families=("${all_families[@]}")
fi
((${#families[@]})) || bad_usage "--families is empty"

# The training data and the lab list should agree on each scenario's category.
while read -r name kind; do
    listed=$(awk -v n="$name" '$1 == n {print $3}' "$work/lab-scenarios.txt")
    if [[ -z "$listed" ]]; then
        say "note: $name is in the training data but not in scenario.sh list (never run here)"
    elif [[ "$listed" != "$kind" ]]; then
        say "note: $name is '$kind' in the training data but '$listed' in scenario.sh list; held out with $kind"
    fi
done < "$work/training.txt"

# --- One run per family ---------------------------------------------------------------

mkdir -m 0700 "$work/key"
"$bin" model keygen "$work/key/model.key" "$work/key/model.pub" >/dev/null 2>"$work/key/keygen.log" \
    || { cat "$work/key/keygen.log" >&2; die "mldefender model keygen failed"; }
public_key=$(tr -d '[:space:]' < "$work/key/model.pub")
detect_user=$(id -un mld-detect 2>/dev/null || true)

started_all=$SECONDS
started_at=$(date +%s)
lab_seconds=0
for family in "${families[@]}"; do
    mapfile -t heldout < <(awk -v f="$family" '$2 == f {print $1}' "$work/training.txt")
    heldout_csv=$(IFS=,; echo "${heldout[*]}")
    models="$work/models-$family"
    say "[$family] training without ${heldout_csv//,/, }"
    t0=$SECONDS
    models/train.sh --no-loso --data "$data" --heldout "$heldout_csv" --out "$models" \
        > "$work/train-$family.log" 2>&1 \
        || { tail -20 "$work/train-$family.log" >&2; die "[$family] training failed (log above)"; }
    "$bin" model sign --key "$work/key/model.key" "$models/attack.json" "$models/category.json" \
        >> "$work/train-$family.log" 2>&1 \
        || { tail -5 "$work/train-$family.log" >&2; die "[$family] signing failed"; }
    chmod -R a+rX "$models"
    {
        printf '[detect]\nmodels-dir = "%s"\nmodel-public-key = "%s"\n' "$models" "$public_key"
        [[ -z "$policy" ]] || printf 'policy = "%s"\n' "$policy"
    } > "$work/detect-$family.toml"
    "$bin" model check --config "$work/detect-$family.toml" > "$work/check-$family.log" 2>&1 \
        || { cat "$work/check-$family.log" >&2; die "[$family] the signed models do not pass mldefender model check"; }
    if [[ -n "$detect_user" ]] && command -v runuser >/dev/null; then
        runuser -u "$detect_user" -- test -r "$models/attack.onnx" \
            || die "[$family] $detect_user cannot read $models (is --work under a private directory?)"
    fi
    if [[ -n "$user_extra" ]]; then
        python3 tests/lab/merge-toml.py "$user_extra" "$work/detect-$family.toml" > "$work/extra-$family.toml"
    else
        cp "$work/detect-$family.toml" "$work/extra-$family.toml"
    fi
    attack_sha=$(sha256sum "$models/attack.onnx" | cut -d' ' -f1)
    say "[$family] models trained and signed in $((SECONDS - t0)) s ($(cat "$work/check-$family.log"))"

    say "[$family] running ${#scenarios[@]} scenario(s) through the appliance: ${scenarios[*]}"
    t0=$SECONDS
    tests/lab/eval.sh --extra-toml "$work/extra-$family.toml" "${scenarios[@]}" \
        > "$work/eval-$family.jsonl" 2> "$work/eval-$family.log" &
    eval_pid=$!
    status=0
    wait "$eval_pid" || status=$?
    eval_pid=""
    if ((status != 0)); then
        tail -20 "$work/eval-$family.log" >&2
        die "[$family] tests/lab/eval.sh failed with status $status (its log above)"
    fi
    lab_seconds=$((lab_seconds + SECONDS - t0))
    lines=$(wc -l < "$work/eval-$family.jsonl")
    ((lines == ${#scenarios[@]})) || die "[$family] eval.sh reported $lines of ${#scenarios[@]} scenarios"
    # The runs must have used these models, not the shipped ones.
    python3 - "$work/eval-$family.jsonl" "$attack_sha" <<'PY' || die "[$family] the appliance did not score with the held-out models"
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    used = row.get("model_sha256")
    if used is None:
        sys.exit(f"{row['scenario']}: eval.sh does not report model_sha256 (older eval.sh?)")
    if any(sha != sys.argv[2] for sha in used):
        sys.exit(f"{row['scenario']}: scored by {used}, expected {sys.argv[2]}")
PY
    say "[$family] done in $((SECONDS - t0)) s ($(( (SECONDS - t0) / ${#scenarios[@]} )) s per scenario)"
done

# --- Combine ---------------------------------------------------------------------------

runs=$(( ${#scenarios[@]} * ${#families[@]} ))
printf '%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC' -d "@$started_at")" "$(IFS=,; echo "${families[*]}")" \
    "$(IFS=,; echo "${scenarios[*]}")" "${policy:-as configured (default tiered)}" "$bin" "$data" \
    "$(uname -r)" "$(nproc)" "$runs" "$lab_seconds" "$((SECONDS - started_all))" > "$work/run.args"
combine
