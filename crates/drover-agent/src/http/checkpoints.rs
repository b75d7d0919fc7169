//! `/v1/vms/{id}/checkpoints`: list the checkpoints on a VM's disk; create, restore and delete
//! them through the VM's actor, which knows whether a process runs.

use super::AgentState;
use crate::error::AgentError;
use crate::store;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::VmId;
use drover_api::checkpoint::{AgentCheckpoint, AgentCheckpointCreate, AgentCheckpointDone};
use drover_hv::CheckpointOp;
use std::sync::Arc;

pub async fn list(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<Json<Vec<AgentCheckpoint>>, AgentError> {
    let Path(vm_id) = path?;
    state.registry.get(vm_id)?;
    let on_disk = state
        .driver
        .checkpoints(&store::vm_dir(&state.data_dir, vm_id))
        .await?;
    Ok(Json(
        on_disk
            .into_iter()
            .map(|checkpoint| AgentCheckpoint {
                tag: checkpoint.tag,
                vm_state_bytes: checkpoint.vm_state_bytes,
            })
            .collect(),
    ))
}

pub async fn create(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<AgentCheckpointCreate>, JsonRejection>,
) -> Result<Json<AgentCheckpointDone>, AgentError> {
    let Path(vm_id) = path?;
    let Json(request) = body?;
    check_tag(&request.tag)?;
    let handle = state.registry.get(vm_id)?;
    handle
        .checkpoint(CheckpointOp::Create, request.tag)
        .await
        .map(Json)
}

pub async fn restore(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(VmId, String)>, PathRejection>,
) -> Result<Json<AgentCheckpointDone>, AgentError> {
    let Path((vm_id, tag)) = path?;
    let handle = state.registry.get(vm_id)?;
    handle
        .checkpoint(CheckpointOp::Restore, tag)
        .await
        .map(Json)
}

/// Idempotent: a checkpoint the disk does not hold is deleted already.
pub async fn delete(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(VmId, String)>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path((vm_id, tag)) = path?;
    let handle = state.registry.get(vm_id)?;
    handle.checkpoint(CheckpointOp::Delete, tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tag becomes an argument of `qemu-img` and a QMP job id: plain characters only.
fn check_tag(tag: &str) -> Result<(), AgentError> {
    let plain = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if tag.is_empty() || tag.len() > 64 || !plain || tag.starts_with('-') {
        return Err(AgentError::RequestInvalid(format!(
            "'{tag}' is not a checkpoint tag: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for good in ["6f1c2a4e-0d7b-4c55-9a3e-2b1f0c9d8e7a", "c1", "a.b_c"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "-c", "a b", "a,b", "a/b", long.as_str()] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
