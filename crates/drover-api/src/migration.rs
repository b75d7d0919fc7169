//! Moving a VM to another host: the API request (`POST /api/v1/vms/{vm}/migrate`) and the agent
//! protocol of a live migration. A running VM moves live: its destination starts QEMU waiting
//! for the incoming stream and exports the VM's empty disk over NBD; its source mirrors the disk
//! there, then migrates the memory (both over TLS with the agents' certificates), and once done
//! asks the destination agent to resume the guest.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | destination: `POST /v1/migrations/incoming` | [`AgentIncoming`] | [`AgentIncomingReady`] |
//! | destination: `POST /v1/migrations/incoming/{vm}/resume` | | 204 (the guest runs here now) |
//! | destination: `DELETE /v1/migrations/incoming/{vm}` | | 204 (every trace of the incoming VM removed; idempotent) |
//! | source: `POST /v1/vms/{vm}/migration` | [`AgentMigrate`] | [`MigrationProgress`] (started) |
//! | source: `GET /v1/vms/{vm}/migration` | | [`MigrationProgress`] |
//! | source: `DELETE /v1/vms/{vm}/migration` | | 204 (cancels; the VM goes on running here) |

use crate::agent::AgentVmSpec;
use crate::error::ErrorDetail;
use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/vms/{vm}/migrate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmMigrate {
    /// The destination host (id or name); the best-rated other host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Caps the disk mirror's speed (bytes per second), to spare a busy storage network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_bytes_per_second: Option<u64>,
}

/// The destination's part: define the VM (disks made empty, or as overlays on the cached base
/// image) and start it waiting for the migration stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIncoming {
    /// The VM as the destination will run it. Its port forwards are applied after the switch,
    /// once the source has let go of the host ports.
    pub spec: AgentVmSpec,
}

/// Where the destination waits: both ports come from its `agent.migration_ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIncomingReady {
    /// The NBD server exporting the VM's disks (`disk0`, `disk1`, ...); `None` for a VM without disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_port: Option<u16>,
    pub migration_port: u16,
}

/// How the source copies a disk to the destination's NBD export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorSync {
    /// Only the top image: the destination has the same base image under its overlay.
    Top,
    /// The whole disk.
    Full,
}

impl MirrorSync {
    /// How a disk of this kind is mirrored: an overlay on an image the destination has too
    /// (the same path, or the same library base in its cache) only its top, any other disk whole.
    pub fn for_disk(disk: &crate::VmDisk) -> MirrorSync {
        use crate::VmDisk;
        match disk {
            VmDisk::Blank { .. } | VmDisk::LibraryCopy { .. } | VmDisk::None => MirrorSync::Full,
            VmDisk::Image { .. } | VmDisk::Library { .. } => MirrorSync::Top,
        }
    }
}

/// The source's part: where the destination waits, and how to get there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMigrate {
    /// The destination agent's control address (`host:port`), which resumes the guest.
    pub destination: String,
    /// The destination's host name or address, for NBD and the migration stream; also the name
    /// its certificate must hold.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_port: Option<u16>,
    pub migration_port: u16,
    pub sync: MirrorSync,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_bytes_per_second: Option<u64>,
    /// The longest pause of the guest QEMU may plan for at the switch.
    pub downtime_limit_ms: u64,
}

/// Where a live migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationPhase {
    /// Copying the disk; the guest runs on the source.
    Mirroring,
    /// Copying memory; the guest runs on the source until the final pause.
    Migrating,
    /// The guest runs on the destination; the source's QEMU is paused, to be removed.
    Completed,
    /// The guest runs on the source again; `error` says why.
    Failed,
    /// Canceled on request; the guest runs on the source again.
    Canceled,
}

impl MigrationPhase {
    /// Whether the migration has ended one way or the other.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MigrationPhase::Completed | MigrationPhase::Failed | MigrationPhase::Canceled
        )
    }
}

/// A live migration's figures, as QEMU reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    pub phase: MigrationPhase,
    pub disk_bytes_total: u64,
    pub disk_bytes_mirrored: u64,
    pub ram_bytes_total: u64,
    pub ram_bytes_transferred: u64,
    pub ram_bytes_remaining: u64,
    /// Guest pages dirtied per second during the memory copy.
    pub dirty_pages_per_second: u64,
    /// The guest's pause at the switch, as QEMU measured it (when completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// From the start of the memory copy to its end, as QEMU measured it (when completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_copy_ms: Option<u64>,
    /// From QEMU's end of the migration to the guest running on the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl MigrationProgress {
    pub fn new(phase: MigrationPhase) -> MigrationProgress {
        MigrationProgress {
            phase,
            disk_bytes_total: 0,
            disk_bytes_mirrored: 0,
            ram_bytes_total: 0,
            ram_bytes_transferred: 0,
            ram_bytes_remaining: 0,
            dirty_pages_per_second: 0,
            downtime_ms: None,
            memory_copy_ms: None,
            resume_ms: None,
            error: None,
        }
    }

    /// One line for a job step: what has been copied so far.
    pub fn summary(&self) -> String {
        const MIB: u64 = 1024 * 1024;
        let mut text = format!(
            "disk {}/{} MiB mirrored, RAM {} MiB transferred ({} MiB remaining), {} dirty pages/s",
            self.disk_bytes_mirrored / MIB,
            self.disk_bytes_total / MIB,
            self.ram_bytes_transferred / MIB,
            self.ram_bytes_remaining / MIB,
            self.dirty_pages_per_second
        );
        if let Some(downtime) = self.downtime_ms {
            text.push_str(&format!(", downtime {downtime} ms"));
        }
        if let Some(resume) = self.resume_ms {
            text.push_str(&format!(", resumed on the destination {resume} ms after"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_mib_and_downtime() {
        let mut progress = MigrationProgress::new(MigrationPhase::Completed);
        progress.disk_bytes_total = 64 << 20;
        progress.disk_bytes_mirrored = 64 << 20;
        progress.ram_bytes_transferred = 70 << 20;
        progress.downtime_ms = Some(12);
        assert_eq!(
            progress.summary(),
            "disk 64/64 MiB mirrored, RAM 70 MiB transferred (0 MiB remaining), 0 dirty pages/s, downtime 12 ms"
        );
        assert!(progress.phase.is_final());
        assert!(!MigrationPhase::Mirroring.is_final());
    }
}
