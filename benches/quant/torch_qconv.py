#!/usr/bin/env python3
"""PyTorch's quantized conv2d + ReLU (fbgemm/oneDNN on x86) beside `sparkle bench conv2d
--dtypes int8`: the same layers (ResNet-50's set at batch 1 and a depthwise layer), u8 input
(zero point 3) x s8 weights (zero point 0) -> u8 with ReLU, per-tensor scales, no bias, best
of repeated runs after a warm-up; GOPS = 2*n*k*ho*wo*(c/groups)*r*s / time. Also the f32 conv +
ReLU (oneDNN) for the f32 column.

Layouts, like for like with Sparkle's `layout=` (input and output in the same layout):
- `--layout nchw` (default): `torch-int8` is NCHW in, NCHW out (`conv(x).contiguous()`).
  PyTorch's quantized conv returns a channels-last tensor for an NCHW input, so its own
  call alone (NCHW in, NHWC out: half the layout work) is printed as `torch-int8-cl-out`;
  sessions up to 39 compared Sparkle's NCHW -> NCHW against that column.
- `--layout nhwc`: the input channels-last, the output as PyTorch leaves it (channels-last).

    python3 benches/quant/torch_qconv.py --threads 1 [--layout nhwc]
"""
import argparse, time
import torch

LAYERS = [  # name, c, h, k, r, stride, pad, groups
    ("conv1 3->64 7x7 s2 @224", 3, 224, 64, 7, 2, 3, 1),
    ("64->64 3x3 @56", 64, 56, 64, 3, 1, 1, 1),
    ("64->256 1x1 @56", 64, 56, 256, 1, 1, 0, 1),
    ("128->128 3x3 @28", 128, 28, 128, 3, 1, 1, 1),
    ("256->256 3x3 @14", 256, 14, 256, 3, 1, 1, 1),
    ("512->512 3x3 @7", 512, 7, 512, 3, 1, 1, 1),
    ("256->1024 1x1 @14", 256, 14, 1024, 1, 1, 0, 1),
    ("dw 32 3x3 @112", 32, 112, 32, 3, 1, 1, 32),
]


def best(f, budget=0.4):
    f()
    t0 = time.perf_counter()
    n, b = 0, float("inf")
    while time.perf_counter() - t0 < budget or n < 3:
        s = time.perf_counter()
        f()
        b = min(b, time.perf_counter() - s)
        n += 1
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw")
    args = ap.parse_args()
    nchw = args.layout == "nchw"
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}, {args.threads} thread(s)")
    print(f"layout {args.layout} in and out")
    extra = f" {'torch-int8-cl-out':>17}" if nchw else ""
    print(f"{'layer':<28} {'torch-int8':>12}{extra} {'torch-f32':>12}")
    for name, c, h, k, r, stride, pad, groups in LAYERS:
        n = args.batch
        x = torch.rand(n, c, h, h)
        w = torch.rand(k, c // groups, r, r) - 0.5
        conv = torch.ao.nn.intrinsic.quantized.ConvReLU2d(c, k, r, stride=stride, padding=pad, groups=groups, bias=False)
        conv.set_weight_bias(torch.quantize_per_tensor(w, 0.01, 0, torch.qint8), None)
        conv.scale, conv.zero_point = 0.5, 128
        xq = torch.quantize_per_tensor(x, 0.02, 3, torch.quint8)
        if not nchw:
            xq = xq.contiguous(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        fconv = torch.nn.Conv2d(c, k, r, stride=stride, padding=pad, groups=groups, bias=False)
        ho = (h + 2 * pad - r) // stride + 1
        ops = 2.0 * n * k * ho * ho * (c // groups) * r * r
        with torch.no_grad():
            if nchw:
                tq = best(lambda: conv(xq).contiguous())
                tcl = best(lambda: conv(xq))
            else:
                fconv = fconv.to(memory_format=torch.channels_last)
                tq = best(lambda: conv(xq))
            tf = best(lambda: torch.relu(fconv(x)))
        extra = f" {ops / tcl / 1e9:>17.1f}" if nchw else ""
        print(f"{name:<28} {ops / tq / 1e9:>12.1f}{extra} {ops / tf / 1e9:>12.1f}")


if __name__ == "__main__":
    main()
