//! `/v1/migrations/incoming` (the destination's part) and `/v1/vms/{id}/migration` (the
//! source's) of a live migration; the work is in `crate::migration`.

use super::AgentState;
use crate::error::AgentError;
use crate::migration;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::VmId;
use drover_api::migration::{AgentIncoming, AgentIncomingReady, AgentMigrate, MigrationProgress};
use std::sync::Arc;

pub async fn receive(
    State(state): State<Arc<AgentState>>,
    body: Result<Json<AgentIncoming>, JsonRejection>,
) -> Result<Json<AgentIncomingReady>, AgentError> {
    let Json(request) = body?;
    migration::receive(&state, request).await.map(Json)
}

pub async fn resume(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    migration::resume(&state, vm_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn abort(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    migration::abort(&state, vm_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn send(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<AgentMigrate>, JsonRejection>,
) -> Result<(StatusCode, Json<MigrationProgress>), AgentError> {
    let Path(vm_id) = path?;
    let Json(request) = body?;
    let progress = migration::send(&state, vm_id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

pub async fn progress(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<Json<MigrationProgress>, AgentError> {
    let Path(vm_id) = path?;
    state.migrations.progress(vm_id).map(Json)
}

pub async fn cancel(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    state.migrations.cancel(vm_id)?;
    Ok(StatusCode::NO_CONTENT)
}
