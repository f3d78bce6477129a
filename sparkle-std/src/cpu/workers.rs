//! The CPU path's executor: the core's drivers run their workers on rayon's pool through it.

use sparkle_core::gemm::driver::Executor;

/// Runs `n` workers: on the calling thread alone for one, else worker 0 on the calling thread and
/// the others on the rayon pool.
#[derive(Debug)]
pub(crate) struct Workers(pub(crate) usize);

// SAFETY: one call per index 0..self.0 (index 0 on this thread), and `rayon::in_place_scope`
// returns only after every spawned call has finished. (One of the crate's two `unsafe`s, see
// lib.rs: the core's contract for executors, which the safe drivers rely on.)
#[allow(unsafe_code)]
unsafe impl Executor for Workers {
    fn workers(&self) -> usize {
        self.0
    }
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        match self.0 {
            0 => return,
            1 => return f(0),
            _ => {}
        }
        // `in_place_scope`, not `scope`: `scope` runs its body on a pool thread while the caller
        // blocks, so every call from outside the pool crosses threads twice more (2 Zen 4 threads,
        // alternating runs: 128^3 133-135 -> 174-184 GFLOPS, 192^3 175-177 -> 191-195, 256^3 201 ->
        // 209-210; convs at batch 1 +1-3%).
        rayon::in_place_scope(|s| {
            for w in 1..self.0 {
                s.spawn(move |_| f(w));
            }
            f(0);
        });
    }
}
