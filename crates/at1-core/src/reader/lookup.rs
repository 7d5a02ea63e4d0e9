//! Point, range and aggregate access to a table object, pruned by the zone
//! maps and answered from the footer roll-ups where they suffice.

use std::cmp::Ordering;

use super::{AccessCost, ReadError, Reader};
use crate::codec::columnar::ColumnChunk;
use crate::format::{ColumnStats, Dialect, FormatError, RowGroupMeta, Sum, Table, STRING_BOUND_LIMIT};
use crate::value::{Decimal, Scalar, ValueType};

/// The statistics of column `col` in a row group (every row group has one
/// per column: checked when the object was opened).
fn stats_of(meta: &RowGroupMeta, col: usize) -> Result<&ColumnStats, ReadError> {
    meta.stats.get(col).ok_or_else(|| FormatError::Inconsistent(format!("no statistics for column {col}")).into())
}

/// One row of a table: its index in the file and its values (NULL = None).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub row: u64,
    pub values: Vec<Option<Scalar>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateResult {
    pub value: Option<Scalar>,
    /// Row groups whose roll-ups could not answer, so their column was
    /// decoded.
    pub row_groups_decoded: usize,
}

/// The value of `row` in a chunk, as the column's file-level type: a string
/// column reads the field's text, a timestamp column reads dates as
/// midnight; numbers keep their exact form.
pub fn logical_value(chunk: &ColumnChunk, row: usize, logical: ValueType, dialect: &Dialect) -> Option<Scalar> {
    if chunk.is_null(row) {
        return None;
    }
    match logical {
        ValueType::String => chunk.text(row, dialect).map(Scalar::Str),
        ValueType::Timestamp => match chunk.scalar(row, dialect.quote)? {
            Scalar::Date(d) => Some(Scalar::Timestamp(i64::from(d) * 86_400)),
            other => Some(other),
        },
        _ => chunk.scalar(row, dialect.quote),
    }
}

/// Whether a chunk's zone map is in the column's file-level ordering, so its
/// bounds and roll-ups can stand for its values.
pub fn stats_apply(stats: &ColumnStats, logical: ValueType) -> bool {
    stats.storage_type == logical
        || stats.storage_type == ValueType::Null
        || (stats.storage_type == ValueType::Int && logical == ValueType::Decimal)
        || (stats.storage_type == ValueType::Date && logical == ValueType::Timestamp)
}

/// Whether a row group may hold a value in `[lo, hi]` (either bound
/// optional). False only when the zone map proves it cannot.
pub fn may_contain(stats: &ColumnStats, logical: ValueType, lo: Option<&Scalar>, hi: Option<&Scalar>) -> bool {
    if stats.values == 0 {
        return false;
    }
    if !stats_apply(stats, logical) {
        return true;
    }
    let below = |bound: &Option<Scalar>, v: &Scalar| bound.as_ref().and_then(|b| b.compare(v)) == Some(Ordering::Greater);
    let above = |bound: &Option<Scalar>, v: &Scalar| bound.as_ref().and_then(|b| b.compare(v)) == Some(Ordering::Less);
    // max < lo, or min > hi, excludes the row group.
    !(lo.is_some_and(|lo| above(&stats.max, lo)) || hi.is_some_and(|hi| below(&stats.min, hi)))
}

impl Reader {
    fn table_or_err(&self) -> Result<&Table, ReadError> {
        self.object.table().ok_or(ReadError::NotATable)
    }

    pub fn column_index(&self, name: &str) -> Result<usize, ReadError> {
        let table = self.table_or_err()?;
        table
            .columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| table.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name)))
            .ok_or_else(|| ReadError::UnknownColumn(name.to_string()))
    }

    /// The index and file type of the column named `name`.
    fn column_of(&self, name: &str) -> Result<(usize, ValueType), ReadError> {
        let col = self.column_index(name)?;
        let def = self.table_or_err()?.columns.get(col).ok_or_else(|| ReadError::UnknownColumn(name.to_string()))?;
        Ok((col, def.logical_type))
    }

    /// Every column of the given rows of one row group (each column decoded
    /// once).
    pub fn rows(&self, rg: usize, rows_in_rg: &[usize], cost: &mut AccessCost) -> Result<Vec<Row>, ReadError> {
        let table = self.table_or_err()?;
        let meta = table.row_groups.get(rg).ok_or_else(|| FormatError::Inconsistent(format!("no row group {rg}")))?;
        let mut out: Vec<Row> = rows_in_rg.iter().map(|&r| Row { row: meta.first_row + r as u64, values: Vec::with_capacity(table.columns.len()) }).collect();
        if rows_in_rg.is_empty() {
            return Ok(out);
        }
        for (c, def) in table.columns.iter().enumerate() {
            let chunk = self.column(rg, c, cost)?;
            for (row, &r) in out.iter_mut().zip(rows_in_rg) {
                row.values.push(logical_value(&chunk, r, def.logical_type, &table.dialect));
            }
        }
        Ok(out)
    }

    /// Rows whose `column` equals `value`, at most `limit` of them.
    pub fn point(&self, column: &str, value: &Scalar, limit: usize, cost: &mut AccessCost) -> Result<Vec<Row>, ReadError> {
        self.range(column, Some(value), Some(value), limit, cost)
    }

    /// Rows whose `column` lies in `[lo, hi]` (each bound optional), in file
    /// order, at most `limit`. Row groups the zone maps exclude are never
    /// decoded.
    pub fn range(&self, column: &str, lo: Option<&Scalar>, hi: Option<&Scalar>, limit: usize, cost: &mut AccessCost) -> Result<Vec<Row>, ReadError> {
        let table = self.table_or_err()?;
        let (col, logical) = self.column_of(column)?;
        let in_range = |v: &Scalar| {
            lo.is_none_or(|lo| matches!(v.compare(lo), Some(Ordering::Greater | Ordering::Equal)))
                && hi.is_none_or(|hi| matches!(v.compare(hi), Some(Ordering::Less | Ordering::Equal)))
        };
        let mut rows = Vec::new();
        for (rg, meta) in table.row_groups.iter().enumerate() {
            if rows.len() >= limit {
                break;
            }
            if !may_contain(stats_of(meta, col)?, logical, lo, hi) {
                continue;
            }
            let chunk = self.column(rg, col, cost)?;
            let wanted = limit - rows.len();
            let hits: Vec<usize> =
                (0..chunk.rows()).filter(|&r| logical_value(&chunk, r, logical, &table.dialect).is_some_and(|v| in_range(&v))).take(wanted).collect();
            rows.extend(self.rows(rg, &hits, cost)?);
        }
        Ok(rows)
    }

    /// COUNT / SUM / MIN / MAX of a column, from the footer roll-ups; only
    /// row groups whose roll-ups cannot answer are decoded.
    pub fn aggregate(&self, column: &str, op: Aggregate, cost: &mut AccessCost) -> Result<AggregateResult, ReadError> {
        let table = self.table_or_err()?;
        let (col, logical) = self.column_of(column)?;
        let mut acc = Fold::new(op);
        let mut decoded = 0;
        for (rg, meta) in table.row_groups.iter().enumerate() {
            let stats = stats_of(meta, col)?;
            if acc.add_stats(stats, logical) {
                continue;
            }
            decoded += 1;
            let chunk = self.column(rg, col, cost)?;
            for r in 0..chunk.rows() {
                if let Some(v) = logical_value(&chunk, r, logical, &table.dialect) {
                    acc.add_value(&v);
                }
            }
        }
        Ok(AggregateResult { value: acc.finish(), row_groups_decoded: decoded })
    }
}

/// Folds roll-ups and values into one aggregate, exactly. Shared by the
/// reader's `aggregate` and the SQL engine.
#[derive(Debug, Clone)]
pub struct Fold {
    op: Aggregate,
    /// Whether any non-NULL value was folded in (SUM of none is NULL).
    seen: bool,
    /// Non-NULL values folded in (whatever the operation: AVG needs it).
    values: u64,
    count: u64,
    int_sum: i128,
    /// (mantissa, scale) once a decimal was added.
    dec_sum: Option<(i128, u8)>,
    float_sum: Option<f64>,
    best: Option<Scalar>,
}

impl Fold {
    pub fn new(op: Aggregate) -> Self {
        Self { op, seen: false, values: 0, count: 0, int_sum: 0, dec_sum: None, float_sum: None, best: None }
    }

    /// Non-NULL values folded in so far.
    pub fn values(&self) -> u64 {
        self.values
    }

    /// Uses a row group's roll-up; false when it cannot answer (then
    /// nothing was added).
    pub fn add_stats(&mut self, s: &ColumnStats, logical: ValueType) -> bool {
        if s.values == 0 {
            return true;
        }
        if !stats_apply(s, logical) {
            return false;
        }
        let before = (self.seen, self.values);
        self.seen = true;
        self.values += s.values;
        let answered = self.add_rollup(s);
        if !answered {
            (self.seen, self.values) = before;
        }
        answered
    }

    fn add_rollup(&mut self, s: &ColumnStats) -> bool {
        match self.op {
            Aggregate::Count => self.count += s.values,
            Aggregate::Sum => match s.sum {
                // Saturating: a footer's sums are not trusted to be small.
                Some(Sum::Int(v)) => self.int_sum = self.int_sum.saturating_add(v),
                Some(Sum::Decimal { mantissa, scale }) => self.add_decimal(mantissa, scale),
                None => return false,
            },
            Aggregate::Min | Aggregate::Max => {
                let bound = if self.op == Aggregate::Min { &s.min } else { &s.max };
                match bound {
                    // A string bound at the length limit may be a cut prefix,
                    // not a value.
                    Some(Scalar::Str(b)) if b.len() >= STRING_BOUND_LIMIT => return false,
                    Some(b) => self.consider(b),
                    None => return false,
                }
            }
        }
        true
    }

    fn add_decimal(&mut self, mantissa: i128, scale: u8) {
        let (m, s) = self.dec_sum.unwrap_or((0, 0));
        let target = s.max(scale);
        let rescale = |v: i128, from: u8| v.saturating_mul(crate::value::pow10_i128(target - from));
        self.dec_sum = Some((rescale(m, s).saturating_add(rescale(mantissa, scale)), target));
    }

    pub fn add_value(&mut self, v: &Scalar) {
        self.seen = true;
        self.values += 1;
        match self.op {
            Aggregate::Count => self.count += 1,
            Aggregate::Sum => match v {
                Scalar::Int(i) => self.int_sum = self.int_sum.saturating_add(i128::from(*i)),
                Scalar::Decimal(d) => self.add_decimal(i128::from(d.mantissa), d.scale),
                Scalar::Float(f) => *self.float_sum.get_or_insert(0.0) += f,
                _ => {}
            },
            Aggregate::Min | Aggregate::Max => self.consider(v),
        }
    }

    fn consider(&mut self, v: &Scalar) {
        let better = match &self.best {
            None => true,
            Some(b) => {
                let ord = v.compare(b);
                (self.op == Aggregate::Min && ord == Some(Ordering::Less)) || (self.op == Aggregate::Max && ord == Some(Ordering::Greater))
            }
        };
        if better {
            self.best = Some(v.clone());
        }
    }

    pub fn finish(self) -> Option<Scalar> {
        match self.op {
            Aggregate::Count => Some(Scalar::Int(self.count as i64)),
            Aggregate::Sum if !self.seen => None,
            Aggregate::Sum => {
                if let Some(f) = self.float_sum {
                    let exact = self.dec_sum.map_or(0.0, |(m, s)| m as f64 / 10f64.powi(i32::from(s)));
                    return Some(Scalar::Float(f + exact + self.int_sum as f64));
                }
                match self.dec_sum {
                    Some((m, s)) => {
                        let total = m.checked_add(self.int_sum.checked_mul(crate::value::pow10_i128(s))?)?;
                        Some(match i64::try_from(total) {
                            Ok(mantissa) => Scalar::Decimal(Decimal { mantissa, scale: s }),
                            Err(_) => Scalar::Float(total as f64 / 10f64.powi(i32::from(s))),
                        })
                    }
                    None => Some(match i64::try_from(self.int_sum) {
                        Ok(v) => Scalar::Int(v),
                        Err(_) => Scalar::Float(self.int_sum as f64),
                    }),
                }
            }
            Aggregate::Min | Aggregate::Max => self.best,
        }
    }
}
