//! `/api/v1/library/...`: library servers, shares and items. Reads answer from the database;
//! adding a share, importing, refreshing and removing are jobs (`jobs::library`). Lists are
//! paged like the VM list (`limit`, `cursor`).

use super::hosts::more_than;
use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted, cursor, page_size};
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

/// `?limit=N&cursor=C` of the library, profile and template lists, as for VMs.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// One page of a list read whole (a library holds hundreds of objects, not the tens of
/// thousands a VM list may): the objects after the cursor in (name, id) order.
pub(super) fn page_of<T>(
    mut items: Vec<T>,
    query: &PageQuery,
    key: impl Fn(&T) -> (String, String),
) -> Result<Json<Page<T>>, ApiError> {
    let limit = page_size(query.limit);
    let after = cursor::decode_pair(query.cursor.as_deref())?;
    items.sort_by_key(|item| key(item));
    if let Some(after) = after {
        items.retain(|item| key(item) > after);
    }
    let next_cursor = more_than(&mut items, limit).map(|last| {
        let (name, id) = key(last);
        cursor::encode(&[&name, &id])
    });
    Ok(Json(Page { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/library/servers", params(PageQuery),
    responses((status = 200, body = Page<LibraryServer>)))]
pub async fn servers(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<LibraryServer>>, ApiError> {
    page_of(db::library::servers(&state.db).await?, &query, |server| {
        (server.name.clone(), server.host_id.to_string())
    })
}

#[utoipa::path(get, path = "/api/v1/library/shares", params(PageQuery),
    responses((status = 200, body = Page<LibraryShare>)))]
pub async fn shares(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<LibraryShare>>, ApiError> {
    page_of(db::library::shares(&state.db).await?, &query, |share| {
        (share.name.clone(), share.id.to_string())
    })
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
    pub limit: Option<u32>,
    pub cursor: Option<String>,
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
    let page = PageQuery {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    page_of(
        db::library::items(&state.db, share_id).await?,
        &page,
        |item| (item.name.clone(), item.id.to_string()),
    )
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
