//! The sending side of a transfer: the bytes of an answer (the whole file or one range), read
//! in large blocks on a blocking thread that hashes the whole file as it goes. The answer's last
//! block is held back until the file's SHA-256 matches the fingerprint it is served under, so a
//! file that changed on disk without its size or time changing (a failing disk, an edit that
//! kept the time) is never served whole: the answer breaks off instead.

use crate::digest;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;

/// Large reads keep a transfer at disk speed and the hand-overs to the network few.
const READ_BLOCK: usize = 1 << 20;
/// Blocks read ahead of the network.
const BLOCKS_AHEAD: usize = 4;

/// What is served from an open file.
#[derive(Debug, Clone)]
pub struct Served {
    /// For messages.
    pub path: PathBuf,
    /// The fingerprint the file is served under (its ETag).
    pub sha256: String,
    /// The answer's first byte.
    pub start: u64,
    /// The answer's length.
    pub count: u64,
}

/// The answer's bytes in blocks, verified as described above. `mismatch` runs (on the reading
/// thread) when the file does not match its fingerprint, before the answer breaks off.
pub fn verified_blocks(
    file: std::fs::File,
    served: Served,
    mismatch: impl FnOnce() + Send + 'static,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> {
    let (blocks, receiver) = tokio::sync::mpsc::channel(BLOCKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(error) = read_verified(file, &served, &blocks) {
            if error.kind() == std::io::ErrorKind::InvalidData {
                tracing::error!(path = %served.path.display(), %error, "served file is corrupt");
                mismatch();
            }
            // The client may be gone already; then nobody is left to tell.
            let _ = blocks.blocking_send(Err(error));
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

fn read_verified(
    mut file: std::fs::File,
    served: &Served,
    blocks: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) -> std::io::Result<()> {
    let mut hasher = Sha256::new();
    // The bytes before the range count for the fingerprint but are not sent.
    let before = digest::hash_from(&mut (&mut file).take(served.start), &mut hasher)?;
    if before < served.start {
        return Err(shrunk(served));
    }
    let mut left = served.count;
    let mut held = None;
    while left > 0 {
        let wanted = left.min(READ_BLOCK as u64);
        let mut block = Vec::with_capacity(READ_BLOCK);
        (&mut file).take(wanted).read_to_end(&mut block)?;
        if block.is_empty() {
            return Err(shrunk(served));
        }
        hasher.update(&block);
        left -= block.len() as u64;
        if let Some(previous) = held.replace(block)
            && blocks.blocking_send(Ok(previous)).is_err()
        {
            return Ok(()); // the client went away
        }
    }
    // So do the bytes after it.
    digest::hash_from(&mut file, &mut hasher)?;
    let actual = hex::encode(hasher.finalize());
    if actual != served.sha256 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} hashes to {actual}, not to the fingerprint {} it is served under",
                served.path.display(),
                served.sha256
            ),
        ));
    }
    if let Some(last) = held {
        let _ = blocks.blocking_send(Ok(last));
    }
    Ok(())
}

fn shrunk(served: &Served) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!(
            "{} became shorter while it was served",
            served.path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn serve(
        path: &std::path::Path,
        sha256: &str,
        start: u64,
        count: u64,
    ) -> (Vec<std::io::Result<Vec<u8>>>, bool) {
        let flagged = Arc::new(AtomicBool::new(false));
        let flag = flagged.clone();
        let served = Served {
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            start,
            count,
        };
        let file = std::fs::File::open(path).expect("open");
        let blocks = verified_blocks(file, served, move || flag.store(true, Ordering::SeqCst))
            .collect()
            .await;
        (blocks, flagged.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_matching_file_is_served_whole_or_in_part_and_a_changed_one_breaks_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("image");
        let content: Vec<u8> = (0..(3 * READ_BLOCK + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).expect("write");
        let sha256 = digest::sha256_file(&path).expect("hash");
        let length = content.len() as u64;

        let (blocks, flagged) = serve(&path, &sha256, 0, length).await;
        let bytes: Vec<u8> = blocks.into_iter().flat_map(|b| b.expect("block")).collect();
        assert_eq!((bytes == content, flagged), (true, false));

        let (blocks, _) = serve(&path, &sha256, 10, 20).await;
        let bytes: Vec<u8> = blocks.into_iter().flat_map(|b| b.expect("block")).collect();
        assert_eq!(bytes, &content[10..30]);

        let mut changed = content.clone();
        changed[2 * READ_BLOCK] ^= 1;
        std::fs::write(&path, &changed).expect("write");
        let (blocks, flagged) = serve(&path, &sha256, 5, length - 5).await;
        let sent: usize = blocks.iter().flatten().map(Vec::len).sum();
        let last = blocks.last().expect("an item");
        assert!(
            matches!(last, Err(error) if error.kind() == std::io::ErrorKind::InvalidData),
            "{last:?}"
        );
        assert!(flagged);
        assert!(sent < changed.len() - 5, "the last block is held back");
    }
}
