//! Resolved expressions: evaluation with SQL NULL semantics, and what the
//! zone maps can say about them (may a row group match? must every row?).

use std::cmp::Ordering;

use crate::format::ColumnStats;
use crate::reader::{may_contain, stats_apply};
use crate::value::{Scalar, ValueType};

/// A value or SQL NULL.
pub type Datum = Option<Scalar>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }

    /// The operator with its operands swapped (`5 < x` is `x > 5`).
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggFunc {
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::CountStar | AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
        }
    }
}

/// A scalar expression over one row. Columns are indexes into the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(usize),
    Literal(Datum),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// Conjunction of its terms (a chain `a AND b AND c` is one node, so
    /// a long chain is no deeper than a short one).
    And(Vec<Expr>),
    /// Disjunction of its terms.
    Or(Vec<Expr>),
    Not(Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Vec<u8>,
        negated: bool,
    },
}

/// SQL three-valued truth.
type Truth = Option<bool>;

fn truth(d: &Datum) -> Truth {
    match d {
        None => None,
        Some(Scalar::Bool(b)) => Some(*b),
        Some(_) => Some(true),
    }
}

fn from_truth(t: Truth) -> Datum {
    t.map(Scalar::Bool)
}

impl Expr {
    /// Evaluates the expression; `col(i)` gives column `i` of the row.
    pub fn eval(&self, col: &dyn Fn(usize) -> Datum) -> Datum {
        match self {
            Expr::Column(i) => col(*i),
            Expr::Literal(d) => d.clone(),
            Expr::Cmp(op, a, b) => from_truth(compare(&a.eval(col), &b.eval(col)).map(|o| op.holds(o))),
            Expr::And(terms) => {
                // FALSE wins over NULL, NULL over TRUE.
                let mut out = Some(true);
                for t in terms {
                    match truth(&t.eval(col)) {
                        Some(false) => return from_truth(Some(false)),
                        None => out = None,
                        Some(true) => {}
                    }
                }
                from_truth(out)
            }
            Expr::Or(terms) => {
                // TRUE wins over NULL, NULL over FALSE.
                let mut out = Some(false);
                for t in terms {
                    match truth(&t.eval(col)) {
                        Some(true) => return from_truth(Some(true)),
                        None => out = None,
                        Some(false) => {}
                    }
                }
                from_truth(out)
            }
            Expr::Not(a) => from_truth(truth(&a.eval(col)).map(|t| !t)),
            Expr::IsNull { expr, negated } => Some(Scalar::Bool(expr.eval(col).is_none() != *negated)),
            Expr::Between { expr, low, high, negated } => {
                let v = expr.eval(col);
                let lo = compare(&v, &low.eval(col)).map(|o| o != Ordering::Less);
                let hi = compare(&v, &high.eval(col)).map(|o| o != Ordering::Greater);
                let t = match (lo, hi) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                from_truth(t.map(|t| t != *negated))
            }
            Expr::InList { expr, list, negated } => {
                let v = expr.eval(col);
                v.as_ref()?;
                let mut saw_null = false;
                for item in list {
                    match compare(&v, &item.eval(col)) {
                        Some(Ordering::Equal) => return Some(Scalar::Bool(!*negated)),
                        None => saw_null = true,
                        _ => {}
                    }
                }
                // x IN (..., NULL) is NULL when nothing matched.
                if saw_null {
                    None
                } else {
                    Some(Scalar::Bool(*negated))
                }
            }
            Expr::Like { expr, pattern, negated } => match expr.eval(col) {
                Some(Scalar::Str(s)) => Some(Scalar::Bool(like(&s, pattern) != *negated)),
                Some(other) => Some(Scalar::Bool(like(other.to_string().as_bytes(), pattern) != *negated)),
                None => None,
            },
        }
    }

    /// Whether a row passes this predicate (NULL does not).
    pub fn passes(&self, col: &dyn Fn(usize) -> Datum) -> bool {
        truth(&self.eval(col)) == Some(true)
    }

    /// Columns the expression reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Column(i) => out.push(*i),
            Expr::Literal(_) => {}
            Expr::Cmp(_, a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::And(terms) | Expr::Or(terms) => terms.iter().for_each(|t| t.columns(out)),
            Expr::Not(a) | Expr::IsNull { expr: a, .. } | Expr::Like { expr: a, .. } => a.columns(out),
            Expr::Between { expr, low, high, .. } => {
                expr.columns(out);
                low.columns(out);
                high.columns(out);
            }
            Expr::InList { expr, list, .. } => {
                expr.columns(out);
                list.iter().for_each(|e| e.columns(out));
            }
        }
    }
}

/// Compares two values; NULL or incomparable types give `None`.
pub fn compare(a: &Datum, b: &Datum) -> Option<Ordering> {
    a.as_ref()?.compare(b.as_ref()?)
}

/// SQL LIKE: `%` any run, `_` any one byte; everything else literal.
pub fn like(s: &[u8], pattern: &[u8]) -> bool {
    let (mut si, mut pi) = (0usize, 0usize);
    let (mut star_p, mut star_s) = (usize::MAX, 0usize);
    while si < s.len() {
        if pi < pattern.len() && (pattern[pi] == b'_' || pattern[pi] == s[si]) && pattern[pi] != b'%' {
            si += 1;
            pi += 1;
        } else if pi < pattern.len() && pattern[pi] == b'%' {
            star_p = pi;
            star_s = si;
            pi += 1;
        } else if star_p != usize::MAX {
            pi = star_p + 1;
            star_s += 1;
            si = star_s;
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(|&c| c == b'%')
}

/// The literal prefix of a LIKE pattern (before the first `%` or `_`).
fn like_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern.iter().position(|&c| c == b'%' || c == b'_').unwrap_or(pattern.len());
    &pattern[..end]
}

/// Zone-map knowledge of a column in one row group: its stats and type.
pub struct ColumnZone<'a> {
    pub stats: &'a ColumnStats,
    pub logical: ValueType,
    pub rows: u64,
}

/// What the zone maps prove about a predicate over one row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No row can pass: skip the row group.
    None,
    /// Every row passes: roll-ups can stand for the rows.
    All,
    /// Rows must be checked one by one.
    Some,
}

impl Expr {
    /// Judges the predicate against a row group's zone maps
    /// (`zone(i)` for column `i`). Conservative: `Some` when unsure.
    pub fn judge<'z>(&self, zone: &dyn Fn(usize) -> ColumnZone<'z>) -> Verdict {
        match self {
            Expr::And(terms) => {
                let mut out = Verdict::All;
                for t in terms {
                    match t.judge(zone) {
                        Verdict::None => return Verdict::None,
                        Verdict::Some => out = Verdict::Some,
                        Verdict::All => {}
                    }
                }
                out
            }
            Expr::Or(terms) => {
                let mut out = Verdict::None;
                for t in terms {
                    match t.judge(zone) {
                        Verdict::All => return Verdict::All,
                        Verdict::Some => out = Verdict::Some,
                        Verdict::None => {}
                    }
                }
                out
            }
            Expr::Cmp(op, a, b) => match (&**a, &**b) {
                (Expr::Column(c), Expr::Literal(Some(v))) => judge_cmp(&zone(*c), *op, v),
                (Expr::Literal(Some(v)), Expr::Column(c)) => judge_cmp(&zone(*c), op.flipped(), v),
                (_, Expr::Literal(None)) | (Expr::Literal(None), _) => Verdict::None,
                _ => Verdict::Some,
            },
            Expr::Between { expr, low, high, negated: false } => match (&**expr, &**low, &**high) {
                (Expr::Column(c), Expr::Literal(Some(lo)), Expr::Literal(Some(hi))) => {
                    let z = zone(*c);
                    match (judge_cmp(&z, CmpOp::GtEq, lo), judge_cmp(&z, CmpOp::LtEq, hi)) {
                        (Verdict::None, _) | (_, Verdict::None) => Verdict::None,
                        (Verdict::All, Verdict::All) => Verdict::All,
                        _ => Verdict::Some,
                    }
                }
                _ => Verdict::Some,
            },
            Expr::InList { expr, list, negated: false } => match &**expr {
                Expr::Column(c) => {
                    let z = zone(*c);
                    let mut any_maybe = false;
                    for item in list {
                        match item {
                            Expr::Literal(Some(v)) => any_maybe |= judge_cmp(&z, CmpOp::Eq, v) != Verdict::None,
                            _ => any_maybe = true,
                        }
                    }
                    if any_maybe {
                        Verdict::Some
                    } else {
                        Verdict::None
                    }
                }
                _ => Verdict::Some,
            },
            Expr::IsNull { expr, negated } => match &**expr {
                Expr::Column(c) => {
                    let z = zone(*c);
                    let (nulls, values) = (z.stats.nulls, z.stats.values);
                    let (has, all) = if *negated { (values > 0, nulls == 0) } else { (nulls > 0, values == 0) };
                    if !has {
                        Verdict::None
                    } else if all {
                        Verdict::All
                    } else {
                        Verdict::Some
                    }
                }
                _ => Verdict::Some,
            },
            Expr::Like { expr, pattern, negated: false } => match &**expr {
                Expr::Column(c) => {
                    let z = zone(*c);
                    let prefix = like_prefix(pattern);
                    if prefix.is_empty() || z.logical != ValueType::String {
                        return if z.stats.values == 0 { Verdict::None } else { Verdict::Some };
                    }
                    // Values with the prefix lie in [prefix, prefix + 0xFF...].
                    let lo = Scalar::Str(prefix.to_vec());
                    let mut hi = prefix.to_vec();
                    hi.extend_from_slice(&[0xFF; 8]);
                    if may_contain(z.stats, z.logical, Some(&lo), Some(&Scalar::Str(hi))) {
                        Verdict::Some
                    } else {
                        Verdict::None
                    }
                }
                _ => Verdict::Some,
            },
            Expr::Literal(d) => match truth(d) {
                Some(true) => Verdict::All,
                _ => Verdict::None,
            },
            _ => Verdict::Some,
        }
    }
}

/// `column op v` over a zone map.
fn judge_cmp(z: &ColumnZone<'_>, op: CmpOp, v: &Scalar) -> Verdict {
    if z.stats.values == 0 {
        return Verdict::None; // all NULL: no comparison holds
    }
    if !stats_apply(z.stats, z.logical) {
        return Verdict::Some;
    }
    let (Some(min), Some(max)) = (&z.stats.min, &z.stats.max) else { return Verdict::Some };
    let (Some(lo), Some(hi)) = (min.compare(v), max.compare(v)) else { return Verdict::Some };
    use Ordering::*;
    let (none, all) = match op {
        CmpOp::Eq => (lo == Greater || hi == Less, lo == Equal && hi == Equal),
        CmpOp::NotEq => (lo == Equal && hi == Equal, lo == Greater || hi == Less),
        CmpOp::Lt => (lo != Less, hi == Less),
        CmpOp::LtEq => (lo == Greater, hi != Greater),
        CmpOp::Gt => (hi != Greater, lo == Greater),
        CmpOp::GtEq => (hi == Less, lo != Less),
    };
    if none {
        Verdict::None
    } else if all && z.stats.nulls == 0 {
        Verdict::All
    } else {
        Verdict::Some
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_sql_patterns() {
        assert!(like(b"JFK", b"J%"));
        assert!(like(b"JFK", b"%K"));
        assert!(like(b"JFK", b"_F_"));
        assert!(like(b"", b"%"));
        assert!(!like(b"JFK", b"L%"));
        assert!(like(b"a%b", b"a%b"));
        assert!(!like(b"abc", b"ab"));
    }

    #[test]
    fn null_logic_is_three_valued() {
        let null = Expr::Literal(None);
        let t = Expr::Literal(Some(Scalar::Bool(true)));
        let f = Expr::Literal(Some(Scalar::Bool(false)));
        let none = |_: usize| None;
        assert_eq!(Expr::And(vec![null.clone(), f.clone()]).eval(&none), Some(Scalar::Bool(false)));
        assert_eq!(Expr::Or(vec![null.clone(), t]).eval(&none), Some(Scalar::Bool(true)));
        assert_eq!(Expr::Not(Box::new(null.clone())).eval(&none), None);
        let cmp = Expr::Cmp(CmpOp::Eq, Box::new(null), Box::new(Expr::Literal(Some(Scalar::Int(1)))));
        assert!(!cmp.passes(&none));
    }
}
