//! The VM's disk, made with `qemu-img`: a blank qcow2, or a qcow2 overlay (linked clone) on an
//! image so the image itself is never written.

use serde::Deserialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::DriverError;

/// `qemu-img create -f qcow2 DISK SIZE`.
pub async fn create_blank(
    qemu_img: &Path,
    disk: &Path,
    size_bytes: u64,
) -> Result<(), DriverError> {
    let size = size_bytes.to_string();
    run(
        qemu_img,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            disk.as_os_str(),
            size.as_ref(),
        ],
    )
    .await
    .map(drop)
}

/// A qcow2 overlay on `image`. The backing path is stored absolute so the overlay does not depend
/// on where it is opened from.
pub async fn create_overlay(qemu_img: &Path, disk: &Path, image: &Path) -> Result<(), DriverError> {
    let image = std::path::absolute(image).map_err(|source| DriverError::Io {
        path: image.to_path_buf(),
        source,
    })?;
    let format = image_format(qemu_img, &image).await?;
    run(
        qemu_img,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            image.as_os_str(),
            "-F".as_ref(),
            format.as_ref(),
            disk.as_os_str(),
        ],
    )
    .await
    .map(drop)
}

/// Points an existing overlay at `image` when it reads through another file: an overlay that
/// came from another host names the base image where that host keeps it. Only the header
/// changes (`rebase -u`): the base's bytes are the same, verified by SHA-256 when fetched. A
/// disk without a backing file (a full clone, a blank disk) is left alone.
pub async fn point_overlay_at(
    qemu_img: &Path,
    disk: &Path,
    image: &Path,
) -> Result<(), DriverError> {
    let image = std::path::absolute(image).map_err(|source| DriverError::Io {
        path: image.to_path_buf(),
        source,
    })?;
    let current = info(qemu_img, disk).await?.backing_filename;
    if current.is_none() || current.as_deref() == Some(image.as_path()) {
        return Ok(());
    }
    let format = image_format(qemu_img, &image).await?;
    run(
        qemu_img,
        &[
            "rebase".as_ref(),
            "-u".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            image.as_os_str(),
            "-F".as_ref(),
            format.as_ref(),
            disk.as_os_str(),
        ],
    )
    .await
    .map(drop)
}

/// What `qemu-img info` says of a disk file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<PathBuf>,
    #[serde(rename = "backing-filename-format", default)]
    pub backing_format: Option<String>,
}

/// `qemu-img info`. `-U` (force share) because base images may be open in running VMs.
pub async fn info(qemu_img: &Path, path: &Path) -> Result<ImageInfo, DriverError> {
    let output = run(
        qemu_img,
        &[
            "info".as_ref(),
            "-U".as_ref(),
            "--output=json".as_ref(),
            path.as_os_str(),
        ],
    )
    .await?;
    serde_json::from_str(&output).map_err(|error| DriverError::Command {
        program: qemu_img.display().to_string(),
        output: format!("unexpected output of qemu-img info ({error}): {output}"),
    })
}

async fn image_format(qemu_img: &Path, image: &Path) -> Result<String, DriverError> {
    Ok(info(qemu_img, image).await?.format)
}

/// Runs a helper program; its stdout on success, its stderr in the error otherwise.
async fn run(program: &Path, args: &[&OsStr]) -> Result<String, DriverError> {
    let failed = |output: String| DriverError::Command {
        program: program.display().to_string(),
        output,
    };
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| failed(format!("cannot run it: {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(failed(if stderr.is_empty() {
            format!("exited with {}", output.status)
        } else {
            stderr
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
