"""cuBLAS / cuDNN reference figures for `sparkle bench ... --device vulkan`, on the same GPU in the
same session: fp32 with TF32 off, CUDA-event timing, best of repeated runs after warm-up.
Prints one JSON record a line, in the format of `sparkle bench --json`."""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True


def best_ms(f, reps=20):
    f()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            f()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / reps)
    return best


dev = torch.device("cuda")
name = torch.cuda.get_device_name(0)
for n in [int(x) for x in sys.argv[1].split(",")]:
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    c = torch.empty(n, n, device=dev)
    ms = best_ms(lambda: torch.mm(a, b, out=c))
    print(json.dumps({"op": "gemm", "shape": [n, n, n], "impl": "cublas", "device": name, "gflops": round(2 * n**3 / ms / 1e6, 1)}))

# ResNet-50 layer set (and MobileNet's depthwise) as in `sparkle bench conv2d --layers resnet50`.
layers = [
    ("conv1 3->64 7x7 s2 @224", 3, 224, 64, 7, 2, 3, 1),
    ("64->64 3x3 @56", 64, 56, 64, 3, 1, 1, 1),
    ("64->256 1x1 @56", 64, 56, 256, 1, 1, 0, 1),
    ("128->128 3x3 @28", 128, 28, 128, 3, 1, 1, 1),
    ("256->256 3x3 @14", 256, 14, 256, 3, 1, 1, 1),
    ("512->512 3x3 @7", 512, 7, 512, 3, 1, 1, 1),
    ("256->1024 1x1 @14", 256, 14, 1024, 1, 1, 0, 1),
    ("dw 32 3x3 @112", 32, 112, 32, 3, 1, 1, 32),
]
for batch in [int(x) for x in sys.argv[2].split(",")]:
    for layer, c, hw, k, r, s, p, g in layers:
        x = torch.randn(batch, c, hw, hw, device=dev)
        w = torch.randn(k, c // g, r, r, device=dev)
        bias = torch.randn(k, device=dev)
        f = lambda: torch.relu(torch.nn.functional.conv2d(x, w, bias, s, p, 1, g))
        ms = best_ms(f)
        ho = (hw + 2 * p - r) // s + 1
        flops = 2 * batch * k * ho * ho * (c // g) * r * r
        print(json.dumps({"op": "conv2d", "layer": layer, "batch": batch, "impl": "cudnn", "device": name,
                          "gflops": round(flops / ms / 1e6, 1), "us": round(ms * 1000, 1)}))
