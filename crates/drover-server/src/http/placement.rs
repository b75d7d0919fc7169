//! `POST /api/v1/placement/rate`: every candidate host of a group's subtree rated for a VM,
//! best first, with reasons. Reads only; changes nothing.

use super::{ApiError, ApiJson};
use crate::jobs::check_vm_size;
use crate::placement::{self, rating::Demand};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use drover_api::{PlacementRating, PlacementRequest};

#[utoipa::path(post, path = "/api/v1/placement/rate", request_body = PlacementRequest,
    responses((status = 200, body = PlacementRating), (status = 404, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn rate(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PlacementRequest>,
) -> Result<Json<PlacementRating>, ApiError> {
    check_vm_size(request.cpus, request.memory_mib)?;
    let demand = Demand {
        cpus: request.cpus,
        memory_mib: request.memory_mib,
        disk_bytes: request.disk_bytes,
    };
    let rated =
        placement::rate_group(&state, request.group.as_deref(), &demand, request.goal).await?;
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
