//! The actor's save, saved-state and checkpoint work. A checkpoint goes through the live process
//! when there is one (memory included) and through the disk alone when there is none; a saved VM
//! (no process, its memory in a file) only lets go of checkpoints, since changing its disk under
//! the saved memory would corrupt the guest. A checkpoint with memory also keeps the VM's NICs
//! as they were (`checkpoints/<tag>.json`): QEMU cannot load memory into other devices, so a
//! restore after a NIC change is refused before anything is touched.

use super::{Command, VmActor, VmHandle};
use crate::error::AgentError;
use crate::store::{self, StoreError};
use drover_api::VmState;
use drover_api::agent::AgentNic;
use drover_api::checkpoint::AgentCheckpointDone;
use drover_api::vm::VmDisk;
use drover_hv::{CheckpointOp, StartFrom, VmDriver};
use std::path::Path;

impl VmHandle {
    /// Creates, restores or deletes the checkpoint `tag`; answers once it is done.
    pub async fn checkpoint(
        &self,
        op: CheckpointOp,
        tag: String,
    ) -> Result<AgentCheckpointDone, AgentError> {
        self.request(|reply| Command::Checkpoint { op, tag, reply })
            .await?
    }
}

/// The size of the checkpoint's saved memory, when the disk holds it. A free function, so that no borrow of the actor (whose process is not `Sync`) lives across
/// the wait.
async fn saved_memory(
    driver: &dyn VmDriver,
    vm_dir: &Path,
    tag: &str,
) -> Result<Option<u64>, AgentError> {
    Ok(driver
        .checkpoints(vm_dir)
        .await?
        .into_iter()
        .find(|checkpoint| checkpoint.tag == tag)
        .map(|checkpoint| checkpoint.vm_state_bytes))
}

/// Where a checkpoint with memory keeps the NICs the VM had.
fn devices_file(vm_dir: &Path, tag: &str) -> std::path::PathBuf {
    vm_dir.join("checkpoints").join(format!("{tag}.json"))
}

fn forget_devices(vm_dir: &Path, tag: &str) -> Result<(), AgentError> {
    store::remove_optional(&devices_file(vm_dir, tag))
        .map_err(|error| AgentError::Internal(error.into()))
}

fn operation_name(op: CheckpointOp) -> &'static str {
    match op {
        CheckpointOp::Create => "take a checkpoint of",
        CheckpointOp::Restore => "restore a checkpoint of",
        CheckpointOp::Delete => "delete a checkpoint of",
    }
}

impl VmActor {
    /// Saves the guest's memory to the VM's directory; the process ends, the VM is Saved.
    pub(super) async fn save(&mut self) -> Result<(), AgentError> {
        if let Err(error) = self.process()?.save().await {
            return Err(self.driver_error(error));
        }
        self.lose_process();
        self.set_state(VmState::Saved, None);
        Ok(())
    }

    /// Throws the saved memory away (Hyper-V's "delete saved state"): the next start boots.
    pub(super) async fn discard_saved_state(&mut self) -> Result<(), AgentError> {
        self.driver.discard_saved_state(&self.vm_dir).await?;
        self.set_state(VmState::Stopped, None);
        Ok(())
    }

    pub(super) async fn checkpoint(
        &mut self,
        op: CheckpointOp,
        tag: &str,
    ) -> Result<AgentCheckpointDone, AgentError> {
        if self.spec.disk == VmDisk::None {
            return Err(AgentError::VmHasNoDisk(self.vm_id()));
        }
        let state = self.state();
        // Deleting what is not there is done already.
        if op == CheckpointOp::Delete
            && saved_memory(self.driver.as_ref(), &self.vm_dir, tag)
                .await?
                .is_none()
        {
            return Ok(AgentCheckpointDone {
                runtime: self.runtime.borrow().clone(),
                with_memory: false,
            });
        }
        let with_memory = match (op, state) {
            (CheckpointOp::Create, VmState::Running | VmState::Paused) => {
                self.online(op, tag).await?;
                let devices = devices_file(&self.vm_dir, tag);
                let written = std::fs::create_dir_all(devices.parent().unwrap_or(&self.vm_dir))
                    .map_err(|source| StoreError::Io {
                        path: devices.clone(),
                        source,
                    })
                    .and_then(|()| {
                        let json = serde_json::to_vec(&self.spec.nics)
                            .expect("NICs are plain data and always serialize");
                        store::write_atomic(&devices, &json, store::Access::Public)
                    });
                if let Err(error) = written {
                    // Without the record a later restore cannot be checked: take it back.
                    let _ = self.online(CheckpointOp::Delete, tag).await;
                    return Err(AgentError::Internal(error.into()));
                }
                true
            }
            (CheckpointOp::Create, VmState::Stopped | VmState::Failed) => {
                self.driver
                    .checkpoint_offline(&self.vm_dir, op, tag)
                    .await?;
                false
            }
            (
                CheckpointOp::Restore,
                VmState::Running | VmState::Paused | VmState::Stopped | VmState::Failed,
            ) => self.restore(tag).await?,
            (CheckpointOp::Delete, VmState::Running | VmState::Paused) => {
                self.online(op, tag).await?;
                forget_devices(&self.vm_dir, tag)?;
                false
            }
            (CheckpointOp::Delete, VmState::Stopped | VmState::Failed | VmState::Saved) => {
                self.driver
                    .checkpoint_offline(&self.vm_dir, op, tag)
                    .await?;
                forget_devices(&self.vm_dir, tag)?;
                false
            }
            _ => {
                return Err(AgentError::CheckpointStateConflict {
                    vm_id: self.vm_id(),
                    operation: operation_name(op),
                    state,
                });
            }
        };
        Ok(AgentCheckpointDone {
            runtime: self.runtime.borrow().clone(),
            with_memory,
        })
    }

    /// Refuses to load memory into other NICs than those it was saved with.
    fn check_devices(&self, tag: &str) -> Result<(), AgentError> {
        let recorded = store::read_optional(&devices_file(&self.vm_dir, tag))
            .map_err(|error| AgentError::Internal(error.into()))?;
        let Some(text) = recorded else {
            return Ok(());
        };
        let then: Vec<AgentNic> =
            serde_json::from_str(&text).map_err(|error| AgentError::Internal(error.into()))?;
        if then != self.spec.nics {
            return Err(AgentError::CheckpointDevicesChanged {
                vm_id: self.vm_id(),
                tag: tag.to_owned(),
            });
        }
        Ok(())
    }

    /// Runs `op` through the live process. A failed load may leave the vCPUs stopped; the state
    /// then says so.
    async fn online(&mut self, op: CheckpointOp, tag: &str) -> Result<(), AgentError> {
        let Err(error) = self.process()?.checkpoint(op, tag).await else {
            return Ok(());
        };
        if let Ok(drover_hv::RunStatus::Paused) = self.process()?.status().await {
            self.set_state(VmState::Paused, None);
        }
        Err(self.driver_error(error))
    }

    /// Returns the VM to checkpoint `tag`: with memory, a running guest as it was then (a VM
    /// without a process is started from it); without, a stopped VM with that disk. Whether it
    /// had memory.
    async fn restore(&mut self, tag: &str) -> Result<bool, AgentError> {
        let Some(vm_state_bytes) = saved_memory(self.driver.as_ref(), &self.vm_dir, tag).await?
        else {
            return Err(AgentError::CheckpointNotFound {
                vm_id: self.vm_id(),
                tag: tag.to_owned(),
            });
        };
        let with_memory = vm_state_bytes > 0;
        if with_memory {
            self.check_devices(tag)?;
        }
        match (with_memory, self.process.is_some()) {
            (true, true) => {
                self.online(CheckpointOp::Restore, tag).await?;
                let running = match self.process()?.status().await {
                    Ok(status) => status,
                    Err(error) => return Err(self.driver_error(error)),
                };
                let state = match running {
                    drover_hv::RunStatus::Running => VmState::Running,
                    drover_hv::RunStatus::Paused => VmState::Paused,
                };
                self.set_state(state, None);
            }
            (true, false) => {
                self.start(Some(StartFrom::Checkpoint(tag.to_owned())))
                    .await?
            }
            (false, has_process) => {
                if has_process {
                    self.kill().await?;
                }
                self.driver
                    .checkpoint_offline(&self.vm_dir, CheckpointOp::Restore, tag)
                    .await?;
                self.set_state(VmState::Stopped, None);
            }
        }
        Ok(with_memory)
    }
}
