"""The anchor of bench/ingest.sh: the embedder alone through ONNX Runtime from Python,
on the same rows the Rust side embedded, in batches of 1,024, one intra-op thread.

usage: ingest_ort.py ROWS.f32 MODEL.onnx
"""
import sys, time
import numpy as np
import onnxruntime as ort

BATCH = 1024

def main():
    rows_path, model = sys.argv[1], sys.argv[2]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    features = session.get_inputs()[0].shape[1]
    rows = np.fromfile(rows_path, dtype="<f4").reshape(-1, features)
    session.run(None, {"input": rows[:BATCH]})  # warm-up, untimed
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        session.run(None, {"input": rows[start:start + BATCH]})
    took = time.perf_counter() - started
    print(f"embed: {len(rows)} events in {took:.2f} s = {len(rows) / took:.0f} events/s "
          f"(onnxruntime {ort.__version__})")

main()
