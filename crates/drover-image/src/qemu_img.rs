//! `qemu-img` as a library: `info` (format, sizes, backing chain), `check` and `convert`, each
//! a child process whose stderr becomes the error's detail. QEMU's own block layer reads every
//! format (qcow2, raw, VMDK, VHD, VHDX), so Drover parses none of them itself.

use crate::ImageError;
use serde::Deserialize;
use std::path::Path;
use std::process::{Command, Output};

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    /// The backing files, nearest first.
    pub backing_chain: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct InfoJson {
    filename: String,
    format: String,
    virtual_size: u64,
    #[serde(default)]
    actual_size: u64,
}

fn run(path: &Path, arguments: &[&std::ffi::OsStr]) -> Result<Output, ImageError> {
    Command::new("qemu-img")
        .args(arguments)
        .output()
        .map_err(ImageError::QemuImgMissing)
        .inspect(|output| {
            tracing::debug!(path = %path.display(), status = %output.status, "qemu-img");
        })
}

fn stderr_of(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let text = text.trim();
    // qemu-img prefixes every message with its name; the path is already in our message.
    text.strip_prefix("qemu-img: ").unwrap_or(text).to_owned()
}

/// Reads the image at `path` (its whole backing chain), probing its format.
pub fn info(path: &Path) -> Result<ImageInfo, ImageError> {
    let output = run(
        path,
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "--backing-chain".as_ref(),
            "-U".as_ref(),
            path.as_os_str(),
        ],
    )?;
    if !output.status.success() {
        return Err(ImageError::Unreadable {
            path: path.to_owned(),
            detail: stderr_of(&output),
        });
    }
    let chain: Vec<InfoJson> =
        serde_json::from_slice(&output.stdout).map_err(|error| ImageError::Unreadable {
            path: path.to_owned(),
            detail: format!("qemu-img info printed no usable JSON: {error}"),
        })?;
    let mut chain = chain.into_iter();
    let Some(top) = chain.next() else {
        return Err(ImageError::Unreadable {
            path: path.to_owned(),
            detail: "qemu-img info described no image".to_owned(),
        });
    };
    Ok(ImageInfo {
        format: top.format,
        virtual_size: top.virtual_size,
        actual_size: top.actual_size,
        backing_chain: chain.map(|backing| backing.filename).collect(),
    })
}

/// `qemu-img check`: corruption is an error; leaked clusters (harmless) and formats without a
/// check (raw, VHD) pass.
pub fn check(path: &Path, format: &str) -> Result<(), ImageError> {
    let output = run(
        path,
        &[
            "check".as_ref(),
            "-f".as_ref(),
            format.as_ref(),
            "-U".as_ref(),
            path.as_os_str(),
        ],
    )?;
    match output.status.code() {
        // 0: clean; 3: leaked clusters only; 63: this format has no check.
        Some(0 | 3 | 63) => Ok(()),
        Some(2) => Err(ImageError::CheckFailed {
            path: path.to_owned(),
            detail: first_lines(&String::from_utf8_lossy(&output.stdout), &output),
        }),
        _ => Err(ImageError::Unreadable {
            path: path.to_owned(),
            detail: stderr_of(&output),
        }),
    }
}

/// The first error lines of a check report, or its stderr.
fn first_lines(report: &str, output: &Output) -> String {
    let errors: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("ERROR"))
        .take(3)
        .collect();
    if errors.is_empty() {
        stderr_of(output)
    } else {
        errors.join("; ")
    }
}

/// Converts `source` (of `format`) to a new qcow2 file at `target`, flattening any backing chain.
pub fn convert_to_qcow2(source: &Path, format: &str, target: &Path) -> Result<(), ImageError> {
    let output = run(
        source,
        &[
            "convert".as_ref(),
            "-f".as_ref(),
            format.as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            source.as_os_str(),
            target.as_os_str(),
        ],
    )?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ImageError::Unreadable {
            path: source.to_owned(),
            detail: stderr_of(&output),
        })
    }
}
