//! `/api/v1/library/...`: library servers, shares and items. Reads answer from the database;
//! adding a share, importing, refreshing and removing are jobs (`jobs::library`). Lists come as
//! one page: a library holds hundreds of items, not the tens of thousands a VM list may.

use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted};
use crate::db;
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::library::{
    LibraryImport, LibraryItem, LibraryRefresh, LibraryServer, LibraryShare, LibraryShareAdd,
};
use drover_api::{LibraryItemId, LibraryShareId, Page};

/// A whole list as one page (no `next_cursor`).
pub(super) fn one_page<T>(items: Vec<T>) -> Json<Page<T>> {
    Json(Page {
        items,
        next_cursor: None,
    })
}

#[utoipa::path(get, path = "/api/v1/library/servers",
    responses((status = 200, body = Page<LibraryServer>)))]
pub async fn servers(State(state): State<AppState>) -> Result<Json<Page<LibraryServer>>, ApiError> {
    Ok(one_page(db::library::servers(&state.db).await?))
}

#[utoipa::path(get, path = "/api/v1/library/shares",
    responses((status = 200, body = Page<LibraryShare>)))]
pub async fn shares(State(state): State<AppState>) -> Result<Json<Page<LibraryShare>>, ApiError> {
    Ok(one_page(db::library::shares(&state.db).await?))
}

#[utoipa::path(post, path = "/api/v1/library/shares", request_body = LibraryShareAdd,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn add_share(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<LibraryShareAdd>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::LibraryShareAdd {
        share_id: LibraryShareId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

/// `?share=` filters the items to one share.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ItemFilter {
    pub share: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/library/items", params(ItemFilter),
    responses((status = 200, body = Page<LibraryItem>), (status = 404, body = drover_api::ErrorBody)))]
pub async fn items(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<ItemFilter>,
) -> Result<Json<Page<LibraryItem>>, ApiError> {
    let share_id = match &filter.share {
        Some(share) => Some(jobs::find_share(&state, share).await?.id),
        None => None,
    };
    Ok(one_page(db::library::items(&state.db, share_id).await?))
}

#[utoipa::path(get, path = "/api/v1/library/items/{item}",
    params(("item" = String, Path, description = "id or name")),
    responses((status = 200, body = LibraryItem), (status = 404, body = drover_api::ErrorBody)))]
pub async fn item(
    State(state): State<AppState>,
    Path(item): Path<String>,
) -> Result<Json<LibraryItem>, ApiError> {
    Ok(Json(jobs::find_item(&state, &item).await?))
}

#[utoipa::path(post, path = "/api/v1/library/items", request_body = LibraryImport,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<LibraryImport>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::LibraryImport {
        item_id: LibraryItemId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/library/items/{item}",
    params(("item" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(item): Path<String>,
) -> Result<Response, ApiError> {
    let item = jobs::find_item(&state, &item).await?;
    let spec = JobSpec::LibraryRemove { item_id: item.id };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/library/refresh", request_body = LibraryRefresh,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<LibraryRefresh>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::LibraryRefresh { request };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
