//! `/api/v1/jobs`: list (newest first), show, cancel and restart.

use super::hosts::more_than;
use super::{ApiError, ApiQuery, CurrentUser, accepted, cursor, page_size};
use crate::db;
use crate::jobs;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::{Extension, Json};
use drover_api::{Job, JobId, JobStatus, Page};
use serde::Deserialize;

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only jobs in this status (`queued`, `running`, `completed`, `failed`, `canceled`).
    pub status: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs", params(JobListQuery),
    responses((status = 200, body = Page<Job>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> Result<Json<Page<Job>>, ApiError> {
    let limit = page_size(query.limit);
    let before = match query.cursor.as_deref() {
        Some(text) => {
            let fields = cursor::decode(text, 1)?;
            let seq = fields.first().and_then(|seq| seq.parse::<i64>().ok());
            Some(seq.ok_or_else(|| {
                ApiError::InvalidQuery(format!("cursor '{text}' is not one this server made"))
            })?)
        }
        None => None,
    };
    let status = match &query.status {
        Some(text) => Some(JobStatus::parse(text).ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "'{text}' is not a job status; use one of {}",
                JobStatus::ALL.map(JobStatus::as_str).join(", ")
            ))
        })?),
        None => None,
    };
    let mut rows = db::jobs::list(&state.db, status, before, limit + 1).await?;
    let next_cursor =
        more_than(&mut rows, limit).map(|(seq, _)| cursor::encode(&[&seq.to_string()]));
    Ok(Json(Page {
        items: rows.into_iter().map(|(_, job)| job).collect(),
        next_cursor,
    }))
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::JobNotFound(text.to_owned()))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}", params(("job" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = drover_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&job)?;
    let job = db::jobs::get(&state.db, id)
        .await?
        .ok_or(ApiError::JobNotFound(job))?;
    Ok(Json(job))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", params(("job" = String, Path)),
    responses((status = 200, body = Job), (status = 409, body = drover_api::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(jobs::cancel(&state, job_id(&job)?).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job}/restart", params(("job" = String, Path)),
    responses((status = 202, body = Job), (status = 409, body = drover_api::ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    Ok(accepted(
        jobs::restart(&state, job_id(&job)?, &user.0).await?,
    ))
}
