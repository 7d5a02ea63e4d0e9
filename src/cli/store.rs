//! Commands on a store that is not mounted: `at1 import`, `at1 upgrade`
//! (and the store checks that need its lock).

use std::path::Path;

use anyhow::{Context, Result};

use at1::volume::{Owner, Volume, VolumeConfig};

/// `at1 import STORE OBJECT PATH`: the object becomes file PATH of the
/// store, verified and not re-encoded, owned by the caller.
pub fn import(store: &Path, object: &Path, path: &str, mode: u32) -> Result<()> {
    let volume = Volume::open(store, VolumeConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // SAFETY: geteuid and getegid have no failure mode.
    let owner = unsafe { Owner { uid: libc::geteuid(), gid: libc::getegid() } };
    let imported = volume.import(object, path, mode, owner).with_context(|| format!("importing {} as {path}", object.display()));
    let closed = volume.close();
    let attr = imported?;
    closed.map_err(|e| anyhow::anyhow!("{}: {e}", store.display()))?;
    eprintln!("{} -> {}:{path}: {} bytes, verified, stored as it was", object.display(), store.display(), attr.size);
    Ok(())
}

pub const UPGRADE_AFTER_HELP: &str = "\
The old store's tree is read as its mount showed it and rebuilt as a new
volume beside it (objects hard-linked, not re-encoded; raw files through the
gate); then every entry is compared with the new volume: names, bytes (the
SHA-256 of each old object's trailer and of its decoded bytes, and of the
bytes read back), mode, owner, atime and mtime, link counts, devices, symlink
targets, xattrs. Only if all are identical does the store switch to the new
layout and the old tree go. ctime cannot be kept.

A crash before the switch leaves the old store as it was (run the command
again: it starts over); after it, a complete new store (run it again: it
finishes). A store already at layout 2 is left as it is.

Exit status:
  0  upgraded (or nothing to do)
  1  error: not a store, in use (mounted), I/O
  3  an old object does not verify, or the converted store differs from the
     old one: nothing was changed";

/// `at1 upgrade STORE`: converts a layout-1 store in place.
pub fn upgrade(store: &Path) -> Result<()> {
    use at1::volume::upgrade::{self, Outcome, UpgradeError};
    // One descriptor per directory level is open while the old tree is
    // walked: allow deep trees.
    super::mount::raise_fd_limit();
    match upgrade::upgrade(store) {
        Ok(Outcome::Upgraded(summary)) => println!("{}: upgraded to layout 2, every entry proven identical: {summary}", store.display()),
        Ok(Outcome::Resumed(Some(summary))) => {
            println!("{}: finished an interrupted upgrade to layout 2, every entry proven identical: {summary}", store.display())
        }
        Ok(Outcome::Resumed(None)) => println!("{}: finished an interrupted upgrade to layout 2", store.display()),
        Ok(Outcome::Current) => println!("{}: already at layout 2; nothing to do", store.display()),
        Err(e) => {
            if let UpgradeError::NotIdentical { shown, count, .. } = &e {
                for line in shown {
                    eprintln!("at1: upgrade: differs: {line}");
                }
                if *count > shown.len() as u64 {
                    eprintln!("at1: upgrade: and {} more differences", *count - shown.len() as u64);
                }
            }
            return Err(e.into());
        }
    }
    Ok(())
}
