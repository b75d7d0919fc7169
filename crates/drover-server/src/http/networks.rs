//! `/api/v1/networks`: list, show, create (a `network.create` job) and delete (a
//! `network.delete` job, refused while VMs use the network).

use super::hosts::more_than;
use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted, cursor, page_size};
use crate::db;
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::page::PageRequest;
use drover_api::{Network, NetworkCreate, NetworkId, Page};

#[utoipa::path(get, path = "/api/v1/networks", params(PageRequest),
    responses((status = 200, body = Page<Network>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageRequest>,
) -> Result<Json<Page<Network>>, ApiError> {
    let limit = page_size(query.limit);
    let after = match query.cursor.as_deref() {
        Some(text) => cursor::decode(text, 1)?.pop(),
        None => None,
    };
    let mut items = db::networks::list(&state.db, after, limit + 1).await?;
    let next_cursor = more_than(&mut items, limit).map(|last| cursor::encode(&[&last.name]));
    Ok(Json(Page { items, next_cursor }))
}

async fn find(state: &AppState, id_or_name: &str) -> Result<Network, ApiError> {
    db::networks::get(&state.db, id_or_name)
        .await?
        .ok_or_else(|| ApiError::NetworkNotFound(id_or_name.to_owned()))
}

#[utoipa::path(get, path = "/api/v1/networks/{network}",
    params(("network" = String, Path, description = "id or name")),
    responses((status = 200, body = Network), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(network): Path<String>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(find(&state, &network).await?))
}

#[utoipa::path(post, path = "/api/v1/networks", request_body = NetworkCreate,
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<NetworkCreate>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::NetworkCreate {
        network_id: NetworkId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/networks/{network}",
    params(("network" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(network): Path<String>,
) -> Result<Response, ApiError> {
    let network = find(&state, &network).await?;
    let spec = JobSpec::NetworkDelete {
        network_id: network.id,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
