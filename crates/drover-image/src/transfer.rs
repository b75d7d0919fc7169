//! Resumable, verified downloads from a transfer endpoint (`range`'s other side). The bytes go
//! to a hidden name derived from the expected SHA-256, so a transfer cut short (either end
//! killed) resumes from what arrived: the retry asks for the rest with `Range` and `If-Range`
//! naming the expected version, and the endpoint answers with the whole file instead if its file
//! changed. The file takes its final name only once its SHA-256 matches.

use crate::ImageError;
use crate::range::etag;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, IF_RANGE, RANGE};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file in place, those resumed from included.
    pub done: u64,
    pub total: u64,
    /// Bytes that came over the network in this attempt.
    pub received: u64,
}

/// Where the bytes of a transfer of `target` wait until they are verified.
pub fn partial_path(target: &Path, sha256: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short: String = sha256.chars().take(16).collect();
    target.with_file_name(format!(".{name}.part-{short}"))
}

/// Downloads `url` to `target`, resuming an earlier attempt, and verifies it against `sha256`.
/// `progress` is called as bytes arrive.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    sha256: &str,
    target: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<(), ImageError> {
    let failed = |detail: String| ImageError::TransferFailed {
        url: url.to_owned(),
        detail,
    };
    let partial = partial_path(target, sha256);
    // Hash what an earlier attempt left, so the file is read once in all.
    let (mut have, mut hasher) = hash_existing(&partial).await?;
    let mut request = client.get(url);
    if have > 0 {
        request = request
            .header(RANGE, format!("bytes={have}-"))
            .header(IF_RANGE, etag(sha256));
    }
    let response = request
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    let total = match status {
        StatusCode::PARTIAL_CONTENT => content_range_total(&response)
            .ok_or_else(|| failed("a partial answer without a usable Content-Range".to_owned()))?,
        StatusCode::OK => {
            // The whole file: the endpoint's version is not the one the partial bytes came from.
            hasher = Sha256::new();
            have = 0;
            header_number(&response, CONTENT_LENGTH).unwrap_or_default()
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            // More bytes than the file has: they cannot be of this version.
            remove_partial(&partial).await?;
            return Err(failed(
                "the partial file was longer than the source; retry".to_owned(),
            ));
        }
        other => {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("the endpoint answered {other}: {body}")));
        }
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(have > 0)
        .truncate(have == 0)
        .open(&partial)
        .map_err(ImageError::io(&partial))?;
    // The network side only receives; hashing and writing run on a blocking thread, in
    // parallel with it. The small chunks TLS hands over go there in batches: one wake-up of
    // that thread and one write per batch, not per record.
    let (batches, pending) = tokio::sync::mpsc::channel(PIPELINE_BATCHES);
    let writer_path = partial.clone();
    let writer =
        tokio::task::spawn_blocking(move || write_and_hash(file, hasher, pending, &writer_path));
    let mut received = 0;
    progress(Progress {
        done: have,
        total,
        received,
    });
    let mut body = response.bytes_stream();
    let mut broken = None;
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    loop {
        let ended = match body.next().await {
            Some(Ok(chunk)) => {
                batch_bytes += chunk.len();
                batch.push(chunk);
                false
            }
            Some(Err(error)) => {
                broken = Some(failed(format!("the connection broke: {error}")));
                true
            }
            None => true,
        };
        if (ended || batch_bytes >= BATCH_BYTES) && !batch.is_empty() {
            if batches.send(std::mem::take(&mut batch)).await.is_err() {
                break; // the writer failed: its error says why
            }
            let length = u64::try_from(batch_bytes).unwrap_or(u64::MAX);
            batch_bytes = 0;
            have += length;
            received += length;
            progress(Progress {
                done: have,
                total,
                received,
            });
        }
        if ended {
            break;
        }
    }
    drop(batches);
    // What arrived is kept (and made durable) even when the connection broke: a retry resumes.
    let hasher = writer
        .await
        .map_err(|error| failed(format!("the writer stopped: {error}")))??;
    if let Some(error) = broken {
        return Err(error);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        remove_partial(&partial).await?;
        return Err(ImageError::TransferCorrupt {
            url: url.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    tokio::fs::rename(&partial, target)
        .await
        .map_err(ImageError::io(target))
}

/// The bytes of a batch handed to the writer.
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight between the network and the writer: enough to keep both busy.
const PIPELINE_BATCHES: usize = 8;
/// After this many bytes written, the disk is asked to write them back while more arrive, so
/// that the `fsync` at the end finds little left to do.
const WRITEBACK_STEP: usize = 32 << 20;

/// Hashes and writes every batch that arrives, then makes the file durable.
fn write_and_hash<C: AsRef<[u8]>>(
    mut file: std::fs::File,
    mut hasher: Sha256,
    mut pending: tokio::sync::mpsc::Receiver<Vec<C>>,
    path: &Path,
) -> Result<Sha256, ImageError> {
    let writeback = Writeback::start(file.try_clone().map_err(ImageError::io(path))?);
    let mut unflushed = 0;
    while let Some(batch) = pending.blocking_recv() {
        write_batch(&mut file, &batch).map_err(ImageError::io(path))?;
        for chunk in &batch {
            hasher.update(chunk.as_ref());
            unflushed += chunk.as_ref().len();
        }
        if unflushed >= WRITEBACK_STEP {
            writeback.nudge();
            unflushed = 0;
        }
    }
    drop(writeback);
    file.sync_all().map_err(ImageError::io(path))?;
    Ok(hasher)
}

/// Writes all of `batch` with as few `writev` calls as it takes.
fn write_batch<C: AsRef<[u8]>>(file: &mut std::fs::File, batch: &[C]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = batch
        .iter()
        .map(|chunk| IoSlice::new(chunk.as_ref()))
        .collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut rest, written),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A thread that writes a file's dirty pages back (`fdatasync`) whenever it is nudged, beside
/// the thread that writes the file. Stops when dropped.
struct Writeback {
    nudges: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    fn start(file: std::fs::File) -> Writeback {
        let (nudges, waiting) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("transfer-writeback".to_owned())
            .spawn(move || {
                while waiting.recv().is_ok() {
                    // A failure here shows again in the writer's own final sync, which counts.
                    let _ = file.sync_data();
                }
            })
            .ok();
        Writeback {
            nudges: Some(nudges),
            thread,
        }
    }

    /// Asks for a writeback unless one is already asked for.
    fn nudge(&self) {
        if let Some(nudges) = &self.nudges {
            let _ = nudges.try_send(());
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.nudges = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The length and running SHA-256 of what an earlier attempt left at `partial` (nothing yet:
/// 0 and a fresh hash), read on a blocking thread.
async fn hash_existing(partial: &Path) -> Result<(u64, Sha256), ImageError> {
    let path = partial.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, hasher)),
            Err(source) => return Err(ImageError::Io { path, source }),
        };
        let length =
            crate::digest::hash_from(&mut file, &mut hasher).map_err(ImageError::io(&path))?;
        Ok((length, hasher))
    })
    .await
    .map_err(|error| ImageError::io(partial)(std::io::Error::other(error)))?
}

async fn remove_partial(partial: &Path) -> Result<(), ImageError> {
    match tokio::fs::remove_file(partial).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Io {
            path: partial.to_owned(),
            source,
        }),
    }
}

fn header_number(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// The file's length from `Content-Range: bytes START-END/TOTAL`.
fn content_range_total(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    value.rsplit_once('/')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_are_hidden_and_tied_to_the_version() {
        let path = partial_path(Path::new("/cache/base.qcow2"), "0123456789abcdef0123");
        assert_eq!(path, Path::new("/cache/.base.qcow2.part-0123456789abcdef"));
    }
}
