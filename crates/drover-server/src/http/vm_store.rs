//! `POST /api/v1/vms/{vm}/store` and `POST /api/v1/vms/{vm}/deploy`: move a stopped VM into the
//! library and back (jobs `vm.store`, `vm.deploy`). The share and the host are chosen here, so a
//! restarted job goes to the same place.

use super::{ApiError, ApiJson, CurrentUser, accepted};
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use drover_api::vm_store::{VmDeploy, VmStore};

#[utoipa::path(post, path = "/api/v1/vms/{vm}/store", request_body = VmStore,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn store(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<VmStore>,
) -> Result<Response, ApiError> {
    let vm = super::vms::find(&state, &vm).await?;
    let share = jobs::share_or_only(&state, request.share.as_deref()).await?;
    let spec = JobSpec::VmStore {
        vm_id: vm.id,
        share_id: share.id,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/deploy", request_body = VmDeploy,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn deploy(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<VmDeploy>,
) -> Result<Response, ApiError> {
    let vm = super::vms::find(&state, &vm).await?;
    if vm.state != drover_api::VmState::Stored {
        return Err(ApiError::vm_state_conflict(&vm, "deploy"));
    }
    let host_id = jobs::deploy_host(&state, &vm, &request).await?;
    let spec = JobSpec::VmDeploy {
        vm_id: vm.id,
        host_id,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
