#!/usr/bin/env python3
"""PyTorch's quantized linear (fbgemm/oneDNN on x86) beside `sparkle bench gemm --dtypes int8`:
the same op, u8 activations (zero point 3) x s8 weights (zero point 0) -> u8, per-tensor scales,
no bias, timed as the best of repeated runs after a warm-up, GOPS = 2*m*n*k / time. Also
torch.mm in f32 (MKL) for the f32 column.

    python3 benches/quant/torch_qlinear.py --threads 1 --shapes 64,256,512,1024,3136x64x576
"""
import argparse, time
import torch


def shape(s):
    p = [int(x) for x in s.split("x")]
    return (p[0], p[0], p[0]) if len(p) == 1 else tuple(p)


def best(f, budget=0.5):
    f()
    t0 = time.perf_counter()
    n, best_t = 0, float("inf")
    while time.perf_counter() - t0 < budget or n < 3:
        s = time.perf_counter()
        f()
        best_t = min(best_t, time.perf_counter() - s)
        n += 1
    return best_t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default="64,256,512,1024,3136x64x576")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}, {args.threads} thread(s)")
    print(f"{'shape (MxNxK)':<20} {'torch-int8':>12} {'torch-f32':>12}")
    for s in args.shapes.split(","):
        m, n, k = shape(s)
        x = torch.rand(m, k)
        w = torch.rand(n, k) - 0.5
        lin = torch.ao.nn.quantized.Linear(k, n, bias_=False)
        lin.set_weight_bias(torch.quantize_per_tensor(w, 0.01, 0, torch.qint8), None)
        lin.scale, lin.zero_point = 0.5, 128
        xq = torch.quantize_per_tensor(x, 0.02, 3, torch.quint8)
        ops = 2.0 * m * n * k
        with torch.no_grad():
            tq = best(lambda: lin(xq))
            wt = w.t().contiguous()
            tf = best(lambda: torch.mm(x, wt))
        print(f"{m}x{n}x{k:<12} {ops / tq / 1e9:>12.1f} {ops / tf / 1e9:>12.1f}")


if __name__ == "__main__":
    main()
