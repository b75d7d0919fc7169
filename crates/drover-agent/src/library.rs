//! The agent's library role: the shares it serves (name -> directory, kept in
//! `library/shares.json`) and the SHA-256 of each file it has fingerprinted, remembered by size
//! and modification time so that serving a file does not hash it again. The image work itself
//! is `drover_image`'s.

use crate::error::AgentError;
use crate::store::{self, Access};
use drover_api::library::LIBRARY_ROLE;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

const SHARES_FILE: &str = "library/shares.json";

/// A file's identity as far as its cached fingerprint goes.
type Stamp = (u64, SystemTime);

#[derive(Debug)]
pub struct Library {
    enabled: bool,
    file: PathBuf,
    shares: Mutex<BTreeMap<String, PathBuf>>,
    fingerprints: Mutex<HashMap<PathBuf, (Stamp, String)>>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

impl Library {
    /// Loads the shares of an agent whose roles are `roles`.
    pub fn open(data_dir: &Path, roles: &[String]) -> anyhow::Result<Library> {
        let file = data_dir.join(SHARES_FILE);
        let shares = match store::read_optional(&file)? {
            Some(text) => serde_json::from_str(&text)?,
            None => BTreeMap::new(),
        };
        Ok(Library {
            enabled: roles.iter().any(|role| role == LIBRARY_ROLE),
            file,
            shares: Mutex::new(shares),
            fingerprints: Mutex::new(HashMap::new()),
        })
    }

    fn check_enabled(&self) -> Result<(), AgentError> {
        if self.enabled {
            Ok(())
        } else {
            Err(AgentError::NotLibraryServer)
        }
    }

    /// Serves `path` as share `name` from now on (made when missing); idempotent.
    pub fn add_share(&self, name: &str, path: &Path) -> Result<(), AgentError> {
        self.check_enabled()?;
        if !path.is_absolute() {
            return Err(AgentError::RequestInvalid(format!(
                "the share directory '{}' must be an absolute path",
                path.display()
            )));
        }
        std::fs::create_dir_all(path).map_err(|source| AgentError::ShareUnusable {
            path: path.to_owned(),
            source,
        })?;
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if shares.get(name).is_some_and(|known| known == path) {
            return Ok(());
        }
        let mut updated = shares.clone();
        updated.insert(name.to_owned(), path.to_owned());
        let text =
            serde_json::to_vec_pretty(&updated).map_err(|e| AgentError::Internal(e.into()))?;
        if let Some(parent) = self.file.parent() {
            store::create_private_dir(parent).map_err(|e| AgentError::Internal(e.into()))?;
        }
        store::write_atomic(&self.file, &text, Access::Public)
            .map_err(|e| AgentError::Internal(e.into()))?;
        *shares = updated;
        Ok(())
    }

    /// The directory of share `name`.
    pub fn root(&self, name: &str) -> Result<PathBuf, AgentError> {
        self.check_enabled()?;
        self.shares
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| AgentError::ShareNotFound(name.to_owned()))
    }

    /// Remembers the fingerprint of a file just described.
    pub fn remember(&self, path: &Path, sha256: &str) {
        if let Some(stamp) = stamp(path) {
            self.fingerprints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(path.to_owned(), (stamp, sha256.to_owned()));
        }
    }

    /// The file's SHA-256, hashed only when the file changed since it was last hashed.
    pub async fn fingerprint(&self, path: &Path) -> Result<String, AgentError> {
        let current = stamp(path);
        if let Some((known, sha256)) = self
            .fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            && Some(*known) == current
        {
            return Ok(sha256.clone());
        }
        let owned = path.to_owned();
        let sha256 = tokio::task::spawn_blocking(move || drover_image::digest::sha256_file(&owned))
            .await
            .map_err(|e| AgentError::Internal(e.into()))??;
        self.remember(path, &sha256);
        Ok(sha256)
    }
}
