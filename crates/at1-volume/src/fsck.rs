//! `at1 fsck STORE [--repair]`: is the namespace consistent with itself
//! and with the object store?
//!
//! Beyond what [`check::verify`] sees (the journal chain, every content's
//! object), fsck walks the whole namespace: entries naming no inode, link
//! counts that disagree with the entries (a directory: 2 + its
//! subdirectories), inodes named by nothing that are not orphans, and
//! objects on disk that nothing references (neither a file's content nor
//! the garbage list awaiting collection).
//!
//! Repair (the caller holds the store's lock) changes only what it can
//! prove: a link count is set to what the entries say, and an object
//! nothing references is moved to `quarantine/`. Nothing is ever deleted;
//! what cannot be proved is reported and left as it is.

use std::collections::HashSet;

use at1_store::{Ino, Kind, ObjectId, ROOT_INO};
use serde_json::json;

use crate::check::{self, ContentProblem};
use crate::error::VResult;
use crate::journal::{self, ChainProblem};
use crate::volume::{entry_path, now, path_in, Volume};

/// One piece of damage, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The journal's chain is broken.
    Chain(ChainProblem),
    /// A file's content: its object is missing, does not decode, or holds
    /// other bytes than recorded.
    Content(ContentProblem),
    /// An entry (at `path`) names inode `ino`, which does not exist.
    DanglingEntry { path: String, ino: Ino },
    /// An inode's link count is not what the entries naming it say.
    LinkCount { ino: Ino, path: String, recorded: u32, counted: u64 },
    /// An inode no entry names, and not on the orphan list.
    Unnamed { ino: Ino, kind: Kind },
    /// An object in the object store that nothing references.
    Unreferenced { object: ObjectId },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Chain(p) => write!(f, "{p}"),
            Damage::Content(p) => write!(f, "{p}"),
            Damage::DanglingEntry { path, ino } => write!(f, "{path}: names inode {ino}, which does not exist"),
            Damage::LinkCount { ino, path, recorded, counted } => write!(f, "{path}: inode {ino} has link count {recorded} where its names make {counted}"),
            Damage::Unnamed { ino, kind } => write!(f, "inode {ino} ({kind:?}) is named by no entry and is not an orphan"),
            Damage::Unreferenced { object } => write!(f, "{}: object {object} is referenced by nothing", object_file(object)),
        }
    }
}

/// What fsck found, and (with repair) what it did.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub inodes: u64,
    pub entries: u64,
    pub objects: u64,
    pub events: u64,
    pub damage: Vec<Damage>,
    /// One line per repair made.
    pub repaired: Vec<String>,
}

impl FsckReport {
    /// Damage that repair did not (or could not) fix.
    pub fn unrepaired(&self) -> usize {
        self.damage.len() - self.repaired.len()
    }
}

const PAGE: usize = 4096;

/// Checks the store behind `v`; with `repair` (a volume opened with the
/// store's lock), fixes what can be proved.
pub fn fsck(v: &Volume, repair: bool) -> VResult<FsckReport> {
    let verified = check::verify(v, |_| {})?;
    let mut report = FsckReport { events: verified.events, ..FsckReport::default() };
    report.damage.extend(verified.chain.into_iter().map(Damage::Chain));
    report.damage.extend(verified.damaged.into_iter().map(Damage::Content));
    check_entries(v, &mut report)?;
    let fixes = check_inodes(v, &mut report)?;
    let unreferenced = check_objects(v, &mut report)?;
    if repair {
        for (ino, path, recorded, counted) in fixes {
            fix_link_count(v, ino, &path, recorded, counted)?;
            report.repaired.push(format!("{path}: inode {ino} link count {recorded} -> {counted}"));
        }
        for id in unreferenced {
            let to = v.objects.quarantine(&id)?;
            log::warn!("object {id} is referenced by nothing: moved to {to}");
            report.repaired.push(format!("{}: moved to {to}", object_file(&id)));
        }
        v.meta.sync()?;
    }
    Ok(report)
}

/// Entries naming no inode.
fn check_entries(v: &Volume, report: &mut FsckReport) -> VResult<()> {
    let r = v.meta.read()?;
    let mut after: Option<(Ino, Vec<u8>)> = None;
    loop {
        let page = r.all_entries(after.as_ref().map(|(p, n)| (*p, n.as_slice())), PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some((last.0, last.1.clone()));
        for (parent, name, ino) in page {
            report.entries += 1;
            if r.inode(ino)?.is_none() {
                let path = entry_path(&*r, parent, &name);
                report.damage.push(Damage::DanglingEntry { path, ino });
            }
        }
    }
    Ok(())
}

/// Link counts and unnamed inodes. Returns the link counts to fix: (ino,
/// path, recorded, counted).
fn check_inodes(v: &Volume, report: &mut FsckReport) -> VResult<Vec<(Ino, String, u32, u64)>> {
    let r = v.meta.read()?;
    let orphans: HashSet<Ino> = r.orphans()?.into_iter().collect();
    let mut fixes = Vec::new();
    let mut after = 0;
    loop {
        let page = r.inodes(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.ino;
        for inode in page {
            report.inodes += 1;
            let names = r.names_count(inode.ino)?;
            if inode.ino != ROOT_INO && names == 0 {
                if !orphans.contains(&inode.ino) {
                    report.damage.push(Damage::Unnamed { ino: inode.ino, kind: inode.kind });
                }
                continue;
            }
            let counted = if inode.kind == Kind::Dir { 2 + r.subdir_count(inode.ino)? } else { names };
            if u64::from(inode.nlink) != counted {
                let path = path_in(&*r, inode.ino);
                report.damage.push(Damage::LinkCount { ino: inode.ino, path: path.clone(), recorded: inode.nlink, counted });
                fixes.push((inode.ino, path, inode.nlink, counted));
            }
        }
    }
    Ok(fixes)
}

/// Objects nothing references; returns them.
fn check_objects(v: &Volume, report: &mut FsckReport) -> VResult<Vec<ObjectId>> {
    let mut referenced: HashSet<ObjectId> = HashSet::new();
    {
        let r = v.meta.read()?;
        let mut after = 0;
        loop {
            let page = r.contents(after, PAGE)?;
            let Some(&(last, _)) = page.last() else { break };
            referenced.extend(page.into_iter().flat_map(|(_, extents)| extents.into_iter().map(|e| e.content.object)));
            after = last;
        }
        referenced.extend(r.garbage()?.into_iter().map(|(id, _)| id));
    }
    let mut unreferenced = Vec::new();
    for id in v.objects.list()? {
        report.objects += 1;
        if !referenced.contains(&id) {
            report.damage.push(Damage::Unreferenced { object: id });
            unreferenced.push(id);
        }
    }
    Ok(unreferenced)
}

/// Sets a link count to what the entries say, journaled.
fn fix_link_count(v: &Volume, ino: Ino, path: &str, recorded: u32, counted: u64) -> VResult<()> {
    let mut txn = v.meta.write()?;
    let Some(mut inode) = txn.inode(ino)? else { return Ok(()) };
    inode.nlink = u32::try_from(counted).unwrap_or(u32::MAX);
    txn.update_inode(&inode)?;
    journal::append(&mut *txn, now(), "repair", &json!({"ino": ino, "path": path, "nlink": counted, "was": recorded}))?;
    txn.commit()?;
    Ok(())
}

/// Where a local store keeps object `id`, relative to the store
/// (`objects/ab/cdef….at1`, as in [`crate::layout`]).
pub fn object_file(id: &ObjectId) -> String {
    let hex = id.hex();
    format!("objects/{}/{}.at1", &hex[..2], &hex[2..])
}
