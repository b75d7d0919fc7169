//! `POST /api/v1/placement/rate`: every candidate host of a group's subtree rated for a VM,
//! best first, with reasons. The VM's size comes from the request or from a template (its
//! hardware profile and its disk's virtual size); hosts that cannot carry one of its networks
//! rate 0. Reads only; changes nothing.

use super::{ApiError, ApiJson};
use crate::jobs::{check_vm_size, find_hardware, find_template, nic_networks};
use crate::placement::{self, Needs, rating::Demand};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use drover_api::{PlacementRating, PlacementRequest};

/// The request's figures, each from the request or else from its template.
async fn demand(state: &AppState, request: &PlacementRequest) -> Result<Demand, ApiError> {
    let (cpus, memory_mib, disk_bytes) = match &request.template {
        Some(name) => {
            let template = find_template(state, name).await?;
            let hardware = find_hardware(state, &template.hardware).await?.spec;
            let item = crate::db::library::item(&state.db, &template.disk_id.to_string())
                .await?
                .ok_or_else(|| ApiError::LibraryItemNotFound(template.disk.clone()))?;
            (
                request.cpus.unwrap_or(hardware.cpus),
                request.memory_mib.unwrap_or(hardware.memory_mib),
                request.disk_bytes.unwrap_or(item.file.virtual_size),
            )
        }
        None => {
            let (Some(cpus), Some(memory_mib)) = (request.cpus, request.memory_mib) else {
                return Err(ApiError::InvalidVmSpec(
                    "give the VM's cpus and memory_mib, or a template to take them from".to_owned(),
                ));
            };
            (cpus, memory_mib, request.disk_bytes.unwrap_or_default())
        }
    };
    check_vm_size(cpus, memory_mib)?;
    Ok(Demand {
        cpus,
        memory_mib,
        disk_bytes,
    })
}

#[utoipa::path(post, path = "/api/v1/placement/rate", request_body = PlacementRequest,
    responses((status = 200, body = PlacementRating), (status = 404, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn rate(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PlacementRequest>,
) -> Result<Json<PlacementRating>, ApiError> {
    let demand = demand(&state, &request).await?;
    let networks: Vec<_> = nic_networks(&state, &request.networks)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let needs = Needs {
        demand,
        networks: &networks,
    };
    let rated =
        placement::rate_group(&state, request.group.as_deref(), needs, request.goal).await?;
    Ok(Json(PlacementRating {
        group: rated.group,
        goal: request.goal,
        ratings: rated
            .candidates
            .into_iter()
            .map(|candidate| candidate.rating)
            .collect(),
    }))
}
