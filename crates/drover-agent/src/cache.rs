//! The host's image cache, `images/<sha256>.qcow2`: base images fetched once from a library
//! server's transfer endpoint and shared by every VM made from them. Fetches of one image are
//! serialized by a lock per fingerprint, so concurrent creates from one template transfer it
//! once; the second caller finds the file in place.

use crate::error::AgentError;
use crate::transfers::Tracker;
use drover_api::library::{AgentCachedImage, AgentFetch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `agent.cache_min_free`: below it, unused images are evicted before a fetch.
    min_free: u64,
}

/// A fingerprint names a file in the cache: it must be 64 lower-case hex digits, nothing else.
pub fn check_fingerprint(text: &str) -> Result<(), AgentError> {
    let valid = text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if valid {
        Ok(())
    } else {
        Err(AgentError::RequestInvalid(format!(
            "'{text}' is not a hex SHA-256"
        )))
    }
}

impl ImageCache {
    pub fn new(data_dir: &Path, min_free: u64) -> ImageCache {
        ImageCache {
            dir: data_dir.join("images"),
            locks: Mutex::new(HashMap::new()),
            min_free,
        }
    }

    /// Where the image with this fingerprint is (or will be) cached.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.qcow2"))
    }

    fn lock_for(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sha256.to_owned())
            .or_default()
            .clone()
    }

    /// Makes sure the image is cached, fetching it with `client` when it is not (after making
    /// room by evicting unused images, never one of `in_use`), and marks it used now. A fetch
    /// counts its bytes in `tracker`.
    pub async fn ensure(
        &self,
        client: &reqwest::Client,
        request: &AgentFetch,
        in_use: Vec<PathBuf>,
        tracker: &mut Tracker,
    ) -> Result<AgentCachedImage, AgentError> {
        check_fingerprint(&request.sha256)?;
        let target = self.path(&request.sha256);
        let lock = self.lock_for(&request.sha256);
        let _held = lock.lock().await;
        let started = Instant::now();
        let (fetched, bytes_received) = if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            (false, 0)
        } else {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|error| AgentError::Internal(error.into()))?;
            let (dir, min_free) = (self.dir.clone(), self.min_free);
            tokio::task::spawn_blocking(move || crate::eviction::evict(&dir, &in_use, min_free))
                .await
                .map_err(|error| AgentError::Internal(error.into()))?;
            let mut received = 0;
            drover_image::transfer::fetch(client, &request.url, &request.sha256, &target, |p| {
                received = p.received;
                tracker.set_total(p.total);
                tracker.update(p.done, p.received);
            })
            .await?;
            tracing::info!(sha256 = %request.sha256, bytes = received, "image cached");
            (true, received)
        };
        let size = tokio::fs::metadata(&target)
            .await
            .map_err(|error| AgentError::Internal(error.into()))?
            .len();
        mark_used(&target)?;
        Ok(AgentCachedImage {
            path: target.display().to_string(),
            size,
            fetched,
            bytes_received,
            milliseconds: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Eviction's clock: the modification time of a cached image is its last use.
fn mark_used(image: &Path) -> Result<(), AgentError> {
    std::fs::File::open(image)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()))
        .map_err(|error| AgentError::Internal(error.into()))
}
