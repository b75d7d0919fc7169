//! `POST /api/v1/vms/{vm}/cdrom`: insert a library ISO into the VM's CD-ROM drive, or eject it
//! (job `vm.cdrom`).

use super::{ApiError, ApiJson, CurrentUser, accepted};
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use drover_api::cdrom::VmCdromChange;

#[utoipa::path(post, path = "/api/v1/vms/{vm}/cdrom", request_body = VmCdromChange,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn change(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(change): ApiJson<VmCdromChange>,
) -> Result<Response, ApiError> {
    let vm = super::vms::find(&state, &vm).await?;
    let spec = JobSpec::VmCdrom {
        vm_id: vm.id,
        change,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
