//! Dropping the kernel's cached pages of a file whose content changed (a
//! commit, or a rejected one whose bytes the writer left in the cache).
//!
//! The notification is sent from a thread of its own: the kernel handles
//! it by locking the file's pages, and a page stays locked while a read of
//! it waits for a daemon thread — maybe the one that would send it. But a
//! `close` must not return before the pages are gone, or a reader opened
//! before it reads what was never committed (a rejected rewrite) until the
//! notification lands. So `close` (FUSE flush, during which the kernel
//! holds no lock the notification needs) waits for its file's
//! notifications, for a bounded time: a read in flight that only this
//! thread could serve (a mount with one FUSE thread) delays the close by
//! that bound, never deadlocks it.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use fuser::INodeNo;

/// How long a close waits for its file's cached pages to be dropped.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Notifications in flight, per inode.
#[derive(Default)]
pub struct Invalidations {
    pending: Mutex<HashMap<u64, usize>>,
    done: Condvar,
}

impl Invalidations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends "drop the cached pages of `ino`" through `notifier` (once the
    /// session has one), from a thread of its own.
    pub fn send(self: &Arc<Self>, notifier: &OnceLock<fuser::Notifier>, ino: u64) {
        let Some(n) = notifier.get().cloned() else { return };
        *self.lock().entry(ino).or_insert(0) += 1;
        let this = self.clone();
        let sent = std::thread::Builder::new().name("at1-inval".into()).spawn(move || {
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
            this.finish(ino);
        });
        if sent.is_err() {
            self.finish(ino); // no thread: nothing to wait for
        }
    }

    fn finish(&self, ino: u64) {
        let mut pending = self.lock();
        if let Some(n) = pending.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&ino);
            }
        }
        self.done.notify_all();
    }

    /// Waits until no notification for `ino` is in flight, at most `limit`.
    pub fn wait(&self, ino: u64, limit: Duration) {
        let pending = self.lock();
        let _ = self.done.wait_timeout_while(pending, limit, |p| p.contains_key(&ino)).unwrap_or_else(|e| e.into_inner());
    }
}
