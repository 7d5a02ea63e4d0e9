//! What opening a store repairs after a crash (or a kill -9):
//!
//! - **Contents committed but not yet durable.** A close commits without an
//!   fsync (group commit); after a crash the metadata may name an object
//!   whose bytes never reached the disk. Every content change after the
//!   last durable point (`synced_seq`) is checked — the object must open
//!   and every block's checksum match — and one that fails is rolled back
//!   to the content before it (kept until the change was durable) and
//!   journaled. A crash never exposes an unverified or partial version.
//! - **Orphans**: files unlinked while open; no handle survives a restart.
//! - **Objects no inode names** (put by a commit that never committed) are
//!   moved to `quarantine/`, never deleted on a guess.
//! - **Released objects** whose release is durable are deleted.
//!
//! A clean unmount marks the store `clean`; then only orphans and garbage
//! are looked at.

use std::collections::HashSet;

use at1_store::{Content, Extent, Ino, ObjectId};
use serde_json::json;

use crate::error::VResult;
use crate::journal;
use crate::volume::{extents_json, Volume};

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub clean: bool,
    pub contents_checked: usize,
    pub contents_rolled_back: usize,
    pub orphans: usize,
    pub quarantined: usize,
    pub objects_collected: usize,
}

pub(crate) fn recover(v: &Volume) -> VResult<Recovered> {
    let (clean, synced) = {
        let r = v.meta.read()?;
        (r.setting("clean")?.as_deref() == Some("1"), r.setting("synced_seq")?.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0))
    };
    let mut done = Recovered { clean, ..Recovered::default() };
    {
        let mut txn = v.meta.write()?;
        txn.set_setting("clean", "0")?;
        txn.commit()?;
    }
    if !clean {
        check_recent_contents(v, synced, &mut done)?;
    }
    for ino in v.meta.read()?.orphans()? {
        v.collect_orphan(ino)?;
        done.orphans += 1;
    }
    if !clean {
        done.quarantined = quarantine_unnamed(v)?;
    }
    // Everything above is made durable; then released objects can go.
    let before = v.meta.read()?.garbage()?.len();
    v.group.committed();
    v.sync()?;
    done.objects_collected = before.saturating_sub(v.meta.read()?.garbage()?.len());
    if done != (Recovered { clean: true, ..Recovered::default() }) {
        log::info!("store {} recovered: {done:?}", v.root().display());
    }
    Ok(done)
}

/// A content reference from a journal detail.
fn content_from(detail: &serde_json::Value) -> Option<Content> {
    let object = ObjectId::parse_hex(detail.get("object")?.as_str()?)?;
    let sha_hex = detail.get("sha256")?.as_str()?;
    let mut sha256 = [0u8; 32];
    for (i, slot) in sha256.iter_mut().enumerate() {
        *slot = u8::from_str_radix(sha_hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(Content { object, stored_len: detail.get("stored")?.as_u64()?, sha256 })
}

/// Whether a content's object is there and every block of it checks.
fn content_ok(v: &Volume, c: &Content) -> bool {
    match v.contents.get(&c.object) {
        Ok(object) => object.check_all_blocks().is_ok() && object.trailer().original_sha256 == c.sha256 && object.stored_len() == c.stored_len,
        Err(_) => false,
    }
}

/// An extent from its journal fields.
fn extent_from(v: &serde_json::Value) -> Option<Extent> {
    Some(Extent { start: v.get("start")?.as_u64()?, len: v.get("len")?.as_u64()?, content: content_from(v)? })
}

fn extents_from(v: &serde_json::Value) -> Option<Vec<Extent>> {
    v.as_array()?.iter().map(extent_from).collect()
}

/// What a content change did, from its journal detail: the extents it
/// added and removed, and the file's size before it. An event written
/// before extents names the file's one object before and after.
fn change_from(detail: &serde_json::Value) -> Option<(Vec<Extent>, Vec<Extent>, u64)> {
    let old_size = detail.get("old_size").and_then(|s| s.as_u64()).unwrap_or(0);
    if let Some(added) = detail.get("added") {
        return Some((extents_from(added)?, extents_from(detail.get("removed")?)?, old_size));
    }
    let size = detail.get("size")?.as_u64()?;
    let added = detail.get("content").and_then(content_from).map(|content| Extent { start: 0, len: size, content });
    let removed = detail.get("old").and_then(content_from).map(|content| Extent { start: 0, len: old_size, content });
    Some((added.into_iter().collect(), removed.into_iter().collect(), old_size))
}

fn check_recent_contents(v: &Volume, synced: u64, done: &mut Recovered) -> VResult<()> {
    let events = v.meta.read()?.events(synced + 1, usize::MAX >> 1)?;
    for e in events.iter().filter(|e| e.op == "write" || e.op == "truncate") {
        let Ok(detail) = serde_json::from_str::<serde_json::Value>(&e.detail) else { continue };
        let Some(ino) = detail.get("ino").and_then(|i| i.as_u64()) else { continue };
        let Some((added, removed, old_size)) = change_from(&detail) else { continue };
        let Some(inode) = v.meta.read()?.inode(ino)? else { continue };
        if added.is_empty() || !added.iter().all(|a| inode.extents.contains(a)) {
            continue; // nothing new, or changed again since (that change is checked on its own)
        }
        done.contents_checked += 1;
        for a in &added {
            v.contents.forget(&a.content.object);
        }
        let lost: Vec<Extent> = added.iter().filter(|a| !content_ok(v, &a.content)).cloned().collect();
        if lost.is_empty() {
            continue;
        }
        roll_back(v, ino, &added, &lost, &removed, old_size)?;
        done.contents_rolled_back += 1;
    }
    Ok(())
}

/// The map before a change: the current one without the extents the
/// change added, with those it removed — if that covers the old size and
/// every object of it checks; else the current map up to its first lost
/// extent.
fn map_before(v: &Volume, current: &[Extent], added: &[Extent], lost: &[Extent], removed: &[Extent], old_size: u64) -> (Vec<Extent>, u64) {
    let mut before: Vec<Extent> = current.iter().filter(|e| !added.contains(e)).cloned().collect();
    before.extend(removed.iter().cloned());
    before.sort_by_key(|e| e.start);
    let mut end = 0;
    let whole = before.iter().all(|e| {
        let ok = e.start == end && content_ok(v, &e.content);
        end = e.end();
        ok
    }) && end == old_size;
    if whole {
        return (before, old_size);
    }
    let prefix: Vec<Extent> = current.iter().take_while(|e| !lost.contains(e)).cloned().collect();
    let size = prefix.last().map_or(0, Extent::end);
    (prefix, size)
}

fn roll_back(v: &Volume, ino: Ino, added: &[Extent], lost: &[Extent], removed: &[Extent], old_size: u64) -> VResult<()> {
    log::error!(
        "{}: its last version ({} new extents, first object {}) did not reach the disk before the crash; rolled back to the version before it",
        v.path_of(ino),
        lost.len(),
        lost.first().map(|l| l.content.object.hex()).unwrap_or_default()
    );
    v.change(|txn, t| {
        let Some(mut inode) = txn.inode(ino)? else { return Ok(()) };
        let (extents, size) = map_before(v, &inode.extents, added, lost, removed, old_size);
        for e in extents.iter().filter(|e| !inode.extents.contains(e)) {
            txn.remove_garbage(&e.content.object)?;
        }
        let dropped: Vec<Extent> = inode.extents.iter().filter(|e| !extents.contains(e)).cloned().collect();
        inode.extents = extents;
        inode.size = size;
        inode.ctime = t;
        txn.update_inode(&inode)?;
        let seq = journal::append(txn, t, "recover", &json!({"ino": ino, "lost": extents_json(lost), "extents": inode.extents.len(), "size": size}))?;
        for e in &dropped {
            txn.add_garbage(&e.content.object, seq)?;
        }
        Ok(())
    })
}

/// Moves aside objects that neither an inode nor the garbage list names.
fn quarantine_unnamed(v: &Volume) -> VResult<usize> {
    let mut named: HashSet<ObjectId> = HashSet::new();
    {
        let r = v.meta.read()?;
        let mut after = 0;
        loop {
            let page = r.contents(after, 4096)?;
            let Some(&(last, _)) = page.last() else { break };
            named.extend(page.into_iter().flat_map(|(_, extents)| extents.into_iter().map(|e| e.content.object)));
            after = last;
        }
        named.extend(r.garbage()?.into_iter().map(|(id, _)| id));
    }
    let mut moved = 0;
    for id in v.objects.list()? {
        if !named.contains(&id) {
            let to = v.objects.quarantine(&id)?;
            log::warn!("object {id} is named by no file (a commit cut short by the crash): moved to {to}");
            moved += 1;
        }
    }
    Ok(moved)
}
