//! Where queries run: a bounded number at a time, each on a thread of its
//! own, fairly between users.
//!
//! - At most `workers` queries run at once; more wait in a bounded queue
//!   (past it, a query is refused as busy rather than queued forever).
//! - One user holds at most `workers - 1` of the slots (when there are two
//!   or more), so one user's heavy queries never make everyone else wait
//!   for them; a waiting query of another user starts first.
//! - Each query gets a new thread with a large stack and the thread ends
//!   with the query: a query whose parse recursed deep (sqlparser's AST of
//!   a long operator chain is as deep as the chain) cannot overflow a
//!   small stack, and the stack's pages go back to the system afterwards,
//!   as does the heap the query freed (`malloc_trim`).
//! - A job is told whether it runs: `Ok(())` on its own thread, or an
//!   error at once (too many waiting, no thread to be had), so whoever waits
//!   for it always gets an answer. A query that panics ends its thread
//!   only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::QueryError;

/// Stack of a query thread: enough for the deepest parse a query of at most
/// [`super::MAX_QUERY_BYTES`] can cause (reserved, not committed: only the
/// pages a query touches are used).
pub const QUERY_STACK: usize = 512 << 20;
/// Queries waiting at most, over all users.
const QUEUE_LIMIT: usize = 256;

type Job = Box<dyn FnOnce(Result<(), QueryError>) + Send + 'static>;

#[derive(Clone)]
pub struct QueryPool {
    inner: Arc<Inner>,
}

struct Inner {
    workers: usize,
    per_user: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    running_by_user: HashMap<u32, usize>,
    waiting: VecDeque<(u32, Job)>,
}

impl State {
    fn may_start(&self, inner: &Inner, uid: u32) -> bool {
        self.running < inner.workers && self.running_by_user.get(&uid).copied().unwrap_or(0) < inner.per_user
    }

    fn start(&mut self, uid: u32) {
        self.running += 1;
        *self.running_by_user.entry(uid).or_default() += 1;
    }

    fn end(&mut self, uid: u32) {
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.running_by_user.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.running_by_user.remove(&uid);
            }
        }
    }
}

impl QueryPool {
    /// A pool running at most `workers` queries at once (at least 1).
    pub fn new(workers: usize) -> QueryPool {
        let workers = workers.max(1);
        let per_user = if workers > 1 { workers - 1 } else { 1 };
        QueryPool { inner: Arc::new(Inner { workers, per_user, state: Mutex::new(State::default()) }) }
    }

    /// Runs `job` for user `uid` now, or once a slot is free (it is
    /// called with `Ok(())` on its thread); when too many wait it is called
    /// at once with [`QueryError::Busy`].
    pub fn submit(&self, uid: u32, job: impl FnOnce(Result<(), QueryError>) + Send + 'static) {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.may_start(&self.inner, uid) {
            state.start(uid);
            drop(state);
            spawn(self.inner.clone(), uid, Box::new(job));
        } else if state.waiting.len() >= QUEUE_LIMIT {
            drop(state);
            job(Err(QueryError::Busy));
        } else {
            state.waiting.push_back((uid, Box::new(job)));
        }
    }
}

/// Runs a job on a new thread; when it ends, starts the next waiting job
/// that may start.
fn spawn(inner: Arc<Inner>, uid: u32, job: Job) {
    let pool = inner.clone();
    // The job moves to the thread through a slot, so that it can still be
    // told "no" if the thread cannot be made.
    let slot = Arc::new(Mutex::new(Some(job)));
    let theirs = slot.clone();
    let thread = std::thread::Builder::new().name("at1-query".into()).stack_size(QUERY_STACK).spawn(move || {
        let job = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(job) = job {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(())))).is_err() {
                log::error!("a query panicked; its caller got an error");
            }
        }
        release_freed_memory();
        finished(&pool, uid);
    });
    if let Err(e) = thread {
        log::error!("cannot start a query thread: {e}");
        let job = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(job) = job {
            job(Err(QueryError::Io(format!("cannot start a query thread: {e}"))));
        }
        finished(&inner, uid);
    }
}

fn finished(inner: &Arc<Inner>, uid: u32) {
    let next = {
        let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state.end(uid);
        let pos = state.waiting.iter().position(|(u, _)| state.may_start(inner, *u));
        let next = pos.and_then(|p| state.waiting.remove(p));
        if let Some((u, _)) = &next {
            state.start(*u);
        }
        next
    };
    if let Some((u, job)) = next {
        spawn(inner.clone(), u, job);
    }
}

/// Gives the heap a finished query freed back to the system (glibc keeps
/// freed memory in its arenas otherwise).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn one_user_cannot_take_every_slot() {
        let pool = QueryPool::new(2);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel::<&'static str>();
        for _ in 0..3 {
            let (rx, tx) = (release_rx.clone(), done_tx.clone());
            pool.submit(1000, move |_| {
                let _ = rx.lock().unwrap().recv();
                let _ = tx.send("heavy");
            });
        }
        let tx = done_tx.clone();
        pool.submit(2000, move |_| {
            let _ = tx.send("light");
        });
        // The other user's query runs while user 1000's first query holds
        // its one slot and its others wait.
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok("light"));
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..3 {
            assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok("heavy"));
        }
    }

    #[test]
    fn a_panicking_query_frees_its_slot() {
        let pool = QueryPool::new(1);
        pool.submit(1, |_| panic!("boom"));
        let (tx, rx) = mpsc::channel();
        pool.submit(1, move |admitted| tx.send(admitted.is_ok()).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    }

    #[test]
    fn deep_recursion_fits_the_query_stack() {
        fn depth(n: u64) -> u64 {
            let pad = std::hint::black_box([n; 16]);
            if n == 0 {
                0
            } else {
                1 + depth(n - 1) + pad[15] - pad[15]
            }
        }
        let pool = QueryPool::new(1);
        let (tx, rx) = mpsc::channel();
        pool.submit(1, move |_| tx.send(depth(500_000)).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(500_000));
    }
}
