#!/usr/bin/env python3
"""Bit-exactness of `sparkle gemm --requant onnx` against ONNX Runtime's CPU kernels.

Builds QLinearMatMul (and MatMulInteger) models with random operands, zero points and scales,
runs them in onnxruntime, runs the same through `sparkle gemm`, and counts differing elements.
Not part of CI (it needs onnxruntime): run by hand,

    python3 -m venv /tmp/ortvenv && /tmp/ortvenv/bin/pip install onnxruntime onnx numpy
    /tmp/ortvenv/bin/python benches/quant/ort_check.py target/release/sparkle

With --golden DIR it also writes the cases and ORT's outputs as .npy files, keeping only the
operand pairs ORT computes exactly (u8 x u8, s8 x s8): its u8 x s8 kernels on CPUs without VNNI
sum pairs with `vpmaddubsw`, which saturates, so they differ from the exact result (measured:
3337 of 40460 elements on an AVX2 Zen 5 VM, onnxruntime 1.32.0; Sparkle 0). The checked-in set
under sparkle-std/tests/data/ort_qgemm/ came from
`ort_check.py target/release/sparkle --golden sparkle-std/tests/data/ort_qgemm --cases 24 --max-dim 24`,
and the conv set under sparkle-std/tests/data/ort_qconv/ (QLinearConv and ConvInteger: groups,
strides, dilations, asymmetric pads, per-channel weights, int32 bias) from
`ort_check.py target/release/sparkle --op conv --golden sparkle-std/tests/data/ort_qconv --cases 16`.
"""
import argparse, os, subprocess, sys, tempfile
import numpy as np
import onnx
from onnx import TensorProto, helper
import onnxruntime as ort

NP = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def model(m, k, n, ta, tb, per_channel, integer):
    A = helper.make_tensor_value_info("a", NP[ta], [m, k])
    B = helper.make_tensor_value_info("b", NP[tb], [k, n])
    if integer:
        inputs = [A, B,
                  helper.make_tensor_value_info("a_zp", NP[ta], []),
                  helper.make_tensor_value_info("b_zp", NP[tb], [n] if per_channel else [])]
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["y"])
        Y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    else:
        inputs = [A,
                  helper.make_tensor_value_info("a_scale", TensorProto.FLOAT, []),
                  helper.make_tensor_value_info("a_zp", NP[ta], []),
                  B,
                  helper.make_tensor_value_info("b_scale", TensorProto.FLOAT, [n] if per_channel else []),
                  helper.make_tensor_value_info("b_zp", NP[tb], [n] if per_channel else []),
                  helper.make_tensor_value_info("y_scale", TensorProto.FLOAT, []),
                  helper.make_tensor_value_info("y_zp", NP[ta], [])]
        node = helper.make_node("QLinearMatMul", [i.name for i in inputs], ["y"])
        Y = helper.make_tensor_value_info("y", NP[ta], [m, n])
    g = helper.make_graph([node], "g", inputs, [Y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def conv_model(xs, ws, ta, tb, per_channel, integer, attrs):
    k = ws[0]
    X = helper.make_tensor_value_info("x", NP[ta], list(xs))
    W = helper.make_tensor_value_info("w", NP[tb], list(ws))
    if integer:
        inputs = [X, W, helper.make_tensor_value_info("x_zp", NP[ta], []),
                  helper.make_tensor_value_info("w_zp", NP[tb], [k] if per_channel else [])]
        node = helper.make_node("ConvInteger", [i.name for i in inputs], ["y"], **attrs)
        Y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    else:
        inputs = [X,
                  helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, []),
                  helper.make_tensor_value_info("x_zp", NP[ta], []),
                  W,
                  helper.make_tensor_value_info("w_scale", TensorProto.FLOAT, [k] if per_channel else []),
                  helper.make_tensor_value_info("w_zp", NP[tb], [k] if per_channel else []),
                  helper.make_tensor_value_info("y_scale", TensorProto.FLOAT, []),
                  helper.make_tensor_value_info("y_zp", NP[ta], []),
                  helper.make_tensor_value_info("bias", TensorProto.INT32, [k])]
        node = helper.make_node("QLinearConv", [i.name for i in inputs], ["y"], **attrs)
        Y = helper.make_tensor_value_info("y", NP[ta], None)
    g = helper.make_graph([node], "g", inputs, [Y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def conv_cases(args, rng, tmp):
    """QLinearConv / ConvInteger: returns (cases run, elements, differing from ORT, off exact, ORT off exact)."""
    ran = total = bad = inexact = ort_inexact = 0
    for case in range(args.cases):
        ta = [np.uint8, np.int8][case % 2]
        tb = ta  # the pairs ORT computes exactly (see the module docs)
        integer = case % 4 == 3
        # ORT's ConvInteger takes a per-tensor weight zero point only.
        per_channel = case % 3 != 0 and not integer
        info = np.iinfo
        groups = [1, 1, 2][case % 3]
        cg, kg = (int(v) for v in rng.integers(1, 5, 2))
        c, k = cg * groups, kg * groups
        h, w = (int(v) for v in rng.integers(3, 10, 2))
        r, s = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        pads = [int(v) for v in rng.integers(0, 3, 4)]  # top, left, bottom, right
        if (h + pads[0] + pads[2] < dh * (r - 1) + 1) or (w + pads[1] + pads[3] < dw * (s - 1) + 1):
            continue
        n = int(rng.integers(1, 3))
        x = rng.integers(info(ta).min, info(ta).max + 1, (n, c, h, w)).astype(ta)
        wt = rng.integers(info(tb).min, info(tb).max + 1, (k, cg, r, s)).astype(tb)
        x_zp = np.array(rng.integers(info(ta).min, info(ta).max + 1), dtype=ta)
        w_zp = rng.integers(info(tb).min, info(tb).max + 1, k if per_channel else ()).astype(tb)
        attrs = dict(strides=[sh, sw], dilations=[dh, dw], group=groups, pads=[pads[0], pads[1], pads[2], pads[3]])
        feeds = {"x": x, "w": wt, "x_zp": x_zp, "w_zp": w_zp}
        if not integer:
            x_scale = np.float32(rng.uniform(0.001, 0.05))
            w_scale = rng.uniform(0.001, 0.05, k if per_channel else ()).astype(np.float32)
            y_scale = np.float32(rng.uniform(0.2, 4.0))
            y_zp = np.array(rng.integers(info(ta).min, info(ta).max + 1), dtype=ta)
            bias = rng.integers(-2000, 2000, k).astype(np.int32)
            feeds.update(x_scale=np.array(x_scale, dtype=np.float32), w_scale=w_scale,
                         y_scale=np.array(y_scale, dtype=np.float32), y_zp=y_zp, bias=bias)
        try:
            sess = ort.InferenceSession(conv_model(x.shape, wt.shape, ta, tb, per_channel, integer, attrs).SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            want = sess.run(None, feeds)[0]
        except Exception as e:
            print(f"conv case {case}: ORT refused {ta.__name__} integer={integer}: {str(e)[:120]}")
            continue
        d = os.path.join(args.golden, f"conv{case:02}") if args.golden else os.path.join(tmp, f"conv{case:02}")
        os.makedirs(d, exist_ok=True)
        np.save(f"{d}/x.npy", x)
        np.save(f"{d}/w.npy", wt)
        np.save(f"{d}/want.npy", want)
        flags = ["--stride", f"{sh},{sw}", "--dilation", f"{dh},{dw}", "--groups", str(groups),
                 "--pad", ",".join(str(p) for p in pads), "--x-zero-point", str(int(x_zp))]
        if per_channel:
            np.save(f"{d}/w_zero_point.npy", w_zp)
            flags += ["--w-zero-point", f"{d}/w_zero_point.npy"]
        else:
            flags += ["--w-zero-point", str(int(w_zp))]
        if not integer:
            np.save(f"{d}/bias.npy", bias)
            flags += ["--bias", f"{d}/bias.npy", "--x-scale", repr(float(x_scale)), "--y-scale", repr(float(y_scale)),
                      "--y-zero-point", str(int(y_zp))]
            if per_channel:
                np.save(f"{d}/w_scale.npy", w_scale)
                flags += ["--w-scale", f"{d}/w_scale.npy"]
            else:
                flags += ["--w-scale", repr(float(w_scale))]
        with open(f"{d}/args.txt", "w") as f:
            f.write("\n".join(x.replace(d + "/", "") for x in flags) + "\n")
        cmd = [args.sparkle, "conv2d", "--input", f"{d}/x.npy", "--weight", f"{d}/w.npy", "--output", f"{tmp}/got.npy",
               "--device", "cpu"] + flags
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        got = np.load(f"{tmp}/got.npy")
        # The exact result: int64 accumulators from a direct convolution on zero-point-shifted,
        # zero-padded operands, then MLAS's f32 requantization.
        xs = np.pad(x.astype(np.int64) - int(x_zp), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        wz = w_zp.astype(np.int64).reshape(-1, 1, 1, 1) if per_channel else int(w_zp)
        ws = wt.astype(np.int64) - wz
        ho, wo = want.shape[2], want.shape[3]
        acc = np.zeros((n, k, ho, wo), dtype=np.int64)
        for kk in range(k):
            grp = kk // kg
            for ry in range(r):
                for sx in range(s):
                    patch = xs[:, grp * cg:(grp + 1) * cg, ry * dh: ry * dh + sh * (ho - 1) + 1: sh, sx * dw: sx * dw + sw * (wo - 1) + 1: sw]
                    acc[:, kk] += np.einsum("nchw,c->nhw", patch, ws[kk, :, ry, sx])
        if integer:
            exact = acc
        else:
            acc += bias.reshape(1, -1, 1, 1)
            mult = (np.float32(x_scale) * w_scale.astype(np.float32)) / np.float32(y_scale)
            mult = mult.reshape(1, -1, 1, 1) if per_channel else mult
            xf = acc.astype(np.float32) * np.asarray(mult, dtype=np.float32)
            exact = np.clip(np.rint(xf).astype(np.int64) + int(y_zp), info(ta).min, info(ta).max)
        diff = int((got.astype(np.int64) != want.astype(np.int64)).sum())
        off = int((got.astype(np.int64) != exact).sum())
        ort_off = int((want.astype(np.int64) != exact).sum())
        ran += 1
        total += want.size
        bad += diff
        inexact += off
        ort_inexact += ort_off
        if diff or off:
            print(f"conv case {case}: {ta.__name__} {x.shape} w{wt.shape} {attrs} integer={integer}: "
                  f"{diff} differ from ORT; Sparkle off exact {off}, ORT off exact {ort_off}")
    return ran, total, bad, inexact, ort_inexact


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sparkle")
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--golden")
    ap.add_argument("--max-dim", type=int, default=70)
    ap.add_argument("--op", choices=["gemm", "conv"], default="gemm")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    total = bad = ran = inexact = ort_inexact = 0
    tmp = tempfile.mkdtemp()
    if args.op == "conv":
        ran, total, bad, inexact, ort_inexact = conv_cases(args, rng, tmp)
        print(f"{ran} conv cases, {total} elements: {bad} differ from onnxruntime {ort.__version__}; "
              f"Sparkle differs from the exact result at {inexact}, onnxruntime at {ort_inexact}")
        sys.exit(1 if inexact or bad else 0)
    for case in range(args.cases):
        ta = [np.uint8, np.int8][case % 2]
        tb = [np.int8, np.uint8][(case // 2) % 2]
        integer = case % 5 == 4
        per_channel = case % 3 != 0
        m, k, n = (int(x) for x in rng.integers(1, args.max_dim, 3))
        info = lambda t: np.iinfo(t)
        a = rng.integers(info(ta).min, info(ta).max + 1, (m, k)).astype(ta)
        b = rng.integers(info(tb).min, info(tb).max + 1, (k, n)).astype(tb)
        a_zp = np.array(rng.integers(info(ta).min, info(ta).max + 1), dtype=ta)
        b_zp = rng.integers(info(tb).min, info(tb).max + 1, n if per_channel else ()).astype(tb)
        feeds = {"a": a, "b": b, "a_zp": a_zp, "b_zp": b_zp}
        if not integer:
            a_scale = np.float32(rng.uniform(0.001, 0.05))
            b_scale = rng.uniform(0.001, 0.05, n if per_channel else ()).astype(np.float32)
            y_scale = np.float32(rng.uniform(0.5, 8.0))
            y_zp = np.array(rng.integers(info(ta).min, info(ta).max + 1), dtype=ta)
            feeds.update(a_scale=np.array(a_scale, dtype=np.float32), b_scale=b_scale,
                         y_scale=np.array(y_scale, dtype=np.float32), y_zp=y_zp)
        try:
            sess = ort.InferenceSession(model(m, k, n, ta, tb, per_channel, integer).SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            want = sess.run(None, feeds)[0]
        except Exception as e:  # a type pair this ORT build lacks
            print(f"case {case}: ORT refused {ta.__name__}x{tb.__name__} {'MatMulInteger' if integer else 'QLinearMatMul'}: {str(e)[:100]}")
            continue
        d = os.path.join(args.golden, f"case{case:02}") if args.golden else os.path.join(tmp, f"case{case:02}")
        os.makedirs(d, exist_ok=True)
        np.save(f"{d}/a.npy", a)
        np.save(f"{d}/b.npy", b)
        np.save(f"{d}/want.npy", want)
        cmd = [args.sparkle, "gemm", "--a", f"{d}/a.npy", "--b", f"{d}/b.npy", "--output", f"{tmp}/got.npy",
               "--device", "cpu", "--x-zero-point", str(int(a_zp))]
        if per_channel:
            np.save(f"{d}/w_zero_point.npy", b_zp)
            cmd += ["--w-zero-point", f"{d}/w_zero_point.npy"]
        else:
            cmd += ["--w-zero-point", str(int(b_zp))]
        if not integer:
            cmd += ["--x-scale", repr(float(a_scale)), "--y-scale", repr(float(y_scale)), "--y-zero-point", str(int(y_zp))]
            if per_channel:
                np.save(f"{d}/w_scale.npy", b_scale)
                cmd += ["--w-scale", f"{d}/w_scale.npy"]
            else:
                cmd += ["--w-scale", repr(float(b_scale))]
        with open(f"{d}/args.txt", "w") as f:
            # The flags after `--device cpu`, per-channel files relative to the case's folder.
            f.write("\n".join(x.replace(d + "/", "") for x in cmd[10:]) + "\n")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        got = np.load(f"{tmp}/got.npy")
        # The exact result in numpy: int64 accumulators, then MLAS's f32 requantization.
        acc = (a.astype(np.int64) - int(a_zp)) @ (b.astype(np.int64) - b_zp.astype(np.int64))
        if integer:
            exact = acc.astype(np.int32)
        else:
            mult = (np.float32(a_scale) * b_scale.astype(np.float32)) / np.float32(y_scale)
            x = acc.astype(np.float32) * mult.astype(np.float32)
            exact = np.clip(np.rint(x).astype(np.int64) + int(y_zp), info(ta).min, info(ta).max)
        diff = int((got.astype(np.int64) != want.astype(np.int64)).sum())
        if args.golden and (ta is np.uint8) != (tb is np.uint8):
            # ORT's u8 x s8 path saturates on CPUs without VNNI: not a golden reference.
            import shutil
            shutil.rmtree(d)
        off_exact = int((got.astype(np.int64) != exact.astype(np.int64)).sum())
        ort_off = int((want.astype(np.int64) != exact.astype(np.int64)).sum())
        total += want.size
        bad += diff
        inexact += off_exact
        ort_inexact += ort_off
        ran += 1
        if diff or off_exact:
            print(f"case {case}: {ta.__name__}x{tb.__name__} {m}x{k}x{n} per_channel={per_channel} integer={integer}: "
                  f"{diff} of {want.size} differ from ORT; Sparkle off exact: {off_exact}, ORT off exact: {ort_off}")
    print(f"{ran} cases, {total} elements: {bad} differ from onnxruntime {ort.__version__}; "
          f"Sparkle differs from the exact result at {inexact}, onnxruntime at {ort_inexact}")
    sys.exit(1 if inexact else 0)


if __name__ == "__main__":
    main()
