//! Nothing the daemon does follows a user-chosen name on the host (issue 8,
//! item 4). The store holds only ids, so the two attacks the issue
//! reproduced against the old layout are impossible by construction; these
//! tests keep them, run by an unprivileged user for thousands of
//! iterations:
//!
//! - a directory swapped for a symlink to a root-only directory outside
//!   the mount (`rename(d,d2); symlink(OUT,d); unlink(d); rename(d2,d)`)
//!   while `open(d/x, O_CREAT|O_EXCL)` and `unlink(d/victim)` race it: the
//!   old daemon created files in OUT and deleted a root-owned file there;
//! - files made concurrently in directories over 3,000 bytes deep: the old
//!   daemon put some in the wrong directory (a `/proc/self/fd/N/name` path
//!   used after its descriptor was reused), and `ln` failed there.
//!
//! The user's loops are Perl (essential on Debian; the user cannot run
//! root's tools).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::Mounted;
use common::users::{user, User};

/// A root-only directory outside the mount and the store, holding a
/// root-owned file: nothing may appear in it, nothing may go.
struct Outside {
    dir: std::path::PathBuf,
}

const VICTIM: &[u8] = b"a root-owned file no user may delete\n";

impl Outside {
    fn new(beside: &Path) -> Outside {
        let dir = beside.join("secret");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("victim"), VICTIM).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Outside { dir }
    }

    fn assert_untouched(&self, what: &str) {
        let names: Vec<String> = std::fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["victim"], "{what}: the root-only directory outside the mount changed");
        assert_eq!(std::fs::read(self.dir.join("victim")).unwrap(), VICTIM, "{what}: the root-owned file changed");
        assert_eq!(std::fs::metadata(self.dir.join("victim")).unwrap().uid(), 0);
    }
}

/// A directory of the mount's root owned by `u`, for it to work in.
fn home(m: &Mounted, u: &User) -> std::path::PathBuf {
    let dir = m.path(&u.name);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
    dir
}

/// Every name the store directory holds is the layout's or an object id:
/// no name a user chose reaches the host filesystem.
fn assert_store_holds_no_user_name(store: &Path) {
    let layout = ["VERSION", "lock", "meta.db", "meta.db-wal", "meta.db-shm", "objects", "tmp", "staging", "quarantine", "daemon.pid", "mount.log"];
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut dirs = vec![store.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(|e| e.unwrap()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = if d == store { layout.contains(&name.as_str()) } else { hex(name.trim_end_matches(".at1").trim_end_matches(".part")) };
            assert!(ok, "the store holds {}: a name that is neither the layout's nor an object id", e.path().display());
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
    }
}

/// The issue's race, as the user: one process swaps `d` for a symlink to
/// OUT and back; another creates `d/xN` with O_CREAT|O_EXCL and tries
/// `unlink(d/victim)`, `ITERATIONS` times each (or until `SECONDS` pass).
const SWAP_RACE: &str = r#"
use strict; use warnings; use Fcntl;
my ($home, $target, $iterations, $seconds) = @ARGV;
chdir $home or die "chdir $home: $!";
mkdir "d" or die "mkdir d: $!";
my $end = time + $seconds;
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my $swaps = 0;
    for (1 .. $iterations) {
        last if time > $end;
        rename("d", "d2") or next;
        symlink($target, "d");
        unlink("d");
        rename("d2", "d") or die "rename d2 d: $!";
        $swaps++;
    }
    print "swaps $swaps\n";
    exit 0;
}
my ($made, $tries) = (0, 0);
for my $i (1 .. $iterations) {
    last if time > $end;
    if (sysopen(my $fh, "d/x$i", O_CREAT | O_EXCL | O_WRONLY, 0644)) {
        close($fh) or die "close: $!";
        $made++;
    }
    unlink("d/victim");
    $tries++;
}
waitpid($pid, 0);
die "the swapper failed" if $?;
print "made $made of $tries\n";
"#;

fn swap_race(target_of: impl Fn(&Outside) -> String, what: &str) {
    let Some(u) = user("at1racer") else { return };
    let Some(m) = Mounted::new(&[]) else { return };
    let outside = Outside::new(m.store.parent().unwrap());
    let home = home(&m, &u);
    let script = m.store.parent().unwrap().join("race.pl");
    std::fs::write(&script, SWAP_RACE).unwrap();
    let target = target_of(&outside);
    let out = u.sh_ok(&format!("perl '{}' '{}' '{target}' 4000 25", script.display(), home.display()));
    eprintln!("{what}: {}", out.replace('\n', "; "));
    let made: usize = out.lines().find_map(|l| l.strip_prefix("made ")?.split(' ').next()?.parse().ok()).expect("the race's count");
    let tries: usize = out.lines().find_map(|l| l.split(" of ").nth(1)?.parse().ok()).unwrap();
    assert!(tries >= 1000, "{what}: only {tries} iterations ran");
    outside.assert_untouched(what);
    // Every file made is in the directory it was made in (`d`, never the
    // user's home or elsewhere in the mount), and each is there.
    let d = home.join("d");
    assert!(std::fs::symlink_metadata(&d).unwrap().is_dir(), "{what}: d ends as a directory");
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut dirs = vec![m.mnt.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap()) {
            let t = e.file_type().unwrap();
            if t.is_dir() && e.file_name() != ".at1" {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with('x') {
                found.insert(e.file_name().to_string_lossy().into_owned(), dir.display().to_string());
            }
        }
    }
    assert_eq!(found.len(), made, "{what}: {made} files were made, {} are in the mount", found.len());
    assert!(found.values().all(|dir| Path::new(dir) == d), "{what}: files outside the directory they were made in: {found:?}");
    assert_store_holds_no_user_name(&m.store);
}

#[test]
fn a_directory_swapped_for_a_symlink_outside_never_lets_a_file_out() {
    swap_race(|o| o.dir.display().to_string(), "absolute symlink");
}

#[test]
fn a_directory_swapped_for_a_relative_symlink_never_lets_a_file_out() {
    // From the user's home in the mount (MNT/USER), `../../secret` is the
    // outside directory; from the same place in a store that mirrored the
    // tree (STORE/USER), it is too.
    swap_race(|_| "../../secret".to_string(), "relative symlink");
}

/// The deep-path workload, as the user: one directory chain per name in
/// CHAINS, LEVELS directories of ~190 bytes each; in each chain, two
/// processes create, write, rename, link and unlink files whose names and
/// contents say whose they are, all chains at once, and `ln` and `ln -s`
/// run there.
const DEEP: &str = r#"
use strict; use warnings; use Fcntl;
my ($home, $levels, $files, @chains) = @ARGV;
sub descend { my ($chain) = @_; chdir $home or die "chdir: $!";
    for my $l (1 .. $levels) { my $c = "$chain" . ("d" x 190) . $l; mkdir $c; chdir $c or die "chdir $c: $!"; } }
my @kids;
for my $chain (@chains) {
    descend($chain);
    for my $w (1, 2) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            descend($chain);
            for my $i (1 .. $files) {
                my $name = "$chain-$w-$i";
                sysopen(my $fh, $name, O_CREAT | O_EXCL | O_WRONLY, 0644) or die "create $name: $!";
                print $fh "$name\n" or die; close($fh) or die "close $name: $!";
                if ($i % 5 == 0) { rename($name, "$name.r") or die "rename $name: $!"; }
                elsif ($i % 5 == 1) { link($name, "$name.l") or die "link $name: $!"; }
                elsif ($i % 5 == 2) { unlink($name) or die "unlink $name: $!"; }
            }
            system("ln", "$chain-$w-1", "$chain-$w-ln") == 0 or die "ln failed";
            system("ln", "-s", "$chain-$w-1", "$chain-$w-sym") == 0 or die "ln -s failed";
            exit 0;
        }
        push @kids, $pid;
    }
}
for my $pid (@kids) { waitpid($pid, 0); die "a worker failed" if $?; }
print "done\n";
"#;

/// The files a worker of chain `chain` leaves: `CHAIN-W-I` (renamed to
/// `.r` when I % 5 = 0, linked to `.l` when I % 5 = 1, gone when I % 5 =
/// 2), its `ln` and `ln -s` of file 1.
fn expected_files(chain: &str, files: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for w in 1..=2 {
        for i in 1..=files {
            let name = format!("{chain}-{w}-{i}");
            let content = format!("{name}\n").into_bytes();
            match i % 5 {
                0 => drop(out.insert(format!("{name}.r"), content)),
                1 => {
                    out.insert(format!("{name}.l"), content.clone());
                    out.insert(name, content);
                }
                2 => {}
                _ => drop(out.insert(name, content)),
            }
        }
        let first = format!("{chain}-{w}-1\n").into_bytes();
        out.insert(format!("{chain}-{w}-ln"), first.clone());
        out.insert(format!("{chain}-{w}-sym"), first);
    }
    out
}

/// Runs the deep-path workload as `u` in `home` of `m`, then checks every
/// chain holds exactly its own files, with their own contents and links,
/// and nothing went outside. Returns the deepest path checked (bytes).
fn deep_workload(m: &Mounted, u: &User, levels: usize, files: usize, chains: &[&str]) -> usize {
    let outside = Outside::new(m.store.parent().unwrap());
    let home = home(m, u);
    let script = m.store.parent().unwrap().join("deep.pl");
    std::fs::write(&script, DEEP).unwrap();
    u.sh_ok(&format!("perl '{}' '{}' {levels} {files} {}", script.display(), home.display(), chains.join(" ")));
    let mut deepest = 0;
    for chain in chains {
        let mut dir = home.clone();
        for l in 1..=levels {
            dir.push(format!("{chain}{}{l}", "d".repeat(190)));
        }
        let depth = dir.as_os_str().len();
        deepest = deepest.max(depth);
        let mut got: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for e in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap()) {
            got.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap());
        }
        let want = expected_files(chain, files);
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let strays: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(missing.is_empty() && strays.is_empty(), "chain {chain} ({depth} bytes deep): missing {missing:?}, not its own {strays:?}");
        for (name, content) in &want {
            assert_eq!(&got[name], content, "chain {chain}: {name} holds another file's content");
        }
        // Hard links are one file; `ln` made one more name of file 1.
        for w in 1..=2 {
            let meta = std::fs::metadata(dir.join(format!("{chain}-{w}-1"))).unwrap();
            assert_eq!(meta.nlink(), 3, "chain {chain}: {chain}-{w}-1 has its .l and ln names");
            assert_eq!(std::fs::metadata(dir.join(format!("{chain}-{w}-ln"))).unwrap().ino(), meta.ino());
        }
    }
    outside.assert_untouched("deep paths");
    assert_store_holds_no_user_name(&m.store);
    deepest
}

#[test]
fn files_made_over_3000_bytes_deep_land_where_they_are_named_and_ln_works() {
    let Some(u) = user("at1racer") else { return };
    let Some(m) = Mounted::new(&[]) else { return };
    let deepest = deep_workload(&m, &u, 16, 400, &["A", "B"]);
    assert!(deepest > 3000, "the chains are {deepest} bytes deep");
}

/// The mount point over 3,000 bytes from the root, and the store as deep
/// as its metadata database allows (SQLite's unix VFS takes paths of at
/// most 512 bytes: a deeper store is refused at mount, docs/SEMANTICS.md),
/// with concurrent creates in eight deep directories
/// at once. The old daemon built host paths under the store from the
/// names in the mount; this one builds none.
#[test]
fn a_mount_over_3000_bytes_deep_keeps_every_file_in_its_directory() {
    let Some(u) = user("at1racer") else { return };
    let deep = |levels: usize, c: &str| -> std::path::PathBuf { (1..=levels).map(|l| format!("{}{l}", c.repeat(190))).collect() };
    let Some(m) = Mounted::new_at(&deep(2, "s"), &deep(16, "m"), &[]) else { return };
    assert!(m.mnt.as_os_str().len() > 3000, "the mount point is only {} bytes deep", m.mnt.as_os_str().len());
    assert!(m.store.as_os_str().len() > 380, "the store is only {} bytes deep", m.store.as_os_str().len());
    // Three levels more: the deepest paths near PATH_MAX (4096), which
    // the checks here must still open by path.
    let deepest = deep_workload(&m, &u, 3, 150, &["A", "B", "C", "D", "E", "F", "G", "H"]);
    assert!(deepest > 3500, "the chains are {deepest} bytes deep");
}
