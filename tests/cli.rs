//! The `at1` command line as users run it: exit codes, one-line errors,
//! stdin/stdout, atomic outputs.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn at1(args: &[&str]) -> Output {
    Command::new(at1_bin()).args(args).output().expect("at1 runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sample_csv(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("id,city,temp\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i},city{},{}.{}\n", i % 50, i % 40 - 10, i % 10));
    }
    let p = dir.join("in.csv");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn compress_decompress_cat_verify_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("in.csv.at1");
    let out = dir.path().join("out.csv");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());
    assert!(at1(&["decompress", s(&obj), s(&out)]).status.success());
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(&out).unwrap());
    let cat = at1(&["cat", s(&obj), "--range", "13-40"]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, &std::fs::read(&input).unwrap()[13..40]);
    let v = at1(&["verify", s(&obj)]);
    assert_eq!(v.status.code(), Some(0));
    let i = at1(&["inspect", s(&obj), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(json["codec"], "columnar");
    assert_eq!(json["table"]["columns"][2]["type"], "decimal");
    let rc = at1(&["recall-cost", s(&obj), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&rc.stdout).unwrap();
    for key in ["idle_resident_bytes", "point_bytes", "range_bytes", "aggregate_bytes", "full_bytes", "xz_whole_file_bytes", "original_bytes"] {
        assert!(json[key].is_u64(), "{key} missing in {json}");
    }
    assert!(json["point_bytes"].as_u64() < json["full_bytes"].as_u64());
    assert_eq!(json["aggregate_blocks"], 0, "SUM is answered from the roll-ups");
}

#[test]
fn stdin_and_stdout_work_with_dash() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let compressed = Command::new(at1_bin()).args(["compress", "-", "-"]).stdin(std::fs::File::open(&input).unwrap()).output().unwrap();
    assert!(compressed.status.success());
    let mut child = Command::new(at1_bin()).args(["decompress", "-", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&compressed.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&input).unwrap());
}

#[test]
fn corrupt_and_foreign_files_get_one_line_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("x.at1");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let bad = dir.path().join("bad.at1");
    std::fs::write(&bad, &bytes).unwrap();

    let out = dir.path().join("restored.csv");
    let r = at1(&["decompress", s(&bad), s(&out)]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("block"), "names the block: {err}");
    assert!(!out.exists(), "no partial output");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".at1-tmp")).count(), 0);

    let v = at1(&["verify", s(&obj), s(&bad)]);
    assert_eq!(v.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&v.stdout);
    assert!(stdout.contains("x.at1: OK") && stdout.contains("bad.at1: FAILED"), "{stdout}");

    let r = at1(&["cat", s(&input)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not an .at1 object"));

    let truncated = dir.path().join("t.at1");
    std::fs::write(&truncated, &std::fs::read(&obj).unwrap()[..100]).unwrap();
    let r = at1(&["verify", s(&truncated)]);
    assert_eq!(r.status.code(), Some(3));
    let r = at1(&["decompress", s(&dir.path().join("missing.at1")), s(&out)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("No such file"));
}

#[test]
fn columnar_codec_refuses_non_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "just\nsome\nlines\n").unwrap();
    let r = at1(&["compress", s(&p), s(&dir.path().join("n.at1")), "--codec", "columnar"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(!dir.path().join("n.at1").exists());
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_rejected_encoding_exits_3_and_keeps_the_old_output() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "fine\n".repeat(1000)).unwrap();
    let obj = dir.path().join("o.at1");
    assert!(at1(&["compress", s(&good), s(&obj)]).status.success());
    let before = std::fs::read(&obj).unwrap();
    let bad = dir.path().join("bad.txt");
    let mut text = "x\n".repeat(1000);
    text.push_str(std::str::from_utf8(at1::gate::fault_injection::MARKER).unwrap());
    std::fs::write(&bad, text).unwrap();
    let r = at1(&["compress", s(&bad), s(&obj)]);
    assert_eq!(r.status.code(), Some(3), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("verification failed"));
    assert_eq!(std::fs::read(&obj).unwrap(), before, "the old object is intact");
}

/// A full disk is an I/O error (exit 1, not a verification failure), and
/// leaves neither the output nor a temp file behind.
#[test]
fn a_full_disk_is_a_clear_error_and_leaves_nothing() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    common::sh_ok(&format!("mount -t tmpfs -o size=256k tmpfs '{}'", small.display()));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let input = dir.path().join("noise.bin");
    std::fs::write(&input, noise(3 << 20, 7)).unwrap();
    let out = small.join("noise.at1");
    let r = at1(&["compress", s(&input), s(&out)]);
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stderr).contains("No space left"), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0, "nothing left behind");
}
