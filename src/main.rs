//! `at1`: the command line of at1fs. Parses arguments, runs the command, and
//! maps the outcome to an exit code in one place:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (I/O, bad input, corrupt or non-.at1 file) |
//! | 2 | usage error (from clap, or a bad option value) |
//! | 3 | verification failed: the gate rejected an encoding, `verify` found a bad object, or `upgrade` found an old object bad or its copy different |
//!
//! A closed output pipe (`at1 cat x.at1 | head`) is not an error to report:
//! the process ends quietly, killed by SIGPIPE as `cat` and `zstd` are.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use at1::gate::GateError;

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        let upgrade_refused = cause.downcast_ref::<at1::volume::upgrade::UpgradeError>().is_some_and(|e| e.is_verification_failure());
        if matches!(cause.downcast_ref::<GateError>(), Some(GateError::Rejected(_)))
            || cause.downcast_ref::<cli::VerifyFailed>().is_some()
            || cause.downcast_ref::<cli::DamageFound>().is_some()
            || upgrade_refused
        {
            return 3;
        }
        if cause.downcast_ref::<cli::UsageError>().is_some() {
            return 2;
        }
    }
    1
}

/// Whether the command failed only because its output pipe was closed.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The error as one line: each cause once (error types that show their
/// source in their own text would otherwise repeat it), without the
/// " (os error N)" suffix of system errors, and without line breaks.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = strip_os_error_codes(&cause.to_string());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "Is a directory (os error 21)" -> "Is a directory".
fn strip_os_error_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" (os error ") {
        let tail = &rest[at + " (os error ".len()..];
        let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        if digits > 0 && tail[digits..].starts_with(')') {
            out.push_str(&rest[..at]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Ends the process as a write to a closed pipe does by default: by
/// SIGPIPE, which Rust programs ignore so that the error could be handled.
fn die_of_sigpipe() -> ExitCode {
    // SAFETY: restoring a default disposition and raising a signal; nothing
    // is left to clean up (every temp file is gone with its guard).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    ExitCode::from(1)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,fuser=error")).init();
    let cli = match cli::args::normalize(std::env::args_os().collect()) {
        cli::args::Invocation::Run(args) => cli::Cli::parse_from(args),
        cli::args::Invocation::Done => return ExitCode::SUCCESS,
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => die_of_sigpipe(),
        Err(e) => {
            eprintln!("at1: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_by_its_wrapper_is_shown_once() {
        let io = std::io::Error::from_raw_os_error(libc::EISDIR);
        let err = anyhow::Error::new(GateError::Io(io)).context("adir");
        assert_eq!(one_line(&err), "adir: Is a directory");
    }

    #[test]
    fn os_error_codes_are_dropped_and_other_parentheses_kept() {
        assert_eq!(strip_os_error_codes("No space left on device (os error 28)"), "No space left on device");
        assert_eq!(strip_os_error_codes("a (os error x) b (os error 2): c"), "a (os error x) b: c");
    }
}
