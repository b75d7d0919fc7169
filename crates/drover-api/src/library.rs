//! The library as the API shows it: library servers (agents with the `library` role), their
//! shares (directories) and the items in them (disk images and ISOs), plus the agent-protocol
//! bodies the server sends a library server. Transfers of the files themselves happen on the
//! agents' transfer port, never through the server.

use crate::id::{HostId, LibraryItemId, LibraryShareId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The role an agent must have to hold library shares.
pub const LIBRARY_ROLE: &str = "library";

/// The share `drover up` makes in its data directory.
pub const DEFAULT_SHARE: &str = "default";

/// A host whose agent has the library role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryServer {
    pub host_id: HostId,
    pub name: String,
    /// Where its transfer endpoint listens (`HOST:PORT`, mutual TLS).
    pub transfer_address: String,
    pub share_count: u64,
}

/// A directory on a library server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryShare {
    pub id: LibraryShareId,
    pub name: String,
    /// The library server's host name.
    pub server: String,
    pub host_id: HostId,
    /// The directory on the library server.
    pub path: String,
    pub item_count: u64,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/library/shares`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryShareAdd {
    pub name: String,
    /// The library server: a host's id or name.
    pub server: String,
    /// An absolute directory on the library server; made when missing.
    pub path: String,
}

/// What a library item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LibraryItemKind {
    Disk,
    Iso,
}

impl LibraryItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LibraryItemKind::Disk => "disk",
            LibraryItemKind::Iso => "iso",
        }
    }

    pub fn parse(text: &str) -> Option<LibraryItemKind> {
        [LibraryItemKind::Disk, LibraryItemKind::Iso]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A file in a share, as the library server indexes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryFile {
    /// Relative to the share's directory.
    pub path: String,
    pub kind: LibraryItemKind,
    /// `qcow2` for imported disks; as found for files dropped into a share; `iso` for ISOs.
    pub format: String,
    pub virtual_size: u64,
    /// Bytes the file takes on disk.
    pub actual_size: u64,
    /// The files this image reads through, nearest first (empty for a standalone image).
    pub backing_chain: Vec<String>,
    /// Hex SHA-256 of the file's bytes: its fingerprint and the transfer's strong ETag.
    pub sha256: String,
}

/// A disk image or ISO in the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryItem {
    pub id: LibraryItemId,
    pub name: String,
    pub share: String,
    pub share_id: LibraryShareId,
    #[serde(flatten)]
    pub file: LibraryFile,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/library/items`: import a file or URL into a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryImport {
    /// A file on the library server (absolute path) or an `http(s)://` URL it downloads.
    pub source: String,
    /// The share (id or name); the only share when omitted and there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The item's name; the source's file name without extension when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /api/v1/library/refresh`: index files dropped into shares by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LibraryRefresh {
    /// One share (id or name); every share when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

/// Agent protocol, `PUT /v1/library/shares/{name}`: serve this directory as share `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentShare {
    pub path: String,
}

/// Agent protocol, `POST /v1/library/shares/{name}/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentImport {
    pub source: String,
    /// The file name to give the item in the share, without extension.
    pub name: String,
}

/// Agent protocol, `POST /v1/images/fetch`: put the file at `url` (another agent's transfer
/// endpoint) into this host's image cache, unless it is there already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFetch {
    pub url: String,
    /// The file's expected hex SHA-256: its name in the cache and its check.
    pub sha256: String,
}

/// The answer to [`AgentFetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCachedImage {
    /// Where the verified file is on the host.
    pub path: String,
    pub size: u64,
    /// Whether this call transferred it (false: it was cached, or another call fetched it).
    pub fetched: bool,
    /// Bytes that crossed the network in this call (less than `size` after a resume).
    pub bytes_received: u64,
    pub milliseconds: u64,
}

/// Extensions of the virtual machine packages a library imports as several disks plus hardware:
/// OVA (a tar of an OVF descriptor, its disks and a manifest), OVF, and VMware's VMX.
pub const PACKAGE_EXTENSIONS: [&str; 3] = ["ova", "ovf", "vmx"];

/// Whether `source` (a path or URL) names a package rather than one disk image or ISO.
pub fn is_package(source: &str) -> bool {
    let last = source.rsplit('/').next().unwrap_or(source);
    let last = last.split(['?', '#']).next().unwrap_or(last);
    last.rsplit_once('.').is_some_and(|(_, extension)| {
        PACKAGE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
    })
}

/// What a package says of the machine it holds; what it leaves out is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PackageHardware {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Network adapters.
    pub nics: u32,
    /// Disks the package describes without an image (OVF disks with no file), in bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blank_disks: Vec<u64>,
}

/// Agent protocol, `POST /v1/library/shares/{name}/packages` (body [`AgentImport`]): a
/// package's (or a lone disk's) images imported into the share, boot disk first, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPackage {
    pub files: Vec<LibraryFile>,
    /// `None` for a lone disk image, which says nothing of its machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<PackageHardware>,
}

/// The item names of a package's disks: the package's name for a lone disk, `NAME-diskN`
/// (from 1) when there are several.
pub fn package_item_names(name: &str, disks: usize) -> Vec<String> {
    if disks == 1 {
        vec![name.to_owned()]
    } else {
        (1..=disks)
            .map(|index| format!("{name}-disk{index}"))
            .collect()
    }
}

/// The file name at the end of a URL's path (query and fragment left out), `download` when
/// it has none. A download keeps it so that its extension still says what the file is.
pub fn file_name_from_url(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or_default();
    let plain = !last.is_empty() && !last.starts_with('.') && last != "..";
    if plain {
        last.to_owned()
    } else {
        "download".to_owned()
    }
}

/// The first name a source suggests for its item: its last path segment without extension.
pub fn name_from_source(source: &str) -> String {
    let last = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(source);
    let last = last.split(['?', '#']).next().unwrap_or(last);
    match last.split_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
        _ => last.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_sources() {
        for (source, name) in [
            ("/srv/images/debian-12.qcow2", "debian-12"),
            ("http://127.0.0.1:8000/x/disk.vmdk?sig=1", "disk"),
            ("plain", "plain"),
            ("/a/b.tar.gz", "b"),
        ] {
            assert_eq!(name_from_source(source), name, "{source}");
        }
    }

    #[test]
    fn packages_by_extension() {
        for package in [
            "/srv/web.ova",
            "http://127.0.0.1/x/web.OVF?sig=1",
            "/vm/web.vmx",
        ] {
            assert!(is_package(package), "{package}");
        }
        for single in ["/srv/web.vmdk", "/srv/ova", "/srv.ova/disk.qcow2"] {
            assert!(!is_package(single), "{single}");
        }
        assert_eq!(package_item_names("web", 1), ["web"]);
        assert_eq!(file_name_from_url("http://h/x/web.ova?sig=1"), "web.ova");
        for nameless in ["http://h/", "http://h/x/..", "http://h/.hidden"] {
            assert_eq!(file_name_from_url(nameless), "download", "{nameless}");
        }
        assert_eq!(package_item_names("web", 2), ["web-disk1", "web-disk2"]);
    }
}
