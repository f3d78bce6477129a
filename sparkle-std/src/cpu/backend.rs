//! The threaded CPU backend: the core's GEMM and conv2d drivers with a rayon executor, a
//! thread-count knob, per-thread reusable scratch, and small problems kept on one thread.

use sparkle_core::arch::bf16::BKernel;
use sparkle_core::arch::quant::QKernel;
use sparkle_core::arch::Kernel;
use sparkle_core::bf16::{bf16, gemm_bf16_scratch_len, gemm_bf16_with, BWorkspace};
use sparkle_core::conv::fused::{conv2d_min_scratch_len, conv2d_scratch_len, conv2d_with, running_path};
use sparkle_core::conv::{
    choose_path, conv2d_packed_len, conv2d_packed_scratch_len, conv2d_packed_with, Conv2dPath, PackedConv,
};
use sparkle_core::f16::{check_half, f16, Half, HalfMats};
use sparkle_core::gemm::blocking::Blocking;
use sparkle_core::gemm::driver::{gemm_path, gemm_scratch_len, gemm_with, GemmPath, Workspace};
use sparkle_core::quant::conv::{
    qconv2d_packed_scratch_len, qconv2d_packed_staged_scratch_len, qconv2d_scratch_len, qconv2d_staged_scratch_len,
    qconv2d_with, QConv,
};
use sparkle_core::quant::driver::{qgemm_packed_scratch_len, qgemm_scratch_len, qgemm_with, QWorkspace};
use sparkle_core::quant::packed::{
    qconv2d_packed_with, qconv2d_packed_words, qgemm_packed_with, qgemm_packed_words, QConvPacked, QGemmPacked,
    QPackedConv, QPackedGemm,
};
use sparkle_core::quant::{OutputStage, QElem, QGemm, QOperand};
use sparkle_core::{Conv2d, Epilogue, GemmDims, MatMut, MatRef, Param};

use super::isa::{bgemm_kernel, gemm_kernel, qgemm_kernel, IsaError};
use super::workers::Workers;
use crate::budget::{MemoryBudget, OverBudget, ZeroBits};

thread_local! {
    /// Packing scratch reused across calls on this thread: allocating (and faulting in) a fresh
    /// megabyte per call cost 3-5% at 512^3.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same for the int8 GEMM's `i32` words.
    static QSCRATCH: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same for the bf16 GEMM's packed pairs.
    static BSCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with at least `len` elements of this thread's scratch `key` (a fresh buffer if
/// re-entered), allocated within `budget` and fallibly: a size that does not fit is an error,
/// never an abort.
fn with_scratch<T: ZeroBits, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    budget: MemoryBudget,
    f: impl FnOnce(&mut [T]) -> Result<R, CpuError>,
) -> Result<R, CpuError> {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                *buf = Vec::new();
                *buf = budget.zeros("packing scratch", len)?;
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut budget.zeros("packing scratch", len)?),
    })
}

/// Below this many multiply-adds a second thread costs more than it saves (fork/join and a
/// second packing of A/B; measured with `sparkle bench gemm` on the 2-core AVX-512 machine:
/// 64^3 is faster on one thread, 128^3 on two).
pub const PARALLEL_MIN_FMAS: f64 = 1.0e6;

/// What one depthwise multiply-add costs against one of a GEMM, for [`PARALLEL_MIN_FMAS`]: the
/// depthwise kernel is memory-bound (one core: 5-20 GFLOPS against 100-170 for GEMMs on the H200
/// host's Xeon), so its 0.2-0.9 M multiply-add layers take 0.1-0.4 ms and gain from threads.
pub const DEPTHWISE_FMA_COST: f64 = 16.0;

/// `SPARKLE_BLOCKING=mc,kc,nc[,few1,fewN]` overrides the blocking (for tuning experiments): the
/// few-row slices on one thread and on several ([`Blocking::kc_few_rows`]) default to `kc`, and
/// Winograd's channel thresholds are the rule's ([`Blocking::winograd_min_channels`] 0).
pub fn blocking_override() -> Option<Blocking> {
    let v = std::env::var("SPARKLE_BLOCKING").ok()?;
    let n: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    if n.contains(&0) {
        return None;
    }
    match n[..] {
        [mc, kc, nc] => Some(Blocking::new(mc, kc, nc)),
        [mc, kc, nc, one, several] => Some(Blocking { kc_few_rows: [one, several], ..Blocking::new(mc, kc, nc) }),
        _ => None,
    }
}

/// `kernel`'s blocking on this CPU: `SPARKLE_BLOCKING` if set, else the caches' rule with the
/// slices [`super::tune`] measured (once per CPU, kernel and thread count, then read back).
pub fn blocking_for(kernel: &'static Kernel) -> Blocking {
    blocking_override().unwrap_or_else(|| super::tune::tuning(kernel).apply(super::tune::rule(kernel)))
}

/// A configured CPU backend: which kernel set, which blocking, how many threads.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// The microkernel.
    pub kernel: &'static Kernel,
    /// The int8 GEMM microkernel.
    pub qkernel: &'static QKernel,
    /// The bf16 GEMM microkernel.
    pub bkernel: &'static BKernel,
    /// Cache blocking.
    pub blocking: Blocking,
    /// Upper bound on threads (the rayon pool's size by default). Worker 0 runs on the calling
    /// thread and the others on Sparkle's own threads, which poll for work for 200 µs after each
    /// op; on the rayon pool instead when called from one of its threads, while another thread's
    /// op holds Sparkle's, or past the machine's core count.
    pub threads: usize,
    /// Problems with fewer multiply-adds run on one thread ([`PARALLEL_MIN_FMAS`] by default);
    /// the GEMM's register tiles, which pack nothing, take a worker per eighth of it.
    pub parallel_min_fmas: f64,
    /// Most bytes of scratch one op may allocate (`SPARKLE_MEMORY_BUDGET`, or half the physical
    /// memory, by default).
    pub memory_budget: MemoryBudget,
}

/// Errors of the CPU backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// Shapes, strides, epilogue or scalars rejected by the core.
    #[error("{0}")]
    Core(#[from] sparkle_core::Error),
    /// The requested ISA cannot run here.
    #[error("{0}")]
    Isa(#[source] IsaError),
    /// The op's scratch does not fit the memory budget, or the allocator refused it.
    #[error("{0}")]
    OutOfMemory(#[from] OverBudget),
    /// A setting from the environment is invalid (it says which).
    #[error("{0}")]
    Config(String),
}

impl Cpu {
    /// The detected (or `SPARKLE_ISA`-forced) kernel, blocking from this CPU's caches and
    /// measurements ([`blocking_for`]), all threads, the memory budget from
    /// `SPARKLE_MEMORY_BUDGET` (an invalid value is an error).
    pub fn new() -> Result<Self, CpuError> {
        let budget = MemoryBudget::from_env().map_err(CpuError::Config)?;
        let qkernel = qgemm_kernel().map_err(CpuError::Isa)?;
        let bkernel = bgemm_kernel().map_err(CpuError::Isa)?;
        Ok(Self { memory_budget: budget, qkernel, bkernel, ..Self::with_kernel(gemm_kernel().map_err(CpuError::Isa)?) })
    }

    /// A specific kernel (from [`Kernel::available`] or [`super::isa::kernel_for_isa`]: holding
    /// one proves this CPU runs it), with its blocking on this CPU ([`blocking_for`]: the first
    /// call for a kernel on a new CPU measures for about 0.1-0.3 s, later ones read the result).
    pub fn with_kernel(kernel: &'static Kernel) -> Self {
        Self {
            kernel,
            qkernel: {
                super::isa::detect();
                QKernel::best()
            },
            // The measured choice (`SPARKLE_ISA` honoured); the static best if that fails.
            bkernel: super::isa::bgemm_kernel().unwrap_or_else(|_| BKernel::best()),
            blocking: blocking_for(kernel),
            threads: rayon::current_num_threads(),
            parallel_min_fmas: PARALLEL_MIN_FMAS,
            memory_budget: MemoryBudget::from_env().unwrap_or_else(|_| MemoryBudget::default_for_this_machine()),
        }
    }

    /// The same backend limited to `threads` threads (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Threads actually used for a problem of `fmas` multiply-adds.
    pub fn threads_for(&self, fmas: f64) -> usize {
        if fmas < self.parallel_min_fmas {
            1
        } else {
            self.threads
        }
    }

    /// `output = act(conv2d(input, weight) + bias)`: validated, then the path
    /// [`sparkle_core::conv::choose_path_with`] picks for this CPU's blocking (pointwise GEMM,
    /// depthwise kernel, Winograd, direct, or implicit GEMM; see [`Cpu::conv2d_path`]).
    pub fn conv2d(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &[f32],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), CpuError> {
        let (threads, len) = self.conv2d_plan(g)?;
        with_scratch(&SCRATCH, len, self.memory_budget, |scratch| {
            Ok(conv2d_with(g, input, weight, epi, output, self.workspace(&Workers(threads), scratch))?)
        })
    }

    /// A conv's f32 weights packed once for convs of `g`'s weight shape and path here (see
    /// [`PackedConv::fits`]), for [`Cpu::conv2d_packed`]: the calls then skip preparing the
    /// weights, which the direct conv does per call (512->512 3x3 @7 on one Zen 4 thread: a
    /// fifth of the call). Where `g`'s path reads the weights as given they are kept as given.
    pub fn conv2d_pack(&self, g: &Conv2d, weight: &[f32]) -> Result<PackedConv<Vec<f32>>, CpuError> {
        let (threads, _) = self.conv2d_plan(g)?;
        let len = conv2d_packed_len(g, self.kernel, &self.blocking, threads)?;
        let floats = self.memory_budget.zeros("packed weights", len)?;
        Ok(PackedConv::new(g, weight, (self.kernel, &self.blocking, threads), floats)?)
    }

    /// [`Cpu::conv2d`] with weights packed by [`Cpu::conv2d_pack`]; bit-identical to it. An
    /// error ([`Param::Packed`]) if they were packed for another weight shape or path.
    pub fn conv2d_packed<S: AsRef<[f32]>>(
        &self,
        g: &Conv2d,
        input: &[f32],
        weight: &PackedConv<S>,
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), CpuError> {
        let (threads, len) = self.conv2d_plan(g)?;
        let len =
            if weight.is_packed() { conv2d_packed_scratch_len(g, self.kernel, &self.blocking, threads)? } else { len };
        with_scratch(&SCRATCH, len, self.memory_budget, |scratch| {
            Ok(conv2d_packed_with(g, input, weight, epi, output, self.workspace(&Workers(threads), scratch))?)
        })
    }

    /// The path [`Cpu::conv2d`] runs `g` on here: [`sparkle_core::conv::choose_path_with`]'s for
    /// this CPU's blocking (Winograd only from the channels [`super::tune`] measured), or the
    /// implicit GEMM where this kernel or the memory budget does not run that one (and for a
    /// Winograd geometry whose input or weights are not all finite).
    pub fn conv2d_path(&self, g: &Conv2d) -> Result<Conv2dPath, CpuError> {
        let (threads, len) = self.conv2d_plan(g)?;
        Ok(running_path(g, self.kernel, &self.blocking, threads, len))
    }

    /// [`Cpu::conv2d_path`], or [`choose_path`]'s where that cannot be said (a scratch size past
    /// `usize`): the path that names a run.
    pub(crate) fn conv2d_run_path(&self, g: &Conv2d) -> Conv2dPath {
        self.conv2d_path(g).unwrap_or_else(|_| choose_path(g))
    }

    /// Threads and floats of scratch for `g`: the fastest path's buffers where the budget allows
    /// them, else the implicit GEMM's scratch.
    fn conv2d_plan(&self, g: &Conv2d) -> Result<(usize, usize), CpuError> {
        // A depthwise multiply-add costs about DEPTHWISE_FMA_COST of a GEMM's (memory-bound):
        // counted as such, a 14x14 MobileNet layer is worth threads.
        let fmas = g.flops() / 2.0;
        let work = if choose_path(g) == Conv2dPath::Depthwise { fmas * DEPTHWISE_FMA_COST } else { fmas };
        let threads = self.threads_for(work);
        let len = conv2d_scratch_len(g, self.kernel, &self.blocking, threads)?;
        let len = match self.memory_budget.check("conv2d scratch", len, std::mem::size_of::<f32>()) {
            Ok(_) => len,
            Err(_) => conv2d_min_scratch_len(g, self.kernel, &self.blocking, threads)?,
        };
        Ok((threads, len))
    }

    /// `C <- act(alpha * A * B + beta * C + bias)`.
    pub fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims, CpuError> {
        let fmas = a.rows() as f64 * b.cols() as f64 * a.cols() as f64;
        let path = gemm_path(self.kernel, &a, &b, &c);
        let threads = match path {
            // Register tiles read A and B in place, nothing packed twice: a worker pays from an
            // eighth of the packed path's threshold (GFLOPS one -> two Zen 4 workers: 64^3 108 ->
            // 182, 32^3 93 -> 84; on the H100 host's Xeon four workers ran 64^3 at 110-126
            // against one's 125-141, fourteen 96^3 at 405 against 148), and a part of C each (4
            // rows or 16 columns).
            GemmPath::Tiles { parts } => {
                self.threads.min(parts).min((fmas * 8.0 / self.parallel_min_fmas) as usize).max(1)
            }
            _ => self.threads_for(fmas),
        };
        // Only the packed path reads scratch.
        let len = match path {
            GemmPath::Packed => gemm_scratch_len(self.kernel, &self.blocking, a.rows(), b.cols(), a.cols(), threads)?,
            _ => 0,
        };
        with_scratch(&SCRATCH, len, self.memory_budget, |scratch| {
            Ok(gemm_with(alpha, a, b, beta, c, epi, self.workspace(&Workers(threads), scratch))?)
        })
    }

    /// `C <- out(A * B)` on int8 operands with zero points (see [`sparkle_core::quant`]),
    /// bit-identical to the integer oracle.
    pub fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<GemmDims, CpuError> {
        // Validated before the scratch is sized: a bad op is named as such, not as a size.
        op.check(out, &c)?;
        let (m, n, k) = (op.a.rows(), op.b.cols(), op.a.cols());
        let threads = self.threads_for(m as f64 * n as f64 * k as f64);
        let len = qgemm_scratch_len(self.qkernel, m, n, k, threads)?;
        with_scratch(&QSCRATCH, len, self.memory_budget, |scratch| {
            let ws = QWorkspace { kernel: self.qkernel, exec: &Workers(threads), scratch };
            Ok(qgemm_with(op, out, c, ws)?)
        })
    }

    /// `output = out(conv2d(input, weight) + bias)` on int8 operands with zero points (ONNX
    /// QLinearConv / ConvInteger, see [`sparkle_core::quant::conv`]), bit-identical to the integer
    /// oracle.
    pub fn qconv2d<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConv<'_, X, W>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), CpuError> {
        op.check::<Y>(g, out, output.len())?;
        let threads = self.qconv2d_threads(g);
        // The staged copies (NHWC input, KRSC weights; the padded image of AMX's direct conv)
        // where the budget allows them.
        let len = self.qconv_scratch(qconv2d_staged_scratch_len(self.qkernel, g, threads)?, || {
            qconv2d_scratch_len(self.qkernel, g, threads)
        })?;
        with_scratch(&QSCRATCH, len, self.memory_budget, |scratch| {
            let ws = QWorkspace { kernel: self.qkernel, exec: &Workers(threads), scratch };
            Ok(qconv2d_with(g, op, out, output, ws)?)
        })
    }

    /// Threads for int8 conv `g`: as [`Cpu::conv2d_plan`] counts them, a depthwise multiply-add
    /// as [`DEPTHWISE_FMA_COST`] of a GEMM's (the int8 depthwise loop runs at 10-80 GOPS where the
    /// int8 GEMM runs at 400 and more).
    fn qconv2d_threads(&self, g: &Conv2d) -> usize {
        let fmas = g.flops() / 2.0;
        let depthwise = g.cg() == 1 && g.kg() == 1;
        self.threads_for(if depthwise { fmas * DEPTHWISE_FMA_COST } else { fmas })
    }

    /// The int8 conv's scratch words: `staged` (the faster, staged copies) where the memory
    /// budget allows them, else `least()`.
    fn qconv_scratch(
        &self,
        staged: usize,
        least: impl FnOnce() -> Result<usize, sparkle_core::Error>,
    ) -> Result<usize, CpuError> {
        match self.memory_budget.check("int8 conv2d scratch", staged, std::mem::size_of::<i32>()) {
            Ok(_) => Ok(staged),
            Err(_) => Ok(least()?),
        }
    }

    /// B of a quantized GEMM packed once for this CPU's int8 kernel, for [`Cpu::qgemm_packed`]
    /// (as a quantized linear layer keeps its weights): the calls then skip packing B and
    /// summing its columns.
    pub fn qgemm_pack<B: QOperand>(&self, b: &MatRef<'_, B>) -> Result<QPackedGemm<B, Vec<i32>>, CpuError> {
        let len = qgemm_packed_words(self.qkernel, b.rows(), b.cols())?;
        let words = self.memory_budget.zeros("packed weights", len)?;
        Ok(QPackedGemm::new(self.qkernel, b, words)?)
    }

    /// [`Cpu::qgemm`] with B packed by [`Cpu::qgemm_pack`]; bit-identical to it.
    pub fn qgemm_packed<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemmPacked<'_, A, B, Vec<i32>>,
        out: &OutputStage<'_>,
        c: MatMut<'_, Y>,
    ) -> Result<GemmDims, CpuError> {
        let (m, n, k) = (op.a.rows(), op.b.n(), op.a.cols());
        let threads = self.threads_for(m as f64 * n as f64 * k as f64);
        // Sized for a valid op; an invalid one is named by the core's check before anything runs.
        let len = qgemm_packed_scratch_len(self.qkernel, m, n, k, threads)?;
        with_scratch(&QSCRATCH, len, self.memory_budget, |scratch| {
            let ws = QWorkspace { kernel: self.qkernel, exec: &Workers(threads), scratch };
            Ok(qgemm_packed_with(op, out, c, ws)?)
        })
    }

    /// A conv's int8 weights packed once for this CPU's int8 kernel and convs of `g`'s weight
    /// shape and path (see [`QPackedConv::fits`]), for [`Cpu::qconv2d_packed`]: the calls then
    /// skip reordering and packing the weights (on an AMX Xeon, most of a 512->512 3x3 @7 call).
    pub fn qconv2d_pack<W: QOperand>(&self, g: &Conv2d, weight: &[W]) -> Result<QPackedConv<W, Vec<i32>>, CpuError> {
        let len = qconv2d_packed_words(self.qkernel, g)?;
        let words = self.memory_budget.zeros("packed weights", len)?;
        Ok(QPackedConv::new(self.qkernel, g, weight, words)?)
    }

    /// [`Cpu::qconv2d`] with weights packed by [`Cpu::qconv2d_pack`]; bit-identical to it.
    pub fn qconv2d_packed<X: QOperand, W: QOperand, Y: QElem>(
        &self,
        g: &Conv2d,
        op: &QConvPacked<'_, X, W, Vec<i32>>,
        out: &OutputStage<'_>,
        output: &mut [Y],
    ) -> Result<(), CpuError> {
        if !op.weight.fits(self.qkernel, g) {
            return Err(sparkle_core::Error::Invalid { param: Param::Packed }.into());
        }
        let threads = self.qconv2d_threads(g);
        // The staged input where the budget allows it.
        let len = self.qconv_scratch(qconv2d_packed_staged_scratch_len(self.qkernel, g, threads)?, || {
            qconv2d_packed_scratch_len(self.qkernel, g, threads)
        })?;
        with_scratch(&QSCRATCH, len, self.memory_budget, |scratch| {
            let ws = QWorkspace { kernel: self.qkernel, exec: &Workers(threads), scratch };
            Ok(qconv2d_packed_with(g, op, out, output, ws)?)
        })
    }

    /// `C <- A * B` on bf16 operands with an f32 result (see [`sparkle_core::bf16`]): exact
    /// products, f32 sums, within the tolerance table's bf16 row of the f64 oracle.
    pub fn gemm_bf16(
        &self,
        a: &MatRef<'_, bf16>,
        b: &MatRef<'_, bf16>,
        c: MatMut<'_, f32>,
    ) -> Result<GemmDims, CpuError> {
        let (m, n, k) = (a.rows(), b.cols(), a.cols());
        let threads = self.threads_for(m as f64 * n as f64 * k as f64);
        let len = gemm_bf16_scratch_len(self.bkernel, m, n, k, threads)?;
        with_scratch(&BSCRATCH, len, self.memory_budget, |scratch| {
            let ws = BWorkspace { kernel: self.bkernel, exec: &Workers(threads), scratch };
            Ok(gemm_bf16_with(a, b, c, ws)?)
        })
    }

    /// `C <- act(A * B + bias)` on half inputs, f32 sums and C: bf16 by the bf16 kernel
    /// ([`Cpu::gemm_bf16`]) with the epilogue applied after; f16 widened to f32 (exactly) in new
    /// buffers within the memory budget and run by the f32 kernel with its epilogue (an f16
    /// product is exact in f32, so this is the f32 GEMM of the same values). Within the
    /// tolerance of [`sparkle_core::f16::gemm_half_reference_f64`] either way. Validated first:
    /// on an error C is untouched.
    pub fn gemm_half<H: Half>(
        &self,
        a: &MatRef<'_, H>,
        b: &MatRef<'_, H>,
        mut c: MatMut<'_, f32>,
        epi: &Epilogue<'_>,
    ) -> Result<GemmDims, CpuError> {
        let d = check_half(a, b, &c)?;
        epi.validate(d.m, d.n)?;
        match H::mats(*a, *b) {
            HalfMats::Bf16(a, b) => {
                self.gemm_bf16(&a, &b, c.rb_mut())?;
                if *epi != Epilogue::NONE {
                    for i in 0..d.m {
                        for j in 0..d.n {
                            let x = c.get(i, j).expect("inside the checked shape");
                            c.set(i, j, epi.apply(i, j, x));
                        }
                    }
                }
            }
            HalfMats::F16(a, b) => {
                let widen = |x: &MatRef<'_, f16>, what: &str| -> Result<Vec<f32>, CpuError> {
                    let (rows, cols) = (x.rows(), x.cols());
                    let len = rows.checked_mul(cols).ok_or(sparkle_core::Error::Overflow { param: Param::A })?;
                    let mut out: Vec<f32> = self.memory_budget.zeros(what, len)?;
                    for i in 0..rows {
                        for j in 0..cols {
                            out[i * cols + j] = x.get(i, j).expect("inside the view").to_f32();
                        }
                    }
                    Ok(out)
                };
                let (a32, b32) = (widen(&a, "A widened to f32")?, widen(&b, "B widened to f32")?);
                let (av, bv) = (MatRef::row_major(&a32, d.m, d.k)?, MatRef::row_major(&b32, d.k, d.n)?);
                self.gemm(1.0, av, bv, 0.0, c, epi)?;
            }
        }
        Ok(d)
    }

    /// `output = act(conv2d(input, weight) + bias)` on f16 or bf16 input and weights, f32 sums
    /// and output: both widened to f32 (exactly) in new buffers within the memory budget and run
    /// by [`Cpu::conv2d`] (a product of halves is exact in f32, so this is the f32 conv of the same
    /// values). Validated first: on an error the output is untouched.
    pub fn conv2d_half<H: Half>(
        &self,
        g: &Conv2d,
        input: &[H],
        weight: &[H],
        epi: &Epilogue<'_>,
        output: &mut [f32],
    ) -> Result<(), CpuError> {
        g.check_buffers(input.len(), weight.len(), None, output.len())?;
        sparkle_core::conv::check_epilogue(g, epi)?;
        let widen = |v: &[H], what: &str| -> Result<Vec<f32>, CpuError> {
            let mut out: Vec<f32> = self.memory_budget.zeros(what, v.len())?;
            for (o, h) in out.iter_mut().zip(v) {
                *o = h.to_f64() as f32;
            }
            Ok(out)
        };
        let x = widen(input, "the input widened to f32")?;
        let w = widen(weight, "the weights widened to f32")?;
        self.conv2d(g, &x, &w, epi, output)
    }

    /// This CPU's kernels and blocking with `workers` over `scratch`.
    fn workspace<'a>(&'a self, workers: &'a Workers, scratch: &'a mut [f32]) -> Workspace<'a> {
        Workspace { kernel: self.kernel, blocking: &self.blocking, exec: workers, scratch }
    }
}

/// `C <- act(alpha * A * B + beta * C + bias)` with the detected kernel on all threads.
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epi: &Epilogue<'_>,
) -> Result<GemmDims, CpuError> {
    Cpu::new()?.gemm(alpha, a, b, beta, c, epi)
}

/// `output = act(conv2d(input, weight) + bias)` with the detected kernels on all threads.
pub fn conv2d(
    g: &Conv2d,
    input: &[f32],
    weight: &[f32],
    epi: &Epilogue<'_>,
    output: &mut [f32],
) -> Result<(), CpuError> {
    Cpu::new()?.conv2d(g, input, weight, epi, output)
}
