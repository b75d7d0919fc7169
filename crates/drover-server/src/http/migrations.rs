//! `POST /api/v1/vms/{vm}/migrate`: moves a VM to another host (job `vm.migrate`).

use super::{ApiError, ApiJson, CurrentUser, accepted};
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use drover_api::migration::VmMigrate;

#[utoipa::path(post, path = "/api/v1/vms/{vm}/migrate", request_body = VmMigrate,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn migrate(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<VmMigrate>,
) -> Result<Response, ApiError> {
    let vm = super::vms::find(&state, &vm).await?;
    let spec = JobSpec::VmMigrate {
        vm_id: vm.id,
        request,
        destination: None,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
