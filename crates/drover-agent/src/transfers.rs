//! Fetches in progress on this agent, by the id their caller gave them (the server's job id), so
//! that the caller can show bytes and rate while the fetch call is still waiting for its answer.
//! An entry lives as long as its [`Tracker`].

use drover_api::transfer::TransferProgress;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Transfers {
    running: Arc<Mutex<HashMap<String, TransferProgress>>>,
}

impl Transfers {
    /// Starts following a transfer of `bytes_total` bytes; `None` ids are counted but not listed.
    pub fn track(&self, id: Option<&str>, bytes_total: u64) -> Tracker {
        if let Some(id) = id {
            self.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id.to_owned(),
                    TransferProgress {
                        bytes_total,
                        ..TransferProgress::default()
                    },
                );
        }
        Tracker {
            running: self.running.clone(),
            id: id.map(str::to_owned),
            started: Instant::now(),
            progress: TransferProgress {
                bytes_total,
                ..TransferProgress::default()
            },
        }
    }

    pub fn get(&self, id: &str) -> Option<TransferProgress> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }
}

/// One transfer's counters; dropping it ends the transfer's entry.
#[derive(Debug)]
pub struct Tracker {
    running: Arc<Mutex<HashMap<String, TransferProgress>>>,
    id: Option<String>,
    started: Instant,
    progress: TransferProgress,
}

impl Tracker {
    /// Sets the size once it is known (a single file's, from the sender's answer).
    pub fn set_total(&mut self, bytes_total: u64) {
        self.progress.bytes_total = bytes_total;
    }

    /// Records the bytes in place and those received in this attempt.
    pub fn update(&mut self, bytes_done: u64, bytes_received: u64) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.progress.bytes_done = bytes_done;
        self.progress.bytes_received = bytes_received;
        self.progress.bytes_per_second = if seconds > 0.0 {
            // Whole bytes per second are precise enough for a progress line.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rate = (bytes_received as f64 / seconds) as u64;
            rate
        } else {
            0
        };
        if let Some(id) = &self.id {
            self.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), self.progress);
        }
    }

    pub fn progress(&self) -> TransferProgress {
        self.progress
    }

    pub fn milliseconds(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            self.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracked_transfer_is_listed_until_dropped() {
        let transfers = Transfers::default();
        let mut tracker = transfers.track(Some("job-1"), 100);
        let untracked = transfers.track(None, 5);
        tracker.update(40, 30);
        let seen = transfers.get("job-1").expect("listed");
        assert_eq!(
            (seen.bytes_done, seen.bytes_total, seen.bytes_received),
            (40, 100, 30)
        );
        drop(untracked);
        drop(tracker);
        assert_eq!(transfers.get("job-1"), None);
    }
}
