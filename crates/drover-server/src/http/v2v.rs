//! `POST /api/v1/v2v`: a VM from another hypervisor's package or disk, in one job
//! (`v2v.import`, `jobs::package`).

use super::{ApiError, ApiJson, CurrentUser, accepted};
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use drover_api::VmId;
use drover_api::v2v::V2vImport;

#[utoipa::path(post, path = "/api/v1/v2v", request_body = V2vImport,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<V2vImport>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::V2vImport {
        vm_id: VmId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
