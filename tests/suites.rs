//! Third-party filesystem suites against a real mount: pjdfstest (all groups,
//! then the erofs group on its own with remounts allowed), fsx (100,000
//! operations without mmap, 10,000 with every operation), and fio with
//! crc32c verification. Configurations are in tests/suites/; pass counts are
//! printed and written to target/suites-summary.txt.

mod common;

use std::path::{Path, PathBuf};

use common::mount::Mounted;
use common::*;

fn tool(name: &str) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates =
        [PathBuf::from(format!("{home}/.cargo/bin/{name}")), PathBuf::from(format!("/usr/bin/{name}")), PathBuf::from(format!("/usr/local/bin/{name}"))];
    if let Some(p) = candidates.into_iter().find(|p| p.exists()) {
        return Some(p);
    }
    // CI installs every tool (.ci/run); elsewhere a missing one is a skip.
    assert!(std::env::var("CI").is_err(), "{name} is not installed (CI must install it)");
    eprintln!("SKIPPED: {name} is not installed");
    None
}

fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suites")
}

fn record(line: &str) {
    println!("{line}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/suites-summary.txt");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    let _ = std::fs::write(path, text);
}

/// (failed, skipped, passed, expected failures, total) from pjdfstest's
/// summary line.
fn pjd_summary(log: &str) -> (u32, u32, u32, u32, u32) {
    let line = log.lines().find(|l| l.starts_with("Summary:")).unwrap_or_else(|| panic!("no summary:\n{log}"));
    let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    (nums[0], nums[1], nums[2], nums[3], nums[4])
}

#[test]
fn pjdfstest_passes() {
    let Some(pjd) = tool("pjdfstest") else { return };
    let Some(m) = Mounted::new(&[]) else { return };
    let secondary = tempfile::tempdir_in("/dev/shm").unwrap();
    let cfg = suites_dir().join("pjdfstest.toml");
    let (code, out, err) = sh(&format!(
        "cd '{}' && RUST_BACKTRACE=0 '{}' -c '{}' -p '{}' -s '{}' 2>&1",
        m.mnt.display(),
        pjd.display(),
        cfg.display(),
        m.mnt.display(),
        secondary.path().display()
    ));
    let (failed, skipped, passed, expected, total) = pjd_summary(&out);
    record(&format!("pjdfstest: {passed} passed, {failed} failed, {skipped} skipped, {expected} expected failures, {total} total"));
    let failures: Vec<&str> = out.lines().filter(|l| l.trim_end().ends_with("FAILED") || l.contains("PASSED UNEXPECTEDLY")).collect();
    assert_eq!(code, 0, "pjdfstest failed:\n{}\n{err}", failures.join("\n"));
    let ran = passed + failed + expected;
    assert!(f64::from(passed) >= 0.9 * f64::from(ran), "pass rate below 90%");

    // The erofs group on its own: it remounts the mount read-only and back
    // (mount -i: mount(8) would hand a FUSE remount to mount.fuse3).
    let wrap = tempfile::tempdir().unwrap();
    std::fs::write(wrap.path().join("mount"), "#!/bin/sh\nexec /usr/bin/mount -i \"$@\"\n").unwrap();
    sh_ok(&format!("chmod +x '{}/mount'", wrap.path().display()));
    let erofs_cfg = wrap.path().join("erofs.toml");
    std::fs::write(&erofs_cfg, std::fs::read_to_string(&cfg).unwrap().replace("allow_remount = false", "allow_remount = true")).unwrap();
    let (code, out, _) = sh(&format!(
        "cd '{}' && PATH='{}':$PATH RUST_BACKTRACE=0 '{}' -c '{}' -p '{}' erofs 2>&1",
        m.mnt.display(),
        wrap.path().display(),
        pjd.display(),
        erofs_cfg.display(),
        m.mnt.display()
    ));
    let (failed, skipped, passed, _, total) = pjd_summary(&out);
    record(&format!("pjdfstest erofs: {passed} passed, {failed} failed, {skipped} skipped, {total} total"));
    assert_eq!(code, 0, "erofs group failed:\n{out}");
}

fn fsx(config: &str, ops: u32) {
    let Some(fsx) = tool("fsx") else { return };
    let Some(m) = Mounted::new(&[]) else { return };
    let art = tempfile::tempdir().unwrap();
    let cfg = suites_dir().join(config);
    let (code, out, err) = sh(&format!(
        "RUST_BACKTRACE=0 '{}' -f '{}' -N {ops} -S 7 -P '{}' '{}' 2>&1",
        fsx.display(),
        cfg.display(),
        art.path().display(),
        m.path("fsx.dat").display()
    ));
    let last = out.lines().last().unwrap_or_default().to_string();
    record(&format!("fsx {config} {ops} ops: rc {code}: {last}"));
    assert!(code == 0 && last.contains("A-OK"), "fsx failed:\n{}\n{err}", out.lines().rev().take(40).collect::<Vec<_>>().join("\n"));
}

#[test]
fn fsx_100k_operations_without_mmap() {
    fsx("fsx-basic.toml", 100_000);
}

#[test]
fn fsx_10k_operations_with_every_operation() {
    fsx("fsx-all.toml", 10_000);
}

#[test]
fn fio_verifies_crc32c() {
    let Some(fio) = tool("fio") else { return };
    let Some(m) = Mounted::new(&[]) else { return };
    for (name, extra) in [
        ("psync", "--ioengine=psync"),
        ("direct", "--ioengine=psync --direct=1"),
        ("mmap", "--ioengine=mmap"),
        ("randrw", "--ioengine=psync --rw=randrw --rwmixread=50 --verify_backlog=64"),
    ] {
        let rw = if extra.contains("--rw=") { "" } else { "--rw=randwrite" };
        let (code, out, _) = sh(&format!(
            "'{}' --name={name} --filename='{}' --size=32M --bs=4k {rw} {extra} --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 2>&1",
            fio.display(),
            m.path(&format!("fio-{name}.dat")).display()
        ));
        let ok = code == 0 && out.contains("err= 0");
        record(&format!("fio {name}: {}", if ok { "err=0" } else { "FAILED" }));
        assert!(ok, "fio {name} failed:\n{out}");
    }
}
