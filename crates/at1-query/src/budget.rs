//! What one query may use: memory for the state it keeps (sort keys,
//! groups) and time. A query that would go past either is stopped with an
//! error saying which limit and how to raise it — never left to take the
//! daemon's memory or to hold a worker forever.
//!
//! Memory is counted, not measured: each structure that grows with the data
//! charges an estimate of what it holds (the values' sizes and the
//! containers' per-entry overhead) and gives it back when it shrinks.
//! Decoded column chunks are not charged: they live in the block cache,
//! which has its own bound, or only for one row group at a time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::QueryError;

/// Bounds of a query's run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of query state (sort keys, groups) at most.
    pub memory: u64,
    /// Wall-clock time at most.
    pub timeout: Option<Duration>,
    /// Where a large sorted result is spilled (the system's temp directory
    /// when `None`).
    pub spill_dir: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: 256 << 20, timeout: None, spill_dir: None }
    }
}

/// The running account of one query against its [`Limits`].
#[derive(Debug)]
pub struct Budget {
    memory: u64,
    used: u64,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl Budget {
    /// Starts the clock.
    pub fn start(limits: &Limits) -> Budget {
        Budget { memory: limits.memory, used: 0, timeout: limits.timeout, deadline: limits.timeout.map(|t| Instant::now() + t) }
    }

    /// Takes `bytes` more for `what` (named in the error).
    pub fn charge(&mut self, bytes: u64, what: &'static str) -> Result<(), QueryError> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.memory {
            return Err(QueryError::Memory(what, self.memory >> 20));
        }
        Ok(())
    }

    /// Gives `bytes` back.
    pub fn release(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Fails once the time limit has passed.
    pub fn check_time(&self) -> Result<(), QueryError> {
        match (self.deadline, self.timeout) {
            (Some(d), Some(t)) if Instant::now() >= d => Err(QueryError::Timeout(t)),
            _ => Ok(()),
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_charged_and_released() {
        let mut b = Budget::start(&Limits { memory: 100, ..Limits::default() });
        b.charge(60, "x").unwrap();
        assert!(matches!(b.charge(50, "GROUP BY"), Err(QueryError::Memory("GROUP BY", 0))));
        b.release(110);
        assert_eq!(b.used(), 0);
        b.charge(100, "x").unwrap();
    }

    #[test]
    fn time_runs_out() {
        let b = Budget::start(&Limits { timeout: Some(Duration::ZERO), ..Limits::default() });
        assert!(matches!(b.check_time(), Err(QueryError::Timeout(_))));
        assert!(Budget::start(&Limits::default()).check_time().is_ok());
    }
}
