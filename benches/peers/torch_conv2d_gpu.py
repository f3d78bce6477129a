"""cuDNN (through PyTorch) beside `sparkle bench conv2d --device vulkan --dtypes f16,bf16,f32`:
conv2d + ReLU on the first CUDA device, TFLOPS per layer and type, the same layer set (`sparkle
bench`'s ResNet-50 layers plus MobileNet's depthwise 3x3, NCHW) at `--batch`.

Like with like: f16 and bf16 input and weights with an f32 result (the output converted to f32
inside the timed region, as Sparkle writes f32; cuDNN accumulates in f32 for these); f32 with
TF32 off. Each layer is warmed up for at least 0.2 s (a GPU idling at a low clock needs about
0.1 s of sustained work to reach its full one), then timed with CUDA events.

    python3 torch_conv2d_gpu.py --batch 32 --dtypes f16,f32
"""
import argparse

import torch
import torch.nn.functional as F

from cuda_timing import seconds_per_call

# name, C, H, W, K, R, S, stride, pad, groups (as sparkle's demo layer set).
LAYERS = [
    ("conv1 3->64 7x7 s2 @224", 3, 224, 224, 64, 7, 7, 2, 3, 1),
    ("64->64 3x3 @56", 64, 56, 56, 64, 3, 3, 1, 1, 1),
    ("64->256 1x1 @56", 64, 56, 56, 256, 1, 1, 1, 0, 1),
    ("128->128 3x3 @28", 128, 28, 28, 128, 3, 3, 1, 1, 1),
    ("256->256 3x3 @14", 256, 14, 14, 256, 3, 3, 1, 1, 1),
    ("512->512 3x3 @7", 512, 7, 7, 512, 3, 3, 1, 1, 1),
    ("256->1024 1x1 @14", 256, 14, 14, 1024, 1, 1, 1, 0, 1),
    ("dw 32 3x3 @112", 32, 112, 112, 32, 3, 3, 1, 1, 32),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtypes", default="f16,f32")
    ap.add_argument("--seconds", type=float, default=0.3)
    a = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    types = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, batch {a.batch}")
    for d in a.dtypes.split(","):
        for name, c, h, w, k, r, s, stride, pad, groups in LAYERS:
            x = torch.randn(a.batch, c, h, w, device=dev).to(types[d])
            wt = torch.randn(k, c // groups, r, s, device=dev).to(types[d])
            f = lambda: F.relu(F.conv2d(x, wt, stride=stride, padding=pad, groups=groups)).float()
            t = seconds_per_call(f, a.seconds)
            ho = (h + 2 * pad - r) // stride + 1
            wo = (w + 2 * pad - s) // stride + 1
            flops = 2.0 * a.batch * k * ho * wo * (c // groups) * r * s
            print(f"cudnn-{d} b{a.batch} {name}: {flops / t / 1e12:.2f} TFLOPS ({t * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
