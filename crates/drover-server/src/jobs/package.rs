//! Packages from other hypervisors (OVA, OVF, VMX) and V2V. A library import of a package
//! indexes its disks as items and makes a hardware profile from it; a V2V import indexes the
//! disks of a package or lone disk and makes a stopped VM from them (`vm::prepare_create` and
//! `vm::run_create`, as a VM from a template). The library server's agent unpacks, checks and
//! converts; the job undoes what it recorded when a later step fails, so a failed import leaves
//! no item, profile, file or VM.

use super::library::{import_share, server_address, share_target};
use super::{JobRun, Plan};
use crate::db::{self, DbError};
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::library::{
    AgentImport, AgentPackage, LibraryImport, LibraryItem, LibraryShare, PackageHardware,
    package_item_names,
};
use drover_api::network::USER_NETWORK;
use drover_api::template::HardwareSpec;
use drover_api::v2v::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB, V2vImport};
use drover_api::{JobTarget, LibraryItemId, ProfileId, VmCreate, VmDevices, VmDisk, VmId};

const IMPORT_STEP: &str =
    "Unpack, check the manifest, convert, check and fingerprint the disks on the library server";
const INDEX_STEP: &str = "Index the disks as library items";
const PROFILE_STEP: &str = "Create the hardware profile";

/// The steps of a library import of a package.
pub(super) const LIBRARY_IMPORT_STEPS: [&str; 3] = [IMPORT_STEP, INDEX_STEP, PROFILE_STEP];

/// The hardware profile a package describes: its CPUs and memory (defaults when it does not
/// say), a NIC on user-mode networking per adapter, its blank disks, booting from disk.
fn hardware_spec(hardware: &PackageHardware) -> HardwareSpec {
    HardwareSpec {
        cpus: hardware.cpus.unwrap_or(DEFAULT_CPUS).max(1),
        memory_mib: hardware
            .memory_mib
            .unwrap_or(DEFAULT_MEMORY_MIB)
            .max(super::vm::MIN_MEMORY_MIB),
        data_disks: hardware.blank_disks.clone(),
        nics: user_nics(hardware.nics),
        boot_order: vec!["disk".to_owned()],
        machine: None,
        kernel: None,
        initrd: None,
        cmdline: None,
    }
}

fn user_nics(count: u32) -> Vec<String> {
    (0..count).map(|_| USER_NETWORK.to_owned()).collect()
}

/// Imports the package on the share's library server and indexes its disks, all or none. The
/// caller holds the share's turn, so a refresh never indexes the new files first.
async fn import_and_index(
    state: &AppState,
    run: &mut JobRun,
    share: &LibraryShare,
    source: &str,
    name: &str,
    first_id: LibraryItemId,
) -> Result<(Vec<LibraryItem>, Option<PackageHardware>), ApiError> {
    let address = server_address(state, share).await?;
    let agent = state.agents.at(&address);
    let package: AgentPackage = run
        .step(async {
            let request = AgentImport {
                source: source.to_owned(),
                name: name.to_owned(),
            };
            Ok(agent.import_package(&share.name, &request).await?)
        })
        .await?;
    let names = package_item_names(name, package.files.len());
    let indexed = run
        .step(async {
            let mut items = Vec::with_capacity(package.files.len());
            for (index, (file, item_name)) in package.files.iter().zip(&names).enumerate() {
                let id = if index == 0 {
                    first_id
                } else {
                    LibraryItemId::new()
                };
                let inserted = db::library::insert_item(&state.db, id, item_name, share.id, file)
                    .await
                    .map_err(|error| match error {
                        DbError::Duplicate { .. } => ApiError::LibraryItemExists(item_name.clone()),
                        other => other.into(),
                    });
                if let Err(error) = inserted {
                    forget_items(state, share, &items).await;
                    return Err(error);
                }
                items.push(super::find_item(state, &id.to_string()).await?);
            }
            Ok(items)
        })
        .await;
    match indexed {
        Ok(items) => Ok((items, package.hardware)),
        Err(error) => {
            for file in &package.files {
                if let Err(error) = agent.remove_file(&share.name, &file.path).await {
                    tracing::warn!(error = ?anyhow::Error::from(error), "cannot remove an imported file after a failed import");
                }
            }
            Err(error)
        }
    }
}

/// Takes back indexed items: their rows and their files.
async fn forget_items(state: &AppState, share: &LibraryShare, items: &[LibraryItem]) {
    let address = server_address(state, share).await.ok();
    let agent = address.as_deref().map(|address| state.agents.at(address));
    for item in items {
        if let Err(error) = db::library::delete_item(&state.db, item.id).await {
            tracing::warn!(error = ?anyhow::Error::from(error), item = %item.name, "cannot forget an imported item");
        }
        if let Some(agent) = &agent
            && let Err(error) = agent.remove_file(&share.name, &item.file.path).await
        {
            tracing::warn!(error = ?anyhow::Error::from(error), item = %item.name, "cannot remove an imported file");
        }
    }
}

/// A library import of an OVA, OVF or VMX (a job on the share): its disks as items and a
/// hardware profile named after the import.
pub(super) async fn run_library_import(
    state: &AppState,
    run: &mut JobRun,
    item_id: LibraryItemId,
    share: LibraryShare,
    source: &str,
    name: &str,
) -> Result<(), ApiError> {
    let (items, hardware) = import_and_index(state, run, &share, source, name, item_id).await?;
    let spec = hardware_spec(&hardware.unwrap_or_default());
    let profile = run
        .step(async {
            db::templates::insert_profile(
                &state.db,
                ProfileId::new(),
                db::templates::HARDWARE,
                name,
                &spec,
            )
            .await
            .map_err(|error| match error {
                DbError::Duplicate { .. } => ApiError::ProfileExists {
                    kind: "hardware",
                    name: name.to_owned(),
                },
                other => other.into(),
            })
        })
        .await;
    if profile.is_err() {
        forget_items(state, &share, &items).await;
    }
    profile?;
    let listed: Vec<&str> = items.iter().map(|item| item.name.as_str()).collect();
    run.note(&format!(
        "hardware profile {name}: {} vCPUs, {} MiB, {} NICs; items {}",
        spec.cpus,
        spec.memory_mib,
        spec.nics.len(),
        listed.join(", ")
    ))
    .await;
    Ok(())
}

/// The VM's name: the one asked for, or the source's file name without extension.
fn vm_name(request: &V2vImport) -> String {
    request
        .name
        .clone()
        .unwrap_or_else(|| drover_api::library::name_from_source(&request.source))
}

fn library_import(request: &V2vImport) -> LibraryImport {
    LibraryImport {
        source: request.source.clone(),
        share: request.share.clone(),
        name: Some(vm_name(request)),
    }
}

pub(super) async fn prepare_v2v(
    state: &AppState,
    vm_id: VmId,
    request: &V2vImport,
) -> Result<Plan, ApiError> {
    let name = vm_name(request);
    drover_api::vm::validate_name(&name).map_err(ApiError::InvalidName)?;
    if db::vms::get(&state.db, &name).await?.is_some() {
        return Err(ApiError::VmExists(name));
    }
    for item in [name.clone(), format!("{name}-disk1")] {
        if db::library::item(&state.db, &item).await?.is_some() {
            return Err(ApiError::LibraryItemExists(item));
        }
    }
    let share = import_share(state, &library_import(request)).await?;
    if let Some(host) = &request.host {
        db::hosts::get(&state.db, host)
            .await?
            .ok_or_else(|| ApiError::HostNotFound(host.clone()))?;
    }
    Ok(Plan {
        description: format!(
            "Import {} as VM {name} (disks into library share {})",
            request.source, share.name
        ),
        target: JobTarget {
            kind: "vm".to_owned(),
            id: vm_id.to_string(),
            name,
        },
        done: Vec::new(),
        steps: vec![
            IMPORT_STEP,
            INDEX_STEP,
            super::vm::PLACE_STEP,
            super::vm::CREATE_STEP,
        ],
    })
}

pub(super) async fn run_v2v(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    request: V2vImport,
) -> Result<(), ApiError> {
    let name = vm_name(&request);
    let share = import_share(state, &library_import(&request)).await?;
    // A V2V job's target is its VM: it waits for the share's turn like the share's own jobs.
    let turn = state
        .engine
        .turn(&share_target(share.id, &share.name))
        .await;
    let (items, hardware) = import_and_index(
        state,
        run,
        &share,
        &request.source,
        &name,
        LibraryItemId::new(),
    )
    .await?;
    drop(turn);
    let made = make_vm(state, run, vm_id, &request, &name, &items, hardware).await;
    if made.is_err() {
        forget_items(state, &share, &items).await;
    }
    made
}

/// The stopped VM of an imported package: its first disk boots, the others follow as data
/// disks, then the package's blank disks.
async fn make_vm(
    state: &AppState,
    run: &mut JobRun,
    vm_id: VmId,
    request: &V2vImport,
    name: &str,
    items: &[LibraryItem],
    hardware: Option<PackageHardware>,
) -> Result<(), ApiError> {
    let hardware = hardware.unwrap_or(PackageHardware {
        nics: 1,
        ..PackageHardware::default()
    });
    let spec = hardware_spec(&hardware);
    let mut disks = Vec::with_capacity(items.len());
    for item in items {
        disks.push(super::template::library_disk(state, item.clone(), false).await?);
    }
    let mut disks = disks.into_iter();
    let boot_disk = disks.next().unwrap_or(VmDisk::None);
    let create = VmCreate {
        name: name.to_owned(),
        host: request.host.clone(),
        group: request.group.clone(),
        cpus: spec.cpus,
        memory_mib: spec.memory_mib,
        disk: boot_disk,
        kernel: request.kernel.clone(),
        initrd: request.initrd.clone(),
        cmdline: request.cmdline.clone(),
        start: false,
        networks: spec.nics,
        seed: None,
        devices: VmDevices {
            data_disks: disks
                .chain(
                    spec.data_disks
                        .into_iter()
                        .map(|size_bytes| VmDisk::Blank { size_bytes }),
                )
                .collect(),
            boot_order: spec.boot_order,
            machine: None,
            cdrom: None,
        },
    };
    let plan = run
        .step(super::vm::prepare_create(state, vm_id, &create))
        .await?;
    if let Some((_, placement)) = plan.done.first() {
        run.note(placement).await;
    }
    super::vm::run_create(state, run, vm_id, create).await
}
