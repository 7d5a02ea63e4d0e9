//! `at1`: the command line of at1fs. Parses arguments, runs the command, and
//! maps the outcome to an exit code in one place:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (I/O, bad input, corrupt or non-.at1 file) |
//! | 2 | usage error (from clap) |
//! | 3 | verification failed: the gate rejected an encoding, or `verify` found a bad object |

mod cli;

use std::process::ExitCode;

use clap::Parser;

use at1::gate::GateError;

fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if matches!(cause.downcast_ref::<GateError>(), Some(GateError::Rejected(_))) || cause.downcast_ref::<cli::VerifyFailed>().is_some() {
            return 3;
        }
    }
    1
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,fuser=error")).init();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("at1: {}", msg.join(": "));
            ExitCode::from(exit_code(&e))
        }
    }
}
