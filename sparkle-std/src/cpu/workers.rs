//! The CPU path's executor: the core's drivers run their workers on rayon's pool through it.

use sparkle_core::gemm::driver::Executor;

/// Runs `n` workers: on the calling thread alone for one (a rayon scope would hand the job to
/// the pool and block), else on the rayon pool with worker 0 on the calling thread.
#[derive(Debug)]
pub(crate) struct Workers(pub(crate) usize);

// SAFETY: one call per index 0..self.0 (index 0 on this thread), and `rayon::scope` returns only
// after every spawned call has finished. (One of the crate's two `unsafe`s, see lib.rs: the
// core's contract for executors, which the safe drivers rely on.)
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
        rayon::scope(|s| {
            for w in 1..self.0 {
                s.spawn(move |_| f(w));
            }
            f(0);
        });
    }
}
