//! Profile and template jobs: each checks its request (names free, references found, values in
//! range) before it is queued, and records the object when it runs. They touch no host.

use super::{JobRun, Plan};
use crate::db::{self, DbError};
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::library::{LibraryItem, LibraryItemKind};
use drover_api::template::{
    GuestOsProfile, GuestOsProfileCreate, HardwareProfile, HardwareProfileCreate, Template,
    TemplateCreate, VmFromTemplate,
};
use drover_api::{JobTarget, ProfileId, TemplateId, VmCreate, VmDevices, VmDisk};

const RECORD_STEP: &str = "Record it in the database";

fn target(kind: &str, id: String, name: &str) -> JobTarget {
    JobTarget {
        kind: kind.to_owned(),
        id,
        name: name.to_owned(),
    }
}

pub(crate) async fn find_hardware(
    state: &AppState,
    name: &str,
) -> Result<HardwareProfile, ApiError> {
    db::templates::hardware_profile(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::ProfileNotFound {
            kind: "hardware",
            name: name.to_owned(),
        })
}

pub(crate) async fn find_guest_os(
    state: &AppState,
    name: &str,
) -> Result<GuestOsProfile, ApiError> {
    db::templates::guest_os_profile(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::ProfileNotFound {
            kind: "guest OS",
            name: name.to_owned(),
        })
}

pub(crate) async fn find_template(state: &AppState, name: &str) -> Result<Template, ApiError> {
    db::templates::template(&state.db, name)
        .await?
        .ok_or_else(|| ApiError::TemplateNotFound(name.to_owned()))
}

fn profile_exists<'a>(kind: &'static str, name: &'a str) -> impl Fn(DbError) -> ApiError + 'a {
    move |error| match error {
        DbError::Duplicate { .. } => ApiError::ProfileExists {
            kind,
            name: name.to_owned(),
        },
        other => other.into(),
    }
}

/// The VM a template makes: its hardware profile's settings and a library disk that the host
/// fetches straight from the library server's transfer endpoint.
pub(crate) async fn vm_create_from(
    state: &AppState,
    template: &str,
    request: VmFromTemplate,
) -> Result<VmCreate, ApiError> {
    let template = find_template(state, template).await?;
    let item = super::find_item(state, &template.disk_id.to_string()).await?;
    let disk = library_disk(state, item, request.full_clone).await?;
    let hardware = find_hardware(state, &template.hardware).await?.spec;
    let seed = match &template.guest_os {
        Some(name) => {
            let profile = find_guest_os(state, name).await?.spec;
            let hostname = drover_api::template::hostname_from_pattern(&profile.hostname, || {
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let index = rand::random_range(0..ALPHABET.len());
                char::from(ALPHABET[index])
            });
            Some(drover_api::template::cloud_init_seed(
                &profile,
                &request.name,
                &hostname,
            ))
        }
        None => None,
    };
    Ok(VmCreate {
        name: request.name,
        host: request.host,
        group: request.group,
        cpus: hardware.cpus,
        memory_mib: hardware.memory_mib,
        disk,
        kernel: hardware.kernel,
        initrd: hardware.initrd,
        cmdline: hardware.cmdline,
        start: request.start,
        networks: hardware.nics,
        seed,
        devices: VmDevices {
            data_disks: hardware
                .data_disks
                .into_iter()
                .map(|size_bytes| VmDisk::Blank { size_bytes })
                .collect(),
            boot_order: hardware.boot_order,
            machine: hardware.machine,
            cdrom: request.iso.map(drover_api::cdrom::VmCdrom::with_iso),
        },
    })
}

/// A library item as a VM's disk: the VM's host fetches it straight from the library server's
/// transfer endpoint into its cache and gives the VM an overlay on it.
/// A library item as a VM's disk: a linked clone, or with `full_clone` an independent copy.
pub(crate) async fn library_disk(
    state: &AppState,
    item: LibraryItem,
    full_clone: bool,
) -> Result<VmDisk, ApiError> {
    let url = transfer_url(state, &item).await?;
    Ok(if full_clone {
        VmDisk::LibraryCopy {
            url,
            item: item.name,
            sha256: item.file.sha256,
            virtual_size: item.file.virtual_size,
        }
    } else {
        VmDisk::Library {
            url,
            item: item.name,
            sha256: item.file.sha256,
        }
    })
}

/// Where hosts fetch a library item's file: its library server's transfer endpoint.
pub(crate) async fn transfer_url(state: &AppState, item: &LibraryItem) -> Result<String, ApiError> {
    let share = super::find_share(state, &item.share_id.to_string()).await?;
    let server = db::library::servers(&state.db)
        .await?
        .into_iter()
        .find(|server| server.host_id == share.host_id)
        .ok_or_else(|| ApiError::NotLibraryServer(share.server.clone()))?;
    Ok(format!(
        "https://{}/v1/shares/{}/files/{}",
        server.transfer_address, share.name, item.file.path
    ))
}

pub(super) async fn prepare_hardware(
    state: &AppState,
    profile_id: ProfileId,
    request: &HardwareProfileCreate,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    drover_api::template::validate_hardware(&request.spec).map_err(ApiError::InvalidProfile)?;
    if db::templates::hardware_profile(&state.db, &request.name)
        .await?
        .is_some()
    {
        return Err(ApiError::ProfileExists {
            kind: "hardware",
            name: request.name.clone(),
        });
    }
    Ok(Plan {
        description: format!("Create hardware profile {}", request.name),
        target: target("profile", profile_id.to_string(), &request.name),
        done: Vec::new(),
        steps: vec![RECORD_STEP],
    })
}

pub(super) async fn run_hardware(
    state: &AppState,
    run: &mut JobRun,
    profile_id: ProfileId,
    request: HardwareProfileCreate,
) -> Result<(), ApiError> {
    run.step(async {
        db::templates::insert_profile(
            &state.db,
            profile_id,
            db::templates::HARDWARE,
            &request.name,
            &request.spec,
        )
        .await
        .map_err(profile_exists("hardware", &request.name))
    })
    .await
}

pub(super) async fn prepare_guest_os(
    state: &AppState,
    profile_id: ProfileId,
    request: &GuestOsProfileCreate,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    drover_api::template::validate_guest_os(&request.spec).map_err(ApiError::InvalidProfile)?;
    if db::templates::guest_os_profile(&state.db, &request.name)
        .await?
        .is_some()
    {
        return Err(ApiError::ProfileExists {
            kind: "guest OS",
            name: request.name.clone(),
        });
    }
    Ok(Plan {
        description: format!("Create guest OS profile {}", request.name),
        target: target("profile", profile_id.to_string(), &request.name),
        done: Vec::new(),
        steps: vec![RECORD_STEP],
    })
}

pub(super) async fn run_guest_os(
    state: &AppState,
    run: &mut JobRun,
    profile_id: ProfileId,
    request: GuestOsProfileCreate,
) -> Result<(), ApiError> {
    run.step(async {
        db::templates::insert_profile(
            &state.db,
            profile_id,
            db::templates::GUEST_OS,
            &request.name,
            &request.spec,
        )
        .await
        .map_err(profile_exists("guest OS", &request.name))
    })
    .await
}

pub(super) async fn prepare_template(
    state: &AppState,
    template_id: TemplateId,
    request: &TemplateCreate,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    if db::templates::template(&state.db, &request.name)
        .await?
        .is_some()
    {
        return Err(ApiError::TemplateExists(request.name.clone()));
    }
    let item = super::find_item(state, &request.disk).await?;
    if item.file.kind != LibraryItemKind::Disk {
        return Err(ApiError::InvalidProfile(format!(
            "library item '{}' is an ISO; a template's disk must be a disk image",
            item.name
        )));
    }
    find_hardware(state, &request.hardware).await?;
    if let Some(guest_os) = &request.guest_os {
        find_guest_os(state, guest_os).await?;
    }
    Ok(Plan {
        description: format!("Create template {}", request.name),
        target: target("template", template_id.to_string(), &request.name),
        done: Vec::new(),
        steps: vec![RECORD_STEP],
    })
}

pub(super) async fn run_template(
    state: &AppState,
    run: &mut JobRun,
    template_id: TemplateId,
    request: TemplateCreate,
) -> Result<(), ApiError> {
    run.step(async {
        let item = super::find_item(state, &request.disk).await?;
        let hardware = find_hardware(state, &request.hardware).await?;
        let guest_os = match &request.guest_os {
            Some(name) => Some(find_guest_os(state, name).await?.id),
            None => None,
        };
        db::templates::insert_template(
            &state.db,
            template_id,
            &request.name,
            item.id,
            hardware.id,
            guest_os,
        )
        .await
        .map_err(|error| match error {
            DbError::Duplicate { .. } => ApiError::TemplateExists(request.name.clone()),
            other => other.into(),
        })
    })
    .await
}

/// The two kinds of profile, as jobs and messages name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    Hardware,
    GuestOs,
}

impl ProfileKind {
    fn label(self) -> &'static str {
        match self {
            ProfileKind::Hardware => "hardware",
            ProfileKind::GuestOs => "guest OS",
        }
    }
}

/// The profile's name, when it exists.
async fn profile_name(
    state: &AppState,
    kind: ProfileKind,
    profile_id: ProfileId,
) -> Result<String, ApiError> {
    let id = profile_id.to_string();
    Ok(match kind {
        ProfileKind::Hardware => find_hardware(state, &id).await?.name,
        ProfileKind::GuestOs => find_guest_os(state, &id).await?.name,
    })
}

/// A profile that templates use stays: the refusal names them.
async fn refuse_if_profile_used(
    state: &AppState,
    kind: ProfileKind,
    profile_id: ProfileId,
    name: &str,
) -> Result<(), ApiError> {
    let templates = db::templates::names_using_profile(&state.db, profile_id).await?;
    if templates.is_empty() {
        return Ok(());
    }
    Err(ApiError::ProfileInUse {
        profile: format!("{} profile '{name}'", kind.label()),
        templates: templates.join(", "),
    })
}

pub(super) async fn prepare_profile_delete(
    state: &AppState,
    kind: ProfileKind,
    profile_id: ProfileId,
) -> Result<Plan, ApiError> {
    let name = profile_name(state, kind, profile_id).await?;
    refuse_if_profile_used(state, kind, profile_id, &name).await?;
    Ok(Plan {
        description: format!("Delete {} profile {name}", kind.label()),
        target: target("profile", profile_id.to_string(), &name),
        done: Vec::new(),
        steps: vec![DELETE_STEP],
    })
}

const DELETE_STEP: &str = "Delete it from the database";

pub(super) async fn run_profile_delete(
    state: &AppState,
    run: &mut JobRun,
    kind: ProfileKind,
    profile_id: ProfileId,
) -> Result<(), ApiError> {
    let name = profile_name(state, kind, profile_id).await?;
    run.step(async {
        refuse_if_profile_used(state, kind, profile_id, &name).await?;
        if !db::templates::delete_profile(&state.db, profile_id).await? {
            // A template took the profile between the check and the delete.
            refuse_if_profile_used(state, kind, profile_id, &name).await?;
        }
        Ok(())
    })
    .await
}

/// VMs keep nothing of their template once made (their disk names the library item), so a
/// template can always go.
pub(super) async fn prepare_template_delete(
    state: &AppState,
    template_id: TemplateId,
) -> Result<Plan, ApiError> {
    let template = find_template(state, &template_id.to_string()).await?;
    Ok(Plan {
        description: format!("Delete template {}", template.name),
        target: target("template", template_id.to_string(), &template.name),
        done: Vec::new(),
        steps: vec![DELETE_STEP],
    })
}

pub(super) async fn run_template_delete(
    state: &AppState,
    run: &mut JobRun,
    template_id: TemplateId,
) -> Result<(), ApiError> {
    run.step(async {
        db::templates::delete_template(&state.db, template_id).await?;
        Ok(())
    })
    .await
}
