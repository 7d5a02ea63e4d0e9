//! Commands on a store that is not mounted: `at1 import` (and the store
//! checks that need its lock).

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
