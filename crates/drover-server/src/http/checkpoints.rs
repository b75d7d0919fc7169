//! `/api/v1/vms/{vm}/checkpoints`: list a VM's checkpoints (with what its host's disk holds),
//! create, restore and delete them; each change is a job on the VM.

use super::vms::find;
use super::{ApiError, ApiJson, CurrentUser, accepted};
use crate::db;
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use chrono::Utc;
use drover_api::{Checkpoint, CheckpointCreate, CheckpointId, Page, VmId};
use std::time::Duration;

/// How long a list waits for the VM's host to say which checkpoints its disk holds.
const HOST_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/api/v1/vms/{vm}/checkpoints",
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 200, body = Page<Checkpoint>), (status = 404, body = drover_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(vm): Path<String>,
) -> Result<Json<Page<Checkpoint>>, ApiError> {
    let vm = find(&state, &vm).await?;
    let mut items = db::checkpoints::list(&state.db, vm.id).await?;
    if let Some(tags) = host_tags(&state, &vm).await {
        for checkpoint in &mut items {
            checkpoint.on_host = Some(tags.contains(&checkpoint.id.to_string()));
        }
    }
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// The tags on the VM's disk, when its host answers in time.
async fn host_tags(state: &AppState, vm: &drover_api::Vm) -> Option<Vec<String>> {
    let host = db::hosts::get_by_id(&state.db, vm.host_id).await.ok()??;
    let agent = state.agents.at(&host.address);
    let on_disk = tokio::time::timeout(HOST_TIMEOUT, agent.checkpoints(vm.id))
        .await
        .ok()?
        .ok()?;
    Some(
        on_disk
            .into_iter()
            .map(|checkpoint| checkpoint.tag)
            .collect(),
    )
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/checkpoints", request_body = CheckpointCreate,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<CheckpointCreate>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let name = request.name.unwrap_or_else(|| {
        Utc::now()
            .format("checkpoint-%Y%m%d-%H%M%S%.3f")
            .to_string()
    });
    let spec = JobSpec::CheckpointCreate {
        vm_id: vm.id,
        checkpoint_id: CheckpointId::new(),
        name,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/checkpoints/{checkpoint}/restore",
    params(("vm" = String, Path, description = "id or name"),
        ("checkpoint" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((vm, checkpoint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    submit_on(&state, &user, &vm, &checkpoint, |vm_id, checkpoint_id| {
        JobSpec::CheckpointRestore {
            vm_id,
            checkpoint_id,
        }
    })
    .await
}

/// Submits the job `spec` makes for the VM's checkpoint, both named by id or name.
async fn submit_on(
    state: &AppState,
    user: &CurrentUser,
    vm: &str,
    checkpoint: &str,
    spec: impl FnOnce(VmId, CheckpointId) -> JobSpec,
) -> Result<Response, ApiError> {
    let vm = find(state, vm).await?;
    let checkpoint = jobs::find_checkpoint(state, &vm, checkpoint).await?;
    let spec = spec(vm.id, checkpoint.id);
    Ok(accepted(jobs::submit(state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/vms/{vm}/checkpoints/{checkpoint}",
    params(("vm" = String, Path, description = "id or name"),
        ("checkpoint" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((vm, checkpoint)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    submit_on(&state, &user, &vm, &checkpoint, |vm_id, checkpoint_id| {
        JobSpec::CheckpointDelete {
            vm_id,
            checkpoint_id,
        }
    })
    .await
}
