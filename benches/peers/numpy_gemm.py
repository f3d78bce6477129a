# numpy (OpenBLAS in the PyPI wheel) GEMM f32: argv = shapes JSON ([m, n, k, b_transposed]),
# seconds per shape. With b_transposed, B is the transpose of an n x k array.
# Run by `cargo run --release -p sparkle-benches --bin peers`, which passes the arguments and
# reads one JSON list of GFLOPS from stdout.
import json, sys, time
import numpy as np
shapes, budget = json.loads(sys.argv[1]), float(sys.argv[2])
out = []
for m, n, k, bt in shapes:
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((n, k), dtype=np.float32).T if bt else rng.random((k, n), dtype=np.float32)
    c = a @ b
    best, start, runs = float("inf"), time.perf_counter(), 0
    while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
        t = time.perf_counter(); np.matmul(a, b, out=c); best = min(best, time.perf_counter() - t); runs += 1
    out.append(2.0 * m * n * k / best / 1e9)
print(json.dumps(out))
