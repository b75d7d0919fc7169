//! Full clones (`--full-clone`): the template's base is fetched into the cache as for a linked
//! clone, then copied whole into the VM's directory with `qemu-img convert`, so that the VM's
//! disk reads through nothing and the base may be evicted. The copy is made under a hidden name
//! and renamed when complete; a disk already in place (a define again, a deploy) is kept.

use crate::error::AgentError;
use crate::http::AgentState;
use crate::store;
use drover_api::VmDisk;
use drover_api::agent::AgentVmSpec;
use drover_api::library::AgentFetch;
use drover_image::share::Partial;

/// Makes the VM's disk a full copy of its library disk, unless it has one.
pub async fn ensure(state: &AgentState, spec: &AgentVmSpec) -> Result<(), AgentError> {
    let VmDisk::LibraryCopy { sha256, url, .. } = &spec.disk else {
        return Ok(());
    };
    let vm_dir = store::vm_dir(&state.data_dir, spec.id);
    let disk = vm_dir.join(crate::vm_files::MAIN_DISK);
    if tokio::fs::try_exists(&disk).await.unwrap_or(false) {
        return Ok(());
    }
    let client = state.enrollment.peer_client()?;
    let fetch = AgentFetch {
        url: url.clone(),
        sha256: sha256.clone(),
    };
    let cached = state
        .images
        .ensure(
            &client,
            &fetch,
            state.registry.disk_images(),
            &mut state.transfers.track(Some(&spec.id.to_string()), 0),
        )
        .await?;
    tokio::fs::create_dir_all(&vm_dir)
        .await
        .map_err(|error| AgentError::Internal(error.into()))?;
    let base = std::path::PathBuf::from(cached.path);
    tokio::task::spawn_blocking(move || {
        let partial = Partial::next_to(&disk);
        let format = drover_image::qemu_img::info(&base)?.format;
        drover_image::qemu_img::convert_to_qcow2(&base, &format, partial.path())?;
        partial.commit(&disk)
    })
    .await
    .map_err(|error| AgentError::Internal(error.into()))??;
    Ok(())
}
