//! A VM's CD-ROM drive and the library ISO in it. A VM has a drive when it was made with an ISO
//! or with `cdrom` in its boot order, or was given one by an insert while stopped; an eject
//! leaves the drive empty. The VM's host fetches the ISO into its image cache like a template's
//! base (agent to agent, verified by SHA-256) and QEMU reads it through a read-only drive.

use serde::{Deserialize, Serialize};

/// The id of the CD-ROM device in QEMU (`-device ide-cd,id=cd0`), which QMP's
/// `blockdev-change-medium` and `eject` name.
pub const CDROM_DEVICE: &str = "cd0";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmCdrom {
    /// The ISO in the drive; none when the drive is empty. (Boxed: an empty drive, the common
    /// case, keeps every VM request small.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<Box<CdromIso>>,
}

impl VmCdrom {
    /// A drive holding the library ISO `item`, as a request names it (the server fills in the
    /// rest).
    pub fn with_iso(item: String) -> VmCdrom {
        VmCdrom {
            iso: Some(Box::new(CdromIso {
                item,
                sha256: String::new(),
                url: String::new(),
                path: None,
            })),
        }
    }
}

/// A library ISO as a VM's medium. A request names the `item`; the server fills in where the
/// host fetches it from, and the host's agent where it keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CdromIso {
    /// The library item (an ISO) by name.
    pub item: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// The library server's transfer endpoint for the file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// The file in the host's image cache (set by the host's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Body of `POST /api/v1/vms/{vm}/cdrom`: insert the ISO `item`, or eject with none. On a
/// running VM the medium changes at once (the VM needs a drive already: a drive cannot be
/// hot-plugged); on a stopped VM the next start sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmCdromChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
}
