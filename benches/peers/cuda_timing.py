"""The timing loop of the CUDA peer scripts (torch_matmul_gpu.py, torch_conv2d_gpu.py)."""
import time

import torch


def seconds_per_call(f, budget):
    """Seconds per call of `f` on the current CUDA device: at least 0.2 s of warm-up (a GPU idling
    at a low clock needs about 0.1 s of sustained work to reach its full one), then as many calls
    as fit `budget` seconds (3 to 1000), timed with CUDA events."""
    t0 = time.time()
    while time.time() - t0 < 0.2:
        f()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    f()
    e1.record()
    torch.cuda.synchronize()
    one = e0.elapsed_time(e1) / 1e3
    reps = max(3, min(1000, int(budget / max(one, 1e-6))))
    e0.record()
    for _ in range(reps):
        f()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / 1e3 / reps
