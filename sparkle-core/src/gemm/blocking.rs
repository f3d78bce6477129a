//! Cache blocking of the BLIS loop nest: `kc` (the reduction slice), `mc` (rows of packed A) and
//! `nc` (columns of packed B), derived from the cache sizes and the kernel's register tile.

use crate::arch::Kernel;

/// Data-cache sizes in bytes (per core for L1 and L2; the whole L3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// L1 data cache.
    pub l1d: usize,
    /// L2 cache.
    pub l2: usize,
    /// Last-level cache.
    pub l3: usize,
}

impl CacheSizes {
    /// Conservative sizes when nothing is known (a 2020s x86 or Arm server core).
    pub const DEFAULT: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 1 << 20, l3: 16 << 20 };
    /// Sizes for small cores without caches to speak of (Cortex-M): small blocks, at most 10 KiB
    /// of scratch (`mc` 8, `kc` 64, `nc` 32 on the 4 x 4 tile). `nc` was 8 (4 KiB) until
    /// session 50: a conv's im2col gather then paid its index arithmetic every 8 pixels (a 3x3
    /// conv at 8 channels on a Cortex-M4: 10.4 instructions per multiply-accumulate, 5.3 with
    /// `nc` 32 and the gather in spans).
    pub const TINY: CacheSizes = CacheSizes { l1d: 2 << 10, l2: 4 << 10, l3: 16 << 10 };
    /// What `no_std` builds assume: [`TINY`](Self::TINY) on bare-metal 32-bit targets
    /// (microcontrollers), [`DEFAULT`](Self::DEFAULT) elsewhere.
    pub const STATIC: CacheSizes =
        if cfg!(all(target_os = "none", target_pointer_width = "32")) { Self::TINY } else { Self::DEFAULT };
}

/// Block sizes of the loop nest. `mc` is a multiple of the kernel's `mr`, `nc` of its `nr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of C per packed A block (loop 3).
    pub mc: usize,
    /// Rows of C per block where A is read in place (none of it packed, so no scratch bounds
    /// the block): `mc` where a cache keeps the block's rows of A between column panels; on
    /// cores without caches to speak of ([`CacheSizes::TINY`]: the Cortex-M), every row, so the
    /// kernel's columns of whole tiles (`GemmKernel::column`) run the height of C (a 32^3 GEMM
    /// on a Cortex-M4: 1.67 -> 1.51 instructions per multiply-accumulate, the columns alone 1.74 -> 1.67).
    pub mc_in_place: usize,
    /// Reduction slice (loop 4).
    pub kc: usize,
    /// Columns of C per packed B block (loop 5).
    pub nc: usize,
    /// The reduction slice where a C of few rows (at most 64) reads a plain row-major B in place
    /// whose rows are a multiple of 4 KiB apart, on one worker and on several: `[one, several]`,
    /// each clamped to `kc` (0 means `kc`). A panel then reads `kc` rows of B that fall into the
    /// same L1 sets, and how that costs differs between CPUs by more than a cache-size rule
    /// captures (one thread of a Xeon: kc 32-64 1.3-1.5x faster than 512 at 8-64 rows; a Zen 4:
    /// 512 fastest), so sparkle-std measures it per CPU. [`Blocking::new`] and
    /// [`Blocking::for_kernel`] set both to `kc`.
    pub kc_few_rows: [usize; 2],
    /// The fewest channels (the smaller of a conv's input and output channels) at which a conv
    /// that both Winograd and the direct conv take (3x3, stride 1, channel planes: NCHW) runs as
    /// Winograd on one worker and on two: `[one, two]`; below, direct. On more workers it always
    /// runs direct ([`WINOGRAD_MAX_WORKERS`]). Winograd's 16 GEMMs reduce over the input channels
    /// and its transforms cost per channel, so it gains with channels, and where it overtakes the
    /// direct conv differs between CPUs (one Zen 4 thread: direct at 32 channels @112, Winograd at
    /// 64 @56), so sparkle-std measures it per CPU. [`Blocking::new`] sets `[0, 0]`: Winograd
    /// wherever it is chosen ([`winograd::chosen`]).
    ///
    /// [`WINOGRAD_MAX_WORKERS`]: crate::conv::path::WINOGRAD_MAX_WORKERS
    /// [`winograd::chosen`]: crate::conv::winograd::chosen
    pub winograd_min_channels: [usize; 2],
}

const fn round_down(x: usize, to: usize) -> usize {
    let r = x / to * to;
    if r == 0 {
        to
    } else {
        r
    }
}

impl Blocking {
    /// `mc x kc x nc` blocks, with `kc` for few rows too and Winograd wherever it is chosen
    /// ([`winograd_min_channels`](Self::winograd_min_channels) 0).
    pub const fn new(mc: usize, kc: usize, nc: usize) -> Self {
        Blocking { mc, mc_in_place: mc, kc, nc, kc_few_rows: [kc; 2], winograd_min_channels: [0; 2] }
    }

    /// The reduction slice for few rows on `workers` workers (see
    /// [`kc_few_rows`](Self::kc_few_rows)), at most `kc`.
    pub const fn few_rows_kc(&self, workers: usize, kc: usize) -> usize {
        let few = self.kc_few_rows[if workers > 1 { 1 } else { 0 }];
        if few == 0 {
            kc
        } else if few < kc {
            few
        } else {
            kc
        }
    }

    /// Blocking for `kernel` on caches `caches`:
    /// - `kc`: a long reduction slice (up to 512) so C is loaded and stored rarely; the B
    ///   micro-panel (`kc x nr`) takes at most a quarter of L2. The textbook "B micro-panel in
    ///   L1" rule gave kc = 136 on Zen 4 and 84 GFLOPS at 2048^3 on one core, kc = 512 gave 104;
    /// - `mc`: the A block (`mc x kc`) takes half of L2, at most 16 micro-panels;
    /// - `nc`: the packed B block (`kc x nc`) takes half of L3, at most 4096 columns;
    /// - `mc_in_place`: `mc`, or every row on a core without caches.
    pub const fn for_kernel(kernel: &Kernel, caches: CacheSizes) -> Self {
        let f = core::mem::size_of::<f32>();
        let kc = round_down(caches.l2 / 4 / (f * kernel.nr()), 8);
        let kc = if kc > 512 { 512 } else { kc };
        let mc = round_down(caches.l2 / 2 / (f * kc), kernel.mr());
        let mc = if mc > 16 * kernel.mr() { 16 * kernel.mr() } else { mc };
        let nc = round_down(caches.l3 / 2 / (f * kc), kernel.nr());
        let nc = if nc > 4096 { round_down(4096, kernel.nr()) } else { nc };
        let no_caches = caches.l2 <= CacheSizes::TINY.l2;
        Blocking { mc_in_place: if no_caches { usize::MAX } else { mc }, ..Blocking::new(mc, kc, nc) }
    }
}
