//! Virtual machine packages from other hypervisors, imported into a share as library items:
//! an OVA (a tar of an OVF descriptor, its disks and maybe a `.mf` manifest), an OVF descriptor
//! next to its disks, a VMware `.vmx` next to its disks, or a lone disk image. Each disk goes
//! through [`share::import`] (converted to qcow2, checked, fingerprinted); the package's
//! hardware comes back with the files. Manifest digests (SHA-1 or SHA-256) are checked before
//! anything is imported. All or nothing: a failure removes the disks already imported and the
//! unpacked OVA.

use crate::ImageError;
use crate::share::{self, Partial};
use crate::{ovf, vmx};
use drover_api::library::{AgentPackage, PackageHardware, package_item_names};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Imports the package (or lone disk) at `source` into the share at `root`; its disks become
/// the files `NAME.qcow2` (one disk) or `NAME-diskN.qcow2`.
pub fn import(root: &Path, source: &Path, name: &str) -> Result<AgentPackage, ImageError> {
    let extension = source
        .extension()
        .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "ova" => {
            let unpacked = Unpacked::extract(root, source, name)?;
            let descriptor = unpacked.descriptor(source)?;
            let text = read_text(&descriptor)?;
            let parsed = ovf::parse(&text).map_err(invalid(source))?;
            if let Some(manifest) = unpacked.manifest() {
                verify_manifest(source, &read_text(&manifest)?, |file| {
                    unpacked.digests.get(file).cloned()
                })?;
            }
            import_ovf(root, source, unpacked.dir(), parsed, name)
        }
        "ovf" => {
            let parsed = ovf::parse(&read_text(source)?).map_err(invalid(source))?;
            let dir = source.parent().unwrap_or(Path::new("/"));
            let manifest = source.with_extension("mf");
            if manifest.is_file() {
                verify_manifest(source, &read_text(&manifest)?, |file| {
                    let path = member(source, dir, file).ok()?;
                    digests_of(&path).ok()
                })?;
            }
            import_ovf(root, source, dir, parsed, name)
        }
        "vmx" => {
            let config = vmx::parse(&read_text(source)?).map_err(invalid(source))?;
            let dir = source.parent().unwrap_or(Path::new("/"));
            let disks = config
                .disks
                .iter()
                .map(|disk| member(source, dir, disk))
                .collect::<Result<Vec<_>, _>>()?;
            let hardware = PackageHardware {
                cpus: config.cpus,
                memory_mib: config.memory_mib,
                nics: config.nics,
                blank_disks: Vec::new(),
            };
            import_disks(root, source, &disks, name, Some(hardware))
        }
        _ => import_disks(root, source, &[source.to_owned()], name, None),
    }
}

fn invalid(path: &Path) -> impl FnOnce(String) -> ImageError + '_ {
    move |detail| ImageError::PackageInvalid {
        path: path.to_owned(),
        detail,
    }
}

fn read_text(path: &Path) -> Result<String, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io(path))?;
    String::from_utf8(bytes).map_err(|_| ImageError::PackageInvalid {
        path: path.to_owned(),
        detail: "the file is not UTF-8 text".to_owned(),
    })
}

/// The file a package names, inside the package's directory: a relative path without `..`.
fn member(package: &Path, dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    if name.is_empty() || !plain {
        return Err(ImageError::PackageInvalid {
            path: package.to_owned(),
            detail: format!("'{name}' is not a file name inside the package"),
        });
    }
    Ok(dir.join(relative))
}

fn import_ovf(
    root: &Path,
    source: &Path,
    dir: &Path,
    descriptor: ovf::Descriptor,
    name: &str,
) -> Result<AgentPackage, ImageError> {
    let mut disks = Vec::new();
    let mut blank_disks = Vec::new();
    for disk in descriptor.disks {
        match disk {
            ovf::DescriptorDisk::File(file) => disks.push(member(source, dir, &file)?),
            ovf::DescriptorDisk::Blank(bytes) => blank_disks.push(bytes),
        }
    }
    let hardware = PackageHardware {
        cpus: descriptor.cpus,
        memory_mib: descriptor.memory_mib,
        nics: descriptor.nics,
        blank_disks,
    };
    import_disks(root, source, &disks, name, Some(hardware))
}

/// Imports `disks` in order, all or none.
fn import_disks(
    root: &Path,
    package: &Path,
    disks: &[PathBuf],
    name: &str,
    hardware: Option<PackageHardware>,
) -> Result<AgentPackage, ImageError> {
    if disks.is_empty() {
        return Err(ImageError::PackageInvalid {
            path: package.to_owned(),
            detail: "the package holds no disk image".to_owned(),
        });
    }
    if let Some(missing) = disks.iter().find(|disk| !disk.is_file()) {
        return Err(ImageError::PackageInvalid {
            path: package.to_owned(),
            detail: format!(
                "it names the disk '{}', which the package does not hold",
                missing.file_name().unwrap_or_default().to_string_lossy()
            ),
        });
    }
    let mut imported = Imported {
        root,
        files: Vec::new(),
    };
    for (disk, item) in disks.iter().zip(package_item_names(name, disks.len())) {
        let file = share::import(root, disk, &item)?;
        imported.files.push(file);
    }
    Ok(AgentPackage {
        files: std::mem::take(&mut imported.files),
        hardware,
    })
}

/// The files a package import has put into the share so far; removed when dropped with any
/// left (the import failed).
struct Imported<'a> {
    root: &'a Path,
    files: Vec<drover_api::library::LibraryFile>,
}

impl Drop for Imported<'_> {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = share::remove(self.root, &file.path);
        }
    }
}

/// A file's digests as manifests write them: (`SHA1` or `SHA256`, lower-case hex).
type Digests = [(&'static str, String); 2];

/// A SHA-1 and a SHA-256 of everything written through it, for an OVA member's manifest check.
struct DigestWriter<W> {
    inner: W,
    sha1: Sha1,
    sha256: Sha256,
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.sha1.update(&buffer[..written]);
        self.sha256.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> DigestWriter<W> {
    fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            sha1: Sha1::new(),
            sha256: Sha256::new(),
        }
    }

    fn finish(self) -> Digests {
        [
            ("SHA1", hex::encode(self.sha1.finalize())),
            ("SHA256", hex::encode(self.sha256.finalize())),
        ]
    }
}

fn digests_of(path: &Path) -> Result<Digests, ImageError> {
    let mut file = std::fs::File::open(path).map_err(ImageError::io(path))?;
    let mut writer = DigestWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut writer).map_err(ImageError::io(path))?;
    Ok(writer.finish())
}

/// Checks every line of a manifest (`SHA256(disk1.vmdk)= HEX`) against the digests `actual`
/// gives for the file; a file the manifest names but the package lacks is an error too.
fn verify_manifest(
    package: &Path,
    manifest: &str,
    actual: impl Fn(&str) -> Option<Digests>,
) -> Result<(), ImageError> {
    for line in manifest
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let parsed = line.split_once('(').and_then(|(algorithm, rest)| {
            let (file, digest) = rest.split_once(")=")?;
            Some((algorithm.trim(), file.trim(), digest.trim()))
        });
        let Some((algorithm, file, expected)) = parsed else {
            return Err(ImageError::PackageInvalid {
                path: package.to_owned(),
                detail: format!("the manifest line '{line}' is not ALGORITHM(FILE)= DIGEST"),
            });
        };
        let digests = actual(file).ok_or_else(|| ImageError::PackageInvalid {
            path: package.to_owned(),
            detail: format!("the manifest names '{file}', which the package does not hold"),
        })?;
        let computed = digests
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(algorithm))
            .map(|(_, digest)| digest)
            .ok_or_else(|| ImageError::PackageInvalid {
                path: package.to_owned(),
                detail: format!("the manifest uses {algorithm}; Drover checks SHA1 and SHA256"),
            })?;
        if !computed.eq_ignore_ascii_case(expected) {
            return Err(ImageError::DigestMismatch {
                file: file.to_owned(),
                algorithm: algorithm.to_owned(),
                expected: expected.to_ascii_lowercase(),
                actual: computed.clone(),
            });
        }
    }
    Ok(())
}

/// An OVA's members, unpacked into a hidden directory of the share (same file system as the
/// imported disks, and never indexed) and removed when dropped. Each member's digests are
/// computed while it is written, so a manifest check reads nothing twice.
struct Unpacked {
    dir: PathBuf,
    members: Vec<String>,
    digests: HashMap<String, Digests>,
}

impl Unpacked {
    fn extract(root: &Path, source: &Path, name: &str) -> Result<Unpacked, ImageError> {
        let dir = Partial::dir_next_to(&share::resolve(root, name)?, "unpack");
        std::fs::create_dir(&dir).map_err(ImageError::io(&dir))?;
        let mut unpacked = Unpacked {
            dir,
            members: Vec::new(),
            digests: HashMap::new(),
        };
        let file = std::fs::File::open(source).map_err(ImageError::io(source))?;
        let unreadable = |error: std::io::Error| ImageError::PackageInvalid {
            path: source.to_owned(),
            detail: format!("not a readable tar archive: {error}"),
        };
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        for entry in archive.entries().map_err(unreadable)? {
            let mut entry = entry.map_err(unreadable)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let path = entry.path().map_err(unreadable)?.into_owned();
            let name = path.to_string_lossy().into_owned();
            if !kind.is_file() {
                return Err(ImageError::PackageInvalid {
                    path: source.to_owned(),
                    detail: format!("the member '{name}' is not a regular file"),
                });
            }
            let target = member(source, &unpacked.dir, &name)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
            }
            let output = std::fs::File::create(&target).map_err(ImageError::io(&target))?;
            let mut writer = DigestWriter::new(output);
            std::io::copy(&mut entry, &mut writer).map_err(unreadable)?;
            unpacked.digests.insert(name.clone(), writer.finish());
            unpacked.members.push(name);
        }
        Ok(unpacked)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn with_extension(&self, extension: &str) -> Option<PathBuf> {
        self.members
            .iter()
            .find(|member| {
                Path::new(member)
                    .extension()
                    .is_some_and(|found| found.eq_ignore_ascii_case(extension))
            })
            .map(|member| self.dir.join(member))
    }

    /// The OVF descriptor: the archive's first `.ovf` member.
    fn descriptor(&self, source: &Path) -> Result<PathBuf, ImageError> {
        self.with_extension("ovf")
            .ok_or_else(|| ImageError::PackageInvalid {
                path: source.to_owned(),
                detail: "the archive holds no .ovf descriptor".to_owned(),
            })
    }

    fn manifest(&self) -> Option<PathBuf> {
        self.with_extension("mf")
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(text: &[u8]) -> Digests {
        let mut writer = DigestWriter::new(std::io::sink());
        writer.write_all(text).expect("write");
        writer.finish()
    }

    #[test]
    fn manifests() {
        let package = Path::new("/p.ova");
        let abc = digests(b"abc");
        assert_eq!(
            abc[1].1,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let lookup = |file: &str| (file == "a.vmdk").then(|| abc.clone());
        let good = format!(
            "SHA1(a.vmdk)= {}\nSHA256(a.vmdk)= {}\n",
            abc[0].1,
            abc[1].1.to_uppercase()
        );
        verify_manifest(package, &good, lookup).expect("matches");
        let wrong = format!("SHA256(a.vmdk)= {}\n", "0".repeat(64));
        assert!(matches!(
            verify_manifest(package, &wrong, lookup),
            Err(ImageError::DigestMismatch { .. })
        ));
        for bad in ["SHA256(b.vmdk)= 00", "MD5(a.vmdk)= 00", "garbage"] {
            assert!(
                matches!(
                    verify_manifest(package, bad, lookup),
                    Err(ImageError::PackageInvalid { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn members_stay_inside_the_package() {
        let package = Path::new("/p.ova");
        assert_eq!(
            member(package, Path::new("/d"), "disks/a.vmdk").expect("inside"),
            Path::new("/d/disks/a.vmdk")
        );
        for bad in ["../a.vmdk", "/etc/passwd", "", "a/../../b"] {
            assert!(member(package, Path::new("/d"), bad).is_err(), "{bad}");
        }
    }
}
