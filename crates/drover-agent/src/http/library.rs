//! `/v1/library/shares/...` on the control port: the server adds shares, asks for their files
//! (indexed and fingerprinted), imports files and URLs into them, and removes files. Image work
//! runs on blocking threads; an import downloads a URL under a hidden temporary name first.

use super::AgentState;
use crate::error::AgentError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use drover_api::library::{AgentImport, AgentShare, LibraryFile};
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
    let is_url = request.source.starts_with("http://") || request.source.starts_with("https://");
    let file = if is_url {
        // The download lands next to its final place, hidden, and goes when the import ends.
        let download = Partial::next_to(&share::resolve(&root, &request.name)?);
        download_to(&request.source, download.path()).await?;
        let source = download.path().to_owned();
        let import_root = root.clone();
        let file = blocking(move || share::import(&import_root, &source, &request.name)).await;
        drop(download);
        file?
    } else {
        let source = std::path::PathBuf::from(&request.source);
        if !source.is_absolute() {
            return Err(AgentError::RequestInvalid(format!(
                "the source '{}' must be an absolute path on the library server or an http(s) URL",
                request.source
            )));
        }
        let import_root = root.clone();
        blocking(move || share::import(&import_root, &source, &request.name)).await?
    };
    state.library.remember(&root.join(&file.path), &file.sha256);
    tracing::info!(share = %name, file = %file.path, sha256 = %file.sha256, "imported");
    Ok(Json(file))
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
