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
    let r = at1(&["compress", "-f", s(&bad), s(&obj)]);
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

// ------------------------------------------------- issue 7: as zstd users expect

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 1 and one line on stderr, returned.
fn one_line_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit 1: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("os error"), "no errno codes: {err}");
    err
}

#[test]
fn an_existing_output_is_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("o.at1");
    std::fs::write(&obj, b"precious").unwrap();
    let err = one_line_error(&at1(&["compress", s(&input), s(&obj)]));
    assert!(err.contains("o.at1 already exists") && err.contains("-f"), "{err}");
    assert_eq!(std::fs::read(&obj).unwrap(), b"precious");
    let out = dir.path().join("out.csv");
    std::fs::write(&out, b"precious").unwrap();
    let r = at1(&["compress", "-f", s(&input), s(&obj)]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(one_line_error(&at1(&["decompress", s(&obj), s(&out)])).contains("out.csv already exists"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert!(at1(&["decompress", "--force", s(&obj), s(&out)]).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    // Never over the input itself, even with -f.
    let err = one_line_error(&at1(&["decompress", "-f", s(&obj), s(&obj)]));
    assert!(err.contains("is the input itself"), "{err}");
    assert!(at1(&["verify", s(&obj)]).status.success(), "the input is intact");
}

#[test]
fn default_output_names_add_and_remove_the_suffix_and_keep_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let original = std::fs::read(&input).unwrap();
    let r = at1(&["compress", s(&input)]);
    assert!(r.status.success(), "{}", stderr(&r));
    let obj = dir.path().join("in.csv.at1");
    assert!(obj.exists(), "in.csv -> in.csv.at1");
    assert_eq!(std::fs::read(&input).unwrap(), original, "the input is kept");
    // The default name of decompress is the input's, which exists.
    assert!(one_line_error(&at1(&["decompress", s(&obj)])).contains("in.csv already exists"));
    std::fs::rename(&input, dir.path().join("moved.csv")).unwrap();
    let r = at1(&["decompress", "-k", s(&obj)]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(&input).unwrap(), original, "in.csv.at1 -> in.csv");
    assert!(obj.exists(), "the input is kept");
    // No suffix to remove, or one to add already: refused, as zstd does.
    let err = one_line_error(&at1(&["decompress", s(&input)]));
    assert!(err.contains("in.csv") && err.contains("not named *.at1"), "{err}");
    let err = one_line_error(&at1(&["compress", s(&obj)]));
    assert!(err.contains("already ends in .at1"), "{err}");
}

#[test]
fn a_symlink_output_is_written_through_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("o.at1");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("target.csv"), b"old").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink("sub/target.csv", &link).unwrap();
    assert!(one_line_error(&at1(&["decompress", s(&obj), s(&link)])).contains("link.csv already exists"));
    assert!(at1(&["decompress", "-f", s(&obj), s(&link)]).status.success());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(std::fs::read(sub.join("target.csv")).unwrap(), std::fs::read(&input).unwrap(), "its target has the bytes");
    // A dangling link: its target is created.
    let dangling = dir.path().join("dangling.csv");
    std::os::unix::fs::symlink("sub/new.csv", &dangling).unwrap();
    assert!(at1(&["decompress", s(&obj), s(&dangling)]).status.success());
    assert_eq!(std::fs::read(sub.join("new.csv")).unwrap(), std::fs::read(&input).unwrap());
    let temps = std::fs::read_dir(&sub).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".at1-tmp")).count();
    assert_eq!(temps, 0, "no temp file left");
}

#[test]
fn a_device_output_is_written_in_place_not_replaced() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED: mknod needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("o.at1");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());
    // Our own nodes of /dev/full (1,7) and /dev/null (1,3), so that a
    // regression replaces these, not the system's.
    let full = dir.path().join("full");
    let null = dir.path().join("null");
    sh_ok(&format!("mknod '{}' c 1 7 && mknod '{}' c 1 3", full.display(), null.display()));
    use std::os::unix::fs::FileTypeExt;
    let err = one_line_error(&at1(&["decompress", s(&obj), s(&full)]));
    assert!(err.contains("full: No space left on device"), "{err}");
    assert!(std::fs::symlink_metadata(&full).unwrap().file_type().is_char_device(), "still the device");
    let r = at1(&["decompress", s(&obj), s(&null)]);
    assert!(r.status.success(), "no -f needed for a device: {}", stderr(&r));
    let r = at1(&["compress", s(&input), s(&null)]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "still the device");
}

#[test]
fn fifo_and_socket_outputs_get_the_bytes() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let original = std::fs::read(&input).unwrap();
    let obj = dir.path().join("o.at1");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());

    // The readers give up after a while, so that an output that never
    // reaches them fails the test instead of hanging it.
    let fifo = dir.path().join("fifo");
    sh_ok(&format!("mkfifo '{}'", fifo.display()));
    let got = dir.path().join("got");
    let mut reader = common::spawn(Command::new("timeout").arg("30").arg("cat").arg(&fifo).stdout(std::fs::File::create(&got).unwrap())).unwrap();
    let r = at1(&["decompress", s(&obj), s(&fifo)]);
    assert!(r.status.success(), "{}", stderr(&r));
    reader.wait().unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), original, "the FIFO's reader got every byte");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "still the FIFO");

    let sock = dir.path().join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let reader = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(30) {
            if let Ok((mut conn, _)) = listener.accept() {
                conn.set_nonblocking(false).unwrap();
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Vec::new()
    });
    let r = at1(&["decompress", s(&obj), s(&sock)]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(reader.join().unwrap(), original, "the socket's peer got every byte");
}

#[test]
fn a_new_output_takes_the_input_mode_and_times() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o640)).unwrap();
    sh_ok(&format!("touch -d '2020-02-03 04:05:06' '{}'", input.display()));
    let obj = dir.path().join("o.at1");
    assert!(at1(&["compress", s(&input), s(&obj)]).status.success());
    let (a, b) = (std::fs::metadata(&input).unwrap(), std::fs::metadata(&obj).unwrap());
    assert_eq!(b.mode() & 0o777, 0o640);
    assert_eq!((b.mtime(), b.mtime_nsec()), (a.mtime(), a.mtime_nsec()));
}

#[test]
fn dash_c_writes_stdout_and_q_and_v_set_what_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("o.at1");
    let r = at1(&["compress", s(&input), s(&obj)]);
    assert_eq!(stderr(&r).lines().count(), 1, "a summary line by default: {}", stderr(&r));
    let r = at1(&["compress", "-q", "-f", s(&input), s(&obj)]);
    assert!(r.status.success() && r.stderr.is_empty(), "-q: {}", stderr(&r));
    let r = at1(&["compress", "-v", "-f", s(&input), s(&obj)]);
    assert!(stderr(&r).lines().count() > 1 && stderr(&r).contains("MB/s"), "-v: {}", stderr(&r));
    let r = at1(&["decompress", "-c", s(&obj)]);
    assert!(r.status.success() && r.stderr.is_empty(), "quiet on stdout: {}", stderr(&r));
    assert_eq!(r.stdout, std::fs::read(&input).unwrap());
    let r = at1(&["decompress", "--stdout", "-T", "1", s(&obj)]);
    assert_eq!(r.stdout, std::fs::read(&input).unwrap());
    let r = at1(&["compress", "-c", s(&input)]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(r.stdout, std::fs::read(&obj).unwrap(), "the same object on stdout");
    assert_eq!(at1(&["compress", "-c", s(&input), s(&obj)]).status.code(), Some(2), "-c and an output conflict");
}

#[test]
fn level_shorthand_and_threads_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_csv(dir.path());
    let obj = dir.path().join("o.at1");
    for (flag, level) in [("-3", 3), ("-19", 19), ("-1", 1)] {
        let r = at1(&["compress", "-f", flag, "-T", "1", s(&input), s(&obj)]);
        assert!(r.status.success(), "{flag}: {}", stderr(&r));
        let json: serde_json::Value = serde_json::from_slice(&at1(&["inspect", "--json", s(&obj)]).stdout).unwrap();
        assert_eq!(json["settings"]["level"], level, "{flag}");
    }
    let r = at1(&["compress", "-f", "--level", "30", s(&input), s(&obj)]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("level 30 is not a zstd level (1-22)"), "{}", stderr(&r));
    let r = at1(&["compress", "-f", "--backend", "xz", "-9", s(&input), s(&obj)]);
    assert!(r.status.success(), "{}", stderr(&r));
}

/// Runs `cmd | head ...` in bash; returns (the first command's exit status,
/// its stderr).
fn into_head(cmd: &str, head: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err");
    let out = sh_ok(&format!("timeout -k 5 120 bash -c \"{cmd} 2>'{}' | {head} >/dev/null; echo \\${{PIPESTATUS[0]}}\"", err.display()));
    (out.trim().to_string(), std::fs::read_to_string(err).unwrap())
}

#[test]
fn a_closed_pipe_ends_cat_sql_inspect_and_verify_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,city,temp\n");
    for i in 0..400_000 {
        text.push_str(&format!("{i},city{},{}.{}\n", i % 50, i % 40 - 10, i % 10));
    }
    let input = dir.path().join("big.csv");
    std::fs::write(&input, text).unwrap();
    let obj = dir.path().join("big.at1");
    // Small row groups: inspect --row-groups prints more than a pipe holds.
    assert!(at1(&["compress", "--level", "1", "--row-group-rows", "500", s(&input), s(&obj)]).status.success());
    let a = at1_bin().display().to_string();
    let o = obj.display();
    let many = vec![format!("'{o}'"); 50].join(" ");
    for (cmd, head) in [
        (format!("'{a}' cat '{o}'"), "head -1"),
        (format!("'{a}' sql '{o}' 'SELECT * FROM big.at1'"), "head -c 100"),
        (format!("'{a}' inspect --row-groups '{o}'"), "head -1"),
        (format!("'{a}' verify {many}"), "head -c 1"),
    ] {
        let (status, err) = into_head(&cmd, head);
        assert_eq!(err, "", "{cmd} | {head}: nothing on stderr");
        assert_eq!(status, "141", "{cmd} | {head}: ended by SIGPIPE, as cat");
    }
}

#[test]
fn error_messages_are_one_line_and_name_the_file_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let input = sample_csv(dir.path());
    let obj = d("in.csv.at1");
    assert!(at1(&["compress", s(&input), &obj]).status.success());
    std::fs::create_dir(d("adir")).unwrap();
    std::fs::write(d("notat1.txt"), "just text\n".repeat(20)).unwrap();

    let err = one_line_error(&at1(&["compress", &d("adir"), &d("out.at1")]));
    assert_eq!(err.trim_end(), format!("at1: {}: Is a directory", d("adir")));
    let err = one_line_error(&at1(&["decompress", &d("adir"), &d("x")]));
    assert_eq!(err.trim_end(), format!("at1: {}: Is a directory", d("adir")));
    let err = one_line_error(&at1(&["compress", s(&input), &d("nodir/out.at1")]));
    assert_eq!(err.trim_end(), format!("at1: {}: No such file or directory", d("nodir/out.at1")));
    let err = one_line_error(&at1(&["recall-cost", &d("notat1.txt")]));
    assert!(err.contains("notat1.txt") && err.contains("not an .at1 object"), "{err}");
    let err = one_line_error(&at1(&["verify", &d("missing.at1")]));
    assert_eq!(err.trim_end(), format!("at1: {}: No such file or directory", d("missing.at1")));
    let err = one_line_error(&at1(&["cat", "--range", "99999999-", &obj]));
    assert!(err.contains("range start 99999999 is past the end of the original (218890 bytes)") || err.contains("past the end"), "{err}");
    let err = one_line_error(&at1(&["sql", &d("missing-dir"), "SELECT * FROM t.csv"]));
    assert_eq!(err.trim_end(), format!("at1: {}: No such file or directory", d("missing-dir")));
    let err = one_line_error(&at1(&["sql", s(&input), "SELECT COUNT(*) FROM other.csv"]));
    assert!(err.contains("FROM other.csv does not name"), "{err}");
    // The file's own names are fine: as given, its name, without .at1.
    for from in [s(&input).to_string(), "in.csv".to_string()] {
        let r = at1(&["sql", s(&input), &format!("SELECT COUNT(*) FROM \"{from}\"")]);
        assert!(r.status.success(), "FROM {from}: {}", stderr(&r));
    }
    let r = at1(&["sql", &obj, "SELECT COUNT(*) FROM in.csv"]);
    assert!(r.status.success(), "{}", stderr(&r));
}

#[test]
fn help_describes_every_option_and_lists_the_exit_codes() {
    for sub in ["compress", "decompress", "cat", "verify", "inspect", "mount", "unmount", "sql", "recall-cost"] {
        let help = String::from_utf8(at1(&[sub, "--help"]).stdout).unwrap();
        assert!(help.contains("Exit status:") && help.contains("  0  ") && help.contains("  1  ") && help.contains("  2  "), "{sub} --help: {help}");
    }
    let top = String::from_utf8(at1(&["--help"]).stdout).unwrap();
    assert!(top.contains("  3  verification failed"), "{top}");
    let mount = String::from_utf8(at1(&["mount", "--help"]).stdout).unwrap();
    assert_eq!(mount.matches("--threads <N>").count(), 1, "{mount}");
    assert_eq!(mount.matches("--fuse-threads <N>").count(), 1, "{mount}");
    // Every option line of every command says what it does: no line that
    // names an option and stops there.
    for sub in ["compress", "decompress", "cat", "verify", "inspect", "mount", "unmount", "sql", "recall-cost"] {
        let help = String::from_utf8(at1(&[sub, "--help"]).stdout).unwrap();
        for line in help.lines().filter(|l| l.trim_start().starts_with('-') || l.starts_with("  <")) {
            assert!(line.trim().contains("  "), "{sub}: undescribed: {line:?}");
        }
    }
}

/// The uid and gid of an unprivileged user for tests (made once).
fn test_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = "at1-cli-test";
    if common::sh(&format!("id -u {name}")).0 != 0 {
        // Idempotent: another test may have made it meanwhile.
        let _ = common::sh(&format!("useradd --system --no-create-home --shell /usr/sbin/nologin {name}"));
    }
    let uid = common::sh_ok(&format!("id -u {name}")).trim().parse().ok()?;
    let gid = common::sh_ok(&format!("id -g {name}")).trim().parse().ok()?;
    Some((uid, gid))
}

#[test]
fn verify_of_a_directory_checks_every_object_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let input = sample_csv(dir.path());
    for name in ["a.csv.at1", "sub/b.csv.at1"] {
        assert!(at1(&["compress", s(&input), s(&tree.join(name))]).status.success());
    }
    std::fs::write(tree.join("plain.txt"), b"not an object").unwrap();
    let r = at1(&["verify", s(&tree)]);
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    assert_eq!(r.status.code(), Some(0), "{out}{}", stderr(&r));
    assert_eq!(out.lines().count(), 2, "one line per object: {out}");
    assert!(out.contains(&format!("{}: OK", tree.join("a.csv.at1").display())), "under its own path: {out}");
    assert!(out.contains(&format!("{}: OK", tree.join("sub/b.csv.at1").display())), "{out}");

    let mut bytes = std::fs::read(tree.join("sub/b.csv.at1")).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(tree.join("sub/b.csv.at1"), bytes).unwrap();
    let r = at1(&["verify", s(&tree)]);
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    assert_eq!(r.status.code(), Some(3), "{out}");
    assert!(out.contains(&format!("{}: FAILED", tree.join("sub/b.csv.at1").display())), "{out}");
    let r = at1(&["verify", "-q", s(&tree)]);
    assert_eq!(String::from_utf8_lossy(&r.stdout).lines().count(), 1, "-q prints the failure only");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = one_line_error(&at1(&["verify", s(&empty)]));
    assert!(err.contains("holds no .at1 objects"), "{err}");

    // An unreadable directory is an error (exit 1), not a failed object.
    let Some((uid, gid)) = test_user() else {
        eprintln!("SKIPPED: the unreadable-directory case needs root to switch users");
        return;
    };
    let good = dir.path().join("good");
    std::fs::create_dir_all(good.join("locked")).unwrap();
    assert!(at1(&["compress", s(&input), s(&good.join("a.at1"))]).status.success());
    sh_ok(&format!(
        "chmod 755 '{}' '{}' && chmod 644 '{}' && chmod 000 '{}'",
        dir.path().display(),
        good.display(),
        good.join("a.at1").display(),
        good.join("locked").display()
    ));
    let (_bin_dir, bin) = common::users::at1_for_users();
    let (code, out, err) = common::sh(&format!("setpriv --reuid {uid} --regid {gid} --clear-groups '{}' verify '{}'", bin.display(), good.display()));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("a.at1: OK"), "the readable object is checked: {out}");
    assert!(err.contains("locked: Permission denied"), "{err}");
}

#[test]
fn inspect_shows_the_min_and_max_sql_gives() {
    let dir = tempfile::tempdir().unwrap();
    // A decimal column with a value written as a float ("1e3") in the
    // second row group: that zone map has no bounds.
    let mut text = String::from("id,pressure\n");
    let (mut lo, mut hi) = (i64::MAX, i64::MIN); // in tenths
    for i in 0..3000 {
        let tenths = (990 + (i * 7) % 50) * 10 + i % 10;
        let p = if i == 1500 { "1e3".to_string() } else { format!("{}.{}", tenths / 10, tenths % 10) };
        let tenths = if i == 1500 { 10_000 } else { tenths };
        (lo, hi) = (lo.min(tenths), hi.max(tenths));
        text.push_str(&format!("{i},{p}\n"));
    }
    let input = dir.path().join("p.csv");
    std::fs::write(&input, text).unwrap();
    let obj = dir.path().join("p.at1");
    assert!(at1(&["compress", "--row-group-rows", "1000", s(&input), s(&obj)]).status.success());
    let sql = at1(&["sql", s(&obj), "SELECT MIN(pressure), MAX(pressure) FROM p"]);
    let sql: serde_json::Value = serde_json::from_slice(&sql.stdout).unwrap();
    let (min, max) = (sql["rows"][0][0].to_string(), sql["rows"][0][1].to_string());
    assert_eq!((min.clone(), max.clone()), (format!("{}.{}", lo / 10, lo % 10), format!("{}.{}", hi / 10, hi % 10)));
    let json: serde_json::Value = serde_json::from_slice(&at1(&["inspect", "--json", s(&obj)]).stdout).unwrap();
    assert_eq!(json["table"]["columns"][1]["min"].to_string(), min);
    assert_eq!(json["table"]["columns"][1]["max"].to_string(), max);
    let text = String::from_utf8(at1(&["inspect", s(&obj)]).stdout).unwrap();
    assert!(text.contains(&format!("min {min} max {max}")), "{text}");
}
