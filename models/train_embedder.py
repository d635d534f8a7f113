#!/usr/bin/env python3
"""Trains the ingest task's ONNX embedder: one flow event -> one vector for the similarity index.

    embedder   signed log1p -> StandardScaler -> PCA(D), float32 [N, F] -> float32 [N, D]

Unsupervised: labels and scenarios are used only to measure usefulness, never to fit.
The features are the detection models' (models/train.py, whose loader is imported): the 76
CIC columns from `Flow Duration` through `Idle Min` and every `src_*` column, in CSV header
order; empty -> 0.0, true/false -> 1/0.

Usefulness (issue 7: a query for an attack event must return the other events of the same
scenario ahead of benign ones): exact brute-force k-NN (squared L2, what a FAISS flat index
computes) with one run as the database and up to --queries flows per scenario of the other
run as queries, so that a query never finds itself.

Everything is seeded and single-threaded: two runs on the same data write byte-identical
embedder.onnx and embedder.json (the script also checks this in-process).

Usage (normally through models/train_embedder.sh, which sets up the virtualenv):
    python models/train_embedder.py --data data/lab --out models
"""

from __future__ import annotations

import os

# Before numpy is imported (train.py imports it): one BLAS thread, whatever the caller set,
# so that the SVD and the matrix products are computed in one fixed order and the files are
# byte-reproducible (measured: with two OpenBLAS threads the PCA, and so the bytes, differ).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse
import hashlib
import json
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402  (models/train.py: the loader and the feature rule)

import numpy as np  # noqa: E402
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

# ---------------------------------------------------------------------------------------
# Fixed choices (documented in models/embedder.md and written into the metadata)

SEED = train.SEED
DIMENSIONS = 16
DIMENSION_CANDIDATES = [8, 16, 24, 32]
MIN_EXPLAINED_VARIANCE = 0.99
K = 10
QUERIES_PER_SCENARIO = 200
DATABASE_RUN, QUERY_RUN = "run1", "run2"
ONNX_TARGET_OPSET = {"": 17}
ONNX_TOLERANCE = 1e-5
INPUT_NAME, OUTPUT_NAME = "input", "embedding"


def log(message: str) -> None:
    print(f"train_embedder: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"train_embedder: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def r6(value) -> float | None:
    return None if value is None else float(f"{float(value):.6g}")


# ---------------------------------------------------------------------------------------
# The encoder


class SignedLog1p(TransformerMixin, BaseEstimator):
    """sign(x) * log(1 + |x|), element-wise, in float64: tames the heavy tails (byte counts,
    rates, durations in microseconds span 0 to 1e9) and keeps the few negative values (-1 for
    an unseen initial TCP window) apart from 0. Stateless. Converted to ONNX by hand below
    (skl2onnx converts FunctionTransformer only without a function): Abs, Add 1, Log, Sign, Mul."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        return np.sign(X) * np.log1p(np.abs(X))


def _signed_log1p_shape(operator):
    shape = operator.inputs[0].type.shape
    operator.outputs[0].type = operator.inputs[0].type.__class__([shape[0], shape[1]])


def _signed_log1p_convert(scope, operator, container):
    from skl2onnx.algebra.onnx_ops import OnnxAbs, OnnxAdd, OnnxLog, OnnxMul, OnnxSign
    from skl2onnx.common.data_types import guess_numpy_type

    opv = container.target_opset
    x = operator.inputs[0]
    one = np.array([1.0], dtype=guess_numpy_type(x.type))
    magnitude = OnnxLog(OnnxAdd(OnnxAbs(x, op_version=opv), one, op_version=opv), op_version=opv)
    out = OnnxMul(OnnxSign(x, op_version=opv), magnitude, op_version=opv,
                  output_names=operator.outputs[:1])
    out.add_to(scope, container)


def make_pipeline(dimensions: int, seed: int) -> Pipeline:
    return Pipeline([
        ("log", SignedLog1p()),
        ("scale", StandardScaler()),
        ("pca", PCA(n_components=dimensions, svd_solver="full", random_state=seed)),
    ])


def export_onnx(pipeline: Pipeline, n_features: int, dimensions: int):
    """The pipeline converted in float64 (as scikit-learn computes it), between a Cast of the
    float32 input to double and a Cast of the embedding to float32. skl2onnx alone cannot
    mix the two: with a float input, PCA's constants come out float32 behind a double step."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import to_onnx, update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType

    update_registered_converter(SignedLog1p, "MlDefenderSignedLog1p", _signed_log1p_shape, _signed_log1p_convert)
    inner_in, inner_out = f"{INPUT_NAME}_f64", f"{OUTPUT_NAME}_f64"
    onx = to_onnx(
        pipeline,
        initial_types=[(inner_in, DoubleTensorType([None, n_features]))],
        final_types=[(inner_out, DoubleTensorType([None, dimensions]))],
        target_opset=ONNX_TARGET_OPSET,
    )
    graph = onx.graph
    if [i.name for i in graph.input] != [inner_in] or [o.name for o in graph.output] != [inner_out]:
        fail(f"converter produced inputs {[i.name for i in graph.input]} and outputs {[o.name for o in graph.output]}")
    nodes = [helper.make_node("Cast", [INPUT_NAME], [inner_in], name="cast_input_to_double", to=TensorProto.DOUBLE)]
    nodes += list(graph.node)
    nodes.append(helper.make_node("Cast", [inner_out], [OUTPUT_NAME], name="cast_embedding_to_float",
                                  to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", dimensions]))
    seen, unique = set(), []
    for entry in onx.opset_import:
        if entry.domain not in seen:
            seen.add(entry.domain)
            unique.append((entry.domain, entry.version))
    del onx.opset_import[:]
    for domain, version in unique:
        entry = onx.opset_import.add()
        entry.domain, entry.version = domain, version
    onnx.checker.check_model(onx, full_check=True)
    inputs = [i.name for i in onx.graph.input]
    outputs = [o.name for o in onx.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        fail(f"exported graph has inputs {inputs} and outputs {outputs}, expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    return onx


def ort_session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def embed(session, X: np.ndarray, batch: int = 8192) -> np.ndarray:
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: X[i : i + batch]})[0] for i in range(0, len(X), batch)]
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def check_onnx(session, pipeline: Pipeline, X: np.ndarray, dimensions: int) -> dict:
    inputs = [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]
    outputs = [(o.name, o.type, list(o.shape)) for o in session.get_outputs()]
    if len(inputs) != 1 or inputs[0][:2] != (INPUT_NAME, "tensor(float)"):
        fail(f"embedder.onnx: unexpected inputs {inputs}")
    if len(outputs) != 1 or outputs[0][:2] != (OUTPUT_NAME, "tensor(float)"):
        fail(f"embedder.onnx: unexpected outputs {outputs}")
    got = embed(session, X)
    expected = pipeline.transform(X)  # float64
    if got.shape != (len(X), dimensions) or got.dtype != np.float32:
        fail(f"embedder.onnx: output {got.dtype} {got.shape}, expected float32 {(len(X), dimensions)}")
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    if not diff < ONNX_TOLERANCE:
        fail(f"embedder.onnx: embeddings differ from scikit-learn by {diff} (> {ONNX_TOLERANCE})")
    log(f"embedder.onnx: ONNX Runtime matches scikit-learn on {len(X)} rows (max |d| {diff:.2e})")
    return {"rows": int(len(X)), "max_abs_difference": float(f"{diff:.3e}"), "tolerance": ONNX_TOLERANCE,
            "reference": "scikit-learn Pipeline.transform (float64) on the same float32 rows"}


# ---------------------------------------------------------------------------------------
# Usefulness


def choose_queries(scenarios: np.ndarray, in_query_run: np.ndarray, per_scenario: int, seed: int) -> np.ndarray:
    chosen = []
    for index, name in enumerate(sorted(set(scenarios[in_query_run].tolist()))):
        rows = np.flatnonzero(in_query_run & (scenarios == name))
        if len(rows) > per_scenario:
            rng = np.random.default_rng([seed, index])
            rows = np.sort(rng.choice(rows, size=per_scenario, replace=False))
        chosen.append(rows)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def nearest(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact k-NN by squared L2 (as a FAISS flat index), ties broken by database order."""
    db = database.astype(np.float64)
    q = queries.astype(np.float64)
    db_norms = (db * db).sum(axis=1)
    out = []
    for start in range(0, len(q), 512):
        block = q[start : start + 512]
        d = (block * block).sum(axis=1)[:, None] - 2.0 * block @ db.T + db_norms[None, :]
        out.append(np.argsort(d, axis=1, kind="stable")[:, :k])
    return np.vstack(out)


def usefulness(E: np.ndarray, frame, in_db: np.ndarray, query_rows: np.ndarray, k: int) -> dict:
    scenario = frame["scenario"].to_numpy()
    label = frame["label"].to_numpy()
    category = frame["category"].to_numpy()
    db_rows = np.flatnonzero(in_db)
    nn = db_rows[nearest(E[db_rows], E[query_rows], k)]
    q_scenario, q_label = scenario[query_rows], label[query_rows]
    same = scenario[nn] == q_scenario[:, None]
    same_category = category[nn] == category[query_rows][:, None]
    benign = label[nn] == "benign"
    db_count = {name: int((scenario[db_rows] == name).sum()) for name in sorted(set(scenario.tolist()))}
    table = {}
    for name in sorted(set(q_scenario.tolist())):
        m = q_scenario == name
        attainable = min(k, db_count.get(name, 0)) / k
        p10 = float(same[m].mean())
        entry = {
            "label": str(q_label[m][0]),
            "queries": int(m.sum()),
            "database_flows": db_count.get(name, 0),
            "precision_at_1": r6(same[m][:, 0].mean()),
            f"precision_at_{k}": r6(p10),
            f"attainable_precision_at_{k}": r6(attainable),
            f"precision_at_{k}_of_attainable": r6(p10 / attainable) if attainable else None,
            f"same_category_at_{k}": r6(same_category[m].mean()),
        }
        if entry["label"] == "attack":
            entry[f"benign_share_at_{k}"] = r6(benign[m].mean())
            # The test: the scenario's other flows come ahead of benign ones. Among the
            # first min(k, flows of the scenario in the database) neighbours, the benign share.
            first = max(1, min(k, db_count.get(name, 0)))
            entry["benign_share_in_first_attainable"] = r6(benign[m][:, :first].mean())
            entry["queries_with_a_benign_neighbour"] = r6(benign[m].any(axis=1).mean())
        else:
            entry[f"attack_share_at_{k}"] = r6((~benign[m]).mean())
        table[name] = entry
    attack = q_label == "attack"
    summary = {
        f"macro_precision_at_{k}": r6(np.mean([e[f"precision_at_{k}"] for e in table.values()])),
        f"macro_precision_at_{k}_of_attainable": r6(np.mean(
            [e[f"precision_at_{k}_of_attainable"] for e in table.values() if e[f"precision_at_{k}_of_attainable"] is not None])),
        f"attack_queries_benign_share_at_{k}": r6(benign[attack].mean()) if attack.any() else None,
        "attack_queries_with_a_benign_neighbour": r6(benign[attack].any(axis=1).mean()) if attack.any() else None,
        "attack_scenarios_benign_share_in_first_attainable_max": r6(max(
            e["benign_share_in_first_attainable"] for e in table.values() if e["label"] == "attack"))
        if attack.any() else None,
        f"benign_queries_attack_share_at_{k}": r6((~benign[~attack]).mean()) if (~attack).any() else None,
    }
    return {"summary": summary, "per_scenario": table}


# ---------------------------------------------------------------------------------------
# Main


def fit_and_export(X: np.ndarray, dimensions: int, seed: int):
    pipeline = make_pipeline(dimensions, seed).fit(X.astype(np.float64))
    onx = export_onnx(pipeline, X.shape[1], dimensions)
    return pipeline, onx, onx.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["data/lab"], help="data folder(s), searched for *.csv and *.csv.gz")
    parser.add_argument("--out", default="models", help="output folder for embedder.onnx and embedder.json")
    parser.add_argument("--dimensions", type=int, default=DIMENSIONS, help="embedding size D (PCA components)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--queries", type=int, default=QUERIES_PER_SCENARIO, help="query flows per scenario")
    parser.add_argument("--version", default="1", help="model version written into the metadata")
    args = parser.parse_args()

    # Every flow (no row cap: the largest file has 5,000 flows).
    data = train.load(args.data, row_cap=10**12, seed=args.seed, protocol=False)
    X, frame, features = data.X, data.frame, data.features
    runs = sorted(set(frame["run"].tolist()))
    log(f"{len(X)} flows, {len(features)} features, runs {runs}")
    if DATABASE_RUN not in runs or QUERY_RUN not in runs:
        fail(f"usefulness needs runs {DATABASE_RUN} and {QUERY_RUN} (found {runs})")
    if not 1 <= args.dimensions <= len(features):
        fail(f"--dimensions must be between 1 and {len(features)}")
    in_db = (frame["run"] == DATABASE_RUN).to_numpy()
    in_query = (frame["run"] == QUERY_RUN).to_numpy()
    query_rows = choose_queries(frame["scenario"].to_numpy(), in_query, args.queries, args.seed)

    # The shipped encoder: fitted on every flow of every run.
    pipeline, onx, blob = fit_and_export(X, args.dimensions, args.seed)
    _, _, blob_again = fit_and_export(X, args.dimensions, args.seed)
    if blob_again != blob:
        fail("a second fit and export in the same process gave different bytes")
    session = ort_session(blob)
    check = check_onnx(session, pipeline, X, args.dimensions)
    E = embed(session, X)
    shipped = usefulness(E, frame, in_db, query_rows, K)

    # The same recipe fitted on the database run only: the query run is then out of sample.
    db_only = make_pipeline(args.dimensions, args.seed).fit(X[in_db].astype(np.float64))
    out_of_sample = usefulness(db_only.transform(X.astype(np.float64)), frame, in_db, query_rows, K)

    # The choice of D: explained variance of the full spectrum, and retrieval per candidate
    # against no reduction at all (the 92 scaled features).
    scaled = Pipeline([("log", SignedLog1p()), ("scale", StandardScaler())]).fit(X.astype(np.float64))
    Z = scaled.transform(X.astype(np.float64))
    spectrum = PCA(svd_solver="full", random_state=args.seed).fit(Z).explained_variance_ratio_
    cumulative = np.cumsum(spectrum)
    candidates = {}
    for d in sorted(set(DIMENSION_CANDIDATES + [args.dimensions])):
        if d > len(features):
            continue
        E_d = make_pipeline(d, args.seed).fit(X.astype(np.float64)).transform(X.astype(np.float64))
        result = usefulness(E_d, frame, in_db, query_rows, K)["summary"]
        candidates[str(d)] = {"explained_variance": r6(cumulative[d - 1]), **result}
    candidates["none (all scaled features)"] = {
        "explained_variance": 1.0, **usefulness(Z, frame, in_db, query_rows, K)["summary"]}
    smallest = int(np.searchsorted(cumulative, MIN_EXPLAINED_VARIANCE) + 1)

    sha = hashlib.sha256(blob).hexdigest()
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "embedder.onnx")
    with open(onnx_path, "wb") as handle:
        handle.write(blob)
    rows_per_scenario: dict[str, dict[str, int]] = {}
    for (name, run), count in frame.groupby(["scenario", "run"], sort=True).size().items():
        rows_per_scenario.setdefault(name, {})[run] = int(count)
    scale = pipeline.named_steps["scale"]
    pca = pipeline.named_steps["pca"]
    meta = {
        "name": "embedder",
        "version": args.version,
        "kind": "embedding",
        "dimensions": args.dimensions,
        "features": features,
        "feature_rule": "the 76 CIC columns from 'Flow Duration' through 'Idle Min', then every column starting "
                        "'src_', in CSV header order (as models/train.py without --protocol)",
        "missing": 0.0,
        "sha256": sha,
        "size_bytes": len(blob),
        "onnx": {
            "input": INPUT_NAME,
            "input_shape": ["N", len(features)],
            "outputs": [OUTPUT_NAME],
            OUTPUT_NAME: f"float32 [N, {args.dimensions}]: compare with squared L2 distance (FAISS IndexFlatL2); "
                         "not normalised",
            "operators": sorted({node.op_type for node in onx.graph.node}),
            "opset": {entry.domain or "": entry.version for entry in onx.opset_import},
            "target_opset": ONNX_TARGET_OPSET,
            "ir_version": onx.ir_version,
            "check": check,
        },
        "training": {
            "data": [train.display_path(path) for path in args.data],
            "files": [{k: f[k] for k in ("file", "run", "scenarios", "flows", "used", "sha256")} for f in data.files],
            "rows": int(len(X)),
            "rows_per_scenario": rows_per_scenario,
            "empty_cells_read_as_missing": data.missing_cells,
            "seed": args.seed,
            "supervision": "none: labels and scenarios are used only for the usefulness evaluation",
            "algorithm": "scikit-learn Pipeline: SignedLog1p (sign(x)*log(1+|x|)), StandardScaler, PCA; in ONNX between Cast to double and Cast to float32",
            "hyperparameters": {
                "dimensions": args.dimensions,
                "pca_svd_solver": "full",
                "pca_whiten": False,
                "scaler": "StandardScaler(with_mean=True, with_std=True)",
                "precision": "float64 inside the graph (the input cast to double, the embedding cast to float32)",
                "l2_normalised": False,
            },
            "explained_variance": r6(pca.explained_variance_ratio_.sum()),
            "explained_variance_per_component": [r6(v) for v in pca.explained_variance_ratio_],
            "constant_features": [features[i] for i in np.flatnonzero(scale.var_ == 0)],
            "dimension_choice": {
                "rule": f"the smallest D in {DIMENSION_CANDIDATES} that keeps >= {MIN_EXPLAINED_VARIANCE:.0%} of the "
                        "variance of the scaled features, if retrieval is as good as without reduction",
                "smallest_d_for_rule": smallest,
                "candidates": candidates,
            },
        },
        "usefulness": {
            "method": f"exact k-NN (k={K}, squared L2 on the embeddings) with every flow of {DATABASE_RUN} as the "
                      f"database and up to {args.queries} flows per scenario of {QUERY_RUN} as queries (seeded "
                      "sample), so a query never finds itself; precision = share of the k neighbours from the "
                      "query's scenario; attainable = min(k, flows of that scenario in the database)/k",
            "database": {"run": DATABASE_RUN, "flows": int(in_db.sum())},
            "queries": int(len(query_rows)),
            "shipped_encoder": shipped,
            "encoder_fitted_on_database_run_only": out_of_sample,
        },
        "created_by": "models/train_embedder.py",
        "library_versions": train.library_versions(),
    }
    train.write_json(os.path.join(args.out, "embedder.json"), meta)
    log(f"wrote {onnx_path} ({len(blob)} bytes, sha256 {sha[:16]}...) and embedder.json")
    print_summary(meta)


def print_summary(meta: dict) -> None:
    t = meta["training"]
    print(f"embedder: {meta['dimensions']} dimensions from {len(meta['features'])} features, "
          f"explained variance {t['explained_variance']}, {meta['size_bytes']} bytes, sha256 {meta['sha256']}")
    print("| D | explained variance | macro P@10 | of attainable | attack queries: benign share | "
          "with a benign neighbour |")
    print("|---|---|---|---|---|---|")
    for d, c in t["dimension_choice"]["candidates"].items():
        print(f"| {d} | {c['explained_variance']} | {c['macro_precision_at_10']} | "
              f"{c['macro_precision_at_10_of_attainable']} | {c['attack_queries_benign_share_at_10']} | "
              f"{c['attack_queries_with_a_benign_neighbour']} |")
    for title, key in (("shipped encoder", "shipped_encoder"),
                       (f"encoder fitted on {DATABASE_RUN} only", "encoder_fitted_on_database_run_only")):
        u = meta["usefulness"][key]
        print(f"{title}: {json.dumps(u['summary'])}")
        print("| scenario | label | queries | db flows | P@1 | P@10 | attainable | of attainable | same category "
              "| benign share (attack) / attack share (benign) | attack queries with a benign neighbour "
              "| benign share in first attainable |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, e in u["per_scenario"].items():
            other = e.get("benign_share_at_10", e.get("attack_share_at_10"))
            print(f"| {name} | {e['label']} | {e['queries']} | {e['database_flows']} | {e['precision_at_1']} | "
                  f"{e['precision_at_10']} | {e['attainable_precision_at_10']} | {e['precision_at_10_of_attainable']} | "
                  f"{e['same_category_at_10']} | {other} | {e.get('queries_with_a_benign_neighbour', '')} | "
                  f"{e.get('benign_share_in_first_attainable', '')} |")


if __name__ == "__main__":
    main()
