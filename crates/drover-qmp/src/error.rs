//! The one error type of the crate, a variant per cause.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected (no such file, refused, nobody answered in time).
    #[error("cannot connect to qmp socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connected socket failed.
    #[error("qmp socket i/o failed")]
    Io {
        #[source]
        source: std::io::Error,
    },
    /// The transcript file could not be opened.
    #[error("cannot open qmp transcript {path}")]
    Transcript {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The peer sent something that is not QMP (bad greeting, a line that is not JSON).
    #[error("qmp protocol error: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error.
    #[error("qmp command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// No reply came within the command's timeout.
    #[error("qmp command {command} got no reply after {after:?}")]
    Timeout { command: String, after: Duration },
    /// The connection is closed (QEMU exited or closed the socket); no reply will come.
    #[error("qmp connection closed")]
    Closed,
}
