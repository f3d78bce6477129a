//! The CPU path's executor: the core's drivers run their workers through it.
//!
//! Worker 0 runs on the calling thread. Workers `1..n` run on Sparkle's own threads (`sparkle-1`,
//! `sparkle-2`, ...: the [`team`]), worker `w` always on thread `sparkle-w`, which after each part
//! polls for the next one for [`team::POLL`] before it sleeps. Handing out a part is one store to a
//! cache line the thread is polling, so a GEMM of a few microseconds a worker can use every core;
//! and the part a thread computes (a band of B, say) stays in its core's caches from call to call.
//! On rayon's pool the same parts waited for sleeping threads to be woken one system call at a
//! time, and landed on whichever thread took them. Measured on an H100 host's 16-core Xeon,
//! `sparkle bench gemm|conv2d --threads 16`, five alternating rounds, medians, GFLOPS rayon ->
//! team: 128^3 225 -> 606, 256^3 620 -> 1021, 512^3 928 -> 1244, 1024^3 1030 -> 1108, 8 x 1024 x
//! 1024 279 -> 334, 64 x 1024 x 1024 643 -> 807, the ResNet-50 layers at batch 1 +0-45%, a
//! depthwise layer 140 -> 228; on this 2-core Zen 4 128^3 172-204 -> 213, 64->64 3x3 @56 +13%.
//!
//! A call from a rayon pool thread (a caller's own parallel loop), while another thread is using
//! the team, or for more workers than the machine has cores ([`team::max_threads`]: threads
//! polling for cores they share would slow each other) runs workers `1..n` on the rayon pool
//! instead, so Sparkle nested in rayon work adds no threads to the ones already busy.
//!
//! Like rayon's pool, the team does not survive `fork`: a child process must not run threaded
//! CPU ops that its parent had already run.

use sparkle_core::gemm::driver::Executor;

/// Runs `n` workers: on the calling thread alone for one, else worker 0 on the calling thread and
/// the others on the [`team`] (or the rayon pool, see the module docs).
#[derive(Debug)]
pub(crate) struct Workers(pub(crate) usize);

// SAFETY: one call per index 0..self.0 (index 0 on this thread); `team::run` and
// `rayon::in_place_scope` return only after every other call has finished. (One of the crate's
// `unsafe`s, see lib.rs: the core's contract for executors, which the safe drivers rely on.)
#[allow(unsafe_code)]
unsafe impl Executor for Workers {
    fn workers(&self) -> usize {
        self.0
    }
    fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let n = self.0;
        match n {
            0 => return,
            1 => return f(0),
            _ => {}
        }
        if rayon::current_thread_index().is_none() && team::run(n, f) {
            return;
        }
        // `in_place_scope`, not `scope`: `scope` runs its body on a pool thread while the caller
        // blocks, so every call from outside the pool crosses threads twice more (2 Zen 4 threads,
        // alternating runs: 128^3 133-135 -> 174-184 GFLOPS, 192^3 175-177 -> 191-195, 256^3 201 ->
        // 209-210; convs at batch 1 +1-3%).
        rayon::in_place_scope(|s| {
            for w in 1..n {
                s.spawn(move |_| f(w));
            }
            f(0);
        });
    }
}

/// Sparkle's worker threads: one `Slot` each, started on first use and kept for the process.
#[allow(unsafe_code)]
pub(crate) mod team {
    use std::any::Any;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, TryLockError};
    use std::thread::{self, Thread};
    use std::time::{Duration, Instant};

    /// How long a worker thread polls for its next part before it sleeps: long enough to span the
    /// phases of one op and the gap between the ops of a layer loop, short enough that an idle
    /// process does not keep its cores busy.
    pub(crate) const POLL: Duration = Duration::from_micros(200);

    /// Spins of the calling thread waiting for the others before it sleeps until the last one
    /// wakes it (a long part, or a worker thread waiting for a core).
    const JOIN_SPINS: u32 = 1 << 12;

    /// The closure of one `run`, its lifetime erased: [`run`] returns only after every worker
    /// thread is done with it.
    type Erased = *const (dyn Fn(usize) + Sync + 'static);

    /// One `run`: the closure, the worker threads still running it, the first panic caught, and
    /// the calling thread (unparked by the last part to finish).
    struct Task {
        f: Erased,
        remaining: AtomicUsize,
        panic: Mutex<Option<Box<dyn Any + Send>>>,
        caller: Thread,
    }

    /// What one worker thread polls (its own cache lines: the caller writes `epoch` of each, and
    /// no two threads poll the same line).
    #[repr(align(128))]
    struct Slot {
        /// Bumped once per part handed to this thread.
        epoch: AtomicU64,
        /// The thread stopped polling and is parked (or about to park).
        sleeping: AtomicBool,
        /// The part's task, stored before `epoch` is bumped.
        task: AtomicPtr<Task>,
        /// The worker index this thread runs.
        index: usize,
        /// The thread, to unpark it.
        thread: OnceLock<Thread>,
    }

    /// The worker threads, slot `i` running worker `i + 1`. Locked for the whole of a `run`, so
    /// one caller at a time hands out parts.
    static TEAM: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());

    /// A worker thread: poll (then sleep) until the slot's epoch moves, run the part, report.
    fn work(slot: Arc<Slot>) {
        let mut seen = 0u64;
        loop {
            let mut since = Instant::now();
            let mut spins = 0u32;
            loop {
                let epoch = slot.epoch.load(Ordering::Acquire);
                if epoch != seen {
                    seen = epoch;
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && since.elapsed() > POLL {
                    // SeqCst on both sides (here and in `run`): either this load sees the new
                    // epoch, or `run` sees `sleeping` and unparks (a token `park` keeps).
                    slot.sleeping.store(true, Ordering::SeqCst);
                    if slot.epoch.load(Ordering::SeqCst) == seen {
                        thread::park();
                    }
                    slot.sleeping.store(false, Ordering::SeqCst);
                    since = Instant::now();
                } else {
                    std::hint::spin_loop();
                }
            }
            // SAFETY: `run` stored a live task before bumping the epoch (Acquire above), and
            // keeps it and its closure alive until `remaining` reaches 0, which this thread's
            // decrement below (its last access) is part of.
            let task = unsafe { &*slot.task.load(Ordering::Acquire) };
            // SAFETY: as above.
            let f = unsafe { &*task.f };
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(slot.index))) {
                task.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(panic);
            }
            // The task may be gone once `remaining` is 0: take the caller's handle first.
            let caller = task.caller.clone();
            if task.remaining.fetch_sub(1, Ordering::Release) == 1 {
                caller.unpark();
            }
        }
    }

    /// Adds worker threads until there are `count`; false if one cannot be started.
    fn grow(team: &mut Vec<Arc<Slot>>, count: usize) -> bool {
        while team.len() < count {
            let slot = Arc::new(Slot {
                epoch: AtomicU64::new(0),
                sleeping: AtomicBool::new(false),
                task: AtomicPtr::new(std::ptr::null_mut()),
                index: team.len() + 1,
                thread: OnceLock::new(),
            });
            let mine = Arc::clone(&slot);
            let Ok(handle) = thread::Builder::new().name(format!("sparkle-{}", slot.index)).spawn(move || work(mine))
            else {
                return false;
            };
            let _ = slot.thread.set(handle.thread().clone());
            team.push(slot);
        }
        true
    }

    /// The most workers a `run` takes to the team: as many as the machine has cores (asked once).
    pub(crate) fn max_threads() -> usize {
        static CORES: OnceLock<usize> = OnceLock::new();
        *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `f(0)` here and `f(1..n)` on the team, returning once all have; `false` (nothing run)
    /// when another thread holds the team, `n` exceeds [`max_threads`], or a thread cannot be
    /// started. A panic in any part is resumed here after every part has finished.
    pub(crate) fn run(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        n <= max_threads() && run_any(n, f)
    }

    /// [`run`] for any `n` (the tests' way to a team larger than this machine's).
    pub(crate) fn run_any(n: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        if n < 2 {
            return false;
        }
        let mut team = match TEAM.try_lock() {
            Ok(team) => team,
            Err(TryLockError::WouldBlock) => return false,
            // Not reached (a part's panic is resumed after the lock is released); the slots
            // would be intact anyway.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if !grow(&mut team, n - 1) {
            return false;
        }
        // SAFETY: only the lifetime changes; this function does not return or unwind before
        // `remaining` is 0, after which no worker thread touches the task or the closure.
        let f: Erased = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Erased>(f) };
        let task = Task { f, remaining: AtomicUsize::new(n - 1), panic: Mutex::new(None), caller: thread::current() };
        let ptr = (&task as *const Task).cast_mut();
        for slot in &team[..n - 1] {
            slot.task.store(ptr, Ordering::Relaxed);
            slot.epoch.fetch_add(1, Ordering::SeqCst);
            if slot.sleeping.load(Ordering::SeqCst) {
                if let Some(thread) = slot.thread.get() {
                    thread.unpark();
                }
            }
        }
        // SAFETY: the closure is the caller's, alive for this call.
        let mine = catch_unwind(AssertUnwindSafe(|| unsafe { (*task.f)(0) }));
        let mut spins = 0u32;
        while task.remaining.load(Ordering::Acquire) != 0 {
            if spins < JOIN_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                // The last part unparks this thread (a token `park` keeps if it comes first); the
                // timeout only bounds a spurious wait.
                thread::park_timeout(Duration::from_millis(1));
            }
        }
        drop(team);
        if let Err(panic) = mine {
            resume_unwind(panic);
        }
        if let Some(panic) = task.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(panic);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index runs exactly once, on the team from a plain thread and on rayon from a pool
    /// thread, for every count up to the team's limit and past it.
    #[test]
    fn every_index_once() {
        let most = team::max_threads();
        for n in (0..=most + 2).chain([most * 2 + 1]) {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let check = || {
                Workers(n).run(&|w| {
                    hits[w].fetch_add(1, Ordering::Relaxed);
                });
                for (w, h) in hits.iter().enumerate() {
                    assert_eq!(h.swap(0, Ordering::Relaxed), 1, "worker {w} of {n}");
                }
            };
            check();
            rayon::scope(|_| check());
        }
    }

    /// Teams of up to 6 threads whatever this machine's cores: every index once, and each index
    /// on its own thread, the same one every time.
    #[test]
    fn a_team_larger_than_the_machine() {
        let name = || std::thread::current().name().map(str::to_owned);
        for n in 2..=6 {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let names: Vec<std::sync::Mutex<Vec<Option<String>>>> = (0..n).map(|_| Default::default()).collect();
            for _ in 0..3 {
                // Another test may hold the team for a moment.
                let part = |w: usize| {
                    hits[w].fetch_add(1, Ordering::Relaxed);
                    names[w].lock().unwrap().push(name());
                };
                // Other tests (the tune's measurements) may hold the team for seconds under load.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                while !team::run_any(n, &part) {
                    assert!(std::time::Instant::now() < deadline, "the team never became free");
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
            for w in 0..n {
                assert_eq!(hits[w].load(Ordering::Relaxed), 3, "worker {w} of {n}");
                let names = names[w].lock().unwrap();
                let want = if w == 0 { name() } else { Some(format!("sparkle-{w}")) };
                assert!(names.iter().all(|got| *got == want), "worker {w} of {n} ran on {names:?}");
            }
        }
    }

    /// Callers on several threads at once (one holds the team, the others use rayon), and again
    /// after the team's threads went to sleep.
    #[test]
    fn concurrent_callers_and_sleeping_threads() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        Workers(3).run(&|w| {
                            total.fetch_add(w + 1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 6);
        std::thread::sleep(team::POLL * 20);
        total.store(0, Ordering::Relaxed);
        Workers(3).run(&|w| {
            total.fetch_add(w + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 6);
    }

    /// A panicking part reaches the caller after every part has finished, and the team keeps
    /// working.
    #[test]
    fn a_panic_reaches_the_caller() {
        for bad in [0, 1] {
            let done = AtomicUsize::new(0);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Workers(2).run(&|w| {
                    if w == bad {
                        panic!("part {w}");
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                })
            }));
            assert!(run.is_err(), "part {bad}'s panic was lost");
            assert_eq!(done.load(Ordering::Relaxed), 1);
        }
        let done = AtomicUsize::new(0);
        Workers(2).run(&|_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 2);
    }
}
