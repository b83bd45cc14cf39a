//! The `vault` command-line tool. `main` parses arguments, runs one
//! command, prints the error chain and maps error kinds to exit codes
//! (restic's: 1 error, 3 incomplete snapshot or restore, 10 no repository,
//! 12 wrong password). A broken pipe on stdout counts as success.

/// `eprintln!` that never panics. With stderr closed (`vault restore 2>&1 |
/// head`) `eprintln!` panics and the exit status becomes 101; the messages
/// are lost either way, but the status must still say what happened.
///
/// Each message is one line: control characters in it (from a name that
/// reached a message unescaped) are escaped ([`util::escape_text`]), so
/// nothing can forge a line or drive the terminal. Names themselves are
/// escaped where they are printed ([`util::escape`]).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "{}", $crate::util::escape_text(&line));
    }};
}
pub(crate) use say;

/// `println!` that returns an error for `?` instead of panicking, except
/// for a closed stdout (`vault forget ... | head -1`): that is no error, so
/// the command still does all its work and keeps its own exit status (1 for
/// a check that found damage, 3 for an incomplete snapshot).
///
/// Lines are made safe as [`say!`] makes them.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        $crate::ignore_broken_pipe(writeln!(std::io::stdout(), "{}", $crate::util::escape_text(&line)))
    }};
}
pub(crate) use out;

/// `r`, with a broken pipe taken for success (see [`out!`]).
pub(crate) fn ignore_broken_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

mod args;
mod commands;
mod context;
mod log;
mod progress;
mod util;

use std::process::ExitCode;

use clap::Parser;

pub use context::Exit;

/// Runs the CLI with the process's arguments.
pub fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if cli.global.verbose {
        log::init();
    }
    let res = commands::run(cli);
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if let Some(exit) = e.downcast_ref::<Exit>() {
                return ExitCode::from(exit.0);
            }
            crate::say!("error: {e}");
            // Errors that embed their cause in their own message aren't repeated.
            let mut shown = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    crate::say!("  caused by: {text}");
                }
                shown = text;
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<vault_store::Error>(), Some(vault_store::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(se) = c.downcast_ref::<vault_store::Error>() {
            return match se {
                vault_store::Error::WrongPassword { .. } => 12,
                vault_store::Error::NotARepository { .. } => 10,
                _ => 1,
            };
        }
    }
    1
}
