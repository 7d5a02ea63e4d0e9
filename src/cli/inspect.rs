//! `at1 inspect`: what an object holds and how it is laid out.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use serde_json::{json, Value};

use at1::format::RowGroupStorage;
use at1::reader::{logical_value, AccessCost, Aggregate, Fold, Object, Reader};
use at1::value::option_to_json;

use super::ratio;

fn describe(object: &Arc<Object>) -> Result<Value> {
    let footer = object.footer();
    let mut by_role: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut by_backend: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for b in &footer.blocks {
        let r = by_role.entry(b.role.name()).or_default();
        r.0 += 1;
        r.1 += b.stored_len;
        let k = by_backend.entry(b.backend.name()).or_default();
        k.0 += 1;
        k.1 += b.stored_len;
    }
    let counts =
        |m: BTreeMap<&str, (u64, u64)>| -> Value { m.into_iter().map(|(k, (n, bytes))| (k.to_string(), json!({"count": n, "stored_bytes": bytes}))).collect() };
    let s = &footer.settings;
    let mut out = json!({
        "format_version": at1::format::FORMAT_VERSION,
        "original_bytes": object.original_len(),
        "stored_bytes": object.stored_len(),
        "ratio": ratio(object.original_len(), object.stored_len()),
        "sha256": hex(&object.trailer().original_sha256),
        "codec": object.codec_summary(),
        "recall_point_bytes": object.point_recall_bytes(),
        "metadata_bytes": object.metadata_len(),
        "settings": {
            "codec": s.codec.name(), "backend": s.backend.name(), "level": s.level, "column_level": s.column_level,
            "frame_size": s.frame_size, "row_group_rows": s.row_group_rows,
            "row_group_bytes": s.row_group_bytes, "chunk_lines": s.chunk_lines,
            "keep_queryable": s.keep_queryable, "writer": s.writer,
        },
        "blocks": {"count": footer.blocks.len(), "by_role": counts(by_role), "by_backend": counts(by_backend)},
        "segments": footer.segments.len(),
    });
    if let Some(t) = &footer.table {
        let rows: u64 = t.row_groups.iter().map(|r| r.row_count).sum();
        let columns: Vec<Value> = t
            .columns
            .iter()
            .enumerate()
            .map(|(c, def)| -> Result<Value> {
                let nulls: u64 = t.row_groups.iter().map(|r| r.stats[c].nulls).sum();
                let stored: u64 = t
                    .row_groups
                    .iter()
                    .filter_map(|r| match &r.storage {
                        RowGroupStorage::Columnar { columns, .. } => Some(footer.blocks[columns[c] as usize].stored_len),
                        RowGroupStorage::Raw { .. } => None,
                    })
                    .sum();
                let (min, max) = column_bounds(object, c)?;
                Ok(json!({"name": def.name, "type": def.logical_type.name(), "nulls": nulls, "stored_bytes": stored, "min": min, "max": max}))
            })
            .collect::<Result<_>>()?;
        let row_groups: Vec<Value> = t
            .row_groups
            .iter()
            .map(|rg| {
                let (storage, stored): (&str, u64) = match &rg.storage {
                    RowGroupStorage::Raw { block } => ("raw", footer.blocks[*block as usize].stored_len),
                    RowGroupStorage::Columnar { layout, columns } => {
                        ("columnar", layout.iter().chain(columns).map(|b| footer.blocks[*b as usize].stored_len).sum())
                    }
                };
                let stats: Vec<Value> = rg
                    .stats
                    .iter()
                    .map(|s| {
                        json!({"type": s.storage_type.name(), "values": s.values, "nulls": s.nulls,
                               "min": option_to_json(&s.min), "max": option_to_json(&s.max),
                               "sum": s.sum.map(|x| format!("{x:?}"))})
                    })
                    .collect();
                json!({"first_row": rg.first_row, "rows": rg.row_count, "storage": storage, "stored_bytes": stored, "columns": stats})
            })
            .collect();
        out["table"] = json!({
            "delimiter": (t.dialect.delimiter as char).to_string(),
            "quote": t.dialect.quote.map(|q| (q as char).to_string()),
            "line_terminator": if t.dialect.terminator == at1::format::LineTerminator::CrLf { "CRLF" } else { "LF" },
            "has_header": t.dialect.has_header,
            "rows": rows,
            "columns": columns,
            "row_groups": row_groups,
        });
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run(object: &Arc<Object>, json: bool, list_row_groups: bool) -> Result<()> {
    let d = describe(object)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
        return Ok(());
    }
    writeln!(out, "codec:          {}", d["codec"].as_str().unwrap_or("?"))?;
    writeln!(out, "original bytes: {}", object.original_len())?;
    writeln!(
        out,
        "stored bytes:   {} (ratio {:.2}x, metadata {} bytes)",
        object.stored_len(),
        ratio(object.original_len(), object.stored_len()),
        object.metadata_len()
    )?;
    writeln!(out, "sha256:         {}", d["sha256"].as_str().unwrap_or(""))?;
    writeln!(out, "settings:       {}", d["settings"])?;
    writeln!(out, "blocks:         {} {}", d["blocks"]["count"], d["blocks"]["by_role"])?;
    writeln!(out, "segments:       {}", d["segments"])?;
    if let Some(t) = d.get("table") {
        writeln!(
            out,
            "table:          {} rows, {} row groups, delimiter {:?}, header {}, {}",
            t["rows"],
            t["row_groups"].as_array().map_or(0, Vec::len),
            t["delimiter"].as_str().unwrap_or(""),
            t["has_header"],
            t["line_terminator"].as_str().unwrap_or("")
        )?;
        for (c, col) in t["columns"].as_array().into_iter().flatten().enumerate() {
            writeln!(
                out,
                "  column {:<3} {:<24} {:<10} {:>10} B  nulls {:<8} min {} max {}",
                c,
                col["name"].as_str().unwrap_or(""),
                col["type"].as_str().unwrap_or(""),
                col["stored_bytes"],
                col["nulls"],
                col["min"],
                col["max"]
            )?;
        }
        if list_row_groups {
            for (i, rg) in t["row_groups"].as_array().into_iter().flatten().enumerate() {
                writeln!(
                    out,
                    "  row group {i}: first row {} rows {} {} {} bytes",
                    rg["first_row"],
                    rg["rows"],
                    rg["storage"].as_str().unwrap_or(""),
                    rg["stored_bytes"]
                )?;
                for (c, s) in rg["columns"].as_array().into_iter().flatten().enumerate() {
                    writeln!(
                        out,
                        "    col {c}: {} values {} nulls {} min {} max {}",
                        s["type"].as_str().unwrap_or(""),
                        s["values"],
                        s["nulls"],
                        s["min"],
                        s["max"]
                    )?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// A column's smallest and largest value, exactly as SQL's MIN and MAX give
/// them (the same fold): from the zone maps where they hold bounds,
/// decoding the column of the row groups whose zone map has none (a value
/// that does not read as the column's type leaves its chunk unbounded).
fn column_bounds(object: &Arc<Object>, col: usize) -> Result<(Value, Value)> {
    let Some(table) = object.table() else { return Ok((Value::Null, Value::Null)) };
    let logical = table.columns[col].logical_type;
    let reader = Reader::new(object.clone(), None);
    let mut cost = AccessCost::default();
    let (mut min, mut max) = (Fold::new(Aggregate::Min), Fold::new(Aggregate::Max));
    for (rg, meta) in table.row_groups.iter().enumerate() {
        let stats = &meta.stats[col];
        // Both roll-ups are tried; where either cannot answer, the values
        // go into both (folding a bound in twice changes neither).
        let answered = [min.add_stats(stats, logical), max.add_stats(stats, logical)];
        if answered == [true, true] {
            continue;
        }
        let chunk = reader.column(rg, col, &mut cost)?;
        for v in (0..chunk.rows()).filter_map(|r| logical_value(&chunk, r, logical, &table.dialect)) {
            min.add_value(&v);
            max.add_value(&v);
        }
    }
    Ok((option_to_json(&min.finish()), option_to_json(&max.finish())))
}
