//! `/api/v1/vms`: list (filtered, keyset-paginated), show, create, power actions and delete; each
//! change is a job.

use super::hosts::more_than;
use super::{ApiError, ApiJson, ApiQuery, CurrentUser, accepted, cursor, page_size};
use crate::db;
use crate::db::vms::VmFilter;
use crate::jobs::{self, JobSpec};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::network::PortProtocol;
use drover_api::{NicAdd, Page, PortForward, Vm, VmActionRequest, VmCreate, VmId, VmState};
use serde::Deserialize;
use std::time::Duration;

/// Query of `GET /api/v1/vms`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VmListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only the VMs of this host (id or name).
    pub host: Option<String>,
    /// Only VMs in this state (snake_case, such as `running`).
    pub state: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/vms", params(VmListQuery),
    responses((status = 200, body = Page<Vm>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<VmListQuery>,
) -> Result<Json<Page<Vm>>, ApiError> {
    let limit = page_size(query.limit);
    let after = cursor::decode_pair(query.cursor.as_deref())?;
    let host_id = match &query.host {
        Some(host) => Some(super::hosts::find(&state, host).await?.id),
        None => None,
    };
    let vm_state = match &query.state {
        Some(text) => Some(VmState::parse(text).ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "'{text}' is not a VM state; use one of {}",
                VmState::ALL.map(VmState::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    let filter = VmFilter {
        host_id,
        state: vm_state,
    };
    let mut items = db::vms::list(&state.db, filter, after, limit + 1).await?;
    let next_cursor = more_than(&mut items, limit)
        .map(|last| cursor::encode(&[&last.name, &last.id.to_string()]));
    Ok(Json(Page { items, next_cursor }))
}

pub(super) async fn find(state: &AppState, id_or_name: &str) -> Result<Vm, ApiError> {
    db::vms::get(&state.db, id_or_name)
        .await?
        .ok_or_else(|| ApiError::VmNotFound(id_or_name.to_owned()))
}

#[utoipa::path(get, path = "/api/v1/vms/{vm}", params(("vm" = String, Path, description = "id or name")),
    responses((status = 200, body = Vm), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(vm): Path<String>,
) -> Result<Json<Vm>, ApiError> {
    let mut vm = find(&state, &vm).await?;
    add_leases(&state, &mut vm).await;
    Ok(Json(vm))
}

/// How long showing a VM waits for its host's DHCP leases before showing it without them.
const LEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Fills in the addresses the guest holds, when it runs on a network with DHCP and its host
/// answers in time; otherwise the VM shows without them.
async fn add_leases(state: &AppState, vm: &mut Vm) {
    if !vm.state.has_process() || vm.nics.iter().all(|nic| nic.ip.is_none()) {
        return;
    }
    let Ok(Some(host)) = db::hosts::get_by_id(&state.db, vm.host_id).await else {
        return;
    };
    let agent = state.agents.at(&host.address);
    let Ok(Ok(leases)) = tokio::time::timeout(LEASE_TIMEOUT, agent.leases(vm.id)).await else {
        return;
    };
    for lease in leases {
        if let Some(nic) = vm.nics.iter_mut().find(|nic| nic.name == lease.nic) {
            nic.lease_ip = Some(lease.ip);
        }
    }
}

#[utoipa::path(post, path = "/api/v1/vms", request_body = VmCreate,
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody), (status = 422, body = drover_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ApiJson(mut request): ApiJson<VmCreate>,
) -> Result<Response, ApiError> {
    jobs::resolve_cdrom(&state, &mut request.devices).await?;
    let spec = JobSpec::VmCreate {
        vm_id: VmId::new(),
        request,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/actions", request_body = VmActionRequest,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 409, body = drover_api::ErrorBody)))]
pub async fn change_state(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<VmActionRequest>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let spec = JobSpec::VmAction {
        vm_id: vm.id,
        action: request.action,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/vms/{vm}", params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let spec = JobSpec::VmDelete { vm_id: vm.id };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/port-forwards", request_body = PortForward,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn add_port_forward(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(forward): ApiJson<PortForward>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    if forward.host_port == 0 || forward.guest_port == 0 {
        return Err(ApiError::InvalidPortForward(
            "a port forward needs ports from 1 to 65535".to_owned(),
        ));
    }
    let spec = JobSpec::VmPortForward {
        vm_id: vm.id,
        forward,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/vms/{vm}/port-forwards/{protocol}/{host_port}",
    params(("vm" = String, Path, description = "id or name"),
        ("protocol" = PortProtocol, Path, description = "tcp or udp"),
        ("host_port" = u16, Path, description = "the forwarded port of the VM's host")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn remove_port_forward(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((vm, protocol, host_port)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let (Some(protocol), Some(host_port)) = (
        PortProtocol::parse(&protocol),
        host_port.parse::<u16>().ok().filter(|port| *port != 0),
    ) else {
        return Err(ApiError::InvalidPortForward(format!(
            "'{protocol}/{host_port}' is not tcp or udp and a port from 1 to 65535"
        )));
    };
    let spec = JobSpec::VmPortForwardRemove {
        vm_id: vm.id,
        protocol,
        host_port,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(post, path = "/api/v1/vms/{vm}/nics", request_body = NicAdd,
    params(("vm" = String, Path, description = "id or name")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody),
        (status = 409, body = drover_api::ErrorBody)))]
pub async fn add_nic(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(vm): Path<String>,
    ApiJson(request): ApiJson<NicAdd>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let spec = JobSpec::VmNicAdd {
        vm_id: vm.id,
        network: request.network,
    };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}

#[utoipa::path(delete, path = "/api/v1/vms/{vm}/nics/{nic}",
    params(("vm" = String, Path, description = "id or name"), ("nic" = String, Path, description = "nic0, nic1, ...")),
    responses((status = 202, body = drover_api::Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn remove_nic(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path((vm, nic)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let vm = find(&state, &vm).await?;
    let spec = JobSpec::VmNicRemove { vm_id: vm.id, nic };
    Ok(accepted(jobs::submit(&state, spec, &user.0, None).await?))
}
