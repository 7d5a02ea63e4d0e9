//! The journal: every committed change is an event appended, in the same
//! transaction, to a hash chain kept by the metadata engine — seed 003's
//! audit chain, for the whole store:
//!
//! ```text
//! hash_0 = 32 zero bytes (genesis)
//! hash_n = SHA-256(hash_{n-1} ‖ seq_n ‖ time_n ‖ len(op_n) ‖ op_n ‖ len(detail_n) ‖ detail_n)
//! ```
//!
//! `seq` is a u64 and `time` an i64 (nanoseconds since the epoch), both
//! little-endian; each text is its UTF-8 bytes after its length as a u32
//! little-endian, so no two events hash the same bytes. `detail` is JSON
//! naming the inode, the path(s) and the new content's SHA-256. A changed,
//! removed or reordered event breaks every later link; [`verify_chain`]
//! recomputes the chain from genesis and says where.

use sha2::{Digest, Sha256};

use at1_store::{Event, MetaError, MetaRead, MetaTxn, Nanos};

pub const GENESIS: [u8; 32] = [0; 32];

/// The hash of an event, given the hash before it.
pub fn link_hash(prev: &[u8; 32], seq: u64, time: Nanos, op: &str, detail: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(time.to_le_bytes());
    for text in [op, detail] {
        h.update((text.len() as u32).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().into()
}

/// Appends an event inside `txn`; returns its sequence number.
pub fn append(txn: &mut dyn MetaTxn, time: Nanos, op: &str, detail: &serde_json::Value) -> Result<u64, MetaError> {
    let (seq, prev) = match txn.last_event()? {
        Some(e) => (e.seq + 1, e.hash),
        None => (1, GENESIS),
    };
    let detail = detail.to_string();
    let hash = link_hash(&prev, seq, time, op, &detail);
    txn.append_event(&Event { seq, time, op: op.to_string(), detail, hash })?;
    Ok(seq)
}

/// What is wrong with the chain, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Events are missing between two sequence numbers (removed).
    Gap { after: u64, next: u64 },
    /// The event's stored hash is not the hash of its content and the
    /// event before it: it, or one before it, was changed or reordered.
    Broken { seq: u64 },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::Gap { after, next } => write!(f, "journal: events {} to {} are missing (removed)", after + 1, next - 1),
            ChainProblem::Broken { seq } => write!(f, "journal: event {seq} does not match its hash (it or the event before it was changed or reordered)"),
        }
    }
}

/// Recomputes the chain from genesis. Reports the first break of each run
/// (after a break, the chain continues from the stored hash, so a later,
/// separate change is reported too). Returns (events checked, problems).
pub fn verify_chain(meta: &dyn MetaRead) -> Result<(u64, Vec<ChainProblem>), MetaError> {
    const PAGE: usize = 4096;
    let mut problems = Vec::new();
    let (mut prev_seq, mut prev_hash) = (0u64, GENESIS);
    let mut checked = 0;
    loop {
        let page = meta.events(prev_seq + 1, PAGE)?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.seq != prev_seq + 1 {
                problems.push(ChainProblem::Gap { after: prev_seq, next: e.seq });
            }
            if link_hash(&prev_hash, e.seq, e.time, &e.op, &e.detail) != e.hash {
                problems.push(ChainProblem::Broken { seq: e.seq });
            }
            prev_seq = e.seq;
            prev_hash = e.hash;
            checked += 1;
        }
    }
    Ok((checked, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_field_and_the_split_between_them() {
        let h = link_hash(&GENESIS, 1, 10, "write", "{}");
        assert_ne!(h, link_hash(&GENESIS, 2, 10, "write", "{}"));
        assert_ne!(h, link_hash(&GENESIS, 1, 11, "write", "{}"));
        assert_ne!(h, link_hash(&[1; 32], 1, 10, "write", "{}"));
        assert_ne!(link_hash(&GENESIS, 1, 10, "ab", "c"), link_hash(&GENESIS, 1, 10, "a", "bc"));
    }
}
