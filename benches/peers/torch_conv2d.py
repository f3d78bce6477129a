# PyTorch CPU conv2d (oneDNN) + ReLU on a pre-padded input: argv = layers JSON, seconds, threads.
# Run by `cargo run --release -p sparkle-benches --bin peers`, which passes the arguments and
# reads one JSON list of GFLOPS from stdout.
import json, sys, time
import torch
layers, budget, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = []
with torch.no_grad():
    for n, c, h, w, k, r, s, sh, sw, pt, pl, pb, pr, dh, dw, groups, flops in layers:
        x = torch.randn(n, c, h, w); wt = torch.randn(k, c // groups, r, s); b = torch.randn(k)
        x = torch.nn.functional.pad(x, (pl, pr, pt, pb))
        f = lambda: torch.relu(torch.nn.functional.conv2d(x, wt, b, (sh, sw), 0, (dh, dw), groups))
        f()
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
            t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t); runs += 1
        out.append(flops / best / 1e9)
print(json.dumps(out))
