//! A VM's checkpoints (`/api/v1/vms/{vm}/checkpoints`).

use super::{Client, ClientError};
use drover_api::{Checkpoint, CheckpointCreate, Job};
use reqwest::Method;

impl Client {
    /// The VM's checkpoints, oldest first, each with whether its host's disk holds it.
    pub async fn checkpoints(&self, vm: &str) -> Result<Vec<Checkpoint>, ClientError> {
        self.all_pages(&["vms", vm, "checkpoints"], &[]).await
    }

    /// Starts the job `vm.checkpoint_create`; a dated name when `name` is `None`.
    pub async fn create_checkpoint(
        &self,
        vm: &str,
        name: Option<&str>,
    ) -> Result<Job, ClientError> {
        let body = CheckpointCreate {
            name: name.map(str::to_owned),
        };
        self.send(
            self.request(Method::POST, &["vms", vm, "checkpoints"])
                .json(&body),
        )
        .await
    }

    /// Starts the job `vm.checkpoint_restore`.
    pub async fn restore_checkpoint(&self, vm: &str, checkpoint: &str) -> Result<Job, ClientError> {
        self.send(self.request(
            Method::POST,
            &["vms", vm, "checkpoints", checkpoint, "restore"],
        ))
        .await
    }

    /// Starts the job `vm.checkpoint_delete`.
    pub async fn delete_checkpoint(&self, vm: &str, checkpoint: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::DELETE, &["vms", vm, "checkpoints", checkpoint]))
            .await
    }
}
