"""cuBLAS (through PyTorch) beside `sparkle bench gemm --device vulkan --dtypes f16,bf16,f32,int8`:
row-major C = A @ B on the first CUDA device, TFLOPS (int8: TOPS) per shape and input type.

Like with like: f16 and bf16 inputs with f32 accumulation (PyTorch's reduced-precision
reductions are switched off) and, like Sparkle's half GEMM, an f32 result (cuBLAS's f16-output
GEMM would write half the bytes; `--half-out` times that instead); f32 without TF32. Each
shape is warmed up for at least 0.2 s (a GPU idling at a low clock needs about 0.1 s of
sustained work to reach its full one), then timed over `--seconds` with CUDA events.

    python3 torch_matmul_gpu.py --shapes 1024,4096,8192 --dtypes f16,bf16,f32

`--precisions highest,high,medium` times the f32 GEMM under each of
`torch.set_float32_matmul_precision`'s settings instead (beside `sparkle bench gemm --device
vulkan --precision ...`; on this GPU cuBLAS computes `high` and `medium` with TF32), and prints each
one's largest error against an f64 GEMM (cuBLAS DGEMM) of the same inputs, uniform in [-1, 1) as
Sparkle's, over 1024 sampled elements, measured as Sparkle measures it: |got - want| / max(1, |want|).
"""
import argparse

import torch

from cuda_timing import seconds_per_call


def shape(s):
    p = [int(x) for x in s.split("x")]
    return (p[0], p[0], p[0]) if len(p) == 1 else tuple(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1024,2048,4096,8192")
    ap.add_argument("--dtypes", default="f16,bf16,f32")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--half-out", action="store_true")
    ap.add_argument("--precisions", default="")
    a = ap.parse_args()
    if a.precisions:
        return precisions(a)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    types = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuBLAS {torch.backends.cudnn.version()}")
    for d in a.dtypes.split(","):
        for s in a.shapes.split(","):
            m, n, k = shape(s)
            if d == "int8":
                # cuBLAS's int8 GEMM (torch._int_mm: s8 x s8 -> s32, no requantization; m > 16,
                # k and n multiples of 8) beside `sparkle bench gemm --device vulkan --dtypes int8`,
                # with B row-major (k x n) and with B stored k-contiguous (the transpose of an
                # n x k matrix: the layout cuBLAS's int8 tensor-core kernels take); both printed.
                A = torch.randint(-128, 128, (m, k), device=dev, dtype=torch.int8)
                for layout, B in [
                    ("", torch.randint(-128, 128, (k, n), device=dev, dtype=torch.int8)),
                    ("-bt", torch.randint(-128, 128, (n, k), device=dev, dtype=torch.int8).t()),
                ]:
                    t = seconds_per_call(lambda: torch._int_mm(A, B), a.seconds)
                    print(f"cublas-int8{layout} {m}x{n}x{k} {2 * m * n * k / t / 1e12:.1f} TOPS")
                continue
            A = torch.randn(m, k, device=dev).to(types[d])
            B = torch.randn(k, n, device=dev).to(types[d])
            if d == "f32" or a.half_out:
                f = lambda: torch.mm(A, B)
            else:
                # f16/bf16 inputs, f32 output: cuBLAS's mixed GEMM (torch.mm's out_dtype, in
                # recent PyTorch); where it is missing, the half-output GEMM, labelled so.
                try:
                    torch.mm(A, B, out_dtype=torch.float32)
                    f = lambda: torch.mm(A, B, out_dtype=torch.float32)
                except TypeError:
                    print(f"note: this torch has no torch.mm(out_dtype=...): {d} timed with a {d} output")
                    f = lambda: torch.mm(A, B)
            t = seconds_per_call(f, a.seconds)
            print(f"cublas-{d}{'-halfout' if a.half_out and d != 'f32' else ''} {m}x{n}x{k} {2 * m * n * k / t / 1e12:.1f} TFLOPS")


def precisions(a):
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    gen = torch.Generator(device=dev).manual_seed(7)
    for s in a.shapes.split(","):
        m, n, k = shape(s)
        A = torch.rand(m, k, device=dev, generator=gen) * 2 - 1
        B = torch.rand(k, n, device=dev, generator=gen) * 2 - 1
        want = torch.mm(A.double(), B.double())
        rows = torch.randint(0, m, (1024,), device=dev, generator=gen)
        cols = torch.randint(0, n, (1024,), device=dev, generator=gen)
        for p in a.precisions.split(","):
            torch.set_float32_matmul_precision(p)
            t = seconds_per_call(lambda: torch.mm(A, B), a.seconds)
            got = torch.mm(A, B).double()[rows, cols]
            w = want[rows, cols]
            err = ((got - w).abs() / w.abs().clamp(min=1.0)).max().item()
            print(f"cublas-f32-{p} {m}x{n}x{k} {2 * m * n * k / t / 1e12:.1f} TFLOPS, max error {err:.2e}")
    torch.set_float32_matmul_precision("highest")


if __name__ == "__main__":
    main()
