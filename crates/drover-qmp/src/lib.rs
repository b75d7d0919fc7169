//! An async client of the QEMU Machine Protocol (QMP) over a Unix socket. It knows nothing of
//! Drover: it speaks the protocol, routes replies, broadcasts events and keeps a transcript.
//!
//! Layers, bottom up:
//! - [`protocol`]: the wire format (greeting, commands with ids, replies, events).
//! - [`Qmp`]: a cloneable handle over one connection. One reader task routes each reply to the
//!   call that waits for it (by id) and broadcasts events; every pending call fails with
//!   [`QmpError::Closed`] when the connection ends.
//! - typed helpers ([`Qmp::query_status`], [`Qmp::stop`], ...) over the raw [`Qmp::execute`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), drover_qmp::QmpError> {
//! let qmp = drover_qmp::Qmp::connect("/run/vm/qmp.sock").await?;
//! let mut events = qmp.events();
//! qmp.stop().await?;
//! let status = qmp.query_status().await?;
//! assert!(!status.running);
//! let raw = qmp.execute("query-cpus-fast", serde_json::Value::Null).await?;
//! # let _ = (raw, events.recv().await);
//! # Ok(()) }
//! ```

mod client;
mod commands;
mod error;
pub mod protocol;
mod transcript;

pub use client::{ConnectOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, Qmp};
pub use commands::StatusInfo;
pub use error::QmpError;
pub use protocol::{Greeting, QmpEvent};
