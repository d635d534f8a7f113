#!/usr/bin/env python3
"""Trains the detect task's two ONNX models from labelled lab flows.

    attack    binary, classes ["benign", "attack"], one score per flow
    category  multiclass, among attack flows: ["flood", "scan", "bruteforce", "slow"]
              (classes without training data are dropped)

Input: CSV files under one or more data folders (searched recursively; sub-folders are
runs, e.g. data/lab/run1). Each file has the columns of `mldefender flows --format csv`
plus `label` (attack|benign), `category` and `scenario`.

Method: whole scenarios are held out (never a random split of rows), the models are
trained on the other scenarios, and every scenario is also scored by a model that did
not see it (leave-one-scenario-out over the training scenarios). Everything is seeded:
two runs on the same data write byte-identical .onnx and .json files.

Usage (normally through models/train.sh, which sets up the virtualenv):
    python models/train.py --data data/lab --out models
    python models/train.py --data data/lab/run1 data/lab/run2 --heldout nmap-version,benign-dns
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------
# Fixed choices (documented in models/README.md and written into the metadata)

SEED = 20261125
ROW_CAP = 5000
CIC_FIRST, CIC_LAST = "Flow Duration", "Idle Min"
CIC_COUNT = 76
WINDOW_PREFIX = "src_"
ATTACK_CLASSES = ["benign", "attack"]
CATEGORY_ORDER = ["flood", "scan", "bruteforce", "slow"]
# Columns read besides the features: for labels, grouping and source-level metrics.
CONTEXT = ["Src IP", "Dst IP", "Dst Port", "label", "category", "scenario"]
# Kinds of scenario to hold out one of, and the names preferred for each (first present
# wins; otherwise the alphabetically last scenario of that kind). A kind is held out only
# when it has at least two scenarios, so that training still sees that kind.
HELDOUT_PREFERRED = {
    "scan": ["nmap-version", "nmap-udp", "nmap-connect"],
    "flood": ["hping-udp-flood", "hping-icmp-flood", "http-flood"],
    "benign": ["benign-dns", "benign-idle", "benign-ping"],
    "bruteforce": ["brute-force"],
    "slow": ["slow-http"],
}
# The lab's server (tests/lab/label-flows.py): the victim of every attack. Its own flows
# (e.g. ICMP port-unreachable answers to a UDP scan) are labelled attack, but it is not an
# attacker: source-level metrics count it apart, as a victim that must never be blocked.
VICTIMS = ["10.66.9.2", "fd66:9::2"]
# Per model. "scenario": every class, and every scenario within a class, weighs the same in
# training; "class": scikit-learn's balanced class weights when the classes are skewed.
# Chosen on out-of-sample results (README): balanced classes for attack (fewer unseen
# benign sources flagged), scenarios for category (the floods would drown the rest).
WEIGHTING = {"attack": "class", "category": "scenario"}
THRESHOLD = 0.5
THRESHOLD_GRID = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
ONNX_TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
ONNX_TOLERANCE = 1e-5

HYPERPARAMETERS = {
    "attack": {
        "n_estimators": 32,
        "max_depth": 10,
        "min_samples_leaf": 10,
        "max_features": "sqrt",
        "bootstrap": True,
    },
    "category": {
        "n_estimators": 32,
        "max_depth": 8,
        "min_samples_leaf": 5,
        "max_features": "sqrt",
        "bootstrap": True,
    },
}
WHY_SMALL = (
    "A random forest capped at {n} trees of depth <= {d} with >= {leaf} flows per leaf: "
    "it scores a flow in microseconds on one core inside the memory-watched detect task, "
    "the .onnx stays small enough to sign, ship and load per update, and the lab data is "
    "small and homogeneous (one tool per scenario), so deeper trees or single-flow leaves "
    "would memorise tool- and lab-specific details (exact packet sizes, timings) instead "
    "of the behaviour that generalises; held-out scenarios measure that."
)


def log(message: str) -> None:
    print(f"train: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------
# Features


def select_features(header: list[str], protocol: bool) -> list[str]:
    """The feature rule: `Protocol` (optional), the CIC columns from `Flow Duration`
    through `Idle Min`, and every `src_*` window aggregate column, in CSV header order."""
    for name in (CIC_FIRST, CIC_LAST):
        if name not in header:
            fail(f"CSV header has no column {name!r}")
    first, last = header.index(CIC_FIRST), header.index(CIC_LAST)
    cic = header[first : last + 1]
    if len(cic) != CIC_COUNT:
        fail(f"expected {CIC_COUNT} CIC columns from {CIC_FIRST!r} to {CIC_LAST!r}, found {len(cic)}")
    chosen = set(cic) | {name for name in header if name.startswith(WINDOW_PREFIX)}
    if protocol:
        chosen.add("Protocol")
    return [name for name in header if name in chosen]


def to_float(column: pd.Series, name: str, where: str) -> np.ndarray:
    """CSV text to float64: empty -> 0.0 (missing window aggregates), true/false -> 1/0."""
    text = column.to_numpy(dtype=object)
    text = np.where(pd.isna(text), "", text).astype(str)
    out = np.zeros(len(text), dtype=np.float64)
    out[text == "true"] = 1.0
    numeric = (text != "") & (text != "true") & (text != "false")
    if numeric.any():
        values = pd.to_numeric(pd.Series(text[numeric]), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            sample = text[numeric][bad][:3].tolist()
            fail(f"{where}: column {name!r} has {int(bad.sum())} non-numeric or non-finite values, e.g. {sample}")
        out[numeric] = values
    return out


# ---------------------------------------------------------------------------------------
# Loading


@dataclass
class Dataset:
    features: list[str]
    X: np.ndarray  # float32 [rows, features]
    frame: pd.DataFrame  # CONTEXT columns + "run" + "file"
    files: list[dict] = field(default_factory=list)
    missing_cells: int = 0


def find_csvs(roots: list[str]) -> list[tuple[str, str, str]]:
    """(root, path, path relative to root) for every CSV under the roots, sorted."""
    found = []
    for root in roots:
        if not os.path.isdir(root):
            fail(f"data folder {root} does not exist")
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".csv") or name.endswith(".csv.gz"):
                    path = os.path.join(folder, name)
                    found.append((root, path, os.path.relpath(path, root)))
    if not found:
        fail(f"no CSV files under {', '.join(roots)}")
    return found


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_header(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as handle:
        return handle.readline().rstrip("\r\n").split(",")


def load(roots: list[str], row_cap: int, seed: int, protocol: bool) -> Dataset:
    csvs = []
    for root, path, rel in find_csvs(roots):
        columns = read_header(path)
        if "label" in columns and "scenario" in columns and "Flow ID" in columns:
            csvs.append((root, path, rel))
        else:
            log(f"{path}: not a labelled flow CSV (e.g. a summary), skipped")
    if not csvs:
        fail(f"no labelled flow CSVs under {', '.join(roots)}")
    header = read_header(csvs[0][1])
    for _, path, _ in csvs[1:]:
        other = read_header(path)
        if other != header:
            extra = sorted(set(other) ^ set(header))
            fail(f"{path}: header differs from {csvs[0][1]} (columns not in both: {extra[:8]}); "
                 "regenerate all CSVs with one mldefender build")
    for name in CONTEXT:
        if name not in header:
            fail(f"CSV header has no column {name!r}")
    features = select_features(header, protocol)
    usecols = features + CONTEXT
    blocks, frames, files = [], [], []
    missing_cells = 0
    for root, path, rel in csvs:
        # Pass 1: labels only, to draw a seeded sample of at most row_cap flows per label.
        labels = pd.read_csv(path, usecols=["label"], dtype=str, keep_default_na=False)["label"].to_numpy()
        total = len(labels)
        rng = np.random.default_rng([seed, zlib.crc32(rel.encode())])
        keep = []
        for value in sorted(set(labels.tolist())):
            rows = np.flatnonzero(labels == value)
            if len(rows) > row_cap:
                rows = np.sort(rng.choice(rows, size=row_cap, replace=False))
            keep.append(rows)
        keep = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
        # Pass 2: the kept rows, in chunks so that a flood's CSV never sits in memory whole.
        parts, start = [], 0
        for chunk in pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, chunksize=200_000):
            stop = start + len(chunk)
            lo, hi = np.searchsorted(keep, [start, stop])
            if hi > lo:
                parts.append(chunk.iloc[keep[lo:hi] - start])
            start = stop
        if start != total:
            fail(f"{path}: read {start} rows, then {total}: is the file still being written?")
        if not parts:
            log(f"{rel}: no flows, skipped")
            continue
        part = pd.concat(parts, ignore_index=True)
        where = os.path.join(os.path.basename(os.path.normpath(root)), rel)
        missing_cells += int((part[features] == "").to_numpy().sum())
        block = np.column_stack([to_float(part[name], name, where) for name in features])
        context = part[CONTEXT].copy()
        run = os.path.dirname(rel) or "."
        if len(roots) > 1:
            run = os.path.join(os.path.basename(os.path.normpath(root)), run)
        context["run"] = run
        context["file"] = where
        bad_label = ~context["label"].isin(ATTACK_CLASSES)
        if bad_label.any():
            fail(f"{where}: {int(bad_label.sum())} rows with label not in {ATTACK_CLASSES}, "
                 f"e.g. {context['label'][bad_label].iloc[0]!r}")
        blocks.append(block)
        frames.append(context)
        counts = context["label"].value_counts()
        files.append({
            "file": where,
            "run": run,
            "scenarios": sorted(set(context["scenario"].tolist())),
            "flows": total,
            "used": len(part),
            "attack_used": int(counts.get("attack", 0)),
            "benign_used": int(counts.get("benign", 0)),
            "sha256": file_sha256(path),
        })
        log(f"{where}: {total} flows, {len(part)} used")
    X = np.vstack(blocks)
    # Float32 is what the appliance feeds the model; the trees are trained on the same
    # values so that their thresholds compare identically in sklearn and ONNX Runtime.
    X32 = X.astype(np.float32)
    if not np.isfinite(X32).all():
        fail("a feature value overflows float32")
    frame = pd.concat(frames, ignore_index=True)
    return Dataset(features=features, X=X32, frame=frame, files=files, missing_cells=missing_cells)


# ---------------------------------------------------------------------------------------
# Scenarios and the held-out choice


def scenario_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """A scenario's kind: the most common category of its attack flows, or benign."""
    kinds = {}
    for name, group in frame.groupby("scenario", sort=True):
        attack = group["category"][group["label"] == "attack"]
        if len(attack) == 0:
            kinds[name] = "benign"
        else:
            counts = attack.value_counts()
            kinds[name] = sorted(counts.index[counts == counts.max()])[0]
    return kinds


def choose_heldout(kinds: dict[str, str]) -> tuple[list[str], list[str]]:
    """Default held-out scenarios: one each of scan, flood and benign, and one of
    bruteforce/slow, each only where that kind has at least two scenarios."""
    chosen, notes = [], []
    by_kind: dict[str, list[str]] = {}
    for name, kind in sorted(kinds.items()):
        by_kind.setdefault(kind, []).append(name)

    def pick(kind: str) -> str | None:
        names = by_kind.get(kind, [])
        if len(names) < 2:
            notes.append(f"{kind}: {len(names)} scenario(s), none held out (training needs one)")
            return None
        for preferred in HELDOUT_PREFERRED.get(kind, []):
            if preferred in names:
                return preferred
        return names[-1]

    for kind in ("scan", "flood", "benign"):
        name = pick(kind)
        if name:
            chosen.append(name)
    # One of bruteforce/slow: the kind with more scenarios (bruteforce on a tie).
    pair = sorted(("bruteforce", "slow"), key=lambda k: -len(by_kind.get(k, [])))
    name = pick(pair[0])
    if name:
        chosen.append(name)
        notes.append(f"{pair[1]}: not held out (one of bruteforce/slow is)")
    else:
        notes.append(f"{pair[1]}: {len(by_kind.get(pair[1], []))} scenario(s), none held out")
    for kind in sorted(set(by_kind) - {"scan", "flood", "benign", "bruteforce", "slow"}):
        notes.append(f"{kind}: not a held-out kind ({len(by_kind[kind])} scenario(s))")
    return chosen, notes


# ---------------------------------------------------------------------------------------
# Models


def make_forest(kind: str, seed: int, class_weight):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        **HYPERPARAMETERS[kind], class_weight=class_weight, random_state=seed, n_jobs=1
    )


def class_weight_for(y: np.ndarray, classes: int):
    """Balanced class weights when the smallest class is under half the largest."""
    counts = np.bincount(y, minlength=classes)
    present = counts[counts > 0]
    return "balanced" if present.min() * 2 < present.max() else None


def scenario_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sample weights under which every class weighs the same and, within a class, every
    scenario weighs the same, whatever its number of flows (mean weight 1)."""
    weight = np.zeros(len(y), dtype=np.float64)
    classes = sorted(set(y.tolist()))
    for c in classes:
        in_class = y == c
        names = sorted(set(groups[in_class].tolist()))
        for name in names:
            rows = in_class & (groups == name)
            weight[rows] = len(y) / (len(classes) * len(names) * rows.sum())
    return weight


def fit(kind: str, X: np.ndarray, y: np.ndarray, classes: int, seed: int, groups: np.ndarray):
    if WEIGHTING[kind] == "scenario":
        return make_forest(kind, seed, None).fit(X, y, sample_weight=scenario_weights(y, groups)), None
    weight = class_weight_for(y, classes)
    return make_forest(kind, seed, weight).fit(X, y), weight


def full_proba(model, X: np.ndarray, classes: int) -> np.ndarray:
    """predict_proba with a column for every class, also those absent from training."""
    out = np.zeros((len(X), classes), dtype=np.float64)
    if len(X):
        out[:, model.classes_] = model.predict_proba(X)
    return out


# ---------------------------------------------------------------------------------------
# Metrics


def r6(value) -> float | None:
    return None if value is None else round(float(value), 6)


def flow_metrics(y: np.ndarray, score: np.ndarray, threshold: float = THRESHOLD) -> dict:
    attack, benign = y == 1, y == 0
    flagged = score >= threshold
    tp = int((flagged & attack).sum())
    fp = int((flagged & benign).sum())
    out = {
        "flows": int(len(y)),
        "attack_flows": int(attack.sum()),
        "benign_flows": int(benign.sum()),
        "recall": r6(tp / attack.sum()) if attack.any() else None,
        "false_positive_rate": r6(fp / benign.sum()) if benign.any() else None,
        "precision": r6(tp / (tp + fp)) if tp + fp else None,
        "false_positives": fp,
        "missed_attack_flows": int(attack.sum()) - tp,
    }
    if attack.any() and benign.any():
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = r6(roc_auc_score(y, score))
    return out


def source_table(frame: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """One row per (run, scenario, source IP = flow initiator): its max score and role.
    Role: victim (a --victims address), attacker (any of its flows labelled attack), or
    benign."""
    table = pd.DataFrame({
        "run": frame["run"].to_numpy(),
        "scenario": frame["scenario"].to_numpy(),
        "src": frame["Src IP"].to_numpy(),
        "attack": (frame["label"] == "attack").to_numpy(),
        "score": score,
    })
    out = table.groupby(["run", "scenario", "src"], sort=True).agg(
        attack=("attack", "max"), max_score=("score", "max"), flows=("score", "size")
    ).reset_index()
    out["victim"] = out["src"].isin(VICTIMS)
    out["attack"] = out["attack"] & ~out["victim"]
    return out


def score_distribution(scores: np.ndarray) -> dict:
    if len(scores) == 0:
        return {"count": 0}
    edges = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
    histogram = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        upper = scores <= hi if hi == 1.0 else scores < hi
        histogram[f"[{lo}, {hi}{']' if hi == 1.0 else ')'}"] = int(((scores >= lo) & upper).sum())
    quantiles = {f"p{q}": r6(np.quantile(scores, q / 100)) for q in (50, 90, 95, 99)}
    return {"count": int(len(scores)), "min": r6(scores.min()), **quantiles, "max": r6(scores.max()),
            "histogram": histogram}


def source_metrics(frame: pd.DataFrame, score: np.ndarray, threshold: float = THRESHOLD) -> dict:
    table = source_table(frame, score)
    attackers = table[table["attack"]]
    benign = table[~table["attack"] & ~table["victim"]]
    victims = table[table["victim"]]
    scenario_runs = attackers.groupby(["run", "scenario"], sort=True)["max_score"].max()
    flagged_attackers = attackers[attackers["max_score"] >= threshold]
    flagged_benign = benign[benign["max_score"] >= threshold]
    return {
        "attacker_sources": int(len(attackers)),
        "attacker_sources_flagged": int(len(flagged_attackers)),
        "attackers_missed": [f"{r.run}/{r.scenario}/{r.src}" for r in
                             attackers[attackers["max_score"] < threshold].itertuples()][:20],
        "attack_scenario_runs": int(len(scenario_runs)),
        "attack_scenario_runs_with_attacker_flagged": int((scenario_runs >= threshold).sum()),
        "benign_sources": int(len(benign)),
        "benign_sources_flagged": int(len(flagged_benign)),
        "benign_flagged": [f"{r.run}/{r.scenario}/{r.src} ({r.max_score:.3f})" for r in
                           flagged_benign.itertuples()][:20],
        "benign_source_max_score": score_distribution(benign["max_score"].to_numpy()),
        "attacker_source_max_score": score_distribution(attackers["max_score"].to_numpy()),
        "victim_sources": int(len(victims)),
        "victim_sources_flagged": int((victims["max_score"] >= threshold).sum()),
    }


def threshold_table(frame: pd.DataFrame, y: np.ndarray, score: np.ndarray) -> list[dict]:
    table = source_table(frame, score)
    attackers, benign = table[table["attack"]], table[~table["attack"] & ~table["victim"]]
    victims = table[table["victim"]]
    rows = []
    for t in THRESHOLD_GRID:
        flows = flow_metrics(y, score, t)
        rows.append({
            "threshold": t,
            "flow_recall": flows["recall"],
            "flow_false_positive_rate": flows["false_positive_rate"],
            "attacker_sources_flagged": int((attackers["max_score"] >= t).sum()),
            "attacker_sources": int(len(attackers)),
            "benign_sources_flagged": int((benign["max_score"] >= t).sum()),
            "benign_sources": int(len(benign)),
            "victim_sources_flagged": int((victims["max_score"] >= t).sum()),
            "victim_sources": int(len(victims)),
        })
    return rows


def category_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    if len(y) == 0:
        return {"flows": 0}
    predicted = proba.argmax(axis=1)
    confusion = {}
    per_class = {}
    for i, name in enumerate(classes):
        mask = y == i
        if mask.any():
            per_class[name] = {"flows": int(mask.sum()), "recall": r6((predicted[mask] == i).mean())}
            confusion[name] = {other: int((predicted[mask] == j).sum()) for j, other in enumerate(classes)}
    return {"flows": int(len(y)), "accuracy": r6((predicted == y).mean()), "per_class": per_class,
            "confusion": confusion}


# ---------------------------------------------------------------------------------------
# ONNX


def export_onnx(model, n_features: int):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset=ONNX_TARGET_OPSET,
    )
    # skl2onnx may list the default domain twice; keep one entry per domain.
    seen, unique = set(), []
    for entry in onx.opset_import:
        if entry.domain not in seen:
            seen.add(entry.domain)
            unique.append((entry.domain, entry.version))
    del onx.opset_import[:]
    for domain, version in unique:
        entry = onx.opset_import.add()
        entry.domain, entry.version = domain, version
    import onnx

    onnx.checker.check_model(onx, full_check=True)
    return onx


def check_onnx(data: bytes, model, X: np.ndarray, n_classes: int, name: str) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    inputs = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.type) for o in session.get_outputs()]
    if len(inputs) != 1 or inputs[0][0] != "input" or inputs[0][1] != "tensor(float)":
        fail(f"{name}.onnx: unexpected inputs {inputs}")
    if outputs != [("label", "tensor(int64)"), ("probabilities", "tensor(float)")]:
        fail(f"{name}.onnx: unexpected outputs {outputs}")
    labels, proba = session.run(["label", "probabilities"], {"input": X})
    expected = model.predict_proba(X)
    if proba.shape != (len(X), n_classes):
        fail(f"{name}.onnx: probabilities shape {proba.shape}, expected {(len(X), n_classes)}")
    diff = float(np.abs(proba.astype(np.float64) - expected).max()) if len(X) else 0.0
    if not diff < ONNX_TOLERANCE:
        fail(f"{name}.onnx: probabilities differ from scikit-learn by {diff} (> {ONNX_TOLERANCE})")
    label_agree = float((labels == model.predict(X)).mean()) if len(X) else 1.0
    log(f"{name}.onnx: ONNX Runtime matches scikit-learn on {len(X)} rows (max |dp| {diff:.2e})")
    return {"rows": int(len(X)), "max_abs_probability_difference": float(f"{diff:.3e}"),
            "label_agreement": r6(label_agree)}


# ---------------------------------------------------------------------------------------
# Main


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("numpy", "pandas", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"):
        versions[package] = importlib.metadata.version(package)
    return versions


def top_importances(model, features: list[str], n: int = 10) -> list[dict]:
    order = np.argsort(-model.feature_importances_, kind="stable")[:n]
    return [{"feature": features[i], "importance": r6(model.feature_importances_[i])} for i in order]


def display_path(path: str) -> str:
    """A data folder as written into the metadata: relative to the repository when inside it."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute, repo) if absolute.startswith(repo + os.sep) else absolute


def write_json(path: str, value: dict) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["data/lab"], help="data folder(s), searched for *.csv and *.csv.gz")
    parser.add_argument("--out", default="models", help="output folder for <name>.onnx and <name>.json")
    parser.add_argument("--heldout", default=None,
                        help="comma-separated scenario names to hold out (default: chosen by kind, see README)")
    parser.add_argument("--row-cap", type=int, default=ROW_CAP,
                        help="at most this many flows per label per CSV file (seeded sample)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--protocol", action="store_true",
                        help="add the Protocol column (1/6/17/58, as a number) to the features (default: left "
                             "out; see README)")
    parser.add_argument("--no-loso", action="store_true",
                        help="skip the leave-one-scenario-out scores of the training scenarios")
    parser.add_argument("--version", default="1", help="model version written into the metadata")
    parser.add_argument("--final", choices=["training", "all"], default="training",
                        help="training: ship the models trained without the held-out scenarios (default, "
                             "what the numbers measure); all: evaluate as usual, then refit on every scenario")
    for kind in ("attack", "category"):
        parser.add_argument(f"--{kind}-weighting", choices=["scenario", "class"], default=WEIGHTING[kind],
                            help=f"{kind} model: scenario = classes, and scenarios within a class, weigh the "
                                 f"same; class = balanced class weights (default: {WEIGHTING[kind]})")
    parser.add_argument("--victims", default=",".join(VICTIMS),
                        help="comma-separated addresses of the attacked server(s), counted apart in "
                             "source-level metrics (default: the lab's server)")
    args = parser.parse_args()
    VICTIMS[:] = [a for a in args.victims.split(",") if a]
    WEIGHTING.update(attack=args.attack_weighting, category=args.category_weighting)

    data = load(args.data, args.row_cap, args.seed, protocol=args.protocol)
    frame, X, features = data.frame, data.X, data.features
    log(f"{len(X)} flows, {len(features)} features, {frame['scenario'].nunique()} scenarios")

    inconsistent = frame[(frame["label"] == "attack") == (frame["category"] == "benign")]
    if len(inconsistent):
        fail(f"{len(inconsistent)} flows whose label and category disagree, e.g. "
             f"{inconsistent[['file', 'label', 'category']].iloc[0].tolist()}")

    kinds = scenario_kinds(frame)
    scenarios = sorted(kinds)
    if args.heldout is not None:
        heldout = [name for name in args.heldout.split(",") if name]
        unknown = [name for name in heldout if name not in kinds]
        if unknown:
            fail(f"held-out scenarios not in the data: {unknown} (have: {scenarios})")
        notes = ["given with --heldout"]
    else:
        heldout, notes = choose_heldout(kinds)
    training = [name for name in scenarios if name not in heldout]
    log(f"held out: {heldout} ({'; '.join(notes)})")

    is_held = frame["scenario"].isin(heldout).to_numpy()
    y_attack = (frame["label"] == "attack").to_numpy().astype(np.int64)
    train_rows, held_rows = ~is_held, is_held
    if len(set(y_attack[train_rows].tolist())) < 2:
        fail("the training scenarios need both attack and benign flows")

    # Category classes: the canonical order, then any other category with data.
    attack_categories = frame["category"][(frame["label"] == "attack").to_numpy() & train_rows]
    present = set(attack_categories.tolist())
    category_classes = [c for c in CATEGORY_ORDER if c in present] + sorted(present - set(CATEGORY_ORDER))
    if len(category_classes) < 2:
        fail(f"the category model needs two categories in training, found {category_classes}")
    unseen = sorted(set(frame["category"][frame["label"] == "attack"]) - set(category_classes))
    if unseen:
        log(f"categories only in held-out scenarios (not trainable): {unseen}")
    category_index = {name: i for i, name in enumerate(category_classes)}
    y_category = frame["category"].map(category_index).fillna(-1).to_numpy().astype(np.int64)
    is_attack = y_attack == 1

    # ---- attack model
    groups = frame["scenario"].to_numpy()
    attack_model, attack_weight = fit("attack", X[train_rows], y_attack[train_rows], 2, args.seed,
                                      groups[train_rows])
    score = full_proba(attack_model, X, 2)[:, 1]
    # ---- category model: attack flows of the training scenarios
    cat_rows = train_rows & is_attack & (y_category >= 0)
    category_model, category_weight = fit("category", X[cat_rows], y_category[cat_rows],
                                          len(category_classes), args.seed, groups[cat_rows])
    category_proba = full_proba(category_model, X, len(category_classes))

    # ---- out-of-sample scores for the training scenarios: leave one scenario out
    loso_score = np.full(len(X), np.nan)
    loso_category = np.full((len(X), len(category_classes)), np.nan)
    loso_score[held_rows] = score[held_rows]
    loso_category[held_rows] = category_proba[held_rows]
    if not args.no_loso:
        for name in training:
            out = (frame["scenario"] == name).to_numpy()
            rest = train_rows & ~out
            if len(set(y_attack[rest].tolist())) == 2:
                model, _ = fit("attack", X[rest], y_attack[rest], 2, args.seed, groups[rest])
                loso_score[out] = full_proba(model, X[out], 2)[:, 1]
            rest_cat = rest & is_attack & (y_category >= 0)
            if len(set(y_category[rest_cat].tolist())) >= 2 and (out & is_attack).any():
                model, _ = fit("category", X[rest_cat], y_category[rest_cat], len(category_classes), args.seed,
                               groups[rest_cat])
                loso_category[out] = full_proba(model, X[out], len(category_classes))
            log(f"leave-one-scenario-out: {name} scored")

    # ---- across runs: train on the other runs (every scenario), score this run. This
    # measures only what a new seed changes (same tools, same rates): an optimistic bound.
    cross_run = cross_run_category = None
    runs = sorted(set(frame["run"].tolist()))
    if len(runs) >= 2:
        cross_score = np.full(len(X), np.nan)
        cross_category = np.full((len(X), len(category_classes)), np.nan)
        for run in runs:
            test = (frame["run"] == run).to_numpy()
            if len(set(y_attack[~test].tolist())) == 2:
                model, _ = fit("attack", X[~test], y_attack[~test], 2, args.seed, groups[~test])
                cross_score[test] = full_proba(model, X[test], 2)[:, 1]
            rest = ~test & is_attack & (y_category >= 0)
            if len(set(y_category[rest].tolist())) >= 2:
                model, _ = fit("category", X[rest], y_category[rest], len(category_classes), args.seed, groups[rest])
                cross_category[test] = full_proba(model, X[test], len(category_classes))
        rows = is_attack & (y_category >= 0) & ~np.isnan(cross_category).any(axis=1)
        if rows.any():
            cross_run_category = category_metrics(y_category[rows], cross_category[rows], category_classes)
            cross_run_category["note"] = "each run scored by a model trained on the other run(s): an upper bound"
        done = ~np.isnan(cross_score)
        cross_run = {
            "note": "each run scored by a model trained on the other run(s), every scenario included: "
                    "only the seed differs, so this is an upper bound, not a test of new traffic",
            "flow_metrics": flow_metrics(y_attack[done], cross_score[done]),
            "source_metrics": source_metrics(frame[done], cross_score[done]),
            "per_scenario": {},
        }
        for name in scenarios:
            rows = done & (frame["scenario"] == name).to_numpy()
            f = flow_metrics(y_attack[rows], cross_score[rows])
            cross_run["per_scenario"][name] = {k: f[k] for k in ("attack_flows", "benign_flows", "recall",
                                                                 "false_positive_rate")}
            cross_run["per_scenario"][name]["max_score_benign_source"] = r6(
                source_table(frame[rows], cross_score[rows]).query("~attack and ~victim")["max_score"].max()
            ) if f["benign_flows"] else None
        log("cross-run scores done")

    # ---- per scenario
    per_scenario = {}
    for name in scenarios:
        rows = (frame["scenario"] == name).to_numpy()
        entry = {
            "kind": kinds[name],
            "heldout": name in heldout,
            "runs": sorted(set(frame["run"][rows].tolist())),
        }
        sub = frame[rows]
        if name in heldout:
            entry["out_of_sample"] = "final model (scenario held out)"
            entry["flow_metrics"] = flow_metrics(y_attack[rows], score[rows])
            entry["source_metrics"] = source_metrics(sub, score[rows])
        else:
            entry["out_of_sample"] = ("model trained on the other training scenarios" if not args.no_loso
                                      else "not computed (--no-loso)")
            if not np.isnan(loso_score[rows]).any():
                entry["flow_metrics"] = flow_metrics(y_attack[rows], loso_score[rows])
                entry["source_metrics"] = source_metrics(sub, loso_score[rows])
            entry["in_sample_flow_metrics"] = flow_metrics(y_attack[rows], score[rows])
        attack_rows = rows & is_attack & (y_category >= 0)
        if attack_rows.any():
            proba = category_proba if name in heldout else loso_category
            if not np.isnan(proba[attack_rows]).any():
                entry["category_metrics"] = category_metrics(y_category[attack_rows], proba[attack_rows],
                                                             category_classes)
                # Could the scoring model know this scenario's category at all?
                others = [t for t in training if t != name and kinds[t] == kinds[name]]
                entry["category_metrics"]["category_in_training"] = bool(
                    kinds[name] in category_classes and (name in heldout or others))
        for key in ("source_metrics",):
            if key in entry:
                for dist in ("benign_source_max_score", "attacker_source_max_score"):
                    entry[key][dist].pop("histogram", None)
        per_scenario[name] = entry

    # ---- held-out aggregate
    held = {"scenarios": heldout, "choice": notes}
    if held_rows.any():
        held["flow_metrics"] = flow_metrics(y_attack[held_rows], score[held_rows])
        held["source_metrics"] = source_metrics(frame[held_rows], score[held_rows])
        held["thresholds"] = threshold_table(frame[held_rows], y_attack[held_rows], score[held_rows])
    loso_rows = ~np.isnan(loso_score)
    if not args.no_loso and loso_rows.any():
        held["all_scenarios_out_of_sample"] = {
            "note": "every scenario scored by a model that did not see it (held-out: the final model; "
                    "training scenarios: leave-one-scenario-out)",
            "flow_metrics": flow_metrics(y_attack[loso_rows], loso_score[loso_rows]),
            "source_metrics": source_metrics(frame[loso_rows], loso_score[loso_rows]),
            "thresholds": threshold_table(frame[loso_rows], y_attack[loso_rows], loso_score[loso_rows]),
        }
    if cross_run:
        held["cross_run"] = cross_run
    held_cat_rows = held_rows & is_attack & (y_category >= 0)
    category_held = {"scenarios": heldout,
                     "category_metrics": category_metrics(y_category[held_cat_rows], category_proba[held_cat_rows],
                                                          category_classes)}
    if cross_run_category:
        category_held["cross_run"] = cross_run_category
    loso_cat_rows = is_attack & (y_category >= 0) & ~np.isnan(loso_category).any(axis=1)
    if not args.no_loso and loso_cat_rows.any():
        category_held["all_scenarios_out_of_sample"] = category_metrics(
            y_category[loso_cat_rows], loso_category[loso_cat_rows], category_classes)

    # ---- the models to ship: those evaluated above, or (--final all) refit on every scenario
    shipped_scenarios, ship_attack_rows = training, train_rows
    ship_category_classes, y_ship_category, ship_category_rows = category_classes, y_category, cat_rows
    if args.final == "all":
        log("refitting both models on every scenario (--final all)")
        shipped_scenarios, ship_attack_rows = scenarios, np.ones(len(X), dtype=bool)
        present = set(frame["category"][is_attack].tolist())
        ship_category_classes = [c for c in CATEGORY_ORDER if c in present] + sorted(present - set(CATEGORY_ORDER))
        index = {name: i for i, name in enumerate(ship_category_classes)}
        y_ship_category = frame["category"].map(index).fillna(-1).to_numpy().astype(np.int64)
        ship_category_rows = is_attack & (y_ship_category >= 0)
        attack_model, attack_weight = fit("attack", X, y_attack, 2, args.seed, groups)
        category_model, category_weight = fit("category", X[ship_category_rows], y_ship_category[ship_category_rows],
                                              len(ship_category_classes), args.seed, groups[ship_category_rows])
    evaluated_by = ("the shipped model itself (trained on the training scenarios only)" if args.final == "training"
                    else "a model of the same recipe trained on the training scenarios only; the shipped model "
                         "was then refit on every scenario, held-out ones included (--final all)")
    held["evaluated_by"] = evaluated_by
    category_held["evaluated_by"] = evaluated_by

    # ---- export, check, metadata
    os.makedirs(args.out, exist_ok=True)
    rows_per_scenario = {}
    for name in scenarios:
        rows = frame["scenario"] == name
        rows_per_scenario[name] = {
            run: {"used": int(((frame["run"] == run) & rows).sum()),
                  "attack": int(((frame["run"] == run) & rows & (frame["label"] == "attack")).sum()),
                  "benign": int(((frame["run"] == run) & rows & (frame["label"] == "benign")).sum())}
            for run in sorted(set(frame["run"][rows].tolist()))
        }
    common_training = {
        "data": [display_path(p) for p in args.data],
        "files": data.files,
        "rows_per_scenario": rows_per_scenario,
        "row_cap": {"max_flows": args.row_cap, "per": "label within each CSV file (one scenario, one run)",
                    "sampling": "uniform without replacement, numpy default_rng([seed, crc32(file path)])"},
        "seed": args.seed,
        "victims": VICTIMS,
        "empty_cells_read_as_missing": data.missing_cells,
    }
    feature_rule = ("Protocol (as a number: 1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6), " if args.protocol else "") + \
        f"the {CIC_COUNT} CIC columns from '{CIC_FIRST}' through '{CIC_LAST}', and every column starting " \
        f"'{WINDOW_PREFIX}', in CSV header order; true/false -> 1/0; empty -> missing"
    outputs = {}
    for name, model, classes, check_rows, weight, kind, train_mask, evaluation in (
        ("attack", attack_model, ATTACK_CLASSES, held_rows if held_rows.any() else train_rows,
         attack_weight, "binary", ship_attack_rows, held),
        ("category", category_model, ship_category_classes,
         held_cat_rows if held_cat_rows.any() else cat_rows, category_weight, "multiclass", ship_category_rows,
         category_held),
    ):
        onx = export_onnx(model, len(features))
        blob = onx.SerializeToString()
        onnx_check = check_onnx(blob, model, X[check_rows], len(classes), name)
        path = os.path.join(args.out, f"{name}.onnx")
        with open(path, "wb") as handle:
            handle.write(blob)
        counts = np.bincount((y_attack if name == "attack" else y_ship_category)[train_mask], minlength=len(classes))
        hp = dict(HYPERPARAMETERS[name], class_weight=weight, random_state=args.seed)
        meta = {
            "name": name,
            "version": args.version,
            "kind": kind,
            "classes": classes,
            "features": features,
            "feature_rule": feature_rule,
            "missing": 0.0,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "size_bytes": len(blob),
            "onnx": {
                "input": "input",
                "input_shape": ["N", len(features)],
                "outputs": ["label", "probabilities"],
                "label": "int64 [N]: index into classes",
                "probabilities": f"float32 [N, {len(classes)}]: in the order of classes",
                "opset": {entry.domain or "": entry.version for entry in onx.opset_import},
                "target_opset": ONNX_TARGET_OPSET,
                "ir_version": onx.ir_version,
                "check": onnx_check,
            },
            "training": {
                **common_training,
                "scenarios": shipped_scenarios,
                "final": args.final,
                "rows": int(train_mask.sum()),
                "rows_per_class": {c: int(n) for c, n in zip(classes, counts)},
                "selection": "all flows of these scenarios" if name == "attack"
                else "attack flows of these scenarios",
                "algorithm": "scikit-learn RandomForestClassifier",
                "hyperparameters": hp,
                "weighting": ("sample weights: every class weighs the same, and within a class every scenario "
                              f"weighs the same, whatever its number of flows (--{name}-weighting scenario)"
                              if WEIGHTING[name] == "scenario" else
                              "class_weight balanced when the smallest class has under half the flows of the "
                              f"largest (--{name}-weighting class)"),
                "why_small": WHY_SMALL.format(n=hp["n_estimators"], d=hp["max_depth"], leaf=hp["min_samples_leaf"]),
                "feature_importance_top10": top_importances(model, features),
            },
            "heldout": evaluation,
            "per_scenario": per_scenario if name == "attack" else {
                s: {k: v for k, v in e.items() if k in ("kind", "heldout", "runs", "out_of_sample", "category_metrics")}
                for s, e in per_scenario.items() if "category_metrics" in e},
            "threshold": THRESHOLD if name == "attack" else None,
            "created_by": "models/train.py",
            "library_versions": library_versions(),
        }
        if name != "attack":
            del meta["threshold"]
        write_json(os.path.join(args.out, f"{name}.json"), meta)
        outputs[name] = meta
        log(f"wrote {path} ({len(blob)} bytes, sha256 {meta['sha256'][:16]}...)")

    print_summary(outputs, per_scenario, heldout)


def print_summary(outputs: dict, per_scenario: dict, heldout: list[str]) -> None:
    """A plain-text summary on stdout (the numbers for models/README.md)."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    def block(title: str, h: dict) -> None:
        f, s = h["flow_metrics"], h["source_metrics"]
        print(f"{title}: {f['attack_flows']} attack / {f['benign_flows']} benign flows; recall {pct(f['recall'])}, "
              f"FPR {pct(f['false_positive_rate'])}, AUC {f.get('roc_auc')}; attacker sources flagged "
              f"{s['attacker_sources_flagged']}/{s['attacker_sources']} (scenario runs with one flagged: "
              f"{s['attack_scenario_runs_with_attacker_flagged']}/{s['attack_scenario_runs']}); benign sources "
              f"flagged {s['benign_sources_flagged']}/{s['benign_sources']}; victim sources flagged "
              f"{s['victim_sources_flagged']}/{s['victim_sources']}")
        print("  benign source max score:", json.dumps(s["benign_source_max_score"]))
        print("  | threshold | flow recall | flow FPR | attacker sources | benign sources flagged | victim flagged |")
        print("  |---|---|---|---|---|---|")
        for row in h["thresholds"]:
            print(f"  | {row['threshold']} | {pct(row['flow_recall'])} | {pct(row['flow_false_positive_rate'])} | "
                  f"{row['attacker_sources_flagged']}/{row['attacker_sources']} | "
                  f"{row['benign_sources_flagged']}/{row['benign_sources']} | "
                  f"{row['victim_sources_flagged']}/{row['victim_sources']} |")

    print(f"features: {len(outputs['attack']['features'])}")
    for name, meta in outputs.items():
        print(f"{name}: {meta['size_bytes']} bytes, classes {meta['classes']}, sha256 {meta['sha256']}")
    print(f"held out: {', '.join(heldout)}")
    h = outputs["attack"]["heldout"]
    if "flow_metrics" in h:
        block("attack, held-out scenarios", h)
    if h.get("all_scenarios_out_of_sample"):
        block("attack, every scenario out of sample", h["all_scenarios_out_of_sample"])
    if h.get("cross_run"):
        x = h["cross_run"]
        f, s = x["flow_metrics"], x["source_metrics"]
        print(f"attack, across runs (train on the other run): recall {pct(f['recall'])}, "
              f"FPR {pct(f['false_positive_rate'])}; benign sources flagged "
              f"{s['benign_sources_flagged']}/{s['benign_sources']}; benign source max score "
              f"{json.dumps({k: v for k, v in s['benign_source_max_score'].items() if k != 'histogram'})}")
        for name, e in x["per_scenario"].items():
            print(f"  {name}: recall {pct(e['recall'])} FPR {pct(e['false_positive_rate'])} "
                  f"benign source max {e['max_score_benign_source']}")
    c = outputs["category"]["heldout"]
    print(f"category, held-out attack flows: {json.dumps(c['category_metrics'])}")
    if "cross_run" in c:
        print(f"category, across runs: {json.dumps(c['cross_run'])}")
    if "all_scenarios_out_of_sample" in c:
        print(f"category, every scenario out of sample: {json.dumps(c['all_scenarios_out_of_sample'])}")
    print("| scenario | kind | held out | flows atk/ben | recall | FPR | attacker srcs flagged | benign srcs flagged "
          "| benign src max score p50/max | victim flagged | category acc | in-sample recall/FPR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, e in per_scenario.items():
        f = e.get("flow_metrics", {})
        s = e.get("source_metrics", {})
        ins = e.get("in_sample_flow_metrics")
        b = s.get("benign_source_max_score", {})
        cat = e.get("category_metrics", {})
        print(f"| {name} | {e['kind']} | {'yes' if e['heldout'] else ''} | "
              f"{f.get('attack_flows', '-')}/{f.get('benign_flows', '-')} | {pct(f.get('recall'))} | "
              f"{pct(f.get('false_positive_rate'))} | "
              f"{s.get('attacker_sources_flagged', '-')}/{s.get('attacker_sources', '-')} | "
              f"{s.get('benign_sources_flagged', '-')}/{s.get('benign_sources', '-')} | "
              f"{b.get('p50', '-')}/{b.get('max', '-')} | "
              f"{s.get('victim_sources_flagged', '-')}/{s.get('victim_sources', '-')} | {pct(cat.get('accuracy')) + ('' if cat.get('category_in_training', True) else ' (unseen)')} | "
              f"{(pct(ins['recall']) + '/' + pct(ins['false_positive_rate'])) if ins else ''} |")
    for name in ("attack", "category"):
        print(f"{name} top 10 features:")
        for item in outputs[name]["training"]["feature_importance_top10"]:
            print(f"  {item['importance']:.4f}  {item['feature']}")


if __name__ == "__main__":
    main()
