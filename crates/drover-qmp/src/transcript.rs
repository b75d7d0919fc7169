//! The optional transcript: every line sent (`>`) and received (`<`), stamped with the wall clock,
//! appended to a file (the VM's `qmp.log`) so a failure can be read afterwards.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::QmpError;

#[derive(Debug)]
pub(crate) struct Transcript {
    file: Mutex<File>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Sent,
    Received,
}

impl Transcript {
    pub(crate) fn open(path: &Path) -> Result<Self, QmpError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| QmpError::Transcript {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends one line. A transcript is a debugging aid, so a failed write is logged, not fatal.
    pub(crate) fn record(&self, direction: Direction, line: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let arrow = match direction {
            Direction::Sent => '>',
            Direction::Received => '<',
        };
        let entry = format!(
            "{}.{:06} {arrow} {}\n",
            now.as_secs(),
            now.subsec_micros(),
            line.trim_end()
        );
        // A poisoned lock only means another writer panicked mid-line; keep writing.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Err(error) = file.write_all(entry.as_bytes()) {
            tracing::debug!(%error, "cannot append to qmp transcript");
        }
    }
}
