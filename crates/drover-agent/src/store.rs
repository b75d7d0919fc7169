//! The agent's files: atomic writes, secret files (mode 0600) and each VM's directory
//! `vms/<id>/` with its `spec.json` and last `state.json`. What the driver keeps in that
//! directory (disks, sockets, logs) is the driver's business, not this module's.

use drover_api::VmId;
use drover_api::agent::{AgentVmSpec, VmRuntime};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const SPEC_FILE: &str = "spec.json";
const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Who may read a file the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Keys and the enrollment code: the agent's user only.
    Secret,
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Secret => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// Writes `contents` to a temporary file next to `path` and renames it over `path`, so that a
/// reader (or an agent restarted after a crash) sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, contents: &[u8], access: Access) -> Result<(), StoreError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(access.mode())
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error(path))
}

/// Reads a text file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a file; a file that is already gone is fine.
pub fn remove_optional(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// Creates a directory (and its parents) that only the agent's user can enter.
pub fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_error(path))
}

/// Removes a directory tree; one that is already gone is fine.
pub fn remove_dir_optional(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
            path: path.to_owned(),
            source: error,
        }),
        _ => Ok(()),
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &json, Access::Public)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StoreError::Json {
            path: path.to_owned(),
            source,
        })
}

/// Where VM directories live.
pub fn vms_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vms")
}

/// The directory of one VM: its spec, its last state and the driver's files.
pub fn vm_dir(data_dir: &Path, vm_id: VmId) -> PathBuf {
    vms_dir(data_dir).join(vm_id.to_string())
}

pub fn save_spec(vm_dir: &Path, spec: &AgentVmSpec) -> Result<(), StoreError> {
    write_json(&vm_dir.join(SPEC_FILE), spec)
}

pub fn save_state(vm_dir: &Path, runtime: &VmRuntime) -> Result<(), StoreError> {
    write_json(&vm_dir.join(STATE_FILE), runtime)
}

/// A VM found on disk at start: its spec and the last state the agent recorded, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedVm {
    pub spec: AgentVmSpec,
    pub last_state: Option<VmRuntime>,
}

/// Every VM with a `spec.json` under `vms/`. A directory without one is a create that did not
/// finish; it is skipped (and reported) rather than guessed at.
pub fn load_vms(data_dir: &Path) -> Result<Vec<SavedVm>, StoreError> {
    let root = vms_dir(data_dir);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::Io { path: root, source }),
    };
    let mut saved = Vec::new();
    for entry in entries {
        let dir = entry.map_err(io_error(&root))?.path();
        let Some(spec) = read_json::<AgentVmSpec>(&dir.join(SPEC_FILE))? else {
            tracing::warn!(dir = %dir.display(), "VM directory without spec.json; skipped");
            continue;
        };
        // A state file that cannot be read only loses the failure reason; the VM still counts.
        let last_state = read_json::<VmRuntime>(&dir.join(STATE_FILE)).unwrap_or_else(|error| {
            tracing::warn!(error = %error, "unreadable state.json");
            None
        });
        saved.push(SavedVm { spec, last_state });
    }
    saved.sort_by_key(|vm| vm.spec.id);
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::{VmDisk, VmState};
    use std::os::unix::fs::PermissionsExt;

    fn spec(name: &str) -> AgentVmSpec {
        AgentVmSpec {
            id: VmId::new(),
            name: name.to_owned(),
            cpus: 1,
            memory_mib: 128,
            disk: VmDisk::None,
            kernel: None,
            initrd: None,
            cmdline: None,
            nics: vec![],
            port_forwards: vec![],
            seed: None,
            devices: Default::default(),
        }
    }

    #[test]
    fn secret_files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("code");
        write_atomic(&path, b"first", Access::Secret).expect("write");
        write_atomic(&path, b"second", Access::Secret).expect("overwrite");
        assert_eq!(
            read_optional(&path).expect("read").as_deref(),
            Some("second")
        );
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        remove_optional(&path).expect("remove");
        remove_optional(&path).expect("remove again");
        assert_eq!(read_optional(&path).expect("read"), None);
    }

    #[test]
    fn loads_saved_vms_and_skips_unfinished_ones() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let failed = spec("failed");
        let stopped = spec("stopped");
        for vm in [&failed, &stopped] {
            let dir = vm_dir(data_dir.path(), vm.id);
            create_private_dir(&dir).expect("mkdir");
            save_spec(&dir, vm).expect("save spec");
        }
        let failure = VmRuntime {
            vm_id: failed.id,
            state: VmState::Failed,
            reason: Some("killed".into()),
        };
        save_state(&vm_dir(data_dir.path(), failed.id), &failure).expect("save state");
        create_private_dir(&vm_dir(data_dir.path(), VmId::new())).expect("unfinished dir");

        let loaded = load_vms(data_dir.path()).expect("load");
        assert_eq!(loaded.len(), 2);
        let by_id = |id| loaded.iter().find(|vm| vm.spec.id == id).expect("loaded");
        assert_eq!(by_id(failed.id).last_state, Some(failure));
        assert_eq!(by_id(stopped.id).spec, stopped);
        assert_eq!(by_id(stopped.id).last_state, None);
    }

    #[test]
    fn no_vms_directory_means_no_vms() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(load_vms(data_dir.path()).expect("load"), Vec::new());
    }
}
