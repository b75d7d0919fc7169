//! The crate's one error type: each variant a cause a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run qemu-img")]
    QemuImgMissing(#[source] std::io::Error),
    /// qemu-img could not read the image: truncated, corrupt, or a VMDK extent missing.
    #[error("{path} is not a readable image: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("{path} is neither a disk image nor an ISO")]
    NotAnImage { path: PathBuf },
    #[error("{path} failed its consistency check: {detail}")]
    CheckFailed { path: PathBuf, detail: String },
    #[error("'{path}' is not a path inside the share")]
    OutsideShare { path: String },
    #[error("{path} already exists in the share")]
    Exists { path: PathBuf },
    #[error("{path} does not exist in the share")]
    Missing { path: PathBuf },
    /// A package (OVA, OVF, VMX) that cannot be imported: malformed descriptor, a disk it names
    /// but lacks, a member outside the package.
    #[error("{path} is not a usable package: {detail}")]
    PackageInvalid { path: PathBuf, detail: String },
    /// A package's manifest gives another digest for one of its files.
    #[error("{file} has {algorithm} {actual}, but the package's manifest says {expected}")]
    DigestMismatch {
        file: String,
        algorithm: String,
        expected: String,
        actual: String,
    },
    /// The transfer broke off; what arrived is kept for a resume.
    #[error("the transfer from {url} failed: {detail}")]
    TransferFailed { url: String, detail: String },
    /// Every byte arrived, but they are not the file that was asked for.
    #[error("the file from {url} has SHA-256 {actual}, not the expected {expected}")]
    TransferCorrupt {
        url: String,
        expected: String,
        actual: String,
    },
}

impl ImageError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
        move |source| ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
