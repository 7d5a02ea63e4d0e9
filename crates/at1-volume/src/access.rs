//! Who is asking, and what they may do: the one place where at1fs judges
//! permissions itself.
//!
//! The kernel checks every ordinary file operation on a mount
//! (`default_permissions`), but a query names its table by path inside the
//! daemon, which runs as root: there the daemon must judge, for the process
//! that wrote the query, what `open(path, O_RDONLY)` would have decided.
//! The rules are the kernel's `generic_permission` without ACLs (a FUSE
//! mount without `FUSE_POSIX_ACL` enforces none): the owner's bits for the
//! owner, else the group's bits for a member of the file's group (primary
//! or supplementary), else the others' bits; root may read and search
//! anything (`CAP_DAC_OVERRIDE`).

use std::os::unix::fs::MetadataExt;

/// The credentials of a caller: filesystem uid and gid, and supplementary
/// groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What a caller wants of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read a file (`open(O_RDONLY)`).
    Read,
    /// Search a directory (look a name up in it).
    Search,
}

impl Want {
    fn bit(self) -> u32 {
        match self {
            Want::Read => 4,
            Want::Search => 1,
        }
    }
}

impl Caller {
    /// Root: may read and search anything.
    pub fn root() -> Caller {
        Caller { uid: 0, gid: 0, groups: Vec::new() }
    }

    /// The process running this code (for `at1 sql STORE` run by a user).
    pub fn current_process() -> Caller {
        // SAFETY: these calls have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Caller { uid, gid, groups: current_groups() }
    }

    /// The process behind a FUSE request: the request's uid and gid (the
    /// kernel's fsuid/fsgid of the caller), with the supplementary groups
    /// of thread `pid` from /proc. The groups are taken only while the
    /// thread's fsuid and fsgid still match the request, so a pid that was
    /// reused by another process never lends its groups; a caller whose
    /// groups cannot be read gets none (fewer rights, never more).
    pub fn of_request(uid: u32, gid: u32, pid: u32) -> Caller {
        let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| groups_if_same_caller(&s, uid, gid)).unwrap_or_default();
        Caller { uid, gid, groups }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the caller may do `want` to an entry with these attributes.
    pub fn may(&self, want: Want, mode: u32, owner: u32, group: u32) -> bool {
        if self.is_root() {
            return true;
        }
        let bits = if self.uid == owner {
            mode >> 6
        } else if self.in_group(group) {
            mode >> 3
        } else {
            mode
        };
        bits & want.bit() != 0
    }

    /// [`Caller::may`] for an entry's metadata.
    pub fn may_meta(&self, want: Want, meta: &std::fs::Metadata) -> bool {
        self.may(want, meta.mode(), meta.uid(), meta.gid())
    }
}

/// The `Groups:` of a /proc status text, if its `Uid:` and `Gid:` lines say
/// the fs ids (the fourth field) are `uid` and `gid`.
fn groups_if_same_caller(status: &str, uid: u32, gid: u32) -> Option<Vec<u32>> {
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    let fs_id = |name: &str| field(name)?.nth(3)?.parse::<u32>().ok();
    if fs_id("Uid:")? != uid || fs_id("Gid:")? != gid {
        return None;
    }
    field("Groups:")?.map(|g| g.parse().ok()).collect()
}

fn current_groups() -> Vec<u32> {
    // SAFETY: a size query, then a buffer of that size.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` holds `n` entries.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(got.max(0) as usize);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller { uid, gid, groups: groups.to_vec() }
    }

    #[test]
    fn owner_group_and_other_bits_are_chosen_in_that_order() {
        let u = user(1000, 100, &[]);
        assert!(u.may(Want::Read, 0o400, 1000, 0));
        assert!(!u.may(Want::Read, 0o044, 1000, 100), "the owner gets the owner's bits only");
        assert!(u.may(Want::Read, 0o040, 0, 100));
        assert!(!u.may(Want::Read, 0o404, 0, 100), "a group member gets the group's bits only");
        assert!(u.may(Want::Read, 0o004, 0, 0));
        assert!(!u.may(Want::Search, 0o666, 0, 0));
        assert!(u.may(Want::Search, 0o001, 0, 0));
    }

    #[test]
    fn supplementary_groups_count_and_root_may_do_anything() {
        assert!(user(1000, 100, &[7]).may(Want::Read, 0o040, 0, 7));
        assert!(!user(1000, 100, &[8]).may(Want::Read, 0o040, 0, 7));
        assert!(Caller::root().may(Want::Read, 0o000, 5, 5));
        assert!(Caller::root().may(Want::Search, 0o000, 5, 5));
    }

    #[test]
    fn groups_are_taken_only_from_the_same_caller() {
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t7 8 \n";
        assert_eq!(groups_if_same_caller(status, 1000, 100), Some(vec![7, 8]));
        assert_eq!(groups_if_same_caller(status, 1001, 100), None, "a reused pid of another user lends nothing");
        assert_eq!(groups_if_same_caller(status, 1000, 101), None);
        assert_eq!(groups_if_same_caller("Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nGroups:\t\n", 1, 2), Some(vec![]));
    }
}
