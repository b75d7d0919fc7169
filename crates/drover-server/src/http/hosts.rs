//! `/api/v1/hosts`: list, show, add (a `host.add` job), remove (`host.remove`), move to another
//! group (`host.move`) and maintenance mode (`host.maintenance_on` / `host.maintenance_off`).

use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted, cursor, page_size};
use crate::db;
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::hostgroup::{HostMaintenance, HostMove};
use drover_api::page::PageRequest;
use drover_api::{Host, HostAdd, HostId, Page};

#[utoipa::path(get, path = "/api/v1/hosts", params(PageRequest),
    responses((status = 200, body = Page<Host>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageRequest>,
) -> Result<Json<Page<Host>>, ApiError> {
    let limit = page_size(query.limit);
    let after = cursor::decode_pair(query.cursor.as_deref())?;
    let mut items = db::hosts::list(&state.db, after, limit + 1).await?;
    let next_cursor = more_than(&mut items, limit)
        .map(|last| cursor::encode(&[&last.name, &last.id.to_string()]));
    Ok(Json(Page { items, next_cursor }))
}

/// Cuts `items` to `limit`; the last item kept when there were more (the next page's key).
pub(super) fn more_than<T>(items: &mut Vec<T>, limit: u32) -> Option<&T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last()
}

pub(super) async fn find(state: &AppState, id_or_name: &str) -> Result<Host, ApiError> {
    db::hosts::get(&state.db, id_or_name)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(id_or_name.to_owned()))
}

#[utoipa::path(get, path = "/api/v1/hosts/{host}", params(("host" = String, Path, description = "id or name")),
    responses((status = 200, body = Host), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(host): Path<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(find(&state, &host).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts", request_body = HostAdd,
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<HostAdd>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::HostAdd {
        host_id: HostId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/hosts/{host}", params(("host" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(host): Path<String>,
) -> Result<Response, ApiError> {
    let host = find(&state, &host).await?;
    let spec = JobSpec::HostRemove { host_id: host.id };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts/{host}/move", request_body = HostMove,
    params(("host" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn move_to_group(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(host): Path<String>,
    ApiJson(request): ApiJson<HostMove>,
) -> Result<Response, ApiError> {
    let host = find(&state, &host).await?;
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = tree
        .find(&request.group)
        .ok_or_else(|| ApiError::HostGroupNotFound(request.group.clone()))?;
    let spec = JobSpec::HostMove {
        host_id: host.id,
        group_id: group.id,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/hosts/{host}/maintenance", request_body = HostMaintenance,
    params(("host" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn maintenance(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(host): Path<String>,
    ApiJson(request): ApiJson<HostMaintenance>,
) -> Result<Response, ApiError> {
    let host = find(&state, &host).await?;
    let spec = JobSpec::HostMaintenance {
        host_id: host.id,
        enabled: request.enabled,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
