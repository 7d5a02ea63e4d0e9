//! A request that panics inside the filesystem fails alone: it is answered
//! with EIO and logged, and the mount keeps serving every other request.
//! (The panic is triggered on purpose through the test-only
//! `fault-injection` feature, so the whole test needs it.)
#![cfg(feature = "fault-injection")]

mod common;

use common::mount::Mounted;
use common::*;

#[test]
fn a_panicking_request_answers_eio_and_the_mount_keeps_serving() {
    let Some(m) = Mounted::new(&[]) else { return };
    let panic_path = m.path(at1::fs::fault_injection::PANIC_NAME);
    std::fs::write(m.path("kept.txt"), b"still here\n").unwrap();
    // More panics than the mount has request threads: if a panic took its
    // thread down, the mount would stop answering.
    for _ in 0..(2 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 4) {
        let (code, _, err) = sh(&format!("timeout 20 stat '{}'", panic_path.display()));
        assert_eq!(code, 1, "stat of the panicking name: {err}");
        assert!(err.contains("Input/output error"), "answered EIO: {err}");
    }
    assert_eq!(sh_ok(&format!("timeout 20 cat '{}'", m.path("kept.txt").display())), "still here\n");
    sh_ok(&format!("timeout 20 sh -c 'echo new > {}'", m.path("new.txt").display()));
    assert_eq!(std::fs::read(m.path("new.txt")).unwrap(), b"new\n");
    let log = m.log_text();
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("lookup") && l.contains("panic")), "an error line names the request and the panic:\n{log}");
}
