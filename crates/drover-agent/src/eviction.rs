//! Cache eviction on hosts: when free space is below `agent.cache_min_free`, base images no VM
//! uses are removed from `images/`, least recently used first (a use sets the file's
//! modification time), until there is enough room again. An image a VM's overlay reads through
//! is never removed. It runs before a new image is fetched: that is when room is needed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A cached image as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    pub path: PathBuf,
    pub size: u64,
    pub last_used: SystemTime,
}

/// Which images to remove, in order, so that `free` reaches `min_free`: unused ones, oldest
/// use first, and no more than needed.
pub fn choose(
    mut images: Vec<CachedImage>,
    in_use: &[PathBuf],
    free: u64,
    min_free: u64,
) -> Vec<PathBuf> {
    images.retain(|image| !in_use.contains(&image.path));
    images.sort_by_key(|image| image.last_used);
    let mut freed = free;
    let mut chosen = Vec::new();
    for image in images {
        if freed >= min_free {
            break;
        }
        freed = freed.saturating_add(image.size);
        chosen.push(image.path);
    }
    chosen
}

/// The verified images in `dir` (hidden partial files are not images yet).
pub fn scan(dir: &Path) -> Vec<CachedImage> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            metadata.is_file().then_some(CachedImage {
                path: entry.path(),
                size: metadata.len(),
                last_used: metadata.modified().ok()?,
            })
        })
        .collect()
}

/// Removes what [`choose`] picks; answers the paths removed.
pub fn evict(dir: &Path, in_use: &[PathBuf], min_free: u64) -> Vec<PathBuf> {
    let free = crate::host::disk_free_bytes(dir);
    if free >= min_free {
        return Vec::new();
    }
    let mut removed = Vec::new();
    for path in choose(scan(dir), in_use, free, min_free) {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(image = %path.display(), "unused base image evicted: free space is low");
                removed.push(path);
            }
            Err(error) => {
                tracing::warn!(image = %path.display(), %error, "cannot evict a cached image")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn image(name: &str, size: u64, age_seconds: u64) -> CachedImage {
        CachedImage {
            path: PathBuf::from(name),
            size,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_seconds),
        }
    }

    #[test]
    fn least_recently_used_unused_images_go_first_and_only_as_many_as_needed() {
        let images = vec![
            image("new", 10, 1),
            image("old", 10, 300),
            image("older-but-used", 10, 900),
            image("middle", 10, 100),
        ];
        let in_use = [PathBuf::from("older-but-used")];
        let cases: [(u64, u64, &[&str]); 4] = [
            (100, 50, &[]),
            (45, 50, &["old"]),
            (35, 50, &["old", "middle"]),
            (0, 1000, &["old", "middle", "new"]),
        ];
        for (free, min_free, expected) in cases {
            let chosen = choose(images.clone(), &in_use, free, min_free);
            let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
            assert_eq!(chosen, expected, "free {free}, min {min_free}");
        }
    }

    #[test]
    fn scan_sees_whole_images_only_and_evict_spares_those_in_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["a.qcow2", "b.qcow2", ".c.qcow2.part-0123"] {
            std::fs::write(dir.path().join(name), b"image").expect("write");
        }
        let mut names: Vec<String> = scan(dir.path())
            .into_iter()
            .map(|image| {
                image
                    .path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["a.qcow2", "b.qcow2"]);
        let in_use = [dir.path().join("b.qcow2")];
        assert_eq!(evict(dir.path(), &in_use, 0), Vec::<PathBuf>::new());
        assert_eq!(
            evict(dir.path(), &in_use, u64::MAX),
            [dir.path().join("a.qcow2")]
        );
        assert!(dir.path().join("b.qcow2").exists());
        assert!(dir.path().join(".c.qcow2.part-0123").exists());
    }
}
