//! V2V: a virtual machine from another hypervisor (an OVA, an OVF, a VMware VMX, or a lone
//! VMDK, VHD or VHDX disk) becomes a stopped Drover VM with matching hardware, in one job: its
//! disks are imported into a library share as items, then the VM is made from them.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/v2v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct V2vImport {
    /// A file on the library server (absolute path) or an `http(s)://` URL it downloads.
    pub source: String,
    /// The VM's name (its disks' items are named after it); the source's file name without
    /// extension when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The share the disks go to; the only share when omitted and there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The VM's host; when absent, the best-rated host of `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Direct kernel boot, for guests whose disk has no boot loader QEMU's firmware can start:
    /// files on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

/// vCPUs of an imported VM whose package does not say.
pub const DEFAULT_CPUS: u32 = 1;
/// Memory of an imported VM whose package does not say, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
