//! `/v1/vms`: define, validate, list, change the state of and delete VMs. Handlers check the
//! request and hand the work to the VM's actor (or, for a define, to `actor::define`).

use super::AgentState;
use crate::actor::{self, VmSetup};
use crate::error::AgentError;
use crate::store;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::agent::{AgentNic, AgentVmSpec, NicLease, VmRuntime};
use drover_api::library::AgentFetch;
use drover_api::network::PortProtocol;
use drover_api::{PortForward, VmActionRequest, VmDisk, VmId};
use std::sync::Arc;

pub async fn list(State(state): State<Arc<AgentState>>) -> Json<Vec<VmRuntime>> {
    Json(state.registry.runtimes())
}

pub async fn validate(
    State(state): State<Arc<AgentState>>,
    body: Result<Json<AgentVmSpec>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Json(mut spec) = body?;
    check_name(&spec)?;
    for disk in std::iter::once(&mut spec.disk).chain(&mut spec.devices.data_disks) {
        if let VmDisk::Library { sha256, .. } | VmDisk::LibraryCopy { sha256, .. } = disk {
            // The image is fetched at define; here only what the driver checks besides it.
            crate::cache::check_fingerprint(sha256)?;
            *disk = VmDisk::Blank { size_bytes: 1 };
        }
    }
    state.driver.validate(&spec).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A library disk (the first or a data disk) becomes an overlay on the image in this host's
/// cache, fetched (once, agent to agent, verified) when it is not there yet; a full clone of the
/// first disk becomes a copy of it in the VM's directory; an ISO in the CD-ROM drive is fetched
/// the same way and read in place. Other disks pass unchanged. The fetch is followed as
/// transfer `<vm id>`.
pub(crate) async fn resolve_library_disk(
    state: &AgentState,
    mut spec: AgentVmSpec,
) -> Result<AgentVmSpec, AgentError> {
    if let VmDisk::LibraryCopy { virtual_size, .. } = &spec.disk {
        let size_bytes = *virtual_size;
        crate::full_clone::ensure(state, &spec).await?;
        spec.disk = VmDisk::Blank { size_bytes };
    }
    // This VM is not registered yet: what it uses is kept from eviction by hand meanwhile.
    let mut resolved = Vec::new();
    for disk in std::iter::once(&mut spec.disk).chain(&mut spec.devices.data_disks) {
        if let VmDisk::Library { sha256, url, .. } = disk {
            let path = cache_image(state, spec.id, sha256, url, &resolved).await?;
            resolved.push(path.clone().into());
            *disk = VmDisk::Image { path };
        }
    }
    if let Some(cdrom) = &mut spec.devices.cdrom {
        super::cdrom::fetch_iso(state, spec.id, cdrom, &resolved).await?;
    }
    Ok(spec)
}

/// The path of a library image (a disk or an ISO) in this host's cache, fetched (once, agent to
/// agent, verified) when it is not there yet, as transfer `<vm id>`. Making room evicts neither
/// what defined VMs use nor `also_in_use`.
pub(crate) async fn cache_image(
    state: &AgentState,
    vm_id: VmId,
    sha256: &str,
    url: &str,
    also_in_use: &[std::path::PathBuf],
) -> Result<String, AgentError> {
    let client = state.enrollment.peer_client()?;
    let cached = state
        .images
        .ensure(
            &client,
            &AgentFetch {
                url: url.to_owned(),
                sha256: sha256.to_owned(),
            },
            [state.registry.disk_images(), also_in_use.to_vec()].concat(),
            &mut state.transfers.track(Some(&vm_id.to_string()), 0),
        )
        .await?;
    Ok(cached.path)
}

fn check_name(spec: &AgentVmSpec) -> Result<(), AgentError> {
    drover_api::vm::validate_name(&spec.name).map_err(AgentError::VmSpecInvalid)
}

/// `PUT /v1/vms/{id}`: idempotent; the same spec again answers the VM's state.
pub async fn define(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<AgentVmSpec>, JsonRejection>,
) -> Result<Json<VmRuntime>, AgentError> {
    let Path(vm_id) = path?;
    let Json(spec) = body?;
    if spec.id != vm_id {
        return Err(AgentError::VmSpecInvalid(format!(
            "the spec's id {} is not the id {vm_id} in the URL",
            spec.id
        )));
    }
    check_name(&spec)?;
    let spec = resolve_library_disk(&state, spec).await?;
    if let Some(handle) = state.registry.find(vm_id)? {
        return if handle.spec() == spec {
            Ok(Json(handle.runtime()))
        } else {
            Err(AgentError::VmSpecConflict(vm_id))
        };
    }
    let reservation = state.registry.reserve(vm_id)?;
    let vm_dir = store::vm_dir(&state.data_dir, vm_id);
    let runtime = actor::define(state.driver.as_ref(), &spec, &vm_dir).await?;
    tracing::info!(vm_id = %vm_id, name = %spec.name, "VM defined");
    state.networks.add_leases(spec.clone()).await;
    let handle = reservation.commit(VmSetup {
        spec,
        vm_dir,
        driver: state.driver.clone(),
        networks: state.networks.clone(),
        process: None,
        runtime,
        changes: state.changes.clone(),
    });
    Ok(Json(handle.runtime()))
}

pub async fn change_state(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<VmActionRequest>, JsonRejection>,
) -> Result<Json<VmRuntime>, AgentError> {
    let Path(vm_id) = path?;
    let Json(request) = body?;
    let handle = state.registry.get(vm_id)?;
    handle.act(request.action).await.map(Json)
}

/// `POST /v1/vms/{id}/port-forwards`: idempotent; a forward the VM has already is fine.
pub async fn add_port_forward(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<PortForward>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    let Json(forward) = body?;
    let handle = state.registry.get(vm_id)?;
    handle.add_port_forward(forward).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/vms/{id}/port-forwards/{protocol}/{host_port}`: idempotent; a forward the VM
/// does not have is fine.
pub async fn remove_port_forward(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(VmId, PortProtocol, u16)>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path((vm_id, protocol, host_port)) = path?;
    let handle = state.registry.get(vm_id)?;
    handle.remove_port_forward(protocol, host_port).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/vms/{id}/nics`: idempotent; hot-plugs the NIC into a running VM.
pub async fn add_nic(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<AgentNic>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    let Json(nic) = body?;
    state.registry.get(vm_id)?.add_nic(nic).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/vms/{id}/nics/{name}`: idempotent; hot-unplugs the NIC from a running VM.
pub async fn remove_nic(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(VmId, String)>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path((vm_id, name)) = path?;
    state.registry.get(vm_id)?.remove_nic(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/vms/{id}/leases`: what the guest's NICs were given by DHCP.
pub async fn leases(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<Json<Vec<NicLease>>, AgentError> {
    let Path(vm_id) = path?;
    let handle = state.registry.get(vm_id)?;
    Ok(Json(state.networks.leases(&handle.spec())))
}

/// `DELETE /v1/vms/{id}`: idempotent; of an unknown VM, only files a fetch left go.
pub async fn delete(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    if let Some(handle) = state.registry.find(vm_id)? {
        handle.destroy().await?;
        state.registry.remove(vm_id);
    } else {
        crate::vm_files::remove_undefined(&state, vm_id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
