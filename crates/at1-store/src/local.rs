//! The object store as a local directory:
//!
//! ```text
//! objects/ab/cdef….at1   object abcdef… (mode 0600), under the first byte
//!                        of its id so no directory grows past 65k entries
//! tmp/                   objects being written (removed at open)
//! quarantine/            objects moved aside by `at1 fsck --repair`
//! ```
//!
//! A put writes a temp file and renames it into place without replacing
//! anything (`renameat2(RENAME_NOREPLACE)`): the object appears whole or
//! not at all. Fsyncs wait for [`ObjectStore::sync`], which the volume calls
//! before it makes the metadata naming these objects durable (group commit:
//! one round of fsyncs for many closes).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use at1_core::source::{FileRange, RangeRead};

use crate::objects::{ObjectId, ObjectStore, TempObject};

const SUFFIX: &str = ".at1";

/// Objects in a directory.
#[derive(Debug)]
pub struct LocalObjects {
    objects: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    /// Objects put (and fan-out directories made) since the last sync.
    unsynced: Mutex<Unsynced>,
}

#[derive(Debug, Default)]
struct Unsynced {
    objects: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn create_dir(path: &Path) -> io::Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// fsync of a directory (so the names made in it are durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Past this many objects to make durable, one `syncfs` of the store's
/// filesystem replaces an fdatasync of each object and of its directory:
/// a tree copy writes thousands of small objects between two commit
/// rounds, and each fdatasync of a new file forces a journal commit of its
/// own (which stalls the creates and renames of the copy meanwhile); one
/// `syncfs` makes them all durable with one. Its cost: it also writes out
/// whatever else is dirty on that filesystem.
const SYNCFS_OVER: usize = 16;

/// `syncfs(2)` of the filesystem holding `dir`.
fn syncfs(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir)?;
    // SAFETY: a valid, open descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl LocalObjects {
    /// The object store under `root` (made if missing), for the one
    /// process that changes it: temp files left by a crash are removed.
    pub fn open(root: &Path) -> io::Result<LocalObjects> {
        let store = Self::at(root);
        for dir in [&store.objects, &store.tmp, &store.quarantine] {
            create_dir(dir)?;
        }
        for entry in fs::read_dir(&store.tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(store)
    }

    /// The object store under `root`, to read beside the process that
    /// changes it: nothing is made or removed.
    pub fn open_read_only(root: &Path) -> LocalObjects {
        Self::at(root)
    }

    fn at(root: &Path) -> LocalObjects {
        LocalObjects { objects: root.join("objects"), tmp: root.join("tmp"), quarantine: root.join("quarantine"), unsynced: Mutex::default() }
    }

    fn path_of(&self, id: &ObjectId) -> PathBuf {
        let hex = id.hex();
        self.objects.join(&hex[..2]).join(format!("{}{SUFFIX}", &hex[2..]))
    }
}

/// `rename` that fails with `AlreadyExists` instead of replacing.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: valid C strings; renameat2 with AT_FDCWD.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl ObjectStore for LocalObjects {
    fn create_temp(&self) -> io::Result<TempObject> {
        let id = ObjectId::random()?;
        let path = self.tmp.join(format!("{}.part", id.hex()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        Ok(TempObject { file, path, published: false })
    }

    fn put(&self, id: &ObjectId, mut temp: TempObject) -> io::Result<()> {
        let dest = self.path_of(id);
        let fan = dest.parent().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?.to_path_buf();
        let made = create_dir(&fan)?;
        rename_noreplace(&temp.path, &dest)?;
        temp.published = true;
        let mut unsynced = lock(&self.unsynced);
        unsynced.objects.push(dest);
        if made {
            unsynced.dirs.push(fan);
        }
        Ok(())
    }

    fn put_link(&self, id: &ObjectId, source: &Path) -> io::Result<()> {
        let dest = self.path_of(id);
        let fan = dest.parent().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?.to_path_buf();
        let made = create_dir(&fan)?;
        // link(2) never replaces: put-if-absent, as a put.
        fs::hard_link(source, &dest)?;
        let mut unsynced = lock(&self.unsynced);
        unsynced.objects.push(dest);
        if made {
            unsynced.dirs.push(fan);
        }
        Ok(())
    }

    fn open(&self, id: &ObjectId) -> io::Result<Arc<dyn RangeRead>> {
        let file = File::open(self.path_of(id))?;
        Ok(Arc::new(FileRange::new(file)?))
    }

    fn len(&self, id: &ObjectId) -> io::Result<u64> {
        Ok(fs::metadata(self.path_of(id))?.len())
    }

    fn delete(&self, id: &ObjectId) -> io::Result<()> {
        match fs::remove_file(self.path_of(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self) -> io::Result<Vec<ObjectId>> {
        let mut out = Vec::new();
        for fan in fs::read_dir(&self.objects)? {
            let fan = fan?;
            let prefix = fan.file_name();
            let Some(prefix) = prefix.to_str().filter(|p| p.len() == 2) else { continue };
            for entry in fs::read_dir(fan.path())? {
                let name = entry?.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else { continue };
                if let Some(id) = ObjectId::parse_hex(&format!("{prefix}{rest}")) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn quarantine(&self, id: &ObjectId) -> io::Result<String> {
        let dest = self.quarantine.join(format!("{}{SUFFIX}", id.hex()));
        fs::rename(self.path_of(id), &dest)?;
        sync_dir(&self.quarantine)?;
        Ok(dest.display().to_string())
    }

    fn sync(&self) -> io::Result<()> {
        let pending = std::mem::take(&mut *lock(&self.unsynced));
        let result = (|| {
            if pending.objects.len() > SYNCFS_OVER {
                return syncfs(&self.objects);
            }
            for object in &pending.objects {
                match File::open(object) {
                    Ok(f) => f.sync_data()?,
                    // Deleted meanwhile: nothing to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            let mut dirs: Vec<&Path> = pending.objects.iter().filter_map(|p| p.parent()).collect();
            dirs.sort();
            dirs.dedup();
            for dir in dirs {
                sync_dir(dir)?;
            }
            if !pending.dirs.is_empty() {
                sync_dir(&self.objects)?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Not durable yet: the next sync tries again.
            let mut unsynced = lock(&self.unsynced);
            unsynced.objects.extend(pending.objects);
            unsynced.dirs.extend(pending.dirs);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put_bytes(store: &LocalObjects, bytes: &[u8]) -> ObjectId {
        let mut temp = store.create_temp().unwrap();
        temp.file.write_all(bytes).unwrap();
        let id = ObjectId::random().unwrap();
        store.put(&id, temp).unwrap();
        id
    }

    #[test]
    fn put_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::open(dir.path()).unwrap();
        let id = put_bytes(&store, b"hello world");
        let r = store.open(&id).unwrap();
        assert_eq!(r.len(), 11);
        let mut buf = [0u8; 5];
        r.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(store.list().unwrap(), vec![id]);
        store.sync().unwrap();
        store.delete(&id).unwrap();
        store.delete(&id).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store.open(&id).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn an_id_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::open(dir.path()).unwrap();
        let id = put_bytes(&store, b"first");
        let mut temp = store.create_temp().unwrap();
        temp.file.write_all(b"second").unwrap();
        assert_eq!(store.put(&id, temp).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
        assert_eq!(store.len(&id).unwrap(), 5);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "the refused temp file is gone");
    }

    #[test]
    fn unpublished_temp_objects_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::open(dir.path()).unwrap();
        drop(store.create_temp().unwrap());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let kept = store.create_temp().unwrap();
        std::mem::forget(kept); // a crash mid-write
        let _ = LocalObjects::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "cleaned at open");
    }

    #[test]
    fn a_linked_object_is_the_file_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::open(dir.path()).unwrap();
        let source = dir.path().join("finished.at1");
        fs::write(&source, b"an object").unwrap();
        let id = ObjectId::random().unwrap();
        store.put_link(&id, &source).unwrap();
        assert_eq!(store.len(&id).unwrap(), 9);
        assert_eq!(store.list().unwrap(), vec![id]);
        assert_eq!(store.put_link(&id, &source).err().map(|e| e.kind()), Some(io::ErrorKind::AlreadyExists));
        store.sync().unwrap();
        fs::remove_file(&source).unwrap();
        assert_eq!(store.len(&id).unwrap(), 9, "the object outlives the name it came from");
    }

    #[test]
    fn many_objects_are_synced_at_once_and_a_few_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalObjects::open(dir.path()).unwrap();
        for count in [SYNCFS_OVER + 1, 2] {
            let ids: Vec<_> = (0..count).map(|i| put_bytes(&store, format!("object {i}").as_bytes())).collect();
            assert_eq!(lock(&store.unsynced).objects.len(), count);
            store.sync().unwrap();
            assert!(lock(&store.unsynced).objects.is_empty(), "{count} objects synced");
            assert!(ids.iter().all(|id| store.len(id).is_ok()));
        }
    }

    #[test]
    fn ids_print_and_parse() {
        let id = ObjectId::random().unwrap();
        assert_eq!(ObjectId::parse_hex(&id.hex()), Some(id));
        assert_eq!(ObjectId::parse_hex("ABCDEF0123456789abcdef0123456789"), None, "uppercase is not an id");
        assert_eq!(ObjectId::parse_hex("abc"), None);
    }
}
