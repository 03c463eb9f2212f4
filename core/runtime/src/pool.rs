//! A persistent thread pool for the forward pass.
//!
//! Workers spin briefly after each job (decode issues a few hundred short jobs per token, so
//! waking from sleep every time would dominate), then park on a condition variable. One job
//! runs at a time; its indexed tasks are claimed with an atomic counter, so work is balanced without
//! any allocation per job.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trillim_core::parallel::ActRowFn;
use trillim_core::{ActRows, Parallel};

type TaskFn = dyn Fn(usize) + Sync;

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(200);

#[derive(Clone, Copy)]
struct Job {
    n_tasks: usize,
    f: *const TaskFn,
}

/// A raw pointer that tasks of one job share; each task touches a disjoint range of it.
#[derive(Clone, Copy)]
struct SharedSlice<T>(*mut T);

// SAFETY: only used to hand disjoint ranges of one `&mut [T]` to the tasks of a job, while
// the submitting call holds that borrow.
unsafe impl<T: Send> Sync for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    /// `len` elements starting at element `start`.
    ///
    /// # Safety
    /// The range lies inside the borrowed slice and no other live reference overlaps it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

struct PoolState {
    /// Written only by the submitting thread while every worker is idle (see `run`).
    job: UnsafeCell<Job>,
    generation: AtomicU64,
    next_task: AtomicUsize,
    busy_workers: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    panicked: AtomicBool,
}

// SAFETY: `job` is only written while no worker reads it (between generations, guarded by
// `busy_workers == 0`), and its pointers are only dereferenced while the submitting call
// keeps the referents alive; all other fields are atomics or std sync types.
unsafe impl Sync for PoolState {}
// SAFETY: as above; the raw pointers are plain data until a job makes them valid.
unsafe impl Send for PoolState {}

/// A fixed set of worker threads implementing [`Parallel`].
pub struct ThreadPool {
    shared: Arc<PoolState>,
    workers: Vec<JoinHandle<()>>,
    submit: Mutex<()>,
    threads: usize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// Number of threads to use when the user asks for "auto": the physical parallelism available.
pub fn auto_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl ThreadPool {
    /// A pool where `threads` threads (the caller plus `threads − 1` workers) share each job.
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(PoolState {
            job: UnsafeCell::new(Job {
                n_tasks: 0,
                f: std::ptr::null::<fn(usize)>() as *const TaskFn,
            }),
            generation: AtomicU64::new(0),
            next_task: AtomicUsize::new(0),
            busy_workers: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("trillim-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            submit: Mutex::new(()),
            threads,
        }
    }
}

fn run_tasks(s: &PoolState, job: &Job) {
    loop {
        let i = s.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            break;
        }
        // SAFETY: the submitter keeps `f` borrowed until every thread has finished this job.
        unsafe { (*job.f)(i) };
    }
}

fn worker(s: &PoolState) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin first, then park.
        let t0 = Instant::now();
        while s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
            if t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst)
            {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = s.generation.load(Ordering::SeqCst);
        // SAFETY: the submitter wrote `job` before bumping `generation` (SeqCst), and does not
        // write it again until `busy_workers` drops to zero, which happens after this read.
        let job = unsafe { *s.job.get() };
        if catch_unwind(AssertUnwindSafe(|| run_tasks(s, &job))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.busy_workers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ThreadPool {
    /// Runs `f(i)` for every `i < n_tasks` on the pool's threads (the caller included) and
    /// returns when all have finished.
    fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync + '_)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the lifetime of `f` is erased only for the duration of this call: we wait
        // below until every worker has finished with the job before returning.
        let f_static: *const TaskFn =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const TaskFn>(f) };
        let job = Job {
            n_tasks,
            f: f_static,
        };
        // SAFETY: no worker reads `job` now: the previous call returned only after
        // `busy_workers` reached zero, and workers read `job` only after a generation bump.
        unsafe { *s.job.get() = job };
        s.next_task.store(0, Ordering::SeqCst);
        s.busy_workers.store(self.workers.len(), Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(s, &job)));
        let t0 = Instant::now();
        while s.busy_workers.load(Ordering::SeqCst) != 0 {
            if t0.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a worker thread panicked while running a job");
        }
    }
}

impl Parallel for ThreadPool {
    fn for_each_chunk(
        &self,
        out: &mut [f32],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        let chunk = chunk_len.max(1);
        let len = out.len();
        let base = SharedSlice(out.as_mut_ptr());
        self.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            // SAFETY: task `i` runs once (atomic counter) and chunks are disjoint ranges of
            // `out`, which this call keeps borrowed until every task has finished.
            f(i, unsafe { base.slice(start, chunk.min(len - start)) });
        });
    }

    fn for_each_act_row(&self, act: ActRows<'_>, cols: usize, blocks: usize, f: &ActRowFn<'_>) {
        let n = act.n;
        assert!(act.qs.len() >= n * cols, "activation codes too short");
        assert!(
            act.d.len() >= n * blocks && act.sums.len() >= n * blocks,
            "activation scales too short"
        );
        let (qs, d, sums) = (
            SharedSlice(act.qs.as_mut_ptr()),
            SharedSlice(act.d.as_mut_ptr()),
            SharedSlice(act.sums.as_mut_ptr()),
        );
        self.run(n, &|t| {
            // SAFETY: token `t` runs once and its three ranges are disjoint from every other
            // token's and inside the buffers (checked above), which stay borrowed until the
            // job ends.
            unsafe {
                f(
                    t,
                    qs.slice(t * cols, cols),
                    d.slice(t * blocks, blocks),
                    sums.slice(t * blocks, blocks),
                )
            }
        });
    }

    fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_across_many_jobs() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            let mut out = vec![0f32; 1003];
            for round in 0..500 {
                pool.for_each_chunk(&mut out, 7, &|i, c| {
                    for (j, v) in c.iter_mut().enumerate() {
                        *v += (i * 7 + j) as f32;
                    }
                });
                if round % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // let workers park
                }
            }
            for (k, v) in out.iter().enumerate() {
                assert_eq!(*v, 500.0 * k as f32);
            }
        }
    }

    #[test]
    fn every_activation_row_gets_its_own_pieces() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let (n, cols, blocks) = (37, 6, 2);
            let mut qs = vec![0i8; n * cols];
            let mut d = vec![0f32; n * blocks];
            let mut sums = vec![0i32; n * blocks];
            for _ in 0..50 {
                let act = ActRows {
                    n,
                    qs: &mut qs,
                    d: &mut d,
                    sums: &mut sums,
                };
                pool.for_each_act_row(act, cols, blocks, &|t, q, d, s| {
                    assert_eq!((q.len(), d.len(), s.len()), (cols, blocks, blocks));
                    q.iter_mut().for_each(|v| *v = v.wrapping_add(t as i8));
                    d.iter_mut().for_each(|v| *v += t as f32);
                    s.iter_mut().for_each(|v| *v += t as i32);
                });
            }
            for t in 0..n {
                assert!(qs[t * cols..(t + 1) * cols]
                    .iter()
                    .all(|&v| v == (50 * t) as i8));
                assert!(d[t * blocks..(t + 1) * blocks]
                    .iter()
                    .all(|&v| v == (50 * t) as f32));
                assert!(sums[t * blocks..(t + 1) * blocks]
                    .iter()
                    .all(|&v| v == (50 * t) as i32));
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(3);
        let mut out = vec![0f32; 64];
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each_chunk(&mut out, 1, &|i, _| assert!(i != 40, "boom"));
        }));
        assert!(r.is_err());
        pool.for_each_chunk(&mut out, 1, &|_, c| c[0] = 1.0);
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
