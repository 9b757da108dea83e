//! Standard output for the CLI.
//!
//! `println!` panics when stdout fails, and stdout fails whenever its reader
//! has gone away (`hallmark-server image list | head -1`: `head` exits after
//! one line). Every command writes through [`outln!`](crate::cli::output::outln)
//! (and [`out!`](crate::cli::output::out)) instead, which return the error: a reader that went away is
//! [`StdoutClosed`], on which `main` exits quietly with status 0 (the reader
//! had all it wanted); any other failure (a full disk behind a redirect) is
//! an error that names stdout.
//!
//! ```
//! # fn list() -> anyhow::Result<()> {
//! hallmark_server::cli::output::write(format_args!("{} images\n", 3))?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Write as _};

/// Stdout's reader went away: the command stops writing, and it is not a
/// failure.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Writes `args` to stdout.
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    io::stdout().lock().write_fmt(args).map_err(stdout_error)
}

/// The error for a failed write to stdout: [`StdoutClosed`] for a broken
/// pipe, else the I/O error, naming stdout.
pub fn stdout_error(error: io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(error).context("cannot write to stdout")
    }
}

/// Whether a command ended because stdout's reader went away.
pub fn is_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// `println!` that returns an `anyhow::Result` instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// `print!` that returns an `anyhow::Result` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}
pub(crate) use out;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_stdout_closed_and_other_errors_are_not() {
        let closed = stdout_error(io::Error::from(io::ErrorKind::BrokenPipe)).context("image list");
        assert!(is_closed(&closed));
        let full = stdout_error(io::Error::from_raw_os_error(28));
        assert!(!is_closed(&full));
        assert!(
            format!("{full:#}").starts_with("cannot write to stdout: "),
            "{full:#}"
        );
    }
}
