//! Directory entries: lookup, create, mknod, mkdir, symlink, link, unlink,
//! rmdir, rename. Each is one operation on the store's tree (plus a stub for
//! a new regular file), so its atomicity and errors are the backing
//! filesystem's.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fuser::{FileAttr, FopenFlags, Request};

use super::error::{errno, FsResult};
use super::inode::{NodeKind, CONTROL_DIR, ROOT, SQL_FILE, STATS_FILE};
use super::At1Fs;
use crate::store::{self, RegularKind, OBJECT_SUFFIX, WORK_DIR};

fn cpath(p: &Path) -> FsResult<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| errno(libc::EINVAL))
}

impl At1Fs {
    /// The node kind of a tree entry (regular files are classified by their
    /// first bytes once; the table remembers).
    fn node_kind(&self, path: &Path, meta: &std::fs::Metadata) -> FsResult<NodeKind> {
        let t = meta.file_type();
        if t.is_dir() {
            return Ok(NodeKind::Directory);
        }
        if t.is_symlink() {
            return Ok(NodeKind::Symlink);
        }
        if !t.is_file() {
            return Ok(NodeKind::Special);
        }
        Ok(NodeKind::Regular(crate::store::classify(path)?))
    }

    /// Looks `name` up in `parent` and registers the kernel's reference.
    pub(super) fn lookup_child(&self, parent: u64, name: &OsStr) -> FsResult<FileAttr> {
        if parent == CONTROL_DIR {
            return match name.as_bytes() {
                b"stats" => self.attr(STATS_FILE),
                b"sql" => self.attr(SQL_FILE),
                _ => Err(errno(libc::ENOENT)),
            };
        }
        if parent == ROOT && name == WORK_DIR {
            return self.attr(CONTROL_DIR);
        }
        let dir = self.tree_path(parent)?;
        let tname = store::tree_name(&dir, name);
        // A bare object `x.at1` shown as `x` is not also reachable as `x.at1`.
        if tname == name && name.as_bytes().ends_with(OBJECT_SUFFIX.as_bytes()) && store::logical_name(&dir, name) != name {
            return Err(errno(libc::ENOENT));
        }
        self.register(parent, &dir, &tname)
    }

    /// Registers the entry `tname` of tree directory `dir` (node `parent`).
    fn register(&self, parent: u64, dir: &Path, tname: &OsStr) -> FsResult<FileAttr> {
        let path = dir.join(tname);
        let meta = std::fs::symlink_metadata(&path)?;
        let key = (meta.dev(), meta.ino());
        let known = self.table().child(parent, tname).and_then(|id| self.table().get(id).filter(|n| n.key == key).map(|n| n.kind.clone()));
        let kind = match known {
            Some(k) => k,
            None => self.node_kind(&path, &meta)?,
        };
        let id = self.table_mut().reference(parent, tname, key, kind);
        self.attr(id)
    }

    /// Owner of a new entry: the caller, with the directory's group when the
    /// directory is set-group-ID (BSD semantics, as the kernel does).
    fn owner_for(&self, req: &Request, dir: &Path) -> FsResult<(u32, u32)> {
        let meta = std::fs::metadata(dir)?;
        let gid = if meta.mode() & libc::S_ISGID != 0 { meta.gid() } else { req.gid() };
        Ok((req.uid(), gid))
    }

    fn new_entry_path(&self, parent: u64, name: &OsStr) -> FsResult<std::path::PathBuf> {
        self.check_writable()?;
        self.refuse_control_name(parent, name)?;
        Ok(self.tree_path(parent)?.join(name))
    }

    pub(super) fn create_file(&self, req: &Request, parent: u64, name: &OsStr, mode: u32, flags: i32) -> FsResult<(FileAttr, u64, FopenFlags)> {
        let path = self.new_entry_path(parent, name)?;
        let dir = self.tree_path(parent)?;
        let (uid, gid) = self.owner_for(req, &dir)?;
        self.store.create_file(&path, mode, uid, gid)?;
        let attr = self.register(parent, &dir, name)?;
        let (fh, fopen) = self.open_file(attr.ino.0, flags, req)?;
        Ok((self.attr(attr.ino.0)?, fh, fopen))
    }

    pub(super) fn make_node(&self, req: &Request, parent: u64, name: &OsStr, mode: u32, rdev: u32) -> FsResult<FileAttr> {
        let path = self.new_entry_path(parent, name)?;
        let dir = self.tree_path(parent)?;
        let (uid, gid) = self.owner_for(req, &dir)?;
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                self.store.create_file(&path, mode, uid, gid)?;
            }
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {
                let c = cpath(&path)?;
                // SAFETY: a valid C path.
                if unsafe { libc::mknod(c.as_ptr(), mode, u64::from(rdev)) } < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            _ => return Err(errno(libc::EINVAL)),
        }
        self.register(parent, &dir, name)
    }

    pub(super) fn make_dir(&self, req: &Request, parent: u64, name: &OsStr, mode: u32) -> FsResult<FileAttr> {
        let path = self.new_entry_path(parent, name)?;
        let dir = self.tree_path(parent)?;
        let (uid, gid) = self.owner_for(req, &dir)?;
        std::fs::DirBuilder::new().mode(mode & 0o7777).create(&path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        self.register(parent, &dir, name)
    }

    pub(super) fn make_symlink(&self, req: &Request, parent: u64, name: &OsStr, target: &Path) -> FsResult<FileAttr> {
        let path = self.new_entry_path(parent, name)?;
        let dir = self.tree_path(parent)?;
        let (uid, gid) = self.owner_for(req, &dir)?;
        std::os::unix::fs::symlink(target, &path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        self.register(parent, &dir, name)
    }

    pub(super) fn make_link(&self, ino: u64, newparent: u64, newname: &OsStr) -> FsResult<FileAttr> {
        let dst = self.new_entry_path(newparent, newname)?;
        if matches!(self.kind(ino)?, NodeKind::Directory) {
            return Err(errno(libc::EPERM));
        }
        // A managed file is linked through its hidden inode link, which
        // exists whichever of its names the kernel used.
        std::fs::hard_link(self.meta_path(ino)?, &dst)?;
        self.register(newparent, &self.tree_path(newparent)?, newname)
    }

    /// unlink (`dir == false`) or rmdir.
    pub(super) fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_control_name(parent, name)?;
        let dir_path = self.tree_path(parent)?;
        let tname = store::tree_name(&dir_path, name);
        let path = dir_path.join(&tname);
        let node = self.table().child(parent, &tname);
        if dir {
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        self.table_mut().remove_name(parent, &tname);
        if let Some(ino) = node {
            self.collect_if_unreferenced(ino)?;
        }
        Ok(())
    }

    /// Collects a managed file's object once it has neither names nor open
    /// handles.
    fn collect_if_unreferenced(&self, ino: u64) -> FsResult<()> {
        let open = self.table().get(ino).map(|n| n.file.clone());
        if let Some(state) = open {
            if state.inner.lock().map(|i| i.handles).unwrap_or(0) > 0 {
                return Ok(()); // release collects it
            }
        }
        self.collect_if_unlinked(ino)
    }

    pub(super) fn rename_entry(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_control_name(parent, name)?;
        self.refuse_control_name(newparent, newname)?;
        let src_dir = self.tree_path(parent)?;
        let dst_dir = self.tree_path(newparent)?;
        let src_name = store::tree_name(&src_dir, name);
        let dst_name: OsString = store::tree_name(&dst_dir, newname);
        let replaced = if flags & libc::RENAME_EXCHANGE == 0 { self.table().child(newparent, &dst_name) } else { None };
        let (src, dst) = (cpath(&src_dir.join(&src_name))?, cpath(&dst_dir.join(&dst_name))?);
        // SAFETY: valid C paths; flags are the caller's renameat2 flags.
        if unsafe { libc::renameat2(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), flags) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        {
            let mut table = self.table_mut();
            if flags & libc::RENAME_EXCHANGE != 0 {
                table.exchange((parent, &src_name), (newparent, &dst_name));
            } else {
                table.rename(parent, &src_name, newparent, &dst_name);
            }
        }
        if let Some(ino) = replaced {
            if let Ok(NodeKind::Regular(RegularKind::Managed(_))) = self.kind(ino) {
                self.collect_if_unreferenced(ino)?;
            }
        }
        Ok(())
    }
}
