//! The sending side of a transfer: the bytes of an answer (the whole file or one range), read
//! in large blocks on a blocking thread straight into the buffers the body sends, a few blocks
//! ahead of the network. The sender does not hash what it sends: the receiver checks every byte
//! against the fingerprint before it uses the file (`crate::transfer`), and a second pass here
//! would cost a full read and hash of the file for every answer, ranges included. A file that
//! became shorter while it was served breaks the answer off.

use futures_util::Stream;
use std::io::{Read, Seek, SeekFrom};
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
    /// The answer's first byte.
    pub start: u64,
    /// The answer's length.
    pub count: u64,
}

/// The answer's bytes in blocks; an error ends the stream (and so breaks the answer off).
pub fn read_ahead(
    file: std::fs::File,
    served: Served,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> {
    let (blocks, receiver) = tokio::sync::mpsc::channel(BLOCKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        if let Err(error) = read_blocks(file, &served, &blocks) {
            tracing::warn!(path = %served.path.display(), %error, "serving a file broke off");
            // The client may be gone already; then nobody is left to tell.
            let _ = blocks.blocking_send(Err(error));
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

fn read_blocks(
    mut file: std::fs::File,
    served: &Served,
    blocks: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(served.start))?;
    let mut left = served.count;
    while left > 0 {
        let wanted = left.min(READ_BLOCK as u64);
        let mut block = Vec::with_capacity(READ_BLOCK);
        (&mut file).take(wanted).read_to_end(&mut block)?;
        if block.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} became shorter while it was served",
                    served.path.display()
                ),
            ));
        }
        left -= block.len() as u64;
        if blocks.blocking_send(Ok(block)).is_err() {
            return Ok(()); // the client went away
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn serve(
        path: &std::path::Path,
        start: u64,
        count: u64,
    ) -> Vec<std::io::Result<Vec<u8>>> {
        let served = Served {
            path: path.to_owned(),
            start,
            count,
        };
        let file = std::fs::File::open(path).expect("open");
        read_ahead(file, served).collect().await
    }

    #[tokio::test]
    async fn a_file_is_served_whole_or_in_part_and_one_that_shrank_breaks_off() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("image");
        let content: Vec<u8> = (0..(3 * READ_BLOCK + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &content).expect("write");
        let length = content.len() as u64;

        let whole = serve(&path, 0, length).await;
        assert_eq!(whole.len(), 4, "1 MiB blocks");
        let bytes: Vec<u8> = whole.into_iter().flat_map(|b| b.expect("block")).collect();
        assert_eq!(bytes, content);

        let start = READ_BLOCK as u64 - 10;
        let part = serve(&path, start, READ_BLOCK as u64 + 20).await;
        let bytes: Vec<u8> = part.into_iter().flat_map(|b| b.expect("block")).collect();
        assert_eq!(
            bytes,
            &content[start as usize..start as usize + READ_BLOCK + 20]
        );

        // Served as its old length, the file now ends after two blocks.
        std::fs::write(&path, &content[..2 * READ_BLOCK]).expect("write");
        let shrunk = serve(&path, 5, length - 5).await;
        let sent: usize = shrunk.iter().flatten().map(Vec::len).sum();
        assert_eq!(sent, 2 * READ_BLOCK - 5);
        let last = shrunk.last().expect("an item");
        assert!(
            matches!(last, Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof),
            "{last:?}"
        );
    }
}
