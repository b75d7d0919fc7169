//! The transfer endpoint (`agent.transfer_port`, mutual TLS): `GET /v1/shares/{name}/files/{*path}`
//! serves a share's file and `GET /v1/vms/{id}/files/{name}` a stopped VM's, both with HTTP
//! ranges. The file's SHA-256 is its strong ETag: a client
//! resuming with `If-Range` gets the rest of the same version or, if the file changed, the whole
//! new one; `If-Match` refuses another version outright. Bulk data never passes the server.

use super::AgentState;
use crate::error::AgentError;
use crate::vm_files;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_api::VmId;
use drover_api::library::{AgentCachedImage, AgentFetch};
use drover_api::transfer::VmFilesPlace;
use drover_image::range::{self, RangeAnswer, RangeRequest};
use drover_image::serve::{Served, read_ahead};
use std::sync::Arc;

/// `POST /v1/images/fetch` (control port): caches another agent's file on this host, agent to
/// agent, and answers once it is verified.
pub async fn fetch(
    State(state): State<Arc<AgentState>>,
    body: Result<axum::Json<AgentFetch>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::Json<AgentCachedImage>, AgentError> {
    let axum::Json(request) = body?;
    let client = state.enrollment.peer_client()?;
    let in_use = state.registry.disk_images();
    let mut tracker = state.transfers.track(None, 0);
    Ok(axum::Json(
        state
            .images
            .ensure(&client, &request, in_use, &mut tracker)
            .await?,
    ))
}

/// `GET /v1/shares/{name}/files/{*path}` (transfer port): a library file.
pub async fn get_file(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let Path((name, relative)) = path?;
    let root = state.library.root(&name)?;
    let file_path = drover_image::share::resolve(&root, &relative)?;
    let file =
        tokio::fs::File::open(&file_path)
            .await
            .map_err(|_| drover_image::ImageError::Missing {
                path: file_path.clone(),
            })?;
    serve(&state, file, file_path, &headers).await
}

/// `GET /v1/vms/{id}/files/{name}[?share=S]` (transfer port): a file of a VM without a process,
/// from its host directory or its stored copy in a share.
pub async fn get_vm_file(
    State(state): State<Arc<AgentState>>,
    path: Result<Path<(VmId, String)>, PathRejection>,
    query: Result<Query<VmFilesPlace>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AgentError> {
    let Path((vm_id, name)) = path?;
    let Query(place) = query?;
    if place.share.is_none() {
        vm_files::check_no_process(&state, vm_id)?;
    }
    let dir = vm_files::place_dir(&state, vm_id, &place)?;
    let file_path = vm_files::file_path(&dir, vm_id, &name)?;
    let file = tokio::fs::File::open(&file_path)
        .await
        .map_err(|_| AgentError::VmFileNotFound { vm_id, name })?;
    serve(&state, file, file_path, &headers).await
}

/// Answers a `GET` of an open file: the whole file or one range, with the file's SHA-256 as its
/// strong ETag, or a refusal (`If-Match` of another version, a range outside the file). The
/// receiver checks the bytes against that SHA-256; the sender only reads them
/// (`drover_image::serve`).
async fn serve(
    state: &Arc<AgentState>,
    file: tokio::fs::File,
    file_path: std::path::PathBuf,
    headers: &HeaderMap,
) -> Result<Response, AgentError> {
    let length = file
        .metadata()
        .await
        .map_err(|error| AgentError::Internal(error.into()))?
        .len();
    let sha256 = state.library.fingerprint(&file_path).await?;
    let etag = range::etag(&sha256);
    let text = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let request = RangeRequest {
        range: text(header::RANGE),
        if_range: text(header::IF_RANGE),
        if_match: text(header::IF_MATCH),
    };
    let (status, start, count) = match range::decide(request, &etag, length) {
        RangeAnswer::Full => (StatusCode::OK, 0, length),
        RangeAnswer::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAnswer::PreconditionFailed => {
            return Ok((StatusCode::PRECONDITION_FAILED, [(header::ETAG, etag)]).into_response());
        }
        RangeAnswer::NotSatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{length}"))],
            )
                .into_response());
        }
    };
    let served = Served {
        path: file_path,
        start,
        count,
    };
    let blocks = read_ahead(file.into_std().await, served);
    let chunks = Box::pin(futures_util::StreamExt::map(blocks, |block| {
        block.map(axum::body::Bytes::from)
    }));
    let body = match state.transfer_rate_limit {
        Some(rate) => Body::from_stream(paced(chunks, rate)),
        None => Body::from_stream(chunks),
    };
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    let value = |text: String| {
        HeaderValue::from_str(&text).map_err(|error| AgentError::Internal(error.into()))
    };
    response_headers.insert(header::ETAG, value(etag)?);
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(header::CONTENT_LENGTH, value(count.to_string())?);
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        response_headers.insert(
            header::CONTENT_RANGE,
            value(format!("bytes {start}-{end}/{length}"))?,
        );
    }
    Ok(response)
}

/// Sends `chunks` no faster than `rate` bytes per second: each chunk waits until the bytes
/// before it are due.
fn paced<S>(chunks: S, rate: u64) -> impl futures_util::Stream<Item = S::Item>
where
    S: futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Unpin,
{
    let started = tokio::time::Instant::now();
    futures_util::stream::unfold((chunks, 0_u64), move |(mut chunks, sent)| async move {
        let chunk = futures_util::StreamExt::next(&mut chunks).await?;
        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(started + due).await;
        let length = chunk.as_ref().map_or(0, |bytes| bytes.len() as u64);
        Some((chunk, (chunks, sent + length)))
    })
}
