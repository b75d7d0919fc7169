//! `/v1/networks/{id}`: realize (PUT, idempotent) and remove (DELETE, idempotent) a network on
//! this host. The work is in `crate::network`.

use super::AgentState;
use crate::error::AgentError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::NetworkId;
use drover_api::agent::{AgentNetwork, AgentNetworkStatus};
use std::sync::Arc;

pub async fn realize(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<NetworkId>, PathRejection>,
    body: Result<Json<AgentNetwork>, JsonRejection>,
) -> Result<Json<AgentNetworkStatus>, AgentError> {
    let Path(id) = path?;
    let Json(spec) = body?;
    if spec.id != id {
        return Err(AgentError::RequestInvalid(format!(
            "the network's id {} is not the id {id} in the URL",
            spec.id
        )));
    }
    let started = std::time::Instant::now();
    let status = state.networks.realize(spec.clone()).await?;
    tracing::info!(bridge = %spec.bridge, state = ?status.state, elapsed = ?started.elapsed(), "network realized");
    Ok(Json(status))
}

pub async fn remove(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<NetworkId>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(id) = path?;
    state.networks.remove(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
