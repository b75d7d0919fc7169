//! The agent calls of a live migration (`drover_api::migration`).

use super::{AgentClient, AgentError};
use drover_api::VmId;
use drover_api::agent::VmRuntime;
use drover_api::migration::{AgentIncoming, AgentIncomingReady, AgentMigrate, MigrationProgress};

impl AgentClient<'_> {
    /// Destination: defines the VM and starts it waiting for the migration.
    pub async fn receive_migration(
        &self,
        request: &AgentIncoming,
    ) -> Result<AgentIncomingReady, AgentError> {
        self.json(
            self.http
                .post(self.url("/v1/migrations/incoming"))
                .json(request),
        )
        .await
    }

    /// Destination: removes every trace of an incoming VM (idempotent).
    pub async fn abort_incoming(&self, vm_id: VmId) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/migrations/incoming/{vm_id}"))),
        )
        .await
        .map(drop)
    }

    /// Source: starts the copy; answers at once.
    pub async fn send_migration(
        &self,
        vm_id: VmId,
        request: &AgentMigrate,
    ) -> Result<MigrationProgress, AgentError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/vms/{vm_id}/migration")))
                .json(request),
        )
        .await
    }

    /// Source: where the migration stands.
    pub async fn migration_progress(&self, vm_id: VmId) -> Result<MigrationProgress, AgentError> {
        self.json(
            self.http
                .get(self.url(&format!("/v1/vms/{vm_id}/migration"))),
        )
        .await
    }

    /// Source: cancels the migration; the VM goes on running there.
    pub async fn cancel_migration(&self, vm_id: VmId) -> Result<(), AgentError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/vms/{vm_id}/migration"))),
        )
        .await
        .map(drop)
    }

    /// The VMs this host holds, with their states (an incoming VM is not one of them yet).
    pub async fn vms(&self) -> Result<Vec<VmRuntime>, AgentError> {
        self.json(self.http.get(self.url("/v1/vms"))).await
    }
}
