//! The CD-ROM drive's medium: a create's `--iso` and `vm iso insert|eject` (job `vm.cdrom`). The
//! server names the ISO by its library item and tells the host where to fetch it from; the
//! host's agent caches it and changes the medium (at once on a running VM).

use super::{JobRun, Plan, find_vm, host_of, target};
use crate::db;
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::cdrom::{CdromIso, VmCdrom, VmCdromChange};
use drover_api::library::LibraryItemKind;
use drover_api::{Event, VmDevices, VmId, VmState};

/// The library ISO `item` as a CD-ROM medium, with where hosts fetch it.
async fn library_iso(state: &AppState, item: &str) -> Result<CdromIso, ApiError> {
    let item = crate::jobs::find_item(state, item).await?;
    if item.file.kind != LibraryItemKind::Iso {
        return Err(ApiError::InvalidVmSpec(format!(
            "library item '{}' is a disk image, not an ISO; a CD-ROM drive takes an ISO",
            item.name
        )));
    }
    Ok(CdromIso {
        url: crate::jobs::transfer_url(state, &item).await?,
        sha256: item.file.sha256,
        item: item.name,
        path: None,
    })
}

/// Fills in the library side of the ISO a create request names (whatever the client sent for
/// it beyond the item's name is replaced).
pub(crate) async fn resolve(state: &AppState, devices: &mut VmDevices) -> Result<(), ApiError> {
    if let Some(iso) = devices.cdrom.as_mut().and_then(|cdrom| cdrom.iso.as_mut()) {
        **iso = library_iso(state, &iso.item).await?;
    }
    Ok(())
}

/// A medium change applies to a VM that is stopped or running, and a running VM needs a drive.
pub(in crate::jobs) async fn prepare_change(
    state: &AppState,
    vm_id: VmId,
    change: &VmCdromChange,
) -> Result<Plan, ApiError> {
    let vm = find_vm(state, vm_id).await?;
    if !matches!(vm.state, VmState::Stopped | VmState::Running) {
        return Err(ApiError::vm_state_conflict(&vm, "change the CD-ROM of"));
    }
    if vm.state == VmState::Running && !vm.devices.has_cdrom_drive() {
        return Err(ApiError::NoCdromDrive(vm.name));
    }
    let description = match &change.item {
        Some(item) => {
            library_iso(state, item).await?;
            format!("Insert ISO {item} into VM {}", vm.name)
        }
        None => format!("Eject the CD-ROM of VM {}", vm.name),
    };
    Ok(Plan {
        description,
        target: target(vm_id, &vm.name),
        done: Vec::new(),
        steps: vec!["Change the medium on the host"],
    })
}

pub(in crate::jobs) async fn run_change(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    change: VmCdromChange,
) -> Result<(), ApiError> {
    let vm = find_vm(state, vm_id).await?;
    let host = host_of(state, &vm).await?;
    let iso = match &change.item {
        Some(item) => Some(Box::new(library_iso(state, item).await?)),
        None => None,
    };
    if iso.is_none() && !vm.devices.has_cdrom_drive() {
        // An eject from no drive: nothing to change, and no drive to add.
        return run.step(async { Ok(()) }).await;
    }
    // The ISO may be fetched to the host here: its transfer shows as progress.
    run.transfer_step(&host.address, &vm_id.to_string(), async {
        let cdrom = VmCdrom { iso };
        state
            .agents
            .at(&host.address)
            .change_cdrom(vm_id, &cdrom)
            .await?;
        let mut devices = vm.devices.clone();
        devices.cdrom = Some(cdrom);
        db::vms::set_devices(&state.db, vm_id, &devices).await?;
        state.publish(Event::VmChanged(find_vm(state, vm_id).await?));
        Ok(())
    })
    .await
}
