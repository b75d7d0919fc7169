//! `/api/v1/profiles/hardware`, `/api/v1/profiles/guest-os` and `/api/v1/templates`: list
//! (paged), show, create (jobs `profile.hardware_create`, `profile.guest_os_create`,
//! `template.create`) and delete (`profile.hardware_delete`, `profile.guest_os_delete`,
//! `template.delete`; a profile that templates use is refused).

use super::library::{PageQuery, page_of};
use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted};
use crate::db;
use crate::jobs::{self, JobSpec, ProfileKind};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::template::{
    GuestOsProfile, GuestOsProfileCreate, HardwareProfile, HardwareProfileCreate, Template,
    TemplateCreate, VmFromTemplate,
};
use drover_api::{Page, ProfileId, TemplateId, VmId};

#[utoipa::path(get, path = "/api/v1/profiles/hardware", params(PageQuery),
    responses((status = 200, body = Page<HardwareProfile>)))]
pub async fn hardware_list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<HardwareProfile>>, ApiError> {
    page_of(
        db::templates::hardware_profiles(&state.db).await?,
        &query,
        |object| (object.name.clone(), object.id.to_string()),
    )
}

#[utoipa::path(get, path = "/api/v1/profiles/hardware/{profile}",
    params(("profile" = String, Path, description = "id or name")),
    responses((status = 200, body = HardwareProfile), (status = 404, body = drover_api::ErrorBody)))]
pub async fn hardware_get(
    State(state): State<AppState>,
    Path(profile): Path<String>,
) -> Result<Json<HardwareProfile>, ApiError> {
    Ok(Json(jobs::find_hardware(&state, &profile).await?))
}

#[utoipa::path(post, path = "/api/v1/profiles/hardware", request_body = HardwareProfileCreate,
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn hardware_create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<HardwareProfileCreate>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::HardwareProfileCreate {
        profile_id: ProfileId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(get, path = "/api/v1/profiles/guest-os", params(PageQuery),
    responses((status = 200, body = Page<GuestOsProfile>)))]
pub async fn guest_os_list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<GuestOsProfile>>, ApiError> {
    page_of(
        db::templates::guest_os_profiles(&state.db).await?,
        &query,
        |object| (object.name.clone(), object.id.to_string()),
    )
}

#[utoipa::path(get, path = "/api/v1/profiles/guest-os/{profile}",
    params(("profile" = String, Path, description = "id or name")),
    responses((status = 200, body = GuestOsProfile), (status = 404, body = drover_api::ErrorBody)))]
pub async fn guest_os_get(
    State(state): State<AppState>,
    Path(profile): Path<String>,
) -> Result<Json<GuestOsProfile>, ApiError> {
    Ok(Json(jobs::find_guest_os(&state, &profile).await?))
}

#[utoipa::path(post, path = "/api/v1/profiles/guest-os", request_body = GuestOsProfileCreate,
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody),
        (status = 422, body = drover_api::ErrorBody)))]
pub async fn guest_os_create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<GuestOsProfileCreate>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::GuestOsProfileCreate {
        profile_id: ProfileId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(get, path = "/api/v1/templates", params(PageQuery),
    responses((status = 200, body = Page<Template>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<Template>>, ApiError> {
    page_of(
        db::templates::templates(&state.db).await?,
        &query,
        |object| (object.name.clone(), object.id.to_string()),
    )
}

#[utoipa::path(get, path = "/api/v1/templates/{template}",
    params(("template" = String, Path, description = "id or name")),
    responses((status = 200, body = Template), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(template): Path<String>,
) -> Result<Json<Template>, ApiError> {
    Ok(Json(jobs::find_template(&state, &template).await?))
}

#[utoipa::path(post, path = "/api/v1/templates", request_body = TemplateCreate,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(request): ApiJson<TemplateCreate>,
) -> Result<Response, ApiError> {
    let spec = JobSpec::TemplateCreate {
        template_id: TemplateId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/templates/{template}/vms", request_body = VmFromTemplate,
    params(("template" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn create_vm(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(template): Path<String>,
    ApiJson(request): ApiJson<VmFromTemplate>,
) -> Result<Response, ApiError> {
    let mut request = jobs::vm_create_from(&state, &template, request).await?;
    jobs::resolve_cdrom(&state, &mut request.devices).await?;
    let spec = JobSpec::VmCreate {
        vm_id: VmId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/profiles/hardware/{profile}",
    params(("profile" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn hardware_delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(profile): Path<String>,
) -> Result<Response, ApiError> {
    let profile_id = jobs::find_hardware(&state, &profile).await?.id;
    delete_profile(&state, &user, profile_id, ProfileKind::Hardware).await
}

#[utoipa::path(delete, path = "/api/v1/profiles/guest-os/{profile}",
    params(("profile" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn guest_os_delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(profile): Path<String>,
) -> Result<Response, ApiError> {
    let profile_id = jobs::find_guest_os(&state, &profile).await?.id;
    delete_profile(&state, &user, profile_id, ProfileKind::GuestOs).await
}

async fn delete_profile(
    state: &AppState,
    user: &CurrentUser,
    profile_id: ProfileId,
    kind: ProfileKind,
) -> Result<Response, ApiError> {
    let spec = JobSpec::ProfileDelete { profile_id, kind };
    Ok(accepted(jobs::submit(state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/templates/{template}",
    params(("template" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(template): Path<String>,
) -> Result<Response, ApiError> {
    let template_id = jobs::find_template(&state, &template).await?.id;
    let spec = JobSpec::TemplateDelete { template_id };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
