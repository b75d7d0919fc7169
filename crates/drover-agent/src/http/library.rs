//! `/v1/library/shares/...` on the control port: the server adds shares, asks for their files
//! (indexed and fingerprinted), imports files and URLs into them, and removes files. Image work
//! runs on blocking threads; an import downloads a URL under a hidden temporary name first.

use super::AgentState;
use crate::error::AgentError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::library::{AgentImport, AgentPackage, AgentShare, LibraryFile};
use drover_image::package;
use drover_image::share::{self, Partial};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, drover_image::ImageError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AgentError::Internal(error.into()))?
        .map_err(AgentError::from)
}

/// `PUT /v1/library/shares/{name}`.
pub async fn add_share(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AgentShare>, JsonRejection>,
) -> Result<StatusCode, AgentError> {
    let Path(name) = path?;
    let Json(request) = body?;
    state
        .library
        .add_share(&name, std::path::Path::new(&request.path))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/library/shares/{name}/files`: every image and ISO in the share. Files that are not
/// images (a VMDK's flat extent, notes) are left out, with a log line.
pub async fn files(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<LibraryFile>>, AgentError> {
    let Path(name) = path?;
    let root = state.library.root(&name)?;
    let scan_root = root.clone();
    let relatives = blocking(move || share::scan(&scan_root)).await?;
    let mut found = Vec::with_capacity(relatives.len());
    for relative in relatives {
        let absolute = root.join(&relative);
        let describe_root = root.clone();
        match blocking(move || share::describe(&describe_root, &relative)).await {
            Ok(file) => {
                state.library.remember(&absolute, &file.sha256);
                found.push(file);
            }
            Err(error) => {
                tracing::info!(file = %absolute.display(), %error, "not indexed");
            }
        }
    }
    Ok(Json(found))
}

/// `POST /v1/library/shares/{name}/import`.
pub async fn import(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AgentImport>, JsonRejection>,
) -> Result<Json<LibraryFile>, AgentError> {
    let Path(name) = path?;
    let Json(request) = body?;
    let root = state.library.root(&name)?;
    let file = import_with(&root, request, share::import).await?;
    state.library.remember(&root.join(&file.path), &file.sha256);
    tracing::info!(share = %name, file = %file.path, sha256 = %file.sha256, "imported");
    Ok(Json(file))
}

/// `POST /v1/library/shares/{name}/packages`: an OVA, OVF, VMX or lone disk, as files plus the
/// hardware the package describes; all of its disks or none.
pub async fn import_package(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AgentImport>, JsonRejection>,
) -> Result<Json<AgentPackage>, AgentError> {
    let Path(name) = path?;
    let Json(request) = body?;
    let root = state.library.root(&name)?;
    let imported = import_with(&root, request, package::import).await?;
    for file in &imported.files {
        state.library.remember(&root.join(&file.path), &file.sha256);
        tracing::info!(share = %name, file = %file.path, sha256 = %file.sha256, "imported");
    }
    Ok(Json(imported))
}

/// Runs `import` on a blocking thread on the request's source: a file on this server, or a URL
/// downloaded first next to its final place, hidden, and removed when the import ends. The
/// download keeps the source's file name, whose extension says what the file is.
async fn import_with<T: Send + 'static>(
    root: &std::path::Path,
    request: AgentImport,
    import: fn(&std::path::Path, &std::path::Path, &str) -> Result<T, drover_image::ImageError>,
) -> Result<T, AgentError> {
    let is_url = request.source.starts_with("http://") || request.source.starts_with("https://");
    let import_root = root.to_owned();
    if is_url {
        let source_name = drover_api::library::file_name_from_url(&request.source);
        let download_dir = Partial::dir_next_to(&share::resolve(root, &request.name)?, "download");
        let downloaded = download_dir.join(source_name);
        tokio::fs::create_dir(&download_dir)
            .await
            .map_err(|error| AgentError::Internal(error.into()))?;
        let outcome = async {
            download_to(&request.source, &downloaded).await?;
            blocking(move || import(&import_root, &downloaded, &request.name)).await
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&download_dir).await;
        outcome
    } else {
        let source = std::path::PathBuf::from(&request.source);
        if !source.is_absolute() {
            return Err(AgentError::RequestInvalid(format!(
                "the source '{}' must be an absolute path on the library server or an http(s) URL",
                request.source
            )));
        }
        blocking(move || import(&import_root, &source, &request.name)).await
    }
}

/// Streams `url` into `target`; any failure midway (a short body, a reset) is an error.
async fn download_to(url: &str, target: &std::path::Path) -> Result<(), AgentError> {
    let failed = |detail: String| AgentError::DownloadFailed {
        url: url.to_owned(),
        detail,
    };
    let response = reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| failed(error.to_string()))?;
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| failed(format!("the connection broke: {error}")))?;
        file.write_all(&chunk)
            .await
            .map_err(|error| failed(error.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|error| failed(error.to_string()))
}

/// `DELETE /v1/library/shares/{name}/files/{*path}` (idempotent).
pub async fn remove_file(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, AgentError> {
    let Path((name, relative)) = path?;
    let root = state.library.root(&name)?;
    blocking(move || share::remove(&root, &relative)).await?;
    Ok(StatusCode::NO_CONTENT)
}
