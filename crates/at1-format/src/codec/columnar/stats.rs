//! Zone maps and roll-ups of a column chunk, built while it is encoded.

use crate::format::{ColumnStats, Sum, STRING_BOUND_LIMIT as MAX_STRING_BOUND};
use crate::value::{self, Scalar, ValueType};

pub struct StatsBuilder {
    ty: ValueType,
    values: u64,
    nulls: u64,
    min: Option<Scalar>,
    max: Option<Scalar>,
    /// False once a value could not be bounded (an exception that reads as a
    /// float where the chunk holds decimals): the zone map then says nothing.
    bounded: bool,
    sum: Option<Sum>,
}

impl StatsBuilder {
    pub fn new(ty: ValueType) -> Self {
        let sum = match ty {
            ValueType::Int => Some(Sum::Int(0)),
            ValueType::Decimal => Some(Sum::Decimal { mantissa: 0, scale: 0 }),
            _ => None,
        };
        Self { ty, values: 0, nulls: 0, min: None, max: None, bounded: true, sum }
    }

    pub fn add_null(&mut self) {
        self.nulls += 1;
    }

    /// Adds integer values (the common case, without a `Scalar` per value).
    pub fn add_ints(&mut self, values: &[i64]) {
        let (Some(&lo), Some(&hi)) = (values.iter().min(), values.iter().max()) else { return };
        self.values += values.len() as u64;
        self.widen(&Scalar::Int(lo));
        self.widen(&Scalar::Int(hi));
        let total = values.iter().try_fold(0i128, |acc, &v| acc.checked_add(i128::from(v)));
        self.sum = match (self.sum, total) {
            (Some(Sum::Int(s)), Some(t)) => s.checked_add(t).map(Sum::Int),
            _ => None,
        };
    }

    /// Adds a value of the chunk's type.
    pub fn add(&mut self, v: &Scalar) {
        self.values += 1;
        if matches!(v, Scalar::Float(_)) {
            self.bounded = false;
            self.sum = None;
            return;
        }
        self.add_to_sum(v);
        self.widen(v);
    }

    /// Widens the bounds to include `v`.
    fn widen(&mut self, v: &Scalar) {
        if self.min.as_ref().is_none_or(|m| v.compare(m) == Some(std::cmp::Ordering::Less)) {
            self.min = Some(v.clone());
        }
        if self.max.as_ref().is_none_or(|m| v.compare(m) == Some(std::cmp::Ordering::Greater)) {
            self.max = Some(v.clone());
        }
    }

    pub fn add_str(&mut self, s: &[u8]) {
        self.values += 1;
        if self.min.as_ref().is_none_or(|m| matches!(m, Scalar::Str(m) if s < m.as_slice())) {
            self.min = Some(Scalar::Str(s.to_vec()));
        }
        if self.max.as_ref().is_none_or(|m| matches!(m, Scalar::Str(m) if s > m.as_slice())) {
            self.max = Some(Scalar::Str(s.to_vec()));
        }
    }

    /// Adds an exception by the value its text reads as.
    pub fn add_text(&mut self, text: &[u8]) {
        if self.ty == ValueType::String {
            return self.add_str(text);
        }
        match value::parse_lenient(self.ty, text) {
            Some(v) => self.add(&v),
            None => {
                self.values += 1;
                self.bounded = false;
                self.sum = None;
            }
        }
    }

    fn add_to_sum(&mut self, v: &Scalar) {
        self.sum = match (self.sum, v) {
            (Some(Sum::Int(s)), Scalar::Int(x)) => s.checked_add(i128::from(*x)).map(Sum::Int),
            (Some(Sum::Decimal { mantissa, scale }), Scalar::Decimal(d)) => {
                let target = scale.max(d.scale);
                let current = mantissa.checked_mul(value::pow10_i128(target - scale));
                current.and_then(|c| c.checked_add(d.mantissa_at(target))).map(|m| Sum::Decimal { mantissa: m, scale: target })
            }
            (Some(Sum::Decimal { mantissa, scale }), Scalar::Int(x)) => {
                mantissa.checked_add(i128::from(*x).checked_mul(value::pow10_i128(scale)).unwrap_or(i128::MAX)).map(|m| Sum::Decimal { mantissa: m, scale })
            }
            _ => None,
        };
    }

    pub fn finish(self) -> ColumnStats {
        let (min, max) = if self.bounded { (self.min, self.max) } else { (None, None) };
        let min = min.map(|m| match m {
            Scalar::Str(mut s) => {
                s.truncate(MAX_STRING_BOUND);
                Scalar::Str(s)
            }
            other => other,
        });
        let max = max.filter(|m| !matches!(m, Scalar::Str(s) if s.len() > MAX_STRING_BOUND));
        ColumnStats { storage_type: self.ty, values: self.values, nulls: self.nulls, min, max, sum: self.sum }
    }
}
