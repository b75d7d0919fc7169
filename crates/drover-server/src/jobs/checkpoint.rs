//! Checkpoint jobs: create, restore and delete a VM's checkpoints. Each is a job on the VM, so it
//! runs in line with the VM's power actions. The agent changes the disk (and the memory when the
//! VM runs); the database follows only once the agent has done so, and a create whose row cannot
//! be written takes the disk's checkpoint back.

use super::vm::{find_vm, host_of, record, target};
use super::{JobRun, Plan};
use crate::db;
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::checkpoint::MAX_CHECKPOINTS_PER_VM;
use drover_api::{Checkpoint, CheckpointId, Event, Vm, VmDisk, VmId, VmState};

/// The states a checkpoint can be taken or restored in: with a process (memory included) or
/// without. Not Saved: the saved memory belongs to the disk as it is.
fn checkpoint_state(state: VmState) -> bool {
    matches!(
        state,
        VmState::Running | VmState::Paused | VmState::Stopped | VmState::Failed
    )
}

async fn vm_with_disk(state: &AppState, vm_id: VmId) -> Result<Vm, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    if vm.disk == VmDisk::None {
        return Err(ApiError::VmHasNoDisk(vm.name));
    }
    if vm.state == VmState::Unknown {
        return Err(ApiError::HostNotResponding(vm.host_name));
    }
    Ok(vm)
}

/// Refuses a name in use and a VM at its limit; checked at submit and again when the job runs,
/// since jobs queued together all passed the first check.
async fn check_room(state: &AppState, vm: &Vm, name: &str) -> Result<(), ApiError> {
    if db::checkpoints::get(&state.db, vm.id, name)
        .await?
        .is_some()
    {
        return Err(ApiError::CheckpointExists {
            vm: vm.name.clone(),
            name: name.to_owned(),
        });
    }
    if db::checkpoints::count(&state.db, vm.id).await? >= MAX_CHECKPOINTS_PER_VM {
        return Err(ApiError::CheckpointLimitReached {
            vm: vm.name.clone(),
            limit: MAX_CHECKPOINTS_PER_VM,
        });
    }
    Ok(())
}

/// The VM's checkpoint named by id or name.
pub(crate) async fn find(
    state: &AppState,
    vm: &Vm,
    id_or_name: &str,
) -> Result<Checkpoint, ApiError> {
    db::checkpoints::get(&state.db, vm.id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::CheckpointNotFound {
            vm: vm.name.clone(),
            checkpoint: id_or_name.to_owned(),
        })
}

pub(super) async fn prepare_create(
    state: &AppState,
    vm_id: VmId,
    name: &str,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(name).map_err(ApiError::InvalidName)?;
    let vm = vm_with_disk(state, vm_id).await?;
    if !checkpoint_state(vm.state) {
        return Err(ApiError::vm_state_conflict(&vm, "take a checkpoint of"));
    }
    check_room(state, &vm, name).await?;
    Ok(Plan {
        description: format!("Create checkpoint {name} of VM {}", vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec!["Take the checkpoint on the host (memory too when the VM runs)"],
    })
}

pub(super) async fn run_create(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    checkpoint_id: CheckpointId,
    name: String,
) -> Result<(), ApiError> {
    let vm = vm_with_disk(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let agent = state.agents.at(&host.address);
    let tag = checkpoint_id.to_string();
    let with_memory = run
        .step(async {
            check_room(state, &vm, &name).await?;
            // A restarted job finds the checkpoint its first run took before the server stopped.
            let taken = agent
                .checkpoints(vm_id)
                .await?
                .into_iter()
                .find(|checkpoint| checkpoint.tag == tag);
            let with_memory = match taken {
                Some(checkpoint) => checkpoint.vm_state_bytes > 0,
                None => agent.checkpoint_create(vm_id, &tag).await?.with_memory,
            };
            let recorded =
                db::checkpoints::insert(&state.db, checkpoint_id, vm_id, &name, with_memory)
                    .await
                    .map_err(|error| match error {
                        db::DbError::Duplicate { .. } => ApiError::CheckpointExists {
                            vm: vm.name.clone(),
                            name: name.clone(),
                        },
                        other => other.into(),
                    });
            if let Err(error) = recorded {
                if let Err(undo) = agent.checkpoint_delete(vm_id, &tag).await {
                    tracing::warn!(error = ?anyhow::Error::from(undo), %vm_id, "cannot take back the checkpoint on the host");
                }
                return Err(error);
            }
            Ok(with_memory)
        })
        .await?;
    run.note(if with_memory {
        "with the guest's memory"
    } else {
        "disk only (the VM was not running)"
    })
    .await;
    Ok(())
}

pub(super) async fn prepare_restore(
    state: &AppState,
    vm_id: VmId,
    checkpoint_id: CheckpointId,
) -> Result<Plan, ApiError> {
    let vm = vm_with_disk(state, vm_id).await?;
    let checkpoint = find(state, &vm, &checkpoint_id.to_string()).await?;
    if !checkpoint_state(vm.state) {
        return Err(ApiError::vm_state_conflict(&vm, "restore a checkpoint of"));
    }
    Ok(Plan {
        description: format!("Restore VM {} to checkpoint {}", vm.name, checkpoint.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![if checkpoint.with_memory {
            "Return the VM's disk and memory to the checkpoint"
        } else {
            "Stop the VM and return its disk to the checkpoint"
        }],
    })
}

pub(super) async fn run_restore(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    checkpoint_id: CheckpointId,
) -> Result<(), ApiError> {
    let host = host_of(state, &vm_with_disk(state, vm_id).await?).await?;
    let agent = state.agents.at(&host.address);
    run.step(async {
        let done = agent
            .checkpoint_restore(vm_id, &checkpoint_id.to_string())
            .await?;
        db::checkpoints::make_current(&state.db, vm_id, checkpoint_id).await?;
        record(
            state,
            vm_id,
            None,
            done.runtime.state,
            done.runtime.reason.as_deref(),
        )
        .await
    })
    .await
}

pub(super) async fn prepare_delete(
    state: &AppState,
    vm_id: VmId,
    checkpoint_id: CheckpointId,
) -> Result<Plan, ApiError> {
    let vm = vm_with_disk(state, vm_id).await?;
    let checkpoint = find(state, &vm, &checkpoint_id.to_string()).await?;
    if !checkpoint_state(vm.state) && vm.state != VmState::Saved {
        return Err(ApiError::vm_state_conflict(&vm, "delete a checkpoint of"));
    }
    Ok(Plan {
        description: format!("Delete checkpoint {} of VM {}", checkpoint.name, vm.name),
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec![
            "Delete the checkpoint on the host",
            "Remove the checkpoint from Drover",
        ],
    })
}

pub(super) async fn run_delete(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    checkpoint_id: CheckpointId,
) -> Result<(), ApiError> {
    let host = host_of(state, &vm_with_disk(state, vm_id).await?).await?;
    let agent = state.agents.at(&host.address);
    run.step(async {
        Ok(agent
            .checkpoint_delete(vm_id, &checkpoint_id.to_string())
            .await?)
    })
    .await?;
    run.step(async {
        db::checkpoints::delete(&state.db, vm_id, checkpoint_id).await?;
        state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
        Ok(())
    })
    .await
}
