//! `/v1/vms/{id}/files` and `/v1/transfers` on the control port: list a VM's files where they
//! are on this agent, fetch them from another agent (quick migration, store, deploy), follow a
//! running fetch, and drop a stored copy. The work is `crate::vm_files`'.

use super::AgentState;
use crate::error::AgentError;
use crate::vm_files;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use drover_api::VmId;
use drover_api::transfer::{
    AgentVmFile, AgentVmFilesFetch, AgentVmFilesFetched, TransferProgress, VmFilesPlace,
};
use std::sync::Arc;

/// `GET /v1/vms/{id}/files[?share=S]`.
pub async fn list(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    query: Result<Query<VmFilesPlace>, QueryRejection>,
) -> Result<Json<Vec<AgentVmFile>>, AgentError> {
    let Path(vm_id) = path?;
    let Query(place) = query?;
    Ok(Json(vm_files::list(&state, vm_id, &place).await?))
}

/// `POST /v1/vms/{id}/files/fetch`: answers once every file is verified in place.
pub async fn fetch(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<AgentVmFilesFetch>, JsonRejection>,
) -> Result<Json<AgentVmFilesFetched>, AgentError> {
    let Path(vm_id) = path?;
    let Json(request) = body?;
    Ok(Json(vm_files::fetch(&state, vm_id, &request).await?))
}

/// `DELETE /v1/vms/{id}/files?share=S`: the stored copy only (idempotent).
pub async fn remove_stored(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    query: Result<Query<VmFilesPlace>, QueryRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    let Query(place) = query?;
    let share = place.share.ok_or_else(|| {
        AgentError::RequestInvalid(
            "name the share of the stored copy (?share=S); a host's VM goes with DELETE /v1/vms/{id}"
                .to_owned(),
        )
    })?;
    vm_files::remove_stored(&state, vm_id, &share).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/transfers/{id}`.
pub async fn progress(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TransferProgress>, AgentError> {
    let Path(id) = path?;
    state
        .transfers
        .get(&id)
        .map(Json)
        .ok_or(AgentError::TransferNotFound(id))
}
