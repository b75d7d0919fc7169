//! Checkpoints as qcow2 internal snapshots of the VM's disk, named by a tag: `qemu-img snapshot`
//! while no process runs, and QMP `snapshot-save` / `snapshot-load` / `snapshot-delete` jobs
//! (QEMU 6+) while one does, with the guest's memory stored in the same disk. Only the VM's own
//! disk takes part: the read-only seed disk cannot hold a snapshot, so the device list names
//! the disk alone.

use serde::Deserialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use super::disk;
use crate::{CheckpointOp, DiskCheckpoint, DriverError};
use drover_qmp::Qmp;

/// The block node of the VM's disk (see `command_line`).
const DISK_NODE: &str = "disk0";

/// Bound on one snapshot job: saving a few GiB of memory under load takes a while.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// How often a job's state is asked for; the tiny guest's jobs take a fraction of a second.
const JOB_POLL: Duration = Duration::from_millis(20);

/// The checkpoints on `disk`, oldest first; none when the VM has no disk.
pub async fn list(qemu_img: &Path, disk_path: &Path) -> Result<Vec<DiskCheckpoint>, DriverError> {
    if !disk_path.exists() {
        return Ok(Vec::new());
    }
    let info = disk::info(qemu_img, disk_path).await?;
    Ok(info
        .snapshots
        .into_iter()
        .map(|snapshot| DiskCheckpoint {
            tag: snapshot.name,
            vm_state_bytes: snapshot.vm_state_size,
        })
        .collect())
}

/// `qemu-img snapshot -c|-a|-d TAG DISK` on a disk no process has open.
pub async fn offline(
    qemu_img: &Path,
    disk_path: &Path,
    op: CheckpointOp,
    tag: &str,
) -> Result<(), DriverError> {
    let flag = match op {
        CheckpointOp::Create => "-c",
        CheckpointOp::Restore => "-a",
        CheckpointOp::Delete => "-d",
    };
    disk::run(
        qemu_img,
        &[
            "snapshot".as_ref(),
            flag.as_ref(),
            tag.as_ref(),
            disk_path.as_os_str(),
        ],
    )
    .await
    .map(drop)
    .map_err(|error| match error {
        DriverError::Command { output, .. } => DriverError::Snapshot {
            operation: format!("qemu-img snapshot {flag} {tag}"),
            reason: output,
        },
        other => other,
    })
}

/// The QMP command and arguments of `op` on a live VM. Create and restore carry the memory
/// (`vmstate`) in the disk itself.
fn job_command(op: CheckpointOp, job_id: &str, tag: &str) -> (&'static str, serde_json::Value) {
    match op {
        CheckpointOp::Create => (
            "snapshot-save",
            json!({"job-id": job_id, "tag": tag, "vmstate": DISK_NODE, "devices": [DISK_NODE]}),
        ),
        CheckpointOp::Restore => (
            "snapshot-load",
            json!({"job-id": job_id, "tag": tag, "vmstate": DISK_NODE, "devices": [DISK_NODE]}),
        ),
        CheckpointOp::Delete => (
            "snapshot-delete",
            json!({"job-id": job_id, "tag": tag, "devices": [DISK_NODE]}),
        ),
    }
}

/// Runs `op` as a QMP job and waits until it concluded. QEMU stops the vCPUs for a save or a
/// load and starts them again afterwards if they ran, so the guest sees one instant.
pub async fn online(qmp: &Qmp, op: CheckpointOp, tag: &str) -> Result<(), DriverError> {
    // Checked first: a load QEMU refuses still leaves the vCPUs stopped.
    let exists = online_tags(qmp).await?.iter().any(|known| known == tag);
    let refusal = match op {
        CheckpointOp::Create if exists => Some("the disk already has a checkpoint of that tag"),
        CheckpointOp::Restore | CheckpointOp::Delete if !exists => {
            Some("the disk has no checkpoint of that tag")
        }
        _ => None,
    };
    if let Some(reason) = refusal {
        return Err(DriverError::Snapshot {
            operation: format!("checkpoint {tag}"),
            reason: reason.into(),
        });
    }
    let job_id = format!("checkpoint-{tag}");
    let (command, arguments) = job_command(op, &job_id, tag);
    qmp.execute(command, arguments)
        .await
        .map_err(|source| DriverError::Monitor {
            command: command.into(),
            source,
        })?;
    let outcome = wait_for_job(qmp, &job_id).await;
    // A concluded job stays listed until dismissed; a job id must be free for the next one.
    let dismissed = qmp.execute("job-dismiss", json!({"id": job_id})).await;
    match outcome? {
        Some(reason) => Err(DriverError::Snapshot {
            operation: format!("{command} {tag}"),
            reason,
        }),
        None => dismissed.map(drop).map_err(|source| DriverError::Monitor {
            command: "job-dismiss".into(),
            source,
        }),
    }
}

#[derive(Debug, Deserialize)]
struct BlockNode {
    #[serde(rename = "node-name", default)]
    node_name: String,
    image: NodeImage,
}

#[derive(Debug, Deserialize)]
struct NodeImage {
    #[serde(default)]
    snapshots: Vec<disk::SnapshotInfo>,
}

/// The checkpoint tags on the VM's disk, as the running QEMU sees them.
async fn online_tags(qmp: &Qmp) -> Result<Vec<String>, DriverError> {
    let value = qmp
        .execute("query-named-block-nodes", json!({"flat": true}))
        .await
        .map_err(|source| DriverError::Monitor {
            command: "query-named-block-nodes".into(),
            source,
        })?;
    let nodes: Vec<BlockNode> =
        serde_json::from_value(value).map_err(|error| DriverError::Snapshot {
            operation: "query-named-block-nodes".into(),
            reason: format!("unexpected reply: {error}"),
        })?;
    Ok(nodes
        .into_iter()
        .find(|node| node.node_name == DISK_NODE)
        .map(|node| {
            node.image
                .snapshots
                .into_iter()
                .map(|snapshot| snapshot.name)
                .collect()
        })
        .unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct JobInfo {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// Polls `query-jobs` until `job_id` concluded; its error, if it failed.
async fn wait_for_job(qmp: &Qmp, job_id: &str) -> Result<Option<String>, DriverError> {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let value = qmp
            .execute("query-jobs", serde_json::Value::Null)
            .await
            .map_err(|source| DriverError::Monitor {
                command: "query-jobs".into(),
                source,
            })?;
        let jobs: Vec<JobInfo> =
            serde_json::from_value(value).map_err(|error| DriverError::Snapshot {
                operation: "query-jobs".into(),
                reason: format!("unexpected reply: {error}"),
            })?;
        match jobs.into_iter().find(|job| job.id == job_id) {
            Some(job) if job.status == "concluded" => return Ok(job.error),
            Some(_) => {}
            None => {
                return Err(DriverError::Snapshot {
                    operation: job_id.into(),
                    reason: "the job vanished before it concluded".into(),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(DriverError::Snapshot {
                operation: job_id.into(),
                reason: format!("not done after {JOB_TIMEOUT:?}"),
            });
        }
        tokio::time::sleep(JOB_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_name_the_vm_disk_only() {
        let (command, arguments) = job_command(CheckpointOp::Create, "j", "t");
        assert_eq!(command, "snapshot-save");
        assert_eq!(
            arguments,
            json!({"job-id": "j", "tag": "t", "vmstate": "disk0", "devices": ["disk0"]})
        );
        let (command, arguments) = job_command(CheckpointOp::Delete, "j", "t");
        assert_eq!(command, "snapshot-delete");
        assert_eq!(
            arguments,
            json!({"job-id": "j", "tag": "t", "devices": ["disk0"]})
        );
        assert_eq!(
            job_command(CheckpointOp::Restore, "j", "t").0,
            "snapshot-load"
        );
    }
}
