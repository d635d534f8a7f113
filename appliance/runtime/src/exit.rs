//! The binary's exit codes: one enum, so scripts can tell the failures apart.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success,
    /// A runtime failure (IO, a missing dependency): 1.
    Failure,
    /// Bad usage or configuration: 64 (EX_USAGE). clap uses 2 for its own parse errors.
    Config,
    /// Bad input data (an unreadable or corrupt capture file): 65 (EX_DATAERR). The
    /// readable part of the input was still processed and written.
    Data,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Config => 64,
            Exit::Data => 65,
        })
    }
}
