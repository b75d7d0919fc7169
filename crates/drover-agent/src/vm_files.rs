//! A VM's files as transfers see them: where they are on this agent (the VM's directory on a
//! host, or its stored copy in a library share), which of them travel, and fetching them from
//! another agent's transfer endpoint into a place here (resumable, verified, each file renamed
//! into place only when whole). Quick migration (host to host), store (host to library) and
//! deploy (library to host) all go through [`fetch`].

use crate::error::AgentError;
use crate::http::AgentState;
use crate::store;
use drover_api::VmId;
use drover_api::transfer::{AgentVmFile, AgentVmFilesFetch, AgentVmFilesFetched, VmFilesPlace};
use std::path::{Path, PathBuf};

/// The VM's first disk.
pub const MAIN_DISK: &str = "disk.qcow2";
/// The memory of a saved VM (a paused VM is saved before a quick migration).
const SAVED_STATE: &str = "saved.state";

/// Whether `name` is one of the files that hold a VM's data: its first disk, its data disks
/// (`disk1.qcow2`, `disk2.qcow2`, ...) and a saved VM's memory. Nothing else of the directory
/// travels: the configuration goes as the spec (the server's database is its source of truth)
/// and the cloud-init seed is written again at every define.
pub fn is_transferred(name: &str) -> bool {
    if name == MAIN_DISK || name == SAVED_STATE {
        return true;
    }
    name.strip_prefix("disk")
        .and_then(|rest| rest.strip_suffix(".qcow2"))
        .is_some_and(|index| {
            !index.is_empty()
                && !index.starts_with('0')
                && index.bytes().all(|byte| byte.is_ascii_digit())
        })
}

/// Where a share keeps stored VMs: hidden, so that a library refresh never indexes their disks
/// as library items.
const STORED_DIR: &str = ".stored-vms";

/// The directory that holds the VM's files in `place` on this agent.
pub fn place_dir(
    state: &AgentState,
    vm_id: VmId,
    place: &VmFilesPlace,
) -> Result<PathBuf, AgentError> {
    Ok(match &place.share {
        Some(share) => state
            .library
            .root(share)?
            .join(STORED_DIR)
            .join(vm_id.to_string()),
        None => store::vm_dir(&state.data_dir, vm_id),
    })
}

/// The path of one transferred file; any other name is refused.
pub fn file_path(dir: &Path, vm_id: VmId, name: &str) -> Result<PathBuf, AgentError> {
    if is_transferred(name) {
        Ok(dir.join(name))
    } else {
        Err(AgentError::VmFileNotFound {
            vm_id,
            name: name.to_owned(),
        })
    }
}

/// A VM's files may be read only while no process writes them.
pub fn check_no_process(state: &AgentState, vm_id: VmId) -> Result<(), AgentError> {
    if let Some(handle) = state.registry.find(vm_id)? {
        let runtime = handle.runtime();
        if runtime.state.has_process() {
            return Err(AgentError::VmHasProcess {
                vm_id,
                state: runtime.state,
            });
        }
    }
    Ok(())
}

/// The VM's files in `place`, fingerprinted. A place without any of them is an unknown VM.
pub async fn list(
    state: &AgentState,
    vm_id: VmId,
    place: &VmFilesPlace,
) -> Result<Vec<AgentVmFile>, AgentError> {
    if place.share.is_none() {
        check_no_process(state, vm_id)?;
    }
    let dir = place_dir(state, vm_id, place)?;
    let mut entries = match tokio::fs::read_dir(&dir).await {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgentError::VmNotFound(vm_id));
        }
        Err(error) => return Err(AgentError::Internal(error.into())),
    };
    let mut names = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|error| AgentError::Internal(error.into()))?
    {
        if let Some(name) = entry.file_name().to_str()
            && is_transferred(name)
            && entry.file_type().await.is_ok_and(|kind| kind.is_file())
        {
            names.push(name.to_owned());
        }
    }
    // The first disk first, then the data disks in order: the order a fetch copies them in.
    names.sort_by_key(|name| (name != MAIN_DISK, name.len(), name.clone()));
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let metadata = tokio::fs::metadata(&path)
            .await
            .map_err(|error| AgentError::Internal(error.into()))?;
        files.push(AgentVmFile {
            name,
            size: metadata.len(),
            sha256: state.library.fingerprint(&path).await?,
        });
    }
    Ok(files)
}

/// Removes the VM's stored copy from a share (idempotent). A host's VM directory goes with
/// `DELETE /v1/vms/{id}` instead.
pub async fn remove_stored(state: &AgentState, vm_id: VmId, share: &str) -> Result<(), AgentError> {
    let dir = place_dir(
        state,
        vm_id,
        &VmFilesPlace {
            share: Some(share.to_owned()),
        },
    )?;
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(AgentError::Internal(error.into())),
    }
}

/// Removes what fetches left of a VM this host does not hold: a directory of fetched files
/// that was never defined (a quick migration that failed before its define). A defined VM and
/// an incoming live migration are left alone; they go their own ways.
pub async fn remove_undefined(state: &AgentState, vm_id: VmId) -> Result<(), AgentError> {
    let dir = store::vm_dir(&state.data_dir, vm_id);
    if state.registry.find(vm_id)?.is_some() || crate::migration::is_incoming(&dir) {
        return Ok(());
    }
    store::remove_dir_optional(&dir).map_err(|error| AgentError::Internal(error.into()))
}

/// Copies the VM's files from the sending agent into `request.to` here. A file already in place
/// with the expected SHA-256 is kept; one cut short earlier resumes where it stopped.
pub async fn fetch(
    state: &AgentState,
    vm_id: VmId,
    request: &AgentVmFilesFetch,
) -> Result<AgentVmFilesFetched, AgentError> {
    let dir = place_dir(state, vm_id, &request.to)?;
    for file in &request.files {
        file_path(&dir, vm_id, &file.name)?;
        crate::cache::check_fingerprint(&file.sha256)?;
    }
    if request.to.share.is_none() && state.registry.find(vm_id)?.is_some() {
        // Its files are the defined VM's disks: never written over from elsewhere.
        return Err(AgentError::VmDefinedHere(vm_id));
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|error| AgentError::Internal(error.into()))?;
    let client = state.enrollment.peer_client()?;
    let bytes_total = request.files.iter().map(|file| file.size).sum();
    let mut tracker = state
        .transfers
        .track(request.transfer_id.as_deref(), bytes_total);
    let query = match &request.from.share {
        Some(share) => format!("?share={share}"),
        None => String::new(),
    };
    let mut finished_bytes = 0;
    let mut received_before = 0;
    for file in &request.files {
        let target = dir.join(&file.name);
        let in_place = tokio::fs::try_exists(&target).await.unwrap_or(false)
            && state.library.fingerprint(&target).await? == file.sha256;
        if !in_place {
            let url = format!(
                "https://{}/v1/vms/{vm_id}/files/{}{query}",
                request.source, file.name
            );
            let mut received = 0;
            drover_image::transfer::fetch(&client, &url, &file.sha256, &target, |progress| {
                received = progress.received;
                tracker.update(finished_bytes + progress.done, received_before + received);
            })
            .await?;
            received_before += received;
            state.library.remember(&target, &file.sha256);
        }
        finished_bytes += file.size;
        tracker.update(finished_bytes, received_before);
    }
    let progress = tracker.progress();
    tracing::info!(
        vm_id = %vm_id,
        bytes = progress.bytes_total,
        received = progress.bytes_received,
        "VM files fetched"
    );
    Ok(AgentVmFilesFetched {
        bytes_total: progress.bytes_total,
        bytes_received: progress.bytes_received,
        milliseconds: tracker.milliseconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vms_own_data_files_travel() {
        for name in ["disk.qcow2", "disk1.qcow2", "disk12.qcow2", "saved.state"] {
            assert!(is_transferred(name), "{name}");
        }
        for name in [
            "disk0.qcow2",
            "disk01.qcow2",
            "disk.qcow2.partial",
            "diskx.qcow2",
            "disk-1.qcow2",
            "disk.qcow2/../x",
            "spec.json",
            "qmp.sock",
            ".saved.state.partial",
            "seed",
            "",
        ] {
            assert!(!is_transferred(name), "{name}");
        }
    }
}
