//! int8 GEMM ([`Context::qgemm`]; conv2d, [`Context::qconv2d`], in `qconv` on its kernels): `u8`/`i8` operands with zero points, exact `i32` sums and the
//! output stage of [`sparkle_core::quant`] (ONNX QLinearMatMul / MatMulInteger, or TFLite's
//! fixed point), bit for bit as the integer oracle. Two kernels over one operand layout:
//!
//! - `gemm_coopmat.comp` with INT8: cooperative matrices (16x16x32 i8 x i8 -> i32, NVIDIA's
//!   tensor cores), 64x64 or 128x128 tiles by the size of C (no 128x256: slower, see `qgemm_plan`)
//!   ([`crate::DeviceInfo::cooperative_matrix_i8`]);
//! - `gemm_i8.comp`: the plain shader cores, everywhere else (and lavapipe in CI).
//!
//! The host shifts `u8` operands to `i8` (`x - 128`, the zero point with it, so every product
//! is of signed bytes) and packs A and B's transpose (both k-contiguous, the layout int8 tensor
//! cores take) four to a word, in rows zero-padded to a multiple of 128 bytes (whole slices and
//! 16-byte loads: no bounds checks in the k loop), summing A's rows and B's columns as it goes. The kernels sum the raw products;
//! their write-out (`quant.glsl`) subtracts the zero points' terms, adds the bias and applies the
//! stage from per-column words ([`sparkle_core::quant::ChannelStage::scale_words`]). A one-byte
//! output comes back four to a word; an `i32` output as the accumulator, requantized on the host
//! when the stage rescales (the same [`OutputStage::apply`]).

use sparkle_core::quant::{ChannelStage, OutputStage, QElem, QGemm, QGemmDims, QOperand};
use sparkle_core::{Error, MatMut, MatRef, Param};
use vulkano::buffer::BufferUsage;
use vulkano::memory::allocator::MemoryTypeFilter;

use crate::context::Context;
use crate::error::{api, Result, VkError};
use crate::half::{coop_tile, zeroed_words, COOP_TILES};
use crate::params::{u32_of, Params};
use crate::plan::{Kind, TileDtype, TileRules, MAX_GROUPS};

/// Bytes of k per padded row of A and of B's transpose: the deepest cooperative-matrix slice.
pub(crate) const K_ALIGN: usize = 128;

/// Which kernel, and the shapes it runs with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QPlan {
    pub(crate) kind: Kind,
    pub(crate) params: Params,
    pub(crate) groups: [u32; 3],
    /// Words of the packed A, the packed B, C and the per-column/per-row terms (`quant.glsl`).
    pub(crate) a_words: usize,
    pub(crate) b_words: usize,
    pub(crate) c_words: usize,
    pub(crate) aux_words: usize,
}

/// The plan for `m x n x k` on the cooperative-matrix kernel (`coopmat`) or the shader-core one,
/// writing bytes (`bytes`) or `i32`: every size checked to fit the shaders' 32-bit indices and
/// the dispatch limits. The stage's fields (mode, zero point, clamp) are [`with_stage`]'s.
pub(crate) fn qgemm_plan(
    m: usize,
    n: usize,
    k: usize,
    (coopmat, bytes): (bool, bool),
    rules: &TileRules,
) -> Result<QPlan> {
    let overflow = |param| VkError::Core(Error::Overflow { param });
    let kp = k.max(1).checked_next_multiple_of(K_ALIGN).ok_or(overflow(Param::K))?;
    let n4 = n.checked_next_multiple_of(4).ok_or(overflow(Param::N))?;
    let a_words = m.checked_mul(kp / 4).ok_or(overflow(Param::A))?;
    let b_words = n.checked_mul(kp / 4).ok_or(overflow(Param::B))?;
    let c_rs = if bytes { n4 / 4 } else { n4 };
    let c_words = m.checked_mul(c_rs).ok_or(overflow(Param::COut))?;
    let aux_words = n4.checked_mul(4).and_then(|v| v.checked_add(m)).ok_or(overflow(Param::Scratch))?;
    for (len, param) in [(a_words, Param::A), (b_words, Param::B), (c_words, Param::COut), (aux_words, Param::Scratch)]
    {
        // Every index the shaders form stays below these counts (in 4-byte words).
        u32_of(len.checked_mul(4).ok_or(overflow(param))?, param)?;
    }
    let (kind, [tm, tn]) = if coopmat {
        let tile = match coop_tile(m, n, rules)? {
            // No 128x256 int8 kernel: with 64-deep slices (128-deep ones exceed 48 KiB of shared
            // memory) it ran slower than 128x128 with 128-deep slices on an H200 at 2048-8192^3
            // (BENCHMARKS.md).
            1 => 0,
            t => t,
        };
        (Kind::CoopmatI8 { tile }, COOP_TILES[usize::from(tile)])
    } else {
        (Kind::GemmI8, [64, 64])
    };
    let groups = [u32_of(n.div_ceil(tn), Param::N)?, u32_of(m.div_ceil(tm), Param::M)?, 1];
    if groups[0] > MAX_GROUPS || groups[1] > MAX_GROUPS {
        return Err(overflow(if groups[0] > MAX_GROUPS { Param::N } else { Param::M }));
    }
    let params = Params {
        m: u32_of(m, Param::M)?,
        n: u32_of(n, Param::N)?,
        k: u32_of(kp, Param::K)?,
        a_rs: u32_of(kp / 16, Param::K)?,
        b_rs: u32_of(kp / 16, Param::K)?,
        b_cs: u32_of(n4, Param::N)?,
        c_rs: u32_of(c_rs, Param::N)?,
        epi: u32::from(bytes) << 8,
        ..Params::default()
    };
    Ok(QPlan { kind, params, groups, a_words, b_words, c_words, aux_words })
}

/// `params` with the stage's mode (`quant.glsl`'s `Q_MODE`), zero point and clamp.
pub(crate) fn with_stage(mut params: Params, mode: u32, zero_point: i32, (lo, hi): (i32, i32)) -> Params {
    params.epi = (params.epi & !0xff) | mode;
    (params.c_cs, params.kout, params.splits) = (zero_point as u32, lo as u32, hi as u32);
    params
}

/// `x` as rows of signed bytes (a `u8` shifted by -128), four to a word, each row zero-padded
/// to `padded_cols` bytes and the rows to `padded_rows`, with the shifted row and column sums
/// (wrapping: they are exact, `|sum| <= 128 * k`); an allocation failure is an error.
fn pack<T: QElem>(x: &MatRef<'_, T>, padded_rows: usize, padded_cols: usize) -> Result<(Vec<u32>, Vec<i32>, Vec<i32>)> {
    let words = padded_cols / 4;
    let mut out = zeroed_words(padded_rows * words)?;
    let (mut row_sums, mut col_sums) = (zeroed_words(x.rows())?, zeroed_words(x.cols())?);
    let shift = shift::<T>();
    let (d, rs, cs) = (x.as_slice(), x.rs(), x.cs());
    for i in 0..x.rows() {
        let row = &mut out[i * words..(i + 1) * words];
        for j in 0..x.cols() {
            let v = d[i * rs + j * cs].widen() - shift;
            row[j / 4] |= u32::from(v as u8) << (8 * (j % 4));
            row_sums[i] = row_sums[i].wrapping_add(v as u32);
            col_sums[j] = col_sums[j].wrapping_add(v as u32);
        }
    }
    let signed = |v: Vec<u32>| v.into_iter().map(|w| w as i32).collect();
    Ok((out, signed(row_sums), signed(col_sums)))
}

/// What takes `T` to signed bytes: 128 for `u8`, 0 for `i8`.
pub(crate) fn shift<T: QElem>() -> i32 {
    if T::MIN < 0 {
        0
    } else {
        128
    }
}

impl Context {
    /// Whether int8 GEMMs run on cooperative matrices (tensor cores) on this device.
    pub fn has_cooperative_matrix_i8(&self) -> bool {
        self.coopmat_i8
    }

    /// Where int8 GEMMs run on this device: "cooperative matrices" or "shader cores".
    pub fn qgemm_path(&self) -> &'static str {
        if self.coopmat_i8 {
            "cooperative matrices"
        } else {
            "shader cores"
        }
    }

    /// The plan of an `m x n x k` int8 GEMM on this device, its buffers checked against the
    /// largest storage buffer before anything is packed.
    fn qgemm_plan(&self, m: usize, n: usize, k: usize, bytes: bool) -> Result<QPlan> {
        let plan = qgemm_plan(m, n, k, (self.coopmat_i8, bytes), &self.tile_rules(TileDtype::Int8))?;
        self.check_q_buffers(&plan)?;
        Ok(plan)
    }

    /// Whether `plan`'s buffers fit the device's largest storage buffer.
    pub(crate) fn check_q_buffers(&self, plan: &QPlan) -> Result<()> {
        let most = self.pool.most_floats();
        for (what, len) in [("A", plan.a_words), ("B", plan.b_words), ("C", plan.c_words), ("terms", plan.aux_words)] {
            if len as u64 > most {
                return Err(VkError::OutOfMemory(
                    format!("{what}: {len} words exceed the device's largest storage buffer ({most})").into(),
                ));
            }
        }
        Ok(())
    }

    /// `C <- out(A * B)` on int8 operands with zero points (see [`sparkle_core::quant`]): the
    /// same bits as [`sparkle_core::quant::reference::qgemm_reference`] and the CPU, whichever
    /// kernel ran ([`Context::has_cooperative_matrix_i8`]). A, B and C take any strides; only C's
    /// `m x n` elements are written, and nothing on an error.
    pub fn qgemm<A: QOperand, B: QOperand, Y: QElem>(
        &self,
        op: &QGemm<'_, A, B>,
        out: &OutputStage<'_>,
        mut c: MatMut<'_, Y>,
    ) -> Result<QGemmDims> {
        let d = op.check(out, &c)?;
        if d.m == 0 || d.n == 0 {
            return Ok(d);
        }
        let bytes = i64::from(Y::MAX) - i64::from(Y::MIN) <= 255;
        let plan = self.qgemm_plan(d.m, d.n, d.k, bytes)?;
        // An i32 output that is rescaled comes back as the accumulator and is finished here.
        let stage0 = out.channel::<Y>(0);
        let on_host = !bytes && stage0.mode() != 0;
        let params = if on_host {
            with_stage(plan.params, 0, 0, (i32::MIN, i32::MAX))
        } else {
            with_stage(plan.params, stage0.mode(), stage0.zero_point(), stage0.range())
        };
        let kp = plan.params.k as usize;
        let (a_words, row_sums, _) = pack(&op.a, d.m, kp)?;
        let (b_words, col_sums, _) = pack(&op.b.t(), d.n, kp)?;
        let aux = terms(op, out, &row_sums, &col_sums, plan.params.b_cs as usize)?;
        let words = self.run_q(&plan, &params, [&a_words, &b_words, &aux])?;
        let rs = plan.params.c_rs as usize;
        // The host's stage, each channel's multiplier computed once.
        let stages: Vec<_> = if on_host { (0..d.n).map(|j| out.channel::<Y>(j)).collect() } else { Vec::new() };
        for i in 0..d.m {
            for j in 0..d.n {
                let v = if bytes {
                    let byte = (words[i * rs + j / 4] >> (8 * (j % 4))) as u8;
                    if Y::MIN < 0 {
                        i32::from(byte as i8)
                    } else {
                        i32::from(byte)
                    }
                } else {
                    words[i * rs + j] as i32
                };
                c.set(i, j, if on_host { stages[j].apply::<Y>(v) } else { Y::narrow(v) });
            }
        }
        Ok(d)
    }

    /// Runs `plan`'s kernel with `params` on the packed A, B and the terms (bound as A, B, C,
    /// terms) and returns C's words.
    pub(crate) fn run_q(&self, plan: &QPlan, params: &Params, [a, b, aux]: [&[u32]; 3]) -> Result<Vec<u32>> {
        let mut cb = self.submitter.begin()?;
        let ab = self.pool.upload_words(&mut cb, a)?;
        let bb = self.pool.upload_words(&mut cb, b)?;
        let auxb = self.pool.upload_words(&mut cb, aux)?;
        let cbuf = self.pool.buffer(
            plan.c_words,
            BufferUsage::STORAGE_BUFFER | BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::PREFER_DEVICE,
        )?;
        // SAFETY: the plan's lengths are the uploaded ones. The GEMMs read A below m * a_rs uvec4
        // and B^T below n * b_rs uvec4, the terms below 4 * b_cs + m, and write C only at r *
        // c_rs + w with r < m and w < c_rs (c_words). The convs (qconv.rs): the staged kernels
        // read A only at s_conv_at's chunks (an in-range tap of an image of the dispatch, rows
        // r < m: below a_words / 4 uvec4), B^T below groups * n * b_rs uvec4, the terms below 4 *
        // b_cs + groups * m, and write C at g * m * c_rs + r * c_rs + w (< c_words); the depthwise
        // kernel reads the input and weights at in-range taps (below their lengths), the terms
        // below 4 * b_cs, and writes each output word once (< c_words). Every index fits 32
        // bits (the plans check it).
        unsafe { self.pipelines.dispatch(&mut cb, plan.kind, params, plan.groups, &[&ab, &bb, &cbuf, &auxb]) }?;
        let out = self.pool.readback(&mut cb, &cbuf, plan.c_words)?;
        self.submit_and_wait(cb)?;
        let out = out.read().map_err(api("reading C back"))?;
        Ok(out.iter().map(|v| v.to_bits()).collect())
    }

    /// Seconds per row-major `m x n x k` int8 GEMM with a one-byte, fixed-point requantized
    /// output and the operands already on the device, warmed up as
    /// [`Context::time_gemm_half_resident`].
    pub fn time_qgemm_resident(&self, m: usize, n: usize, k: usize, reps: u32, warm_up: f64) -> Result<f64> {
        let plan = self.qgemm_plan(m, n, k, true)?;
        self.time_qplan(&plan, reps, warm_up)
    }

    /// Seconds per dispatch of `plan` (writing bytes) over device buffers of its lengths, after
    /// `warm_up` seconds of the same.
    pub(crate) fn time_qplan(&self, plan: &QPlan, reps: u32, warm_up: f64) -> Result<f64> {
        let params = with_stage(plan.params, 2, 0, (0, 255));
        let lens = [plan.a_words, plan.b_words, plan.c_words, plan.aux_words];
        self.time_recorded(lens, reps, warm_up, &|cb, bufs| {
            // SAFETY: the buffers have the plan's lengths (see `run_q`); their contents are
            // whatever the pool held: only the time is used, and no index the kernels form
            // depends on a buffer's contents (a garbage shift gives an undefined value, never an
            // access out of bounds).
            unsafe { self.pipelines.dispatch(cb, plan.kind, &params, plan.groups, &bufs) }
        })
    }
}

/// The per-column and per-row words of `quant.glsl` for `np` padded columns: the column term
/// (`bias - za * colsum(B) + k * za * zb`), B's zero point, the stage's two scale words, then
/// A's row sums (zero points and sums all of the shifted, signed operands).
fn terms<A: QOperand, B: QOperand>(
    op: &QGemm<'_, A, B>,
    out: &OutputStage<'_>,
    row_sums: &[i32],
    col_sums: &[i32],
    np: usize,
) -> Result<Vec<u32>> {
    let mut aux = zeroed_words(4 * np + row_sums.len())?;
    let za = op.a_zero - shift::<A>();
    let k = op.a.cols() as i32;
    for (j, &sum) in col_sums.iter().enumerate() {
        let zb = op.b_zero.at(j) - shift::<B>();
        put_column(&mut aux, np, j, (op.bias.map_or(0, |b| b[j]), za, zb, sum, k), out.channel::<i32>(j));
    }
    for (i, &sum) in row_sums.iter().enumerate() {
        aux[4 * np + i] = sum as u32;
    }
    Ok(aux)
}

/// Column `col`'s words of `quant.glsl`'s terms (`np` columns): the column term `bias - za *
/// colsum + k * za * zb` (wrapping: exact where the accumulator fits), B's shifted zero point
/// `zb`, and `stage`'s two scale words.
pub(crate) fn put_column(
    aux: &mut [u32],
    np: usize,
    col: usize,
    (bias, za, zb, colsum, k): (i32, i32, i32, i32, i32),
    stage: ChannelStage,
) {
    let term = bias.wrapping_sub(za.wrapping_mul(colsum)).wrapping_add(k.wrapping_mul(za).wrapping_mul(zb));
    let [w0, w1] = stage.scale_words();
    aux[col] = term as u32;
    aux[np + col] = zb as u32;
    aux[2 * np + col] = w0 as u32;
    aux[3 * np + col] = w1 as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: TileRules = TileRules::rule(TileDtype::Int8);

    #[test]
    fn operands_are_padded_to_whole_slices() {
        let p = qgemm_plan(100, 70, 33, (true, true), &RULE).unwrap();
        // Fewer than 256 tiles of 128x128: the 64x64 kernel.
        assert_eq!((p.kind, p.groups), (Kind::CoopmatI8 { tile: 2 }, [2, 2, 1]));
        assert_eq!((p.params.k, p.params.a_rs, p.params.b_rs, p.params.b_cs, p.params.c_rs), (128, 8, 8, 72, 18));
        assert_eq!((p.a_words, p.b_words, p.c_words, p.aux_words), (100 * 32, 70 * 32, 100 * 18, 4 * 72 + 100));
        // k = 0 still has one (zero) slice; an i32 C has a word per element.
        assert_eq!(qgemm_plan(5, 5, 0, (true, false), &RULE).unwrap().params.k, 128);
        assert_eq!(qgemm_plan(5, 5, 0, (true, false), &RULE).unwrap().params.c_rs, 8);
        // Large C: 128x128 (int8 has no 128x256 kernel), on the shader cores 64x64.
        let big = qgemm_plan(8192, 8192, 64, (true, true), &RULE).unwrap();
        assert_eq!((big.kind, big.groups), (Kind::CoopmatI8 { tile: 0 }, [64, 64, 1]));
        let p = qgemm_plan(129, 65, 1, (false, true), &RULE).unwrap();
        assert_eq!((p.kind, p.groups), (Kind::GemmI8, [2, 3, 1]));
    }

    #[test]
    fn sizes_past_32_bit_indices_are_errors() {
        assert!(qgemm_plan(1 << 17, 1, 1 << 15, (false, true), &RULE).is_err());
        assert!(qgemm_plan(1 << 20, 1 << 10, 1, (false, false), &RULE).is_err());
        assert!(qgemm_plan(usize::MAX, 1, usize::MAX, (true, true), &RULE).is_err());
        assert!(qgemm_plan(65535 * 64 + 1, 1, 1, (false, true), &RULE).is_err());
        assert!(qgemm_plan(8192, 8192, 8192, (true, true), &RULE).is_ok());
    }

    #[test]
    fn packing_shifts_u8_and_sums_rows_and_columns() {
        // 2 x 3 u8, column-major: rows (0, 128, 255), (1, 129, 130).
        let x = [0u8, 1, 128, 129, 255, 130];
        let view = MatRef::new(&x, 2, 3, 1, 2).unwrap();
        let (w, rows, cols) = pack(&view, 3, 8).unwrap();
        // Shifted by -128: (-128, 0, 127), (-127, 1, 2), bytes low first; the padding zeros.
        assert_eq!(w, vec![0x7f_00_80, 0, 0x02_01_81, 0, 0, 0]);
        assert_eq!((rows, cols), (vec![-1, -124], vec![-255, 1, 129]));
        let s = [-3i8, 4];
        let (w, rows, _) = pack(&MatRef::row_major(&s, 1, 2).unwrap(), 1, 4).unwrap();
        assert_eq!((w, rows), (vec![0x04_fd], vec![1]));
    }
}
