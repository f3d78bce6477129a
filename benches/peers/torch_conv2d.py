# PyTorch CPU conv2d (oneDNN) + ReLU: argv = layers JSON, seconds, threads. Each layer is
# [n, c, h, w, k, r, s, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h,
# dilation_w, groups, nhwc, flops]. Symmetric padding is given to the op, as a model calls it
# (oneDNN then pads inside its kernels: 5-18% faster than on a pre-padded input at ResNet-50's
# 3x3 layers on one Zen 4 thread); only padding PyTorch cannot express (top != bottom or
# left != right) is applied to the input first. NHWC layers run channels_last (oneDNN's NHWC).
# Run by `cargo run --release -p sparkle-benches --bin peers`, which passes the arguments and
# reads one JSON list of GFLOPS from stdout.
import json, sys, time
import torch
import torch.nn.functional as F
layers, budget, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = []
with torch.no_grad():
    for n, c, h, w, k, r, s, sh, sw, pt, pl, pb, pr, dh, dw, groups, nhwc, flops in layers:
        x = torch.randn(n, c, h, w); wt = torch.randn(k, c // groups, r, s); b = torch.randn(k)
        if pt == pb and pl == pr:
            pad = (pt, pl)
        else:
            x, pad = F.pad(x, (pl, pr, pt, pb)), (0, 0)
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
            wt = wt.contiguous(memory_format=torch.channels_last)
        f = lambda: torch.relu(F.conv2d(x, wt, b, (sh, sw), pad, (dh, dw), groups))
        f()
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or (time.perf_counter() - start < budget and runs < 1000):
            t = time.perf_counter(); f(); best = min(best, time.perf_counter() - t); runs += 1
        out.append(flops / best / 1e9)
print(json.dumps(out))
