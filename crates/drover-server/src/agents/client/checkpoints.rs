//! The agent's checkpoint endpoints (`/v1/vms/{id}/checkpoints`).

use super::{AgentClient, AgentError};
use drover_api::VmId;
use drover_api::checkpoint::{AgentCheckpoint, AgentCheckpointCreate, AgentCheckpointDone};

impl AgentClient<'_> {
    /// The checkpoints the VM's disk holds.
    pub async fn checkpoints(&self, vm_id: VmId) -> Result<Vec<AgentCheckpoint>, AgentError> {
        self.json(
            self.http
                .get(self.url(&format!("/v1/vms/{vm_id}/checkpoints"))),
        )
        .await
    }

    /// Takes checkpoint `tag`, with memory when the VM runs.
    pub async fn checkpoint_create(
        &self,
        vm_id: VmId,
        tag: &str,
    ) -> Result<AgentCheckpointDone, AgentError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/checkpoints")))
                .json(&AgentCheckpointCreate {
                    tag: tag.to_owned(),
                }),
        )
        .await
    }

    pub async fn checkpoint_restore(
        &self,
        vm_id: VmId,
        tag: &str,
    ) -> Result<AgentCheckpointDone, AgentError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/checkpoints/{tag}/restore"))),
        )
        .await
    }

    /// Deletes checkpoint `tag` (idempotent).
    pub async fn checkpoint_delete(&self, vm_id: VmId, tag: &str) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/vms/{vm_id}/checkpoints/{tag}"))),
        )
        .await
        .map(drop)
    }
}
