//! The client's errors and the exit code each one ends the process with.
//! Messages never hold the caller's key: none of them is built from it.

use std::process::ExitCode;

/// Exit codes of the client commands, as `--help` and the README document them.
pub mod exit {
    /// The call succeeded; for `watch`, the job or batch succeeded.
    pub const OK: u8 = 0;
    /// An error: the gateway is unreachable, refused the call, or an input is bad.
    /// `health` also exits 1 for "not serving" (container health checks want 0 or 1).
    pub const ERROR: u8 = 1;
    /// `watch`: the job failed, or the batch finished with failed requests.
    pub const FAILED: u8 = 3;
    /// `watch`: the job or batch was cancelled.
    pub const CANCELLED: u8 = 4;
    /// `watch`: the batch expired before it finished.
    pub const EXPIRED: u8 = 5;
    /// `watch` was interrupted (Ctrl-C); the job or batch keeps running upstream.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit-code table, for the client commands' `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 success; 1 error (gateway unreachable, call \
refused, bad input; `health`: not serving); 2 bad command line; 3 the job failed or the batch \
finished with failed requests; 4 cancelled; 5 the batch expired; 130 interrupted (Ctrl-C), the \
job or batch keeps running.";

/// Why a client command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The gateway could not be reached at all.
    #[error("cannot reach the gateway at {target}: {reason}")]
    Unreachable {
        /// The `--target` that was tried.
        target: String,
        /// The transport's reason.
        reason: String,
    },
    /// The gateway answered a call with an error status: its code's name (`NotFound`,
    /// which scripts and people search for) rather than tonic's sentence for it, and
    /// for a status the client made itself (the connection broke) the transport's why.
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    /// A bad input: a flag, a file's content.
    #[error("{0}")]
    Input(String),
    /// Reading or writing a local file or stdout.
    #[error("{0}")]
    Io(String),
    /// Whoever read stdout stopped (`| head`): nothing left to say, and no one to say it to.
    #[error("stdout was closed")]
    Closed,
    /// A watch ended without its final message.
    #[error("the watch ended before the final status")]
    WatchCut,
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(exit::ERROR)
    }

    /// An I/O error on `what` (a path, or "stdout").
    pub fn io(what: &str, error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::Closed;
        }
        Self::Io(format!("{what}: {error}"))
    }
}

/// `Code: message`, with the causes the message does not already say.
fn status_line(status: &tonic::Status) -> String {
    let (code, message) = (status.code(), status.message());
    let Some(source) = std::error::Error::source(status) else {
        return format!("{code:?}: {message}");
    };
    let causes = super::connect::causes(source);
    if causes.starts_with(message) {
        format!("{code:?}: {causes}")
    } else if message.contains(&causes) {
        format!("{code:?}: {message}")
    } else {
        format!("{code:?}: {message} ({causes})")
    }
}
