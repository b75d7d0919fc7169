//! A library share: a directory whose files are disk images and ISOs. Paths from outside are
//! relative and stay inside the share (no `..`, no absolute path, no symlink out). A file is
//! written under a hidden temporary name and renamed only once it is complete, converted,
//! checked and fingerprinted, so a failed import leaves nothing and a scan never sees half a
//! file.

use crate::ImageError;
use crate::digest::sha256_file;
use crate::qemu_img::{self, ImageInfo};
use drover_api::library::{LibraryFile, LibraryItemKind};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// ISO 9660's volume descriptor: "CD001" at byte 32769.
const ISO_MAGIC_OFFSET: u64 = 32769;
const ISO_MAGIC: &[u8] = b"CD001";
/// Extensions a raw disk image may have; any other raw file is not taken for a disk.
const RAW_EXTENSIONS: &[&str] = &["raw", "img"];

/// The absolute path of `relative` in the share at `root`, refusing anything that would leave
/// the share or name a hidden (temporary) file.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, ImageError> {
    let outside = || ImageError::OutsideShare {
        path: relative.to_owned(),
    };
    let path = Path::new(relative);
    let mut components = 0;
    for component in path.components() {
        match component {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => components += 1,
            _ => return Err(outside()),
        }
    }
    if components == 0 {
        return Err(outside());
    }
    let joined = root.join(path);
    // A symlink inside the share may point out of it: compare the real paths.
    if let Ok(real) = joined.canonicalize() {
        let real_root = root.canonicalize().map_err(ImageError::io(root))?;
        if !real.starts_with(&real_root) {
            return Err(outside());
        }
    }
    Ok(joined)
}

/// A file being written into a share under a hidden name; removed when dropped unless
/// [`Partial::commit`]ted.
#[derive(Debug)]
pub struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Partial {
    /// A fresh temporary name next to `target`.
    pub fn next_to(target: &Path) -> Partial {
        let name = target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix: u64 = rand::random();
        Partial {
            path: target.with_file_name(format!(".{name}.partial-{suffix:016x}")),
            committed: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh hidden name next to `target` for a working directory (`purpose`: what it holds),
    /// which the caller makes and removes.
    pub fn dir_next_to(target: &Path, purpose: &str) -> PathBuf {
        let mut name = Partial::next_to(target).path.clone().into_os_string();
        name.push(format!(".{purpose}"));
        PathBuf::from(name)
    }

    /// Renames the file to `target`, refusing to replace an existing file.
    pub fn commit(mut self, target: &Path) -> Result<(), ImageError> {
        // A hard link fails if the target exists, unlike rename: no check-then-act race.
        std::fs::hard_link(&self.path, target).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                ImageError::Exists {
                    path: target.to_owned(),
                }
            } else {
                ImageError::Io {
                    path: target.to_owned(),
                    source,
                }
            }
        })?;
        self.committed = true;
        std::fs::remove_file(&self.path).map_err(ImageError::io(&self.path))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the image qemu-img probed is a disk, an ISO, or not an image at all. qemu-img calls
/// any file "raw", so a raw file must look like an ISO or have a disk image's extension.
fn classify(path: &Path, info: &ImageInfo) -> Result<LibraryItemKind, ImageError> {
    if info.format != "raw" {
        return Ok(LibraryItemKind::Disk);
    }
    if has_iso_magic(path)? {
        return Ok(LibraryItemKind::Iso);
    }
    let extension = path
        .extension()
        .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if RAW_EXTENSIONS.contains(&extension.as_str())
        && info.virtual_size > 0
        && info.virtual_size.is_multiple_of(512)
    {
        return Ok(LibraryItemKind::Disk);
    }
    Err(ImageError::NotAnImage {
        path: path.to_owned(),
    })
}

fn has_iso_magic(path: &Path) -> Result<bool, ImageError> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path).map_err(ImageError::io(path))?;
    let mut magic = [0_u8; 5];
    if file
        .seek(std::io::SeekFrom::Start(ISO_MAGIC_OFFSET))
        .is_err()
    {
        return Ok(false);
    }
    Ok(file.read_exact(&mut magic).is_ok() && magic == ISO_MAGIC)
}

/// The file name an imported item gets: its name with the extension of what it holds.
pub fn file_name(name: &str, kind: LibraryItemKind) -> String {
    match kind {
        LibraryItemKind::Disk => format!("{name}.qcow2"),
        LibraryItemKind::Iso => format!("{name}.iso"),
    }
}

/// Imports the image or ISO at `source` into the share at `root` as `name`: disks are checked,
/// converted to qcow2 once and checked again; ISOs are copied. Either way the result is
/// fingerprinted before it takes its final name; on any failure nothing is left in the share.
pub fn import(root: &Path, source: &Path, name: &str) -> Result<LibraryFile, ImageError> {
    let source_info = qemu_img::info(source)?;
    let kind = classify(source, &source_info)?;
    let relative = file_name(name, kind);
    let target = resolve(root, &relative)?;
    if target.exists() {
        return Err(ImageError::Exists { path: target });
    }
    let partial = Partial::next_to(&target);
    match kind {
        LibraryItemKind::Disk => {
            qemu_img::check(source, &source_info.format)?;
            qemu_img::convert_to_qcow2(source, &source_info.format, partial.path())?;
        }
        LibraryItemKind::Iso => {
            std::fs::copy(source, partial.path()).map_err(ImageError::io(partial.path()))?;
        }
    }
    let file = describe_as(partial.path(), relative, kind)?;
    partial.commit(&target)?;
    Ok(file)
}

/// Indexes a file already in the share (dropped there by hand).
pub fn describe(root: &Path, relative: &str) -> Result<LibraryFile, ImageError> {
    let path = resolve(root, relative)?;
    if !path.is_file() {
        return Err(ImageError::Missing { path });
    }
    let info = qemu_img::info(&path)?;
    let kind = classify(&path, &info)?;
    describe_as(&path, relative.to_owned(), kind)
}

/// Probes, checks (a disk) and fingerprints the file at `path`. The SHA-256 reads every byte
/// while `qemu-img` reads only metadata, so they run side by side: the import's last pass
/// costs the hash alone.
fn describe_as(
    path: &Path,
    relative: String,
    kind: LibraryItemKind,
) -> Result<LibraryFile, ImageError> {
    let (sha256, info) = std::thread::scope(|scope| {
        let hashing = scope.spawn(|| sha256_file(path));
        let info = qemu_img::info(path).and_then(|info| {
            if kind == LibraryItemKind::Disk {
                qemu_img::check(path, &info.format)?;
            }
            Ok(info)
        });
        let sha256 = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (sha256, info)
    });
    let info = info?;
    let sha256 = sha256?;
    let metadata = std::fs::metadata(path).map_err(ImageError::io(path))?;
    Ok(LibraryFile {
        path: relative,
        kind,
        format: match kind {
            LibraryItemKind::Disk => info.format,
            LibraryItemKind::Iso => "iso".to_owned(),
        },
        virtual_size: info.virtual_size,
        actual_size: std::os::unix::fs::MetadataExt::blocks(&metadata).saturating_mul(512),
        backing_chain: info.backing_chain,
        sha256,
    })
}

/// The share's files (relative paths, sorted), hidden and temporary files left out.
pub fn scan(root: &Path) -> Result<Vec<String>, ImageError> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        for entry in std::fs::read_dir(&dir).map_err(ImageError::io(&dir))? {
            let entry = entry.map_err(ImageError::io(&dir))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(ImageError::io(&entry.path()))?;
            let child = relative.join(&name);
            if file_type.is_dir() {
                pending.push(child);
            } else if file_type.is_file() {
                found.push(child.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Removes a file from the share; a file already gone is not an error.
pub fn remove(root: &Path, relative: &str) -> Result<(), ImageError> {
    let path = resolve(root, relative)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::os::unix::fs::symlink("/etc", root.join("escape")).expect("symlink");
        assert_eq!(
            resolve(root, "a/b.qcow2").expect("inside"),
            root.join("a/b.qcow2")
        );
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "",
            ".",
            ".hidden",
            "a/.x.partial-1",
            "escape/passwd",
        ] {
            assert!(
                matches!(resolve(root, bad), Err(ImageError::OutsideShare { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn partial_files_vanish_unless_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("x.qcow2");
        let partial = Partial::next_to(&target);
        std::fs::write(partial.path(), b"half").expect("write");
        let kept = partial.path().to_owned();
        drop(partial);
        assert!(!kept.exists());

        let partial = Partial::next_to(&target);
        std::fs::write(partial.path(), b"whole").expect("write");
        partial.commit(&target).expect("commit");
        assert_eq!(std::fs::read(&target).expect("read"), b"whole");
        let again = Partial::next_to(&target);
        std::fs::write(again.path(), b"other").expect("write");
        assert!(matches!(
            again.commit(&target),
            Err(ImageError::Exists { .. })
        ));
        assert_eq!(scan(dir.path()).expect("scan"), ["x.qcow2"]);
    }
}
