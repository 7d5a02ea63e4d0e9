//! `at1 recall-cost`: bytes at rest and bytes materialized per access shape,
//! beside whole-file xz of the same original (seed note 002).
//!
//! Every access is measured cold, through a fresh reader with no cache, and
//! counts the object's metadata (header, footer, trailer) plus every block it
//! read. Whole-file xz must read its entire archive for any access.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use at1::format::Table;
use at1::reader::{self, AccessCost, Aggregate, Object, Reader};
use at1::value::{Scalar, ValueType};

/// One measured access.
struct Access {
    name: &'static str,
    cost: Option<AccessCost>,
    detail: String,
}

pub fn run(path: &Path, json_out: bool, xz_level: u32) -> Result<()> {
    super::check_not_a_directory(path)?;
    let object = Arc::new(Object::open(path).with_context(|| format!("{}", path.display()))?);
    measure(path, &object, json_out, xz_level).with_context(|| format!("{}", path.display()))
}

fn measure(path: &Path, object: &Arc<Object>, json_out: bool, xz_level: u32) -> Result<()> {
    let object = object.clone();
    let mut w = io::stdout().lock();
    let meta = object.metadata_len();
    let accesses = match object.table() {
        Some(table) if !table.row_groups.is_empty() => table_accesses(&object, table)?,
        _ => byte_accesses(&object)?,
    };
    let worst_4k = worst_4k_read(&object)?;
    let xz_bytes = xz_whole_file(&object, xz_level)?;
    let original = object.original_len();
    let total = |a: &Access| a.cost.map(|c| c.bytes_read + meta);
    if json_out {
        let mut out = json!({
            "file": path.display().to_string(),
            "original_bytes": original,
            "idle_resident_bytes": object.stored_len(),
            "xz_whole_file_bytes": xz_bytes,
            "xz_level": xz_level,
            "metadata_bytes": meta,
            "read_4k_max_decoded_bytes": worst_4k.bytes_decoded,
            "read_4k_max_read_bytes": worst_4k.bytes_read + meta,
        });
        for a in &accesses {
            out[format!("{}_bytes", a.name)] = total(a).map_or(Value::Null, Value::from);
            out[format!("{}_decoded_bytes", a.name)] = a.cost.map_or(Value::Null, |c| Value::from(c.bytes_decoded));
            out[format!("{}_blocks", a.name)] = a.cost.map_or(Value::Null, |c| Value::from(c.blocks_decoded));
            out[format!("{}_detail", a.name)] = Value::from(a.detail.clone());
        }
        writeln!(w, "{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    let pct = |n: u64| 100.0 * n as f64 / original.max(1) as f64;
    writeln!(w, "{}: {} original bytes", path.display(), original)?;
    writeln!(
        w,
        "IDLE RESIDENT   at1 {:>12} B ({:6.2}%)   xz -{xz_level} whole file {:>12} B ({:6.2}%)",
        object.stored_len(),
        pct(object.stored_len()),
        xz_bytes,
        pct(xz_bytes)
    )?;
    writeln!(w, "RECALL COST (bytes materialized, cold: metadata {meta} B + blocks read)")?;
    for a in &accesses {
        match total(a) {
            Some(b) => writeln!(
                w,
                "  {:<10} at1 {:>12} B ({:6.3}%)  decoded {:>12} B   xz {:>12} B (100% of archive)   {}",
                a.name,
                b,
                pct(b),
                a.cost.map_or(0, |c| c.bytes_decoded),
                xz_bytes,
                a.detail
            )?,
            None => writeln!(w, "  {:<10} n/a: {}", a.name, a.detail)?,
        }
    }
    writeln!(w, "  4 KiB read, worst case over every segment: {} B read, {} B decoded", worst_4k.bytes_read + meta, worst_4k.bytes_decoded)?;
    Ok(())
}

/// The costliest 4 KiB read: one read at the start of every segment (a read
/// within one segment decodes the same whatever its offset), each through a
/// fresh reader so the dictionary is counted too.
fn worst_4k_read(object: &Arc<Object>) -> Result<AccessCost> {
    let mut worst = AccessCost::default();
    for s in &object.footer().segments {
        if s.len == 0 {
            continue;
        }
        let mut cost = AccessCost::default();
        let n = 4096.min(s.len as usize);
        Reader::new(object.clone(), None).read_at(s.offset, n, &mut cost)?;
        if cost.bytes_decoded > worst.bytes_decoded {
            worst = cost;
        }
    }
    Ok(worst)
}

/// For objects that are not tables: a 4 KiB read, a 1% read, and a full read.
fn byte_accesses(object: &Arc<Object>) -> Result<Vec<Access>> {
    let len = object.original_len();
    let mid = len / 2;
    let read = |offset: u64, n: u64| -> Result<AccessCost> {
        let mut cost = AccessCost::default();
        Reader::new(object.clone(), None).read_at(offset, n as usize, &mut cost)?;
        Ok(cost)
    };
    let one_pct = (len / 100).max(1);
    Ok(vec![
        Access { name: "point", cost: Some(read(mid, 4096)?), detail: format!("4 KiB read at offset {mid}") },
        Access { name: "range", cost: Some(read(mid, one_pct)?), detail: format!("{one_pct} bytes (1%) from offset {mid}") },
        Access { name: "aggregate", cost: None, detail: "not a table: no roll-ups".into() },
        Access { name: "full", cost: Some(read(0, len)?), detail: "every byte".into() },
    ])
}

fn is_prunable(t: ValueType) -> bool {
    matches!(t, ValueType::Int | ValueType::Decimal | ValueType::Timestamp | ValueType::Date)
}

/// Value of column `col` at global row `row` (read outside the measurement).
fn value_at(object: &Arc<Object>, table: &Table, col: usize, row: u64) -> Result<Option<Scalar>> {
    let rg = table.row_groups.partition_point(|r| r.first_row + r.row_count <= row).min(table.row_groups.len() - 1);
    let reader = Reader::new(object.clone(), None);
    let chunk = reader.column(rg, col, &mut AccessCost::default())?;
    let in_rg = (row - table.row_groups[rg].first_row) as usize;
    Ok(reader::logical_value(&chunk, in_rg, table.columns[col].logical_type, &table.dialect))
}

/// Row groups the zone maps cannot exclude for `[lo, hi]` on `col`.
fn candidate_row_groups(table: &Table, col: usize, lo: &Scalar, hi: &Scalar) -> usize {
    let t = table.columns[col].logical_type;
    table.row_groups.iter().filter(|rg| reader::may_contain(&rg.stats[col], t, Some(lo), Some(hi))).count()
}

/// The prunable column whose zone maps leave the fewest row groups for the
/// value(s) at the given rows, with those values.
fn best_column(object: &Arc<Object>, table: &Table, lo_row: u64, hi_row: u64) -> Result<Option<(usize, Scalar, Scalar)>> {
    let mut best: Option<(usize, usize, Scalar, Scalar)> = None;
    for (c, def) in table.columns.iter().enumerate() {
        if !is_prunable(def.logical_type) {
            continue;
        }
        let (Some(a), Some(b)) = (value_at(object, table, c, lo_row)?, value_at(object, table, c, hi_row)?) else { continue };
        let (lo, hi) = if a.compare(&b) == Some(std::cmp::Ordering::Greater) { (b, a) } else { (a, b) };
        let n = candidate_row_groups(table, c, &lo, &hi);
        if best.as_ref().is_none_or(|(_, m, _, _)| n < *m) {
            best = Some((c, n, lo, hi));
        }
    }
    Ok(best.map(|(c, _, lo, hi)| (c, lo, hi)))
}

fn table_accesses(object: &Arc<Object>, table: &Table) -> Result<Vec<Access>> {
    let rows: u64 = table.row_groups.iter().map(|r| r.row_count).sum();
    let target = rows / 2;
    let mut out = Vec::new();
    let fresh = || Reader::new(object.clone(), None);

    // Point: one row found by the most selective column's value.
    match best_column(object, table, target, target)? {
        Some((c, v, _)) => {
            let mut cost = AccessCost::default();
            let found = fresh().point(&table.columns[c].name, &v, 1, &mut cost)?;
            let detail = format!(
                "{} = {} -> {} row, {} of {} row groups",
                table.columns[c].name,
                v,
                found.len(),
                candidate_row_groups(table, c, &v, &v),
                table.row_groups.len()
            );
            out.push(Access { name: "point", cost: Some(cost), detail });
        }
        None => out.push(Access { name: "point", cost: None, detail: "no numeric or time column to look up by".into() }),
    }

    // Range: ~1% of the rows, around the middle, on the best-ordered column.
    let span = (rows / 100).max(1);
    let (lo_row, hi_row) = (target.saturating_sub(span / 2), (target + span / 2).min(rows - 1));
    match best_column(object, table, lo_row, hi_row)? {
        Some((c, lo, hi)) => {
            let mut cost = AccessCost::default();
            let found = fresh().range(&table.columns[c].name, Some(&lo), Some(&hi), usize::MAX, &mut cost)?;
            let detail = format!("{} in [{lo}, {hi}] -> {} rows ({:.2}%)", table.columns[c].name, found.len(), 100.0 * found.len() as f64 / rows as f64);
            out.push(Access { name: "range", cost: Some(cost), detail });
        }
        None => out.push(Access { name: "range", cost: None, detail: "no numeric or time column".into() }),
    }

    // Aggregate: SUM of the first numeric column, from the roll-ups.
    match table.columns.iter().position(|c| c.logical_type.is_numeric()) {
        Some(c) => {
            let mut cost = AccessCost::default();
            let r = fresh().aggregate(&table.columns[c].name, Aggregate::Sum, &mut cost)?;
            let value = r.value.map_or("NULL".to_string(), |v| v.to_string());
            let detail = format!("SUM({}) = {value}, {} row groups decoded", table.columns[c].name, r.row_groups_decoded);
            out.push(Access { name: "aggregate", cost: Some(cost), detail });
        }
        None => out.push(Access { name: "aggregate", cost: None, detail: "no numeric column".into() }),
    }

    let mut cost = AccessCost::default();
    fresh().read_at(0, object.original_len() as usize, &mut cost)?;
    out.push(Access { name: "full", cost: Some(cost), detail: "every byte".into() });
    Ok(out)
}

/// Size of the whole original under xz at `level`.
fn xz_whole_file(object: &Arc<Object>, level: u32) -> Result<u64> {
    struct Counter(u64);
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut xz = liblzma::write::XzEncoder::new(Counter(0), level);
    Reader::new(object.clone(), None).extract(&mut xz, |_| {})?;
    Ok(xz.finish()?.0)
}
