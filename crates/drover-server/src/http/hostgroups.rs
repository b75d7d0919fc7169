//! `/api/v1/hostgroups`: the host group tree. Creating, changing, moving and deleting a group
//! touch no host, so they are plain validated updates answered at once (201/200/204), not jobs
//! (ARCHITECTURE.md, "Departures"); moving a host between groups is a job (`hosts.rs`).

use super::{ApiError, ApiJson};
use crate::db;
use crate::db::hostgroups::{GroupRecord, GroupTree};
use crate::placement;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::hostgroup::GroupSetting;
use drover_api::{Event, HostGroup, HostGroupCreate, HostGroupId, HostGroupUpdate, Page};

fn find<'a>(tree: &'a GroupTree, id_or_name: &str) -> Result<&'a GroupRecord, ApiError> {
    tree.find(id_or_name)
        .ok_or_else(|| ApiError::HostGroupNotFound(id_or_name.to_owned()))
}

async fn show(state: &AppState, id: HostGroupId) -> Result<HostGroup, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = tree
        .get(id)
        .ok_or_else(|| ApiError::HostGroupNotFound(id.to_string()))?;
    Ok(tree.to_api(group))
}

#[utoipa::path(get, path = "/api/v1/hostgroups",
    responses((status = 200, body = Page<HostGroup>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Page<HostGroup>>, ApiError> {
    // Groups are few (tens, not thousands): one page, in tree order.
    let tree = db::hostgroups::tree(&state.db).await?;
    Ok(Json(Page {
        items: tree.to_api_all(),
        next_cursor: None,
    }))
}

#[utoipa::path(get, path = "/api/v1/hostgroups/{group}", params(("group" = String, Path, description = "id or name")),
    responses((status = 200, body = HostGroup), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<HostGroup>, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    Ok(Json(tree.to_api(find(&tree, &group)?)))
}

#[utoipa::path(post, path = "/api/v1/hostgroups", request_body = HostGroupCreate,
    responses((status = 201, body = HostGroup), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<HostGroupCreate>,
) -> Result<(StatusCode, Json<HostGroup>), ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    request
        .settings
        .validate()
        .map_err(ApiError::InvalidGroupSettings)?;
    let tree = db::hostgroups::tree(&state.db).await?;
    let parent = match &request.parent {
        Some(parent) => find(&tree, parent)?.id,
        None => db::hostgroups::root_id(),
    };
    let id = HostGroupId::new();
    let inserted = db::hostgroups::insert(&state.db, id, &request.name, parent, &request.settings)
        .await
        .map_err(|error| match error {
            db::DbError::Duplicate { .. } => ApiError::HostGroupExists(request.name.clone()),
            other => other.into(),
        })?;
    if !inserted {
        return Err(ApiError::HostGroupNotFound(
            request.parent.clone().unwrap_or_default(),
        ));
    }
    let group = show(&state, id).await?;
    state.publish(Event::HostGroupChanged(group.clone()));
    Ok((StatusCode::CREATED, Json(group)))
}

#[utoipa::path(patch, path = "/api/v1/hostgroups/{group}", request_body = HostGroupUpdate,
    params(("group" = String, Path, description = "id or name")),
    responses((status = 200, body = HostGroup), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(group): Path<String>,
    ApiJson(request): ApiJson<HostGroupUpdate>,
) -> Result<Json<HostGroup>, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = find(&tree, &group)?;
    let is_root = group.parent_id.is_none();
    let mut settings = group.settings.overlaid(&request.settings);
    for setting in &request.inherit {
        if request.settings.get(*setting).is_some() {
            return Err(ApiError::InvalidGroupSettings(format!(
                "{setting} is both set and returned to inheritance; choose one"
            )));
        }
        settings.clear(*setting);
    }
    settings
        .validate()
        .map_err(ApiError::InvalidGroupSettings)?;
    if is_root
        && let Some(unset) = GroupSetting::ALL
            .into_iter()
            .find(|setting| settings.get(*setting).is_none())
    {
        return Err(ApiError::RootGroupFixed(format!(
            "the root group has no parent to inherit {unset} from"
        )));
    }
    // Checked in full before the first write: a bad request changes nothing.
    let parent = match &request.parent {
        None => None,
        Some(_) if is_root => {
            return Err(ApiError::RootGroupFixed(
                "the root group cannot be moved".to_owned(),
            ));
        }
        Some(parent) => {
            let parent = find(&tree, parent)?;
            if tree.contains(group.id, parent.id) {
                return Err(ApiError::HostGroupCycle {
                    group: group.name.clone(),
                    parent: parent.name.clone(),
                });
            }
            // The move answers at once and touches no host, so it cannot take networks off
            // hosts: `host move` (a job) does that.
            let left =
                placement::network::left_by_group_move(&state, &tree, group.id, parent.id).await?;
            if !left.is_empty() {
                return Err(ApiError::GroupMoveLeavesNetworkScope {
                    group: group.name.clone(),
                    parent: parent.name.clone(),
                    carried: left.join(", "),
                });
            }
            Some(parent)
        }
    };
    if let Some(parent) = parent
        && !db::hostgroups::set_parent(&state.db, group.id, parent.id).await?
    {
        // The tree changed between the check and the move: say why from its new shape.
        let tree = db::hostgroups::tree(&state.db).await?;
        return Err(match tree.get(parent.id) {
            None => ApiError::HostGroupNotFound(parent.name.clone()),
            Some(_) => ApiError::HostGroupCycle {
                group: group.name.clone(),
                parent: parent.name.clone(),
            },
        });
    }
    if settings != group.settings
        && !db::hostgroups::set_settings(&state.db, group.id, &settings).await?
    {
        return Err(ApiError::HostGroupNotFound(group.name.clone()));
    }
    let group = show(&state, group.id).await?;
    state.publish(Event::HostGroupChanged(group.clone()));
    Ok(Json(group))
}

#[utoipa::path(delete, path = "/api/v1/hostgroups/{group}", params(("group" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = drover_api::ErrorBody), (status = 409, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tree = db::hostgroups::tree(&state.db).await?;
    let group = find(&tree, &group)?;
    if group.parent_id.is_none() {
        return Err(ApiError::RootGroupFixed(
            "the root group cannot be deleted".to_owned(),
        ));
    }
    if db::hostgroups::delete_if_empty(&state.db, group.id).await? {
        state.publish(Event::HostGroupDeleted(group.id));
        return Ok(StatusCode::NO_CONTENT);
    }
    let tree = db::hostgroups::tree(&state.db).await?;
    let Some(now) = tree.get(group.id) else {
        return Err(ApiError::HostGroupNotFound(group.name.clone()));
    };
    let networks = db::networks::names_in_group(&state.db, group.id).await?;
    let mut holds = format!("{} hosts and {} groups", now.host_count, now.child_count);
    if !networks.is_empty() {
        holds.push_str(&format!(", and scopes networks {}", networks.join(", ")));
    }
    Err(ApiError::HostGroupNotEmpty {
        group: now.name.clone(),
        holds,
    })
}
