//! A regular file's content is an ordered map of **extents**, each the
//! whole original bytes of one immutable, verified object (`Extent` in
//! `at1-store`). A commit re-encodes only the extents a change touched:
//! this module decides which (`plan`), from the written ranges (`Ranges`)
//! of the file's staging area.
//!
//! Names: the issue that brought this calls an extent's object a
//! "segment"; inside one `.at1` object, docs/FORMAT.md already uses
//! *segment* for a run of blocks. Here an extent is the unit of the map,
//! and the segments stay inside objects.

use std::collections::BTreeMap;

use at1_store::Extent;

/// Largest extent a commit makes (`--segment-size`). Measured on
/// flights.csv (BENCHMARKS.md, "extent size"): 8 MiB keeps the
/// compression ratio within 1% of one whole-file object while a 4 KiB
/// change re-encodes at most 8 MiB.
pub const DEFAULT_EXTENT_SIZE: u64 = 8 << 20;

/// Smallest `--segment-size`: below a few blocks an object's header,
/// footer and dictionary cost more than they save.
pub const MIN_EXTENT_SIZE: u64 = 256 << 10;

/// A last extent smaller than this is encoded again with the bytes
/// appended after it, so a file grown by many small appends is made of
/// extents of about this size rather than one per append; an append then
/// costs at most this much re-encoding.
pub const SMALL_TAIL: u64 = 1 << 20;

/// Byte ranges written since the last commit: disjoint, not touching,
/// by start.
#[derive(Debug, Default, Clone)]
pub struct Ranges {
    ends: BTreeMap<u64, u64>,
}

impl Ranges {
    /// Adds `[start, end)`, merging it with the ranges it meets.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &pe)) = self.ends.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
            }
        }
        let met: Vec<u64> = self.ends.range(s..=e).map(|(&k, _)| k).collect();
        for k in met {
            if let Some(v) = self.ends.remove(&k) {
                e = e.max(v);
            }
        }
        self.ends.insert(s, e);
    }

    /// Forgets everything at and past `len`.
    pub fn cut(&mut self, len: u64) {
        let gone: Vec<u64> = self.ends.range(len..).map(|(&k, _)| k).collect();
        for k in gone {
            self.ends.remove(&k);
        }
        if let Some((_, e)) = self.ends.range_mut(..len).next_back() {
            *e = (*e).min(len);
        }
    }

    /// Whether any range meets `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < end && self.ends.range(..end).next_back().is_some_and(|(_, &e)| e > start)
    }

    /// The range holding `at`, or else the first one after it.
    pub fn at_or_after(&self, at: u64) -> Option<(u64, u64)> {
        if let Some((&s, &e)) = self.ends.range(..=at).next_back() {
            if e > at {
                return Some((s, e));
            }
        }
        self.ends.range(at..).next().map(|(&s, &e)| (s, e))
    }

    pub fn clear(&mut self) {
        self.ends.clear();
    }
}

/// One extent of a commit's new map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Untouched: the same object.
    Keep(Extent),
    /// Bytes `[start, end)` encoded into a new object.
    Encode { start: u64, end: u64 },
}

/// The map a commit makes of a file of `len` bytes whose staging area
/// started from extents `base` (of which only bytes below `base_len` are
/// still there) and was written at `dirty`: every base extent no write
/// touched and no truncation cut is kept; the rest is encoded anew in
/// extents of at most `max` bytes. A small last extent followed by new
/// bytes is taken along (`SMALL_TAIL`).
pub fn plan(base: &[Extent], base_len: u64, dirty: &Ranges, len: u64, max: u64) -> Vec<Piece> {
    let max = max.max(1);
    let mut kept: Vec<&Extent> = base.iter().filter(|e| e.end() <= base_len.min(len) && !dirty.overlaps(e.start, e.end())).collect();
    if let Some(last) = kept.last() {
        if last.end() < len && last.len < SMALL_TAIL.min(max) {
            kept.pop();
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    for e in kept {
        encode_between(&mut out, at, e.start, max);
        out.push(Piece::Keep(e.clone()));
        at = e.end();
    }
    encode_between(&mut out, at, len, max);
    out
}

fn encode_between(out: &mut Vec<Piece>, start: u64, end: u64, max: u64) {
    let mut s = start;
    while s < end {
        let e = s.saturating_add(max).min(end);
        out.push(Piece::Encode { start: s, end: e });
        s = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use at1_store::{Content, ObjectId};

    fn extent(start: u64, len: u64, id: u8) -> Extent {
        Extent { start, len, content: Content { object: ObjectId([id; 16]), stored_len: 1, sha256: [id; 32] } }
    }

    #[test]
    fn ranges_merge_cut_and_answer_overlaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25); // touches: merged
        assert_eq!(r.at_or_after(0), Some((10, 25)));
        assert_eq!(r.at_or_after(26), Some((30, 40)));
        assert!(r.overlaps(24, 26) && !r.overlaps(25, 30) && r.overlaps(0, 100));
        r.insert(5, 35);
        assert_eq!(r.at_or_after(0), Some((5, 40)));
        r.cut(12);
        assert_eq!(r.at_or_after(0), Some((5, 12)));
        assert_eq!(r.at_or_after(12), None);
    }

    #[test]
    fn a_write_in_the_middle_re_encodes_only_the_extent_it_touches() {
        let base = [extent(0, 8, 1), extent(8, 8, 2), extent(16, 8, 3)];
        let mut dirty = Ranges::default();
        dirty.insert(9, 10);
        let p = plan(&base, 24, &dirty, 24, 8);
        assert_eq!(p, vec![Piece::Keep(base[0].clone()), Piece::Encode { start: 8, end: 16 }, Piece::Keep(base[2].clone())]);
    }

    #[test]
    fn an_append_after_a_big_tail_adds_an_extent_and_after_a_small_one_takes_it_along() {
        let big = [extent(0, 4 << 20, 1)];
        let mut dirty = Ranges::default();
        dirty.insert(4 << 20, (4 << 20) + 10);
        let p = plan(&big, 4 << 20, &dirty, (4 << 20) + 10, 8 << 20);
        assert_eq!(p, vec![Piece::Keep(big[0].clone()), Piece::Encode { start: 4 << 20, end: (4 << 20) + 10 }]);
        let small = [extent(0, 100, 1)];
        let mut dirty = Ranges::default();
        dirty.insert(100, 110);
        assert_eq!(plan(&small, 100, &dirty, 110, 8 << 20), vec![Piece::Encode { start: 0, end: 110 }]);
    }

    #[test]
    fn a_truncate_cuts_the_map_and_a_big_write_is_split() {
        let base = [extent(0, 8, 1), extent(8, 8, 2)];
        let p = plan(&base, 12, &Ranges::default(), 12, 8);
        assert_eq!(p, vec![Piece::Keep(base[0].clone()), Piece::Encode { start: 8, end: 12 }]);
        let mut dirty = Ranges::default();
        dirty.insert(0, 20);
        assert_eq!(
            plan(&[], 0, &dirty, 20, 8),
            vec![Piece::Encode { start: 0, end: 8 }, Piece::Encode { start: 8, end: 16 }, Piece::Encode { start: 16, end: 20 }]
        );
    }
}
