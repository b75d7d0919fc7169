//! `PUT /v1/vms/{id}/cdrom`: the ISO in a VM's CD-ROM drive. The ISO is fetched into the image
//! cache like a template's base (the same cache, so it is fetched once per host and never
//! evicted while a VM holds it), then the VM's actor changes the medium, at once when it runs.

use super::AgentState;
use crate::error::AgentError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::VmId;
use drover_api::cdrom::VmCdrom;
use std::sync::Arc;

/// Fills in where this host's cache holds the drive's ISO, fetching it when it is not there
/// (making room evicts neither what defined VMs use nor `also_in_use`).
pub(crate) async fn fetch_iso(
    state: &AgentState,
    vm_id: VmId,
    cdrom: &mut VmCdrom,
    also_in_use: &[std::path::PathBuf],
) -> Result<(), AgentError> {
    if let Some(iso) = &mut cdrom.iso {
        crate::cache::check_fingerprint(&iso.sha256)?;
        let path =
            super::vms::cache_image(state, vm_id, &iso.sha256, &iso.url, also_in_use).await?;
        iso.path = Some(path);
    }
    Ok(())
}

/// Idempotent: the same medium again changes nothing.
pub async fn change(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<VmId>, PathRejection>,
    body: Result<Json<VmCdrom>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(vm_id) = path?;
    let Json(mut cdrom) = body?;
    let handle = state.registry.get(vm_id)?;
    fetch_iso(&state, vm_id, &mut cdrom, &[]).await?;
    handle.change_cdrom(cdrom).await?;
    Ok(StatusCode::NO_CONTENT)
}
