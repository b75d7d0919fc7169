//! Save and restore through a file: the vCPUs stop, QEMU's migration stream goes to
//! `saved.state` in the VM's directory and the process ends; a later start runs QEMU with
//! `-incoming defer`, feeds it the file and continues the guest where it was.

use serde::Deserialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use super::VmFiles;
use crate::DriverError;
use drover_qmp::Qmp;

/// Bound on writing or reading the state: a few GiB of memory on a slow disk.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(20);

/// The `channels` argument of `migrate` and `migrate-incoming` for a file. The structured form
/// takes any path (the `file:` URI form would split one at a comma).
fn file_channel(path: &Path) -> serde_json::Value {
    json!([{
        "channel-type": "main",
        "addr": {"transport": "file", "filename": path.display().to_string(), "offset": 0},
    }])
}

fn monitor(command: &str) -> impl FnOnce(drover_qmp::QmpError) -> DriverError + '_ {
    move |source| DriverError::Monitor {
        command: command.into(),
        source,
    }
}

/// Writes the stopped guest's state to `saved.state`, complete or not at all. The caller has
/// stopped the vCPUs and ends the process afterwards.
pub async fn write(qmp: &Qmp, files: &VmFiles) -> Result<(), DriverError> {
    let partial = files.saved_state_partial();
    let result = async {
        qmp.execute("migrate", json!({"channels": file_channel(&partial)}))
            .await
            .map_err(monitor("migrate"))?;
        wait_for_migration(qmp, "save").await?;
        std::fs::rename(&partial, files.saved_state()).map_err(|source| DriverError::Io {
            path: files.saved_state(),
            source,
        })
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Loads `saved.state` into a QEMU started with `-incoming defer`; the guest is paused after.
pub async fn read(qmp: &Qmp, files: &VmFiles) -> Result<(), DriverError> {
    qmp.execute(
        "migrate-incoming",
        json!({"channels": file_channel(&files.saved_state())}),
    )
    .await
    .map_err(monitor("migrate-incoming"))?;
    wait_for_migration(qmp, "restore").await
}

/// Removes the saved state; a missing one is fine.
pub fn discard(files: &VmFiles) -> Result<(), DriverError> {
    for path in [files.saved_state(), files.saved_state_partial()] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DriverError::Io { path, source }),
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct MigrationInfo {
    #[serde(default)]
    status: Option<String>,
    #[serde(rename = "error-desc", default)]
    error_desc: Option<String>,
}

/// What a `query-migrate` status means for a transfer that was started.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Done,
    Going,
    Failed(String),
}

fn progress(info: &MigrationInfo) -> Progress {
    match info.status.as_deref() {
        Some("completed") => Progress::Done,
        Some(status @ ("failed" | "cancelled")) => Progress::Failed(
            info.error_desc
                .clone()
                .unwrap_or_else(|| format!("the transfer ended {status}")),
        ),
        _ => Progress::Going,
    }
}

/// Polls `query-migrate` until the transfer completed.
async fn wait_for_migration(qmp: &Qmp, operation: &str) -> Result<(), DriverError> {
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let failed = |reason: String| DriverError::Snapshot {
        operation: operation.into(),
        reason,
    };
    loop {
        let value = qmp
            .execute("query-migrate", serde_json::Value::Null)
            .await
            .map_err(monitor("query-migrate"))?;
        let info: MigrationInfo = serde_json::from_value(value)
            .map_err(|error| failed(format!("unexpected query-migrate reply: {error}")))?;
        match progress(&info) {
            Progress::Done => return Ok(()),
            Progress::Failed(reason) => return Err(failed(reason)),
            Progress::Going if Instant::now() >= deadline => {
                return Err(failed(format!("not done after {TRANSFER_TIMEOUT:?}")));
            }
            Progress::Going => tokio::time::sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_status_table() {
        let info = |status: Option<&str>, error: Option<&str>| MigrationInfo {
            status: status.map(str::to_owned),
            error_desc: error.map(str::to_owned),
        };
        assert_eq!(progress(&info(Some("completed"), None)), Progress::Done);
        assert_eq!(progress(&info(Some("active"), None)), Progress::Going);
        assert_eq!(progress(&info(None, None)), Progress::Going);
        assert_eq!(
            progress(&info(Some("failed"), Some("disk full"))),
            Progress::Failed("disk full".into())
        );
        assert_eq!(
            progress(&info(Some("cancelled"), None)),
            Progress::Failed("the transfer ended cancelled".into())
        );
    }

    #[test]
    fn the_channel_names_the_file_whole() {
        assert_eq!(
            file_channel(Path::new("/vms/a,b/saved.state"))[0]["addr"]["filename"],
            "/vms/a,b/saved.state"
        );
    }
}
