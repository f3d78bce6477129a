# torch.mm (MKL) GEMM f32: argv = shapes JSON ([m, n, k, b_transposed]), seconds per shape,
# threads. With b_transposed, B is the transpose of an n x k tensor (F.linear's weight).
# Run by `cargo run --release -p sparkle-benches --bin peers`, which passes the arguments and
# reads one JSON list of GFLOPS from stdout.
import json, sys, time
import torch
shapes, budget, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = []
with torch.no_grad():
    for m, n, k, bt in shapes:
        a = torch.rand(m, k); b = torch.rand(n, k).t() if bt else torch.rand(k, n); c = torch.empty(m, n)
        torch.mm(a, b, out=c)
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
            t = time.perf_counter(); torch.mm(a, b, out=c); best = min(best, time.perf_counter() - t); runs += 1
        out.append(2.0 * m * n * k / best / 1e9)
print(json.dumps(out))
