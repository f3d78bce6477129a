//! Sparkle on a Cortex-M4F: a small conv-net slice with the core's fast kernels on static
//! buffers and caller scratch (no allocator is linked), each result checked against the core's
//! f64 oracle run on the target. Prints `PASS`/`FAIL` per case and exits 0 only if all pass.
//! Also reports the stack high-water mark and instructions per multiply-accumulate (QEMU
//! `-icount shift=0`: one instruction per nanosecond of virtual time, counted by SysTick).
#![no_std]
#![no_main]

use core::ptr::addr_of_mut;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::check::{max_error, tolerance};
use sparkle_core::conv::reference::conv2d_reference_f64;
use sparkle_core::gemm::driver::Sequential;
use sparkle_core::gemm::reference::{gemm_reference, gemm_reference_f64};
use sparkle_core::quant::conv::{qconv2d_reference, qconv2d_scratch_len, qconv2d_with, QConv};
use sparkle_core::quant::driver::{qgemm_scratch_len, qgemm_with, QWorkspace};
use sparkle_core::quant::reference::qgemm_reference;
use sparkle_core::quant::{quantize_multiplier, OutputStage, PerChannel, QGemm};
use sparkle_core::{Activation, Bias, Conv2dParams, Epilogue, MatMut, MatRef, Padding, TensorLayout, WeightLayout};

#[cfg(feature = "sweep")]
mod sweep;

/// Largest tensor of the demo cases (16 channels x 16 x 16).
const MAX: usize = 16 * 16 * 16;
/// Scratch for the fast kernels (checked against the core's query at run time).
const SCRATCH: usize = 4096;

static mut INPUT: [f32; MAX] = [0.0; MAX];
static mut WEIGHT: [f32; MAX] = [0.0; MAX];
static mut BIAS: [f32; 16] = [0.0; 16];
static mut OUTPUT: [f32; MAX] = [0.0; MAX];
static mut TRUTH: [f64; MAX] = [0.0; MAX];
static mut SCRATCH_BUF: [f32; SCRATCH] = [0.0; SCRATCH];
static mut Q_INPUT: [i8; MAX] = [0; MAX];
static mut Q_WEIGHT: [i8; MAX] = [0; MAX];
static mut Q_OUTPUT: [i8; MAX] = [0; MAX];
static mut Q_TRUTH: [i8; MAX] = [0; MAX];
static mut Q_SCRATCH: [i32; SCRATCH] = [0; SCRATCH];

/// The int8 buffers.
struct QBuffers {
    input: &'static mut [i8; MAX],
    weight: &'static mut [i8; MAX],
    output: &'static mut [i8; MAX],
    truth: &'static mut [i8; MAX],
    scratch: &'static mut [i32; SCRATCH],
}

/// A xorshift32 stream from `seed`: the test data of every case.
fn xorshift(seed: u32) -> impl Iterator<Item = u32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    core::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some(x)
    })
}

fn qfill(buf: &mut [i8], seed: u32) {
    for (v, x) in buf.iter_mut().zip(xorshift(seed)) {
        *v = (x >> 24) as u8 as i8;
    }
}

/// The TFLite/CMSIS-NN output stage of the int8 cases: input scale 0.02, per-channel weight
/// scales, output scale 0.1 as Q31 multipliers and shifts, output offset -5, ReLU (clamped at the
/// offset).
fn fixed_stage<'a>(k: usize, mult: &'a mut [i32; 16], shift: &'a mut [i32; 16]) -> Option<OutputStage<'a>> {
    for j in 0..k {
        let w_scale = 0.004 * (1 + j % 3) as f64;
        let (m, s) = quantize_multiplier(0.02 * w_scale / 0.1).ok()?;
        mult[j] = m;
        shift[j] = s;
    }
    Some(OutputStage::fixed(PerChannel::Channel(&mult[..k]), PerChannel::Channel(&shift[..k]), -5, -5, 127))
}

/// An int8 conv case (s8 x s8 -> s8, TFLite's fixed-point stage, per-channel): the fast path
/// timed in instructions, checked bit for bit against the integer oracle on the target.
fn qconv_case(name: &str, p: Conv2dParams, b: &mut QBuffers, syst: &mut cortex_m::peripheral::SYST) -> bool {
    let ok = (|| {
        let g = p.validate().ok()?;
        let kernel = QKernel::best();
        let need = qconv2d_scratch_len(kernel, &g, 1).ok()?;
        if need > SCRATCH || g.input_len() > MAX || g.output_len() > MAX || g.weight_len() > MAX || p.k > 16 {
            hprintln!("{}: buffers too small (scratch {})", name, need);
            return None;
        }
        qfill(&mut b.input[..g.input_len()], 6);
        qfill(&mut b.weight[..g.weight_len()], 7);
        let bias: [i32; 16] = core::array::from_fn(|j| (j as i32 - 8) * 97);
        let (mut mult, mut shift) = ([0; 16], [0; 16]);
        let stage = fixed_stage(p.k, &mut mult, &mut shift)?;
        let op = QConv {
            input: &b.input[..g.input_len()],
            x_zero: -3,
            weight: &b.weight[..g.weight_len()],
            w_zero: PerChannel::Tensor(0),
            bias: Some(&bias[..p.k]),
        };
        let out = &mut b.output[..g.output_len()];
        let scratch = &mut b.scratch[..need];
        let mut result = Ok(());
        let fast = instructions(syst, || {
            if !STUB_INT8 {
                result = qconv2d_with(&g, &op, &stage, out, QWorkspace { kernel, exec: &Sequential, scratch });
            }
        });
        result.ok()?;
        qconv2d_reference(&g, &op, &stage, &mut b.truth[..g.output_len()]).ok()?;
        let macs = (g.flops() / 2.0) as u32;
        hprintln!(
            "  {} on {}: {}.{:02} instructions per MAC",
            name,
            kernel.id(),
            fast * 40 / macs,
            fast * 4000 / macs % 100
        );
        Some(b.output[..g.output_len()] == b.truth[..g.output_len()])
    })()
    .unwrap_or(false);
    hprintln!("{} int8 {}", if ok { "PASS" } else { "FAIL" }, name);
    ok
}

/// An int8 GEMM case (a fully connected layer: s8 x s8 -> s8, fixed point), bit for bit against
/// the integer oracle.
fn qgemm_case(m: usize, n: usize, k: usize, b: &mut QBuffers, syst: &mut cortex_m::peripheral::SYST) -> bool {
    let ok = (|| {
        let kernel = QKernel::best();
        let need = qgemm_scratch_len(kernel, m, n, k, 1).ok()?;
        if need > SCRATCH || m * k > MAX || k * n > MAX || m * n > MAX || n > 16 {
            return None;
        }
        qfill(&mut b.input[..m * k], 8);
        qfill(&mut b.weight[..k * n], 9);
        let bias: [i32; 16] = core::array::from_fn(|j| (j as i32 - 5) * 211);
        let (mut mult, mut shift) = ([0; 16], [0; 16]);
        let stage = fixed_stage(n, &mut mult, &mut shift)?;
        let op = QGemm {
            a: MatRef::row_major(&b.input[..m * k], m, k).ok()?,
            a_zero: 4,
            b: MatRef::row_major(&b.weight[..k * n], k, n).ok()?,
            b_zero: PerChannel::Tensor(0),
            bias: Some(&bias[..n]),
        };
        let scratch = &mut b.scratch[..need];
        let out = &mut b.output[..m * n];
        let mut result = Ok(sparkle_core::GemmDims { m: 0, n: 0, k: 0 });
        let fast = instructions(syst, || {
            result = MatMut::row_major(out, m, n).and_then(|c| match STUB_INT8 {
                true => Ok(sparkle_core::GemmDims { m, n, k }),
                false => qgemm_with(&op, &stage, c, QWorkspace { kernel, exec: &Sequential, scratch }),
            });
        });
        result.ok()?;
        qgemm_reference(&op, &stage, MatMut::row_major(&mut b.truth[..m * n], m, n).ok()?).ok()?;
        let macs = (m * n * k) as u32;
        hprintln!(
            "  int8 gemm {}x{}x{} on {}: {}.{:02} instructions per MAC",
            m,
            n,
            k,
            kernel.id(),
            fast * 40 / macs,
            fast * 4000 / macs % 100
        );
        Some(b.output[..m * n] == b.truth[..m * n])
    })()
    .unwrap_or(false);
    hprintln!("{} int8 gemm {}x{}x{}", if ok { "PASS" } else { "FAIL" }, m, n, k);
    ok
}

/// All the static buffers, borrowed once.
struct Buffers {
    input: &'static mut [f32; MAX],
    weight: &'static mut [f32; MAX],
    bias: &'static mut [f32; 16],
    output: &'static mut [f32; MAX],
    truth: &'static mut [f64; MAX],
    scratch: &'static mut [f32; SCRATCH],
}

fn fill(buf: &mut [f32], seed: u32) {
    for (v, x) in buf.iter_mut().zip(xorshift(seed)) {
        *v = (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
    }
}

/// Runs one conv case: the fast path, timed in instructions, against the f64 oracle.
fn conv_case(name: &str, p: Conv2dParams, b: &mut Buffers, syst: &mut cortex_m::peripheral::SYST) -> bool {
    let ok = (|| {
        let g = p.validate().ok()?;
        let need = sparkle_core::conv::scratch_len(&g).ok()?;
        if need > SCRATCH || g.input_len() > MAX || g.output_len() > MAX || g.weight_len() > MAX {
            hprintln!("{}: buffers too small (scratch {})", name, need);
            return None;
        }
        let (x, w, bias) = (&mut b.input[..g.input_len()], &mut b.weight[..g.weight_len()], &mut b.bias[..p.k]);
        fill(x, 1);
        fill(w, 2);
        fill(bias, 3);
        let epi = Epilogue::activation(Activation::Relu).with_bias(bias);
        let y = &mut b.output[..g.output_len()];
        let scratch = &mut b.scratch[..];
        let mut result = Ok(());
        let fast = instructions(syst, || {
            if !STUB_F32 {
                result = sparkle_core::conv::conv2d(&g, x, w, &epi, y, scratch);
            }
        });
        result.ok()?;
        let macs = (g.flops() / 2.0) as u32;
        hprintln!(
            "  {} on {}: {}.{:02} instructions per MAC",
            name,
            sparkle_core::arch::Kernel::best().id(),
            fast * 40 / macs,
            fast * 4000 / macs % 100
        );
        let truth = &mut b.truth[..g.output_len()];
        conv2d_reference_f64(&g, x, w, &epi, truth).ok()?;
        let (err, _) = max_error(y, truth);
        Some(err <= tolerance(g.gemm_dims().2))
    })()
    .unwrap_or(false);
    hprintln!("{} {}", if ok { "PASS" } else { "FAIL" }, name);
    ok
}

/// Instructions for `f`, from SysTick ticks under `-icount shift=0` (25 MHz SysTick: 40
/// instructions a tick).
fn instructions(syst: &mut cortex_m::peripheral::SYST, f: impl FnOnce()) -> u32 {
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();
    let start = cortex_m::peripheral::SYST::get_current();
    profile_begin();
    f();
    profile_end();
    let end = cortex_m::peripheral::SYST::get_current();
    syst.disable_counter();
    start.wrapping_sub(end) & 0x00FF_FFFF
}

/// Marks the start of a timed region for `profile.sh`, which counts only the instructions
/// between a call of this and of [`profile_end`] (a few instructions of the count each).
#[inline(never)]
fn profile_begin() {
    // SAFETY: a no-op (distinct from `profile_end`'s, so the two are not merged).
    unsafe { core::arch::asm!("nop", options(nomem, nostack, preserves_flags)) };
}

/// Marks the end of a timed region (see [`profile_begin`]).
#[inline(never)]
fn profile_end() {
    // SAFETY: a no-op.
    unsafe { core::arch::asm!("nop", "nop", options(nomem, nostack, preserves_flags)) };
}

/// GEMM `m x n x k` with every part of the microkernel's contract the square cases leave out: odd
/// and unit `k`, ragged edge tiles, `alpha` and `beta` (C read or not), a bias per row or
/// column, and vector and scalar activations; kind 3, a column-major A (packed) with nothing but
/// the product (the kernel's columns of tiles on packed panels). Checked against the f64 oracle.
fn ragged_gemm_case(m: usize, n: usize, k: usize, epi_kind: usize, b: &mut Buffers) -> bool {
    let ok = (|| {
        let need = sparkle_core::gemm::scratch_len(m, n, k).ok()?;
        if need > SCRATCH || m * k > MAX || k * n > MAX || m * n > MAX || m.max(n) > b.bias.len() {
            return None;
        }
        fill(&mut b.input[..m * k], 6);
        fill(&mut b.weight[..k * n], 7);
        fill(&mut b.bias[..], 8);
        fill(&mut b.output[..m * n], 9);
        let a = match epi_kind {
            3 => MatRef::col_major(&b.input[..m * k], m, k).ok()?,
            _ => MatRef::row_major(&b.input[..m * k], m, k).ok()?,
        };
        let bm = MatRef::row_major(&b.weight[..k * n], k, n).ok()?;
        // Kinds 2 and 3 neither read C nor scale: tiles go straight to C, then only the
        // activation (kind 2) finishes them.
        let (alpha, beta) = if epi_kind >= 2 { (1.0, 0.0) } else { (1.5, 0.5) };
        let epi = match epi_kind {
            0 => Epilogue { bias: Bias::Col(&b.bias[..n]), activation: Activation::Relu6 },
            1 => Epilogue { bias: Bias::Row(&b.bias[..m]), activation: Activation::Tanh },
            2 => Epilogue { bias: Bias::None, activation: Activation::Relu },
            _ => Epilogue::NONE,
        };
        let c0 = MatRef::row_major(&b.output[..m * n], m, n).ok()?;
        gemm_reference_f64(alpha, a, bm, beta, Some(c0), &epi, &mut b.truth[..m * n]).ok()?;
        let c = MatMut::row_major(&mut b.output[..m * n], m, n).ok()?;
        if !STUB_F32 {
            sparkle_core::gemm::gemm(alpha, a, bm, beta, c, &epi, &mut b.scratch[..]).ok()?;
        }
        let (err, _) = max_error(&b.output[..m * n], &b.truth[..m * n]);
        Some(err <= tolerance(k))
    })()
    .unwrap_or(false);
    hprintln!(
        "{} gemm {}x{}x{}, alpha, beta, bias, activation {}",
        if ok { "PASS" } else { "FAIL" },
        m,
        n,
        k,
        epi_kind
    );
    ok
}

/// GEMM `n x n x n`: fast kernel and naive reference timed in instructions, checked against f64.
fn gemm_case(m: usize, n: usize, k: usize, b: &mut Buffers, syst: &mut cortex_m::peripheral::SYST) -> bool {
    let ok = (|| {
        let need = sparkle_core::gemm::scratch_len(m, n, k).ok()?;
        if need > SCRATCH || m * k > MAX || k * n > MAX || m * n > MAX {
            return None;
        }
        fill(&mut b.input[..m * k], 4);
        fill(&mut b.weight[..k * n], 5);
        let a = MatRef::row_major(&b.input[..m * k], m, k).ok()?;
        let bm = MatRef::row_major(&b.weight[..k * n], k, n).ok()?;
        let scratch = &mut b.scratch[..];
        let out = &mut b.output[..m * n];
        let mut result = Ok(sparkle_core::GemmDims { m: 0, n: 0, k: 0 });
        let fast = instructions(syst, || {
            result = MatMut::row_major(out, m, n).and_then(|c| match STUB_F32 {
                true => Ok(sparkle_core::GemmDims { m, n, k }),
                false => sparkle_core::gemm::gemm(1.0, a, bm, 0.0, c, &Epilogue::NONE, scratch),
            });
        });
        result.ok()?;
        gemm_reference_f64(1.0, a, bm, 0.0, None, &Epilogue::NONE, &mut b.truth[..m * n]).ok()?;
        let (err, _) = max_error(&b.output[..m * n], &b.truth[..m * n]);
        let naive = instructions(syst, || {
            if let Ok(c) = MatMut::row_major(&mut b.output[..m * n], m, n) {
                let _ = gemm_reference(1.0, a, bm, 0.0, c, &Epilogue::NONE);
            }
        });
        let macs = (m * n * k) as u32;
        hprintln!(
            "  gemm {}x{}x{} on {}: {} instructions, {}.{:02} per MAC (naive reference loop: {}.{:02})",
            m,
            n,
            k,
            sparkle_core::arch::Kernel::best().id(),
            fast * 40,
            fast * 40 / macs,
            fast * 4000 / macs % 100,
            naive * 40 / macs,
            naive * 4000 / macs % 100
        );
        Some(err <= tolerance(k))
    })()
    .unwrap_or(false);
    hprintln!("{} gemm {}x{}x{}", if ok { "PASS" } else { "FAIL" }, m, n, k);
    ok
}

/// Fills `words` 32-bit words below the current stack pointer with a pattern.
fn paint_stack(words: usize) -> *const u32 {
    let sp = cortex_m::register::msp::read() as *mut u32;
    // SAFETY: the words below the current stack pointer are unused stack RAM (4 MiB of RAM, the
    // stack at its top); nothing else runs (no interrupts are enabled), and 64 bytes of margin
    // are left below this frame.
    unsafe {
        let low = sp.sub(words);
        for i in 0..words - 16 {
            low.add(i).write_volatile(0xDEAD_BEEF);
        }
        low
    }
}

/// Bytes of stack used since [`paint_stack`]: the first overwritten word from the bottom.
fn stack_used(low: *const u32, words: usize, sp: usize) -> usize {
    // SAFETY: reads the painted region again (still unused stack RAM).
    let first = (0..words).find(|&i| unsafe { low.add(i).read_volatile() } != 0xDEAD_BEEF).unwrap_or(words);
    sp - (low as usize + first * 4)
}

/// The kernel sets whose calls this build leaves out (`SPARKLE_FIRMWARE_STUB=f32`, `int8` or
/// `all` at build time): the calls then compute nothing and their cases FAIL. `measure.sh` sizes
/// each set as the firmware's text with only that set's calls minus its text with none, so that
/// core code the compiler inlined into the cases' functions counts too.
const STUB: &str = match option_env!("SPARKLE_FIRMWARE_STUB") {
    Some(s) => s,
    None => "",
};
const STUB_F32: bool = same(STUB, "f32") || same(STUB, "all");
const STUB_INT8: bool = same(STUB, "int8") || same(STUB, "all");

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the cases of a set (`f32`, `int8`) or one int8 case by name (`int8 gemm`, or a conv
/// case's name as `main` lists it) run: all of them, unless the build names one
/// (`SPARKLE_FIRMWARE_ONLY=int8` at build time), as `profile.sh` does to trace one case; `gemm 16`,
/// `gemm 32`, `gemm 64`, `gemv 64` or `gemv 256` runs that f32 GEMM alone.
fn wanted(set_or_name: &str) -> bool {
    option_env!("SPARKLE_FIRMWARE_ONLY").is_none_or(|only| only == set_or_name)
}

#[entry]
fn main() -> ! {
    // Words of stack painted for the high-water mark (the sweep keeps its buffers on the stack).
    const PAINT: usize = if cfg!(feature = "sweep") { 16384 } else { 4096 };
    let sp = cortex_m::register::msp::read() as usize;
    let low = paint_stack(PAINT);
    // SAFETY: main runs once, single-threaded, and is the only user of these statics.
    let mut b = unsafe {
        Buffers {
            input: &mut *addr_of_mut!(INPUT),
            weight: &mut *addr_of_mut!(WEIGHT),
            bias: &mut *addr_of_mut!(BIAS),
            output: &mut *addr_of_mut!(OUTPUT),
            truth: &mut *addr_of_mut!(TRUTH),
            scratch: &mut *addr_of_mut!(SCRATCH_BUF),
        }
    };
    let Some(mut core) = cortex_m::Peripherals::take() else {
        debug::exit(debug::EXIT_FAILURE);
        loop {
            cortex_m::asm::wfi();
        }
    };
    core.SYST.set_clock_source(SystClkSource::Core);
    hprintln!("sparkle-firmware: Cortex-M4F, kernel {}", sparkle_core::arch::Kernel::best().id());
    #[cfg(feature = "sweep")]
    {
        // SAFETY: as above; the int8 scratch is used only here in this build.
        let all = sweep::run(unsafe { &mut *addr_of_mut!(Q_SCRATCH) });
        hprintln!("stack high-water mark: {} bytes", stack_used(low, PAINT, sp));
        debug::exit(if all { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    }
    let conv = Conv2dParams::new(1, 8, 16, 16, 8, 3, 3).pad(Padding::uniform(1));
    let mut all = true;
    // Sets or cases run (none where `SPARKLE_FIRMWARE_ONLY` names nothing: a failure).
    let mut ran = 0;
    let f32_convs = [
        ("conv 3x3 + bias + ReLU, 8->8 @16x16", conv),
        ("depthwise 3x3, 8 ch @16x16", conv.groups(8)),
        ("1x1 8->16 @16x16", Conv2dParams::new(1, 8, 16, 16, 16, 1, 1)),
        ("conv 3x3 s2 NHWC 8->8 @16x16", conv.stride(2, 2).layout(TensorLayout::Nhwc)),
        (
            "conv 3x3 s2 NHWC KRSC 8->8 @16x16",
            conv.stride(2, 2).layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc),
        ),
    ];
    for (name, p) in f32_convs {
        if wanted("f32") || wanted(name) {
            ran += 1;
            all &= conv_case(name, p, &mut b, &mut core.SYST);
        }
    }
    // The timed GEMMs, each also alone (`profile.sh "gemm 32"`); two GEMVs (a linear layer at
    // batch 1) on the streamed kernel.
    for (name, (m, n, k)) in [
        ("gemm 16", (16, 16, 16)),
        ("gemm 32", (32, 32, 32)),
        ("gemm 64", (64, 64, 64)),
        ("gemv 64", (1, 64, 64)),
        ("gemv 256", (1, 256, 16)),
    ] {
        if wanted("f32") || wanted(name) {
            ran += 1;
            all &= gemm_case(m, n, k, &mut b, &mut core.SYST);
        }
    }
    if wanted("f32") {
        ran += 1;
        all &= ragged_gemm_case(13, 11, 7, 0, &mut b);
        all &= ragged_gemm_case(9, 14, 1, 1, &mut b);
        all &= ragged_gemm_case(16, 12, 10, 2, &mut b);
        all &= ragged_gemm_case(15, 12, 9, 3, &mut b);
        // Row-major A and B go to the kernel's register tiles (B read in place) up to 32^3
        // multiply-adds and from four columns; past either, to the blocked driver.
        all &= ragged_gemm_case(15, 14, 160, 0, &mut b);
        all &= ragged_gemm_case(6, 3, 5, 1, &mut b);
        // At most three rows over a row-major B of twelve columns or more: the streamed kernel,
        // strips of twelve (the last moved left), A column-major too; 3x7x5 is narrower (tiles).
        all &= ragged_gemm_case(1, 15, 13, 0, &mut b);
        all &= ragged_gemm_case(3, 7, 5, 1, &mut b);
        all &= ragged_gemm_case(1, 12, 9, 2, &mut b);
        all &= ragged_gemm_case(2, 13, 6, 3, &mut b);
        all &= ragged_gemm_case(2, 16, 0, 0, &mut b);
        // An empty reduction: the Arm kernel's own any-stride loop, into C directly (whole
        // tiles, neither beta nor alpha) and through its local tile (edge tiles, beta).
        all &= ragged_gemm_case(8, 8, 0, 2, &mut b);
        all &= ragged_gemm_case(5, 6, 0, 0, &mut b);
    }
    // SAFETY: as above; these statics are used only here.
    let mut q = unsafe {
        QBuffers {
            input: &mut *addr_of_mut!(Q_INPUT),
            weight: &mut *addr_of_mut!(Q_WEIGHT),
            output: &mut *addr_of_mut!(Q_OUTPUT),
            truth: &mut *addr_of_mut!(Q_TRUTH),
            scratch: &mut *addr_of_mut!(Q_SCRATCH),
        }
    };
    // The first four in CMSIS-NN's layouts (NHWC images, KRSC = OHWI weights), as
    // `benches/cmsis` runs them, so that the instruction counts compare the same work; then the
    // first three as PyTorch lays them out (NCHW, KCRS), where Sparkle moves the channels itself.
    let cmsis = |p: Conv2dParams| p.layout(TensorLayout::Nhwc).weight_layout(WeightLayout::Krsc);
    let pointwise = Conv2dParams::new(1, 8, 16, 16, 16, 1, 1);
    let int8_convs = [
        ("conv 3x3 8->8 @16x16", cmsis(conv)),
        ("depthwise 3x3, 8 ch @16x16", cmsis(conv.groups(8))),
        ("1x1 8->16 @16x16", cmsis(pointwise)),
        ("conv 3x3 s2 NHWC 8->8 @16x16", cmsis(conv.stride(2, 2))),
        ("conv 3x3 8->8 @16x16 NCHW", conv),
        ("depthwise 3x3, 8 ch @16x16 NCHW", conv.groups(8)),
        ("1x1 8->16 @16x16 NCHW", pointwise),
    ];
    for (name, p) in int8_convs {
        if wanted("int8") || wanted(name) {
            ran += 1;
            all &= qconv_case(name, p, &mut q, &mut core.SYST);
        }
    }
    if wanted("int8") || wanted("int8 gemm") {
        ran += 1;
        all &= qgemm_case(16, 16, 64, &mut q, &mut core.SYST);
    }
    if ran == 0 {
        hprintln!("no case is named `{}`", option_env!("SPARKLE_FIRMWARE_ONLY").unwrap_or(""));
        all = false;
    }
    hprintln!("stack high-water mark: {} bytes", stack_used(low, PAINT, sp));
    debug::exit(if all { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}
