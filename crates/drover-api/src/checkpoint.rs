//! Checkpoints of VMs: a point a VM can return to, its disk and (when taken while it ran) its
//! memory. The server keeps them in its database; the disk of the VM on its host holds each
//! one as a qcow2 internal snapshot whose tag is the checkpoint's id.

use crate::agent::VmRuntime;
use crate::id::{CheckpointId, VmId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most checkpoints one VM may have (as Hyper-V): each holds the disk's changed clusters and,
/// when taken while the VM ran, a copy of its memory.
pub const MAX_CHECKPOINTS_PER_VM: usize = 50;

/// A checkpoint of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub id: CheckpointId,
    pub vm_id: VmId,
    pub name: String,
    /// Taken while the VM ran: the guest's memory is in it, and restoring it gives a running VM.
    pub with_memory: bool,
    /// The checkpoint the VM came from (created or restored last) when this one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CheckpointId>,
    /// Whether the VM came from this checkpoint last (created or restored).
    pub current: bool,
    /// What the VM's host says: whether its disk holds the checkpoint. Absent when the host did
    /// not answer (in lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_host: Option<bool>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/vms/{vm}/checkpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckpointCreate {
    /// A name unique among the VM's checkpoints; a dated one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A checkpoint as the agent finds it on the VM's disk (`GET /v1/vms/{id}/checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCheckpoint {
    pub tag: String,
    /// Size of the saved memory; 0 for a checkpoint of a stopped VM.
    pub vm_state_bytes: u64,
}

/// Body of the agent's `POST /v1/vms/{id}/checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCheckpointCreate {
    pub tag: String,
}

/// The agent's answer to a checkpoint create or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCheckpointDone {
    /// The VM's state afterwards.
    pub runtime: VmRuntime,
    /// Whether the guest's memory was saved (create) or loaded (restore).
    pub with_memory: bool,
}
