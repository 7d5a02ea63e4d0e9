//! `at1 log` (the journal, readable while the store is mounted) and `at1
//! fsck` (the namespace against itself and the object store; `--repair`
//! with the store's lock).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use at1::store::Event;
use at1::volume::fsck::{self, FsckReport};
use at1::volume::Volume;

use super::UsageError;

pub const LOG_AFTER_HELP: &str = "\
One line per event: SEQ TIME OP PATH [-> PATH2] ino=N [sha256=HEX], TIME in
UTC (RFC 3339). With --json, one JSON object per line: seq, time (RFC 3339),
time_ns, op, paths, ino, sha256 (the new content's, or null), detail (the
event as recorded) and hash. Works while the store is mounted (the metadata
is read, never changed).

Exit status:
  0  success
  1  error: not a store, or its metadata cannot be read
  2  usage error: unknown or bad arguments and options (a bad --since)";

pub const FSCK_AFTER_HELP: &str = "\
Reports, one line each with where it is: journal chain breaks (by event
seq); files whose content's object is missing, does not decode or does not
match its SHA-256 (by path); entries naming no inode (by path); link counts
that disagree with the entries naming the inode (a directory: 2 + its
subdirectories); inodes named by nothing and not awaiting collection as
orphans; objects on disk that nothing references, not even the garbage list
(by their file under STORE/objects/).

--repair (the store must not be mounted: it takes the store's lock) sets
link counts to what the entries say (journaled as \"repair\" events) and
moves unreferenced objects to STORE/quarantine/. It never deletes anything;
damage it cannot prove a fix for is reported and left as it is.

Exit status:
  0  no damage (or, with --repair, every damage found was repaired)
  1  error: not a store, in use (with --repair), or unreadable
  2  usage error: unknown or bad arguments and options
  3  damage found (and, with --repair, not all of it repaired)";

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The store (a directory made by `at1 mount`).
    pub store: PathBuf,
    /// Only events naming this path or a path under it (e.g. /docs or
    /// /docs/a.txt; relative to the store's root).
    #[arg(long, value_name = "P")]
    pub path: Option<String>,
    /// Only events at or after this time: an RFC 3339 time
    /// (2026-01-31T12:00:00Z) or a unix timestamp in seconds (1769860800).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// The store (a directory made by `at1 mount`).
    pub store: PathBuf,
    /// Fix what can be proved (link counts) and move objects nothing
    /// references to STORE/quarantine/; never deletes. The store must not
    /// be mounted.
    #[arg(long)]
    pub repair: bool,
}

/// Raised by `fsck` so that `main` exits with the damage code.
#[derive(Debug, thiserror::Error)]
#[error("{0} damage(s) found in {1}")]
pub struct DamageFound(pub usize, pub String);

// ------------------------------------------------------------------- log

pub fn log(args: &LogArgs) -> Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let filter = args.path.as_deref().map(normalize_path);
    let volume = Volume::open_read_only(&args.store).map_err(|e| anyhow!("{}: {e}", args.store.display()))?;
    let mut out = std::io::stdout().lock();
    let mut from = 1;
    loop {
        let page = volume.events(from, 1024).map_err(|e| anyhow!("{}: {e}", args.store.display()))?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for event in &page {
            if since.is_some_and(|t| event.time < t) {
                continue;
            }
            let detail: Value = serde_json::from_str(&event.detail).unwrap_or(Value::Null);
            let paths = paths_of(&detail);
            if let Some(p) = &filter {
                if !paths.iter().any(|q| is_at_or_under(q, p)) {
                    continue;
                }
            }
            let line = if args.json { json_line(event, &detail, &paths) } else { text_line(event, &detail, &paths) };
            writeln!(out, "{line}").context("stdout")?;
        }
    }
    Ok(())
}

/// `--since`: RFC 3339, or unix seconds; as nanoseconds since the epoch.
fn parse_since(text: &str) -> Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return secs.checked_mul(1_000_000_000).ok_or_else(|| UsageError(format!("--since {text}: out of range")).into());
    }
    let t: jiff::Timestamp =
        text.parse().map_err(|_| UsageError(format!("--since {text}: not an RFC 3339 time (2026-01-31T12:00:00Z) or a unix timestamp in seconds")))?;
    i64::try_from(t.as_nanosecond()).map_err(|_| UsageError(format!("--since {text}: out of range")).into())
}

/// A store path as the journal writes it: `/a/b`, no trailing slash.
fn normalize_path(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    format!("/{}", parts.join("/"))
}

fn is_at_or_under(path: &str, filter: &str) -> bool {
    filter == "/" || path == filter || path.strip_prefix(filter).is_some_and(|rest| rest.starts_with('/'))
}

/// The paths an event names: its path, and a rename's or exchange's
/// other one.
fn paths_of(detail: &Value) -> Vec<String> {
    ["path", "to", "other_path"].iter().filter_map(|k| detail[*k].as_str().map(str::to_string)).collect()
}

/// The new content's SHA-256, if the event has one.
fn sha256_of(detail: &Value) -> Option<&str> {
    detail["sha256"].as_str().or_else(|| detail["content"]["sha256"].as_str())
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).map(|t| t.to_string()).unwrap_or_else(|_| format!("@{ns}ns"))
}

fn text_line(e: &Event, detail: &Value, paths: &[String]) -> String {
    let mut line = format!("{} {} {}", e.seq, rfc3339(e.time), e.op);
    match paths {
        [] => {}
        [one] => line += &format!(" {one}"),
        [first, rest @ ..] => line += &format!(" {first} -> {}", rest.join(" ")),
    }
    if let Some(ino) = detail["ino"].as_u64() {
        line += &format!(" ino={ino}");
    }
    if let Some(sha) = sha256_of(detail) {
        line += &format!(" sha256={sha}");
    }
    line
}

fn json_line(e: &Event, detail: &Value, paths: &[String]) -> String {
    let hash: String = e.hash.iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "seq": e.seq,
        "time": rfc3339(e.time),
        "time_ns": e.time,
        "op": e.op,
        "paths": paths,
        "ino": detail["ino"],
        "sha256": sha256_of(detail),
        "detail": detail,
        "hash": hash,
    })
    .to_string()
}

// ------------------------------------------------------------------ fsck

pub fn fsck(args: &FsckArgs) -> Result<()> {
    let store = &args.store;
    let volume = Volume::open_for_check(store, args.repair).map_err(|e| anyhow!("{}: {e}", store.display()))?;
    let report = fsck::fsck(&volume, args.repair).map_err(|e| anyhow!("{}: {e}", store.display()))?;
    print_report(store, &report)?;
    let unrepaired = if args.repair { report.unrepaired() } else { report.damage.len() };
    if unrepaired > 0 {
        return Err(DamageFound(unrepaired, store.display().to_string()).into());
    }
    Ok(())
}

fn print_report(store: &Path, report: &FsckReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for damage in &report.damage {
        writeln!(out, "{}: DAMAGE: {damage}", store.display()).context("stdout")?;
    }
    for fix in &report.repaired {
        writeln!(out, "{}: REPAIRED: {fix}", store.display()).context("stdout")?;
    }
    let summary = format!(
        "{} inodes, {} entries, {} objects, {} journal events: {} damage(s), {} repaired",
        report.inodes,
        report.entries,
        report.objects,
        report.events,
        report.damage.len(),
        report.repaired.len()
    );
    writeln!(out, "{}: {summary}", store.display()).context("stdout")?;
    Ok(())
}
