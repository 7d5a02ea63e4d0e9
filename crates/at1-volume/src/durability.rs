//! When committed changes become durable: group commit.
//!
//! A commit (a close, a rename, a chmod...) is visible at once but is not
//! fsync'd by itself. A sync round makes everything committed before it
//! durable with one round of fsyncs — first the objects put since the last
//! round, then the metadata (whose write-ahead log names them), recording
//! how far the journal is durable. A round runs every `--commit-interval`
//! (as ext4 commits every 5 s), and at once when someone asks (`fsync`),
//! and many waiters share one round.
//!
//! Objects released by a change (an overwritten file's old content, a
//! removed file's) are deleted only after a round has made that change
//! durable: until then a crash may bring the change back, and with it the
//! need for the old object.

use std::sync::{Condvar, Mutex};

use crate::error::{VResult, VolumeError};

#[derive(Debug, Default)]
struct State {
    /// Transactions committed so far.
    committed: u64,
    /// Transactions made durable (a prefix of the committed ones).
    synced: u64,
    /// A round is running.
    running: bool,
}

/// The group commit's bookkeeping; the round itself is the volume's.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes one committed transaction; returns its number.
    pub fn committed(&self) -> u64 {
        let mut s = self.lock();
        s.committed += 1;
        s.committed
    }

    /// Whether something committed is not durable yet.
    pub fn dirty(&self) -> bool {
        let s = self.lock();
        s.committed > s.synced
    }

    /// Returns once everything committed before this call is durable,
    /// running `round` if no running round covers it.
    pub fn sync(&self, round: impl Fn() -> VResult<()>) -> VResult<()> {
        let mut s = self.lock();
        let target = s.committed;
        loop {
            if s.synced >= target {
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.running = true;
            let upto = s.committed;
            drop(s);
            let result = round();
            s = self.lock();
            s.running = false;
            if result.is_ok() {
                s.synced = s.synced.max(upto);
            }
            self.done.notify_all();
            if let Err(e) = result {
                return Err(VolumeError::Io(std::io::Error::other(format!("making changes durable failed: {e}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn waiters_share_rounds_and_a_clean_state_needs_none() {
        let g = Arc::new(GroupCommit::default());
        let rounds = Arc::new(AtomicU32::new(0));
        g.sync(|| {
            rounds.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "nothing to make durable");
        g.committed();
        assert!(g.dirty());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, rounds) = (g.clone(), rounds.clone());
                std::thread::spawn(move || {
                    g.sync(|| {
                        rounds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok(())
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "one round for every waiter");
        assert!(!g.dirty());
    }

    #[test]
    fn a_failed_round_is_reported_and_retried() {
        let g = GroupCommit::default();
        g.committed();
        assert!(g.sync(|| Err(VolumeError::Io(std::io::Error::other("disk gone")))).is_err());
        assert!(g.dirty());
        g.sync(|| Ok(())).unwrap();
        assert!(!g.dirty());
    }
}
