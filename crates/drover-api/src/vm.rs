//! Virtual machines as the API shows them, and the requests that create and change them.

use crate::id::{HostId, VmId};
use crate::network::{PortForward, VmNic};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The states of DESIGN.md section 3. `Unknown` means the host cannot be reached: a VM is never
/// guessed to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Creating,
    Stopped,
    Starting,
    Running,
    Paused,
    Saved,
    Stopping,
    Migrating,
    Stored,
    Failed,
    Unknown,
}

impl VmState {
    pub const ALL: [VmState; 11] = [
        VmState::Creating,
        VmState::Stopped,
        VmState::Starting,
        VmState::Running,
        VmState::Paused,
        VmState::Saved,
        VmState::Stopping,
        VmState::Migrating,
        VmState::Stored,
        VmState::Failed,
        VmState::Unknown,
    ];

    /// The snake_case name used in JSON, query strings and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Saved => "saved",
            VmState::Stopping => "stopping",
            VmState::Migrating => "migrating",
            VmState::Stored => "stored",
            VmState::Failed => "failed",
            VmState::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<VmState> {
        VmState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    /// Whether a QEMU process exists for a VM in this state.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Paused
                | VmState::Stopping
                | VmState::Migrating
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.as_str();
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => write!(f, "{}{}", first.to_ascii_uppercase(), chars.as_str()),
            None => Ok(()),
        }
    }
}

/// Where a new VM's disk comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VmDisk {
    /// No disk at all (a guest that runs from its initramfs).
    None,
    /// An empty qcow2 disk of this size.
    Blank { size_bytes: u64 },
    /// A qcow2 overlay (linked clone) on an image file that exists on the host.
    Image { path: String },
    /// A linked clone of a library disk: the host's agent fetches the image once from the
    /// library server's transfer endpoint `url` (agent to agent, verified by `sha256`) into its
    /// cache and gives the VM an overlay on it, as for [`VmDisk::Image`].
    Library {
        item: String,
        sha256: String,
        url: String,
    },
    /// A full clone of a library disk: fetched into the host's cache as for
    /// [`VmDisk::Library`], then copied whole (`qemu-img convert`) into an independent qcow2
    /// that does not read through the base.
    LibraryCopy {
        item: String,
        sha256: String,
        url: String,
        /// The copy's size as the guest sees it; the host's disk claim.
        virtual_size: u64,
    },
}

impl VmDisk {
    /// Host disk space the VM may come to use: a blank disk's size. An overlay's growth is
    /// unknown ahead (it is counted as 0) and a VM without a disk uses none.
    pub fn committed_bytes(&self) -> u64 {
        match self {
            VmDisk::Blank { size_bytes } => *size_bytes,
            VmDisk::LibraryCopy { virtual_size, .. } => *virtual_size,
            VmDisk::None | VmDisk::Image { .. } | VmDisk::Library { .. } => 0,
        }
    }
}

/// A cloud-init NoCloud seed: the files of the read-only `cidata` disk the guest reads at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CloudInitSeed {
    pub meta_data: String,
    pub user_data: String,
}

/// Body of `POST /api/v1/vms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmCreate {
    pub name: String,
    /// Host id or name; when absent, the best-rated host of `group` is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Group id or name to place the VM in when no host is given ("All Hosts" when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: VmDisk,
    /// Direct kernel boot: a kernel file on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Start the VM once it is created; if it cannot start, the whole create is undone.
    #[serde(default)]
    pub start: bool,
    /// One NIC per entry, on the network of that name, in order; empty means one NIC on
    /// [`crate::network::USER_NETWORK`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Guest customization (from a template's guest OS profile), attached as a `cidata` disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<CloudInitSeed>,
    /// Further disks, boot order and machine type (from a hardware profile or a package).
    #[serde(default, flatten)]
    pub devices: crate::devices::VmDevices,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vm {
    pub id: VmId,
    pub name: String,
    pub host_id: HostId,
    pub host_name: String,
    pub state: VmState,
    /// Why the VM is in its state, when that is worth saying (a failure, an unreachable host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: VmDisk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub nics: Vec<VmNic>,
    /// Guest ports reachable on the host's 127.0.0.1 through the user-mode NIC.
    #[serde(default)]
    pub port_forwards: Vec<PortForward>,
    /// Data disks, boot order, machine type and CD-ROM drive, when the VM has any.
    #[serde(default, flatten)]
    pub devices: crate::devices::VmDevices,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A change of a VM's power state, `POST /api/v1/vms/{vm}/actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmAction {
    Start,
    /// Hard stop: the QEMU process is ended at once.
    Stop,
    /// ACPI power button; the guest powers itself off.
    Shutdown,
    /// Stops the vCPUs; memory stays.
    Pause,
    Resume,
    /// Hard reset of the running guest.
    Restart,
    /// Saves the guest's memory to a file on its host and ends the process (state Saved); the
    /// next start continues the guest where it was.
    Save,
}

impl VmAction {
    pub const ALL: [VmAction; 7] = [
        VmAction::Start,
        VmAction::Stop,
        VmAction::Shutdown,
        VmAction::Pause,
        VmAction::Resume,
        VmAction::Restart,
        VmAction::Save,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::Shutdown => "shutdown",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
            VmAction::Restart => "restart",
            VmAction::Save => "save",
        }
    }

    /// The state a VM reaches when the action completes.
    pub fn target_state(self) -> VmState {
        match self {
            VmAction::Start | VmAction::Resume | VmAction::Restart => VmState::Running,
            VmAction::Stop | VmAction::Shutdown => VmState::Stopped,
            VmAction::Pause => VmState::Paused,
            VmAction::Save => VmState::Saved,
        }
    }
}

impl fmt::Display for VmAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmActionRequest {
    pub action: VmAction,
}

/// Rules for object names (VMs, hosts): what people type, what shows in tables and file names.
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !valid_chars || !starts_well {
        return Err(format!(
            "'{name}' is not a valid name: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ));
    }
    if name.parse::<uuid::Uuid>().is_ok() {
        return Err(format!(
            "'{name}' looks like an id; choose a name that is not a UUID"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_claims_count_blank_disks_and_full_clones_whole() {
        let library = |virtual_size| VmDisk::LibraryCopy {
            item: "base".into(),
            sha256: "0".repeat(64),
            url: "https://127.0.0.1:8102/v1/shares/main/files/base.qcow2".into(),
            virtual_size,
        };
        assert_eq!(library(5 << 30).committed_bytes(), 5 << 30);
        assert_eq!(VmDisk::Blank { size_bytes: 7 }.committed_bytes(), 7);
        let linked = VmDisk::Library {
            item: "base".into(),
            sha256: "0".repeat(64),
            url: String::new(),
        };
        assert_eq!(
            linked.committed_bytes(),
            0,
            "an overlay's growth is unknown"
        );
    }

    #[test]
    fn names() {
        for good in ["web1", "a", "db-01.prod", "x_y"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in [
            "",
            "-x",
            "has space",
            "a/b",
            "ümlaut",
            too_long.as_str(),
            "6f1c2a4e-0d7b-4c55-9a3e-2b1f0c9d8e7a",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip() {
        for state in VmState::ALL {
            assert_eq!(VmState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(VmState::Running.to_string(), "Running");
    }
}
