//! The command line before clap sees it: the conventions clap has no words
//! for.
//!
//! - **Level shorthand.** `at1 compress -19 x.csv` is `--level 19`, as in
//!   zstd and xz. clap's short flags are single characters (`-19` would be
//!   `-1 -9`), so each `-N` (one or two digits) after `compress` or `mount`
//!   becomes `--level=N` here, unless it is the value of the option before
//!   it or comes after `--`.
//! - **Mount helper.** Run as `at1fs` or `mount.fuse.at1fs` (a symlink to
//!   `at1`), the program speaks the mount helper convention mount(8) and
//!   mount.fuse3 use for `fuse.at1fs` entries of fstab:
//!   `SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v] [-t TYPE]`, and
//!   runs `at1 mount SOURCE MOUNTPOINT -o OPTIONS`.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// Program names under which `at1` acts as a mount helper.
pub const MOUNT_HELPER_NAMES: [&str; 2] = ["at1fs", "mount.fuse.at1fs"];

pub enum Invocation {
    /// Arguments for clap.
    Run(Vec<OsString>),
    /// Nothing to do (a mount helper asked to fake the mount).
    Done,
}

pub fn normalize(args: Vec<OsString>) -> Invocation {
    let program = args.first().map(|p| Path::new(p).file_name().unwrap_or(p.as_os_str()).to_os_string()).unwrap_or_default();
    if MOUNT_HELPER_NAMES.iter().any(|n| program == *n) {
        return mount_helper(args);
    }
    Invocation::Run(expand_level_shorthand(args))
}

/// `at1fs SOURCE MOUNTPOINT -o OPTS ...` as `at1 mount ...`.
fn mount_helper(args: Vec<OsString>) -> Invocation {
    let mut out: Vec<OsString> = vec!["at1".into(), "mount".into()];
    let mut rest = args.into_iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            // Fake: do everything but mount; there is nothing else to do.
            Some("-f") => return Invocation::Done,
            // No mtab to update; verbosity is the log's business.
            Some("-n" | "-v") => {}
            Some("-s") => out.push("--sloppy".into()),
            // The type is ours by construction (fuse.at1fs).
            Some("-t") => {
                rest.next();
            }
            _ => out.push(arg),
        }
    }
    Invocation::Run(out)
}

/// Subcommands whose `-N` means `--level N`.
const LEVEL_COMMANDS: [&str; 2] = ["compress", "mount"];

fn expand_level_shorthand(args: Vec<OsString>) -> Vec<OsString> {
    let Some(sub_at) = args.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1) else { return args };
    let name = args[sub_at].to_string_lossy().into_owned();
    if !LEVEL_COMMANDS.contains(&name.as_str()) {
        return args;
    }
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(&name) else { return args };
    let mut out = Vec::with_capacity(args.len());
    let mut value_expected = false;
    let mut after_dashes = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i <= sub_at || after_dashes {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            after_dashes = true;
        } else if !value_expected && level_shorthand(&arg).is_some() {
            out.push(format!("--level={}", level_shorthand(&arg).unwrap_or_default()).into());
            continue;
        }
        value_expected = !after_dashes && takes_next_value(sub, &arg);
        out.push(arg);
    }
    out
}

/// `-19` -> "19".
fn level_shorthand(arg: &OsStr) -> Option<String> {
    let digits = arg.to_str()?.strip_prefix('-')?;
    (!digits.is_empty() && digits.len() <= 2 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_string())
}

/// Whether `arg` is an option of `cmd` whose value is the next argument.
fn takes_next_value(cmd: &clap::Command, arg: &OsStr) -> bool {
    let Some(arg) = arg.to_str() else { return false };
    let takes = |found: Option<&clap::Arg>| found.is_some_and(|a| a.get_action().takes_values());
    if let Some(long) = arg.strip_prefix("--") {
        return !long.contains('=') && takes(cmd.get_arguments().find(|a| a.get_long() == Some(long)));
    }
    match arg.strip_prefix('-').and_then(|shorts| shorts.chars().last()) {
        // Only the last of clustered short flags can take the next
        // argument as its value (`-fo out`).
        Some(last) => {
            let shorts = &arg[1..];
            let first_valued = shorts.chars().position(|c| takes(cmd.get_arguments().find(|a| a.get_short() == Some(c))));
            first_valued == Some(shorts.chars().count() - 1) && takes(cmd.get_arguments().find(|a| a.get_short() == Some(last)))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        match normalize(args.iter().map(OsString::from).collect()) {
            Invocation::Run(a) => a.into_iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            Invocation::Done => vec!["<done>".into()],
        }
    }

    #[test]
    fn digit_flags_are_levels_after_compress_and_mount_only() {
        assert_eq!(run(&["at1", "compress", "-19", "x.csv"]), ["at1", "compress", "--level=19", "x.csv"]);
        assert_eq!(run(&["at1", "compress", "-f", "-3", "x.csv", "-c"]), ["at1", "compress", "-f", "--level=3", "x.csv", "-c"]);
        assert_eq!(run(&["at1", "mount", "s", "m", "-9"]), ["at1", "mount", "s", "m", "--level=9"]);
        assert_eq!(run(&["at1", "cat", "-5"]), ["at1", "cat", "-5"]);
    }

    #[test]
    fn an_option_value_and_args_after_dashes_are_left_alone() {
        // "-3" as the value of -o is a file name.
        assert_eq!(run(&["at1", "compress", "x.csv", "-o", "-3"]), ["at1", "compress", "x.csv", "-o", "-3"]);
        assert_eq!(run(&["at1", "compress", "x.csv", "--output", "-3"]), ["at1", "compress", "x.csv", "--output", "-3"]);
        assert_eq!(run(&["at1", "compress", "--", "-3"]), ["at1", "compress", "--", "-3"]);
        assert_eq!(run(&["at1", "compress", "-123", "x"]), ["at1", "compress", "-123", "x"]);
    }

    #[test]
    fn the_mount_helper_convention_becomes_at1_mount() {
        assert_eq!(run(&["/sbin/mount.fuse.at1fs", "/s", "/m", "-o", "rw,nodev", "-n", "-t", "fuse.at1fs"]), ["at1", "mount", "/s", "/m", "-o", "rw,nodev"]);
        assert_eq!(run(&["at1fs", "/s", "/m", "-s", "-o", "ro"]), ["at1", "mount", "/s", "/m", "--sloppy", "-o", "ro"]);
        assert_eq!(run(&["at1fs", "/s", "/m", "-f"]), ["<done>"]);
    }
}
