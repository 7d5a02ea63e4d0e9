//! `.at1/sql` as hostile users would try it: a query runs with its caller's
//! rights and reaches only the mount's own files; results belong to their
//! session and user; no query can crash, hang or exhaust the daemon; a
//! mount never reads through itself. Each test is named after the defect it
//! guards against (issue 7, part A).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::Mounted;
use common::users::{add_to_group, user, User};
use common::*;
use serde_json::Value;

/// Writes a small CSV at `path` with `rows` rows: `id,name,score`.
fn small_csv(path: &Path, rows: usize) {
    let mut text = String::from("id,name,score\n");
    for i in 0..rows {
        text.push_str(&format!("{i},name{},{}\n", i % 7, i % 100));
    }
    std::fs::write(path, text).unwrap();
}

/// The mount with a root that everyone may write in (as `/tmp`).
fn shared_mount(extra: &[&str]) -> Option<Mounted> {
    let m = Mounted::new(extra)?;
    sh_ok(&format!("chmod 1777 '{}'", m.mnt.display()));
    Some(m)
}

/// As `who`, writes `sql` to `.at1/sql` then reads it back in one session:
/// (exit code of the write, the JSON read back).
fn query_as(who: &User, m: &Mounted, sql: &str) -> (i32, Value) {
    let file = m.path(".at1/sql");
    let out = who.sh(&format!("echo \"{sql}\" > '{0}' 2>/dev/null; code=$?; cat '{0}'; echo; echo \"EXIT $code\"", file.display())).1;
    let (json, code) = out.trim().rsplit_once("\nEXIT ").unwrap_or_else(|| panic!("{out}"));
    let v = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{sql}: {e}: {out}"));
    (code.trim().parse().unwrap(), v)
}

fn root_query(m: &Mounted, sql: &str) -> Value {
    let out = sh(&format!("echo \"{sql}\" > '{0}'; cat '{0}'", m.path(".at1/sql").display())).1;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{sql}: {e}: {out}"))
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {v}"))
}

#[test]
fn sql_refuses_a_file_the_caller_cannot_read() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&[]) else { return };
    small_csv(&m.path("secret.csv"), 10);
    sh_ok(&format!("chmod 600 '{}'", m.path("secret.csv").display()));
    let (code, _, err) = alice.sh(&format!("echo 'SELECT * FROM secret.csv' > '{}'", m.path(".at1/sql").display()));
    assert!(code != 0 && err.contains("Permission denied"), "the write fails with EACCES: {err}");
    let (_, v) = query_as(&alice, &m, "SELECT * FROM secret.csv");
    assert_eq!(error_of(&v), "permission denied: secret.csv");
    // Its owner may.
    assert_eq!(root_query(&m, "SELECT COUNT(*) FROM secret.csv")["rows"][0][0], 10);
}

#[test]
fn sql_refuses_a_file_in_a_directory_the_caller_cannot_search() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&[]) else { return };
    std::fs::create_dir(m.path("private")).unwrap();
    small_csv(&m.path("private/open.csv"), 10);
    sh_ok(&format!("chmod 644 '{}' && chmod 700 '{}'", m.path("private/open.csv").display(), m.path("private").display()));
    let (code, v) = query_as(&alice, &m, "SELECT * FROM private/open.csv");
    assert_ne!(code, 0);
    assert_eq!(error_of(&v), "permission denied: private/open.csv");
    // Search without read is enough for a path, as for open(2).
    sh_ok(&format!("chmod 711 '{}'", m.path("private").display()));
    let (code, v) = query_as(&alice, &m, "SELECT COUNT(*) FROM private/open.csv");
    assert_eq!((code, &v["rows"][0][0]), (0, &Value::from(10)), "{v}");
}

#[test]
fn sql_between_two_ordinary_users_follows_their_modes() {
    let (Some(alice), Some(bob)) = (user("at1alice"), user("at1bob")) else { return };
    let Some(m) = shared_mount(&[]) else { return };
    let path = m.path("alice.csv");
    alice.sh_ok(&format!("printf 'a,b\\n1,2\\n3,4\\n' > '{0}' && chmod 600 '{0}'", path.display()));
    let (code, v) = query_as(&alice, &m, "SELECT COUNT(*) FROM alice.csv");
    assert_eq!((code, &v["rows"][0][0]), (0, &Value::from(2)), "{v}");
    let (code, v) = query_as(&bob, &m, "SELECT COUNT(*) FROM alice.csv");
    assert_ne!(code, 0);
    assert_eq!(error_of(&v), "permission denied: alice.csv");
    // Group read through a supplementary group.
    add_to_group(&bob, "at1readers");
    sh_ok(&format!("chgrp at1readers '{0}' && chmod 640 '{0}'", path.display()));
    let (code, v) = query_as(&bob, &m, "SELECT COUNT(*) FROM alice.csv");
    assert_eq!((code, &v["rows"][0][0]), (0, &Value::from(2)), "a member of the file's group reads it: {v}");
}

#[test]
fn sql_does_not_follow_symlinks_out_of_the_mount() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&[]) else { return };
    // A root-only directory outside the mount and the store.
    let outside = tempfile::tempdir().unwrap();
    small_csv(&outside.path().join("root.csv"), 3);
    sh_ok(&format!("chmod 700 '{}'", outside.path().display()));
    std::fs::create_dir(m.path("pub")).unwrap();
    std::os::unix::fs::symlink(outside.path(), m.path("pub/out")).unwrap();
    std::os::unix::fs::symlink("/etc", m.path("etc_link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../../../..", m.path("pub/up")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("nothing-here"), m.path("dangling")).unwrap();
    let leaves = |path: &str| format!("{path}: a symlink on the path leads outside the mount");
    for who in [None, Some(&alice)] {
        for path in ["pub/out/root.csv", "etc_link/shadow", "pub/up/etc/passwd", "dangling"] {
            let sql = format!("SELECT * FROM {path}");
            let (code, v) = match who {
                Some(u) => query_as(u, &m, &sql),
                None => (1, root_query(&m, &sql)),
            };
            assert_ne!(code, 0);
            // One message, whether or not anything is there.
            assert_eq!(error_of(&v), leaves(path), "as {who:?}");
        }
    }
}

#[test]
fn sql_follows_symlinks_that_stay_inside_the_mount() {
    let Some(m) = shared_mount(&[]) else { return };
    std::fs::create_dir_all(m.path("a/b")).unwrap();
    small_csv(&m.path("a/b/t.csv"), 4);
    std::os::unix::fs::symlink("b/t.csv", m.path("a/direct")).unwrap();
    std::os::unix::fs::symlink("../a/b", m.path("a/up_and_down")).unwrap();
    for path in ["a/direct", "a/up_and_down/t.csv"] {
        assert_eq!(root_query(&m, &format!("SELECT COUNT(*) FROM {path}"))["rows"][0][0], 4, "{path}");
    }
}

#[test]
fn sql_through_a_symlink_to_the_mountpoint_does_not_hang_the_mount() {
    let Some(m) = shared_mount(&["--threads", "1"]) else { return };
    for i in 0..8 {
        small_csv(&m.path(&format!("h{i}.csv")), 3);
    }
    std::os::unix::fs::symlink(&m.mnt, m.path("loop")).unwrap();
    let sql = m.path(".at1/sql");
    let start = Instant::now();
    let out =
        sh_ok(&format!("for i in 0 1 2 3 4 5 6 7; do setsid bash -c \"echo 'SELECT * FROM loop/h$i.csv' > '{0}'; cat '{0}'\" & done; wait", sql.display()));
    assert!(start.elapsed() < Duration::from_secs(120), "the queries came back");
    let answers: Vec<Value> = out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 8, "{out}");
    for a in &answers {
        assert!(error_of(a).ends_with("a symlink on the path leads outside the mount"), "{a}");
    }
    // The mount still serves everyone.
    assert_eq!(std::fs::read_dir(&m.mnt).unwrap().count(), 10);
}

#[test]
fn mount_on_its_own_store_or_inside_it_is_refused() {
    if !mount::fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("inner")).unwrap();
    let holder = dir.path().join("holder");
    std::fs::create_dir_all(holder.join("store2")).unwrap();
    let cases = [
        (store.clone(), store.clone(), "on itself"),
        (store.clone(), store.join("inner"), "inside its store"),
        (holder.join("store2"), holder.clone(), "the mount would hide it"),
    ];
    for (s, mnt, says) in cases {
        let (code, _, err) = sh(&format!("timeout 20 '{}' mount '{}' '{}'", at1_bin().display(), s.display(), mnt.display()));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{err}");
        assert!(!mount::is_mounted(&mnt), "nothing was mounted at {}", mnt.display());
    }
    assert!(!store.join(".at1").exists(), "a refused mount leaves the store untouched");
}

#[test]
fn sql_result_is_not_served_to_another_user_in_the_same_session() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&[]) else { return };
    small_csv(&m.path("secret.csv"), 5);
    sh_ok(&format!("chmod 600 '{}'", m.path("secret.csv").display()));
    let sql = m.path(".at1/sql");
    // Root's query and alice's read in one session.
    let out = sh_ok(&format!(
        "setsid bash -c \"echo 'SELECT * FROM secret.csv' > '{0}' && setpriv --reuid={1} --regid={2} --init-groups cat '{0}'\"",
        sql.display(),
        alice.uid,
        alice.gid
    ));
    assert!(!out.contains("name"), "alice must not read root's result: {out}");
    assert!(out.contains("no query was written"), "{out}");
}

#[test]
fn sql_with_thousands_of_or_terms_does_not_crash_the_mount() {
    let Some(m) = shared_mount(&["--threads", "1"]) else { return };
    small_csv(&m.path("t.csv"), 3000);
    let sql = m.path(".at1/sql");
    // 2,000 OR terms (about 26 KB): answered.
    let terms: Vec<String> = (0..2000).map(|i| format!("id = {}", i * 2)).collect();
    let text = format!("SELECT COUNT(*) FROM t.csv WHERE {}\n", terms.join(" OR "));
    let v = write_and_read(&sql, &text);
    assert_eq!(v["rows"][0][0], 1500, "{v}");
    // Chains up to the text limit (about 1 MiB) are answered or refused
    // with an error; the mount keeps serving.
    let fill = |term: &str| ((1 << 20) - 200) / term.len();
    let chains = [
        format!("SELECT COUNT(*) FROM t.csv WHERE id = 1{}\n", " AND id = 1".repeat(fill(" AND id = 1"))),
        format!("SELECT COUNT(*) FROM t.csv WHERE id{}\n", " = 1".repeat(fill(" = 1"))),
        format!("SELECT COUNT(*) FROM t.csv WHERE id{}\n", " IS NULL".repeat(fill(" IS NULL"))),
        format!("SELECT COUNT(*) FROM t.csv WHERE f(id{})\n", " + 1".repeat(fill(" + 1"))),
        format!("SELECT COUNT(*) FROM t.csv WHERE {}id = 1\n", "NOT ".repeat(fill("NOT "))),
        format!("SELECT COUNT(*) FROM t.csv WHERE {}id = 1{}\n", "(".repeat(fill("()")), ")".repeat(fill("()"))),
    ];
    for text in &chains {
        assert!(text.len() <= 1 << 20, "{}", text.len());
        let v = write_and_read(&sql, text);
        assert!(v.get("rows").is_some() || v.get("error").is_some(), "{v}");
        assert_eq!(write_and_read(&sql, "SELECT COUNT(*) FROM t.csv\n")["rows"][0][0], 3000, "the mount still answers");
    }
}

/// Writes `text` to `.at1/sql` on one read-write handle and reads the
/// result (or error) back.
fn write_and_read(sql: &Path, text: &str) -> Value {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(sql).unwrap();
    let _ = f.write_all(text.as_bytes());
    let mut out = String::new();
    let mut at = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read_at(&mut buf, at).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        at += n as u64;
    }
    let _ = f.read_to_string(&mut String::new());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn sql_query_text_over_one_mib_is_refused_and_spaces_parse_in_linear_time() {
    let Some(m) = shared_mount(&[]) else { return };
    small_csv(&m.path("t.csv"), 10);
    let sql = m.path(".at1/sql");
    let padded = format!("{}SELECT COUNT(*) FROM t.csv\n", " ".repeat((1 << 20) - 64));
    assert_eq!(write_and_read(&sql, &padded)["rows"][0][0], 10);
    let (code, _, err) = sh(&format!("head -c 200M /dev/zero | tr '\\0' ' ' > '{}'", sql.display()));
    assert!(code != 0 && err.contains("File too large"), "{err}");
    let v = root_query(&m, "SELECT 1 FROM t.csv WHERE nope = 1");
    assert!(error_of(&v).contains("nope"), "the next query runs normally: {v}");
}

/// A query that compares every row with a 100,000-item IN list (values
/// inside the table's range, so the zone maps prune nothing): it runs for
/// minutes, in constant memory.
fn endless_query(table: &str) -> String {
    let list: Vec<String> = (0..100_000).map(|i| (i * 3 + 1).to_string()).collect();
    format!("SELECT COUNT(*) FROM {table} WHERE id IN ({})\n", list.join(","))
}

#[test]
fn sql_query_timeout_stops_a_long_query() {
    let Some(m) = shared_mount(&["--query-timeout", "2"]) else { return };
    small_csv(&m.path("big.csv"), 300_000);
    let sql = m.path(".at1/sql");
    let start = Instant::now();
    let v = write_and_read(&sql, &endless_query("big.csv"));
    assert!(error_of(&v).contains("time limit"), "{v}");
    assert!(start.elapsed() < Duration::from_secs(60), "stopped near its limit, took {:?}", start.elapsed());
    let text = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(text.path(), endless_query("big.csv")).unwrap();
    // The write returns once the query is accepted; `cat` waits for the
    // outcome.
    let out = sh_ok(&format!("cat '{}' > '{1}'; cat '{1}'", text.path().display(), sql.display()));
    assert!(out.contains("time limit"), "{out}");
}

#[test]
fn sql_heavy_query_of_one_user_does_not_block_another_users_query() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&["--query-threads", "2", "--query-timeout", "15"]) else { return };
    small_csv(&m.path("big.csv"), 300_000);
    small_csv(&m.path("small.csv"), 10);
    let sql = m.path(".at1/sql");
    // Two heavy queries of root (one waits: a user holds at most one of
    // the two slots), then alice's trivial one.
    let heavy = endless_query("big.csv");
    let spawn_heavy = || {
        let (sql, heavy) = (sql.clone(), heavy.clone());
        std::thread::spawn(move || write_and_read(&sql, &heavy))
    };
    let heavies = [spawn_heavy(), spawn_heavy()];
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (code, v) = query_as(&alice, &m, "SELECT COUNT(*) FROM small.csv");
    assert_eq!((code, &v["rows"][0][0]), (0, &Value::from(10)), "{v}");
    assert!(heavies.iter().all(|h| !h.is_finished()), "alice's query was answered while root's were still running ({:?})", start.elapsed());
    for h in heavies {
        let v = h.join().unwrap();
        assert!(error_of(&v).contains("time limit"), "{v}");
    }
}

#[test]
fn sql_over_query_memory_is_refused_and_the_memory_is_returned() {
    let Some(m) = shared_mount(&["--query-memory", "16MiB", "--cache-size", "0"]) else { return };
    let sql = m.path(".at1/sql");
    // 400,000 rows, every id distinct: GROUP BY id and a full ORDER BY
    // need more than 16 MiB.
    small_csv(&m.path("t.csv"), 400_000);
    let rss_before = rss_kib(m.pid());
    for q in ["SELECT id, COUNT(*) FROM t.csv GROUP BY id", "SELECT id, name FROM t.csv ORDER BY name, id"] {
        let v = write_and_read(&sql, &format!("{q}\n"));
        let e = error_of(&v);
        assert!(e.contains("query memory limit of 16 MiB") && e.contains("--query-memory"), "{e}");
    }
    // Within the limit, a sort larger than what is put together in memory
    // spills and still comes out whole and in order.
    let v = write_and_read(&sql, "SELECT id FROM t.csv WHERE id < 100000 ORDER BY score DESC, id\n");
    let rows = v["rows"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(rows.len(), 100_000);
    let key = |r: &Value| {
        let id = r[0].as_i64().unwrap();
        (-(id % 100), id)
    };
    assert!(rows.windows(2).all(|w| key(&w[0]) < key(&w[1])), "sorted by score desc, id");
    let rss_after = rss_kib(m.pid());
    assert!(rss_after < rss_before + 64 * 1024, "daemon RSS {rss_before} KiB before, {rss_after} KiB after the queries");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

#[test]
fn read_only_mount_answers_sql_and_refuses_every_change() {
    let Some(mut m) = Mounted::new(&[]) else { return };
    small_csv(&m.path("t.csv"), 10);
    std::fs::create_dir(m.path("d")).unwrap();
    m.unmount();
    let ro = Mounted::new_on_store(&m, &["--read-only"]);
    assert_eq!(root_query(&ro, "SELECT COUNT(*) FROM t.csv")["rows"][0][0], 10);
    let p = |rel: &str| ro.path(rel).display().to_string();
    for change in [
        format!("touch '{}'", p("new")),
        format!("echo x >> '{}'", p("t.csv")),
        format!("touch '{}'", p("t.csv")),
        format!("chmod 600 '{}'", p("t.csv")),
        format!("mkdir '{}'", p("d2")),
        format!("rmdir '{}'", p("d")),
        format!("rm '{}'", p("t.csv")),
        format!("mv '{}' '{}'", p("t.csv"), p("u.csv")),
        format!("ln '{}' '{}'", p("t.csv"), p("hard")),
        format!("ln -s t.csv '{}'", p("soft")),
        format!("setfattr -n user.x -v 1 '{}'", p("t.csv")),
    ] {
        let (code, _, err) = sh(&change);
        assert!(code != 0 && err.contains("Read-only file system"), "{change}: {err}");
    }
    assert_eq!(std::fs::read_to_string(ro.path("t.csv")).unwrap().lines().count(), 11, "nothing changed");
}

#[test]
fn at1_sql_on_a_mount_point_runs_as_its_caller() {
    let Some(alice) = user("at1alice") else { return };
    let Some(m) = shared_mount(&[]) else { return };
    small_csv(&m.path("secret.csv"), 10);
    sh_ok(&format!("chmod 600 '{}'", m.path("secret.csv").display()));
    alice.sh_ok(&format!("printf 'a,b\\n1,2\\n3,4\\n' > '{}'", m.path("mine.csv").display()));
    let (_bin_dir, bin) = common::users::at1_for_users();
    let out = alice.sh_ok(&format!("'{}' sql '{}' 'SELECT COUNT(*) FROM mine.csv' --format csv", bin.display(), m.mnt.display()));
    assert_eq!(out, "COUNT(*)\n2\n");
    let (code, out, err) = alice.sh(&format!("'{}' sql '{}' 'SELECT * FROM secret.csv'", bin.display(), m.mnt.display()));
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err.trim(), "at1: permission denied: secret.csv");
    // The store itself is the daemon's (mode 0700): alice cannot read it.
    let (code, _, err) = alice.sh(&format!("'{}' sql '{}' 'SELECT * FROM secret.csv'", bin.display(), m.store.display()));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Permission denied") && err.lines().count() == 1, "{err}");
}

#[test]
fn sql_result_of_an_ended_session_is_not_served_to_a_new_session_with_its_id() {
    let Some(m) = shared_mount(&[]) else { return };
    small_csv(&m.path("t.csv"), 5);
    let sql = m.path(".at1/sql");
    // A session that runs a query and ends; its leader's pid is its id.
    let out = sh_ok(&format!("setsid bash -c \"echo 'SELECT name FROM t.csv' > '{}'; echo \\$\\$\"", sql.display()));
    let sid: u32 = out.trim().parse().unwrap();
    // Make the next process get that pid (as a user forking until the pid
    // comes back would), then start a new session in it.
    for _ in 0..50 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (sid - 1).to_string()).is_err() {
            eprintln!("SKIPPED: cannot choose the next pid here");
            return;
        }
        let cmd = format!("echo $$; cat '{}'", sql.display());
        let child = spawn(std::process::Command::new("setsid").args(["bash", "-c", &cmd]).stdout(std::process::Stdio::piped())).unwrap();
        let out = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        let (pid, rest) = out.split_once('\n').unwrap();
        if pid.trim().parse::<u32>().unwrap() != sid {
            continue; // another process took the pid first: try again
        }
        assert!(!rest.contains("name"), "a new session with the old id read its result: {rest}");
        assert!(rest.contains("no query was written"), "{rest}");
        return;
    }
    panic!("could not get pid {sid} back in 50 tries");
}
