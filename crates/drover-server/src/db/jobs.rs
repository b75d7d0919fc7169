//! The jobs table and its conversion to [`drover_api::Job`]. A job's operation (its `JobSpec`)
//! is stored as JSON text that this module does not interpret.

use super::{Db, DbError, from_json, parse_id, to_json};
use chrono::{DateTime, Utc};
use drover_api::{ErrorDetail, Job, JobId, JobStatus, JobTarget};

#[derive(sqlx::FromRow)]
struct JobRow {
    seq: i64,
    id: String,
    kind: String,
    description: String,
    target_kind: String,
    target_id: String,
    target_name: String,
    status: String,
    progress: i64,
    steps: String,
    error: Option<String>,
    owner: String,
    restarted_from: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
}

impl TryFrom<JobRow> for Job {
    type Error = DbError;

    fn try_from(row: JobRow) -> Result<Job, DbError> {
        Ok(Job {
            id: parse_id("job id", &row.id)?,
            status: JobStatus::parse(&row.status).ok_or_else(|| DbError::Corrupt {
                what: "job status",
                value: row.status.clone(),
            })?,
            progress: u8::try_from(row.progress.clamp(0, 100)).unwrap_or(100),
            steps: from_json("job steps", &row.steps)?,
            error: row
                .error
                .as_deref()
                .map(|text| from_json::<ErrorDetail>("job error", text))
                .transpose()?,
            restarted_from: row
                .restarted_from
                .as_deref()
                .map(|id| parse_id("job id", id))
                .transpose()?,
            kind: row.kind,
            description: row.description,
            target: JobTarget {
                kind: row.target_kind,
                id: row.target_id,
                name: row.target_name,
            },
            owner: row.owner,
            created_at: row.created_at,
            started_at: row.started_at,
            ended_at: row.ended_at,
        })
    }
}

pub async fn insert(db: &Db, job: &Job, spec_json: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, description, target_kind, target_id, target_name, status, \
         progress, steps, error, owner, spec, restarted_from, created_at, started_at, ended_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job.id.to_string())
    .bind(job.kind.clone())
    .bind(job.description.clone())
    .bind(job.target.kind.clone())
    .bind(job.target.id.clone())
    .bind(job.target.name.clone())
    .bind(job.status.as_str())
    .bind(i64::from(job.progress))
    .bind(to_json("job steps", &job.steps)?)
    .bind(
        job.error
            .as_ref()
            .map(|e| to_json("job error", e))
            .transpose()?,
    )
    .bind(job.owner.clone())
    .bind(spec_json.to_owned())
    .bind(job.restarted_from.map(|id| id.to_string()))
    .bind(job.created_at)
    .bind(job.started_at)
    .bind(job.ended_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Writes a job's progress, steps, outcome and times.
pub async fn update(db: &Db, job: &Job) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE jobs SET status = ?, progress = ?, steps = ?, error = ?, started_at = ?, \
         ended_at = ? WHERE id = ?",
    )
    .bind(job.status.as_str())
    .bind(i64::from(job.progress))
    .bind(to_json("job steps", &job.steps)?)
    .bind(
        job.error
            .as_ref()
            .map(|e| to_json("job error", e))
            .transpose()?,
    )
    .bind(job.started_at)
    .bind(job.ended_at)
    .bind(job.id.to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Moves a job from `from` to `to` only if it is still in `from`; whether it moved.
pub async fn transition(
    db: &Db,
    id: JobId,
    from: JobStatus,
    to: JobStatus,
) -> Result<bool, DbError> {
    let moved = sqlx::query(
        "UPDATE jobs SET status = ?, \
         started_at = CASE WHEN ? = 'running' THEN ? ELSE started_at END, \
         ended_at = CASE WHEN ? IN ('completed', 'failed', 'canceled') THEN ? ELSE ended_at END \
         WHERE id = ? AND status = ?",
    )
    .bind(to.as_str())
    .bind(to.as_str())
    .bind(Utc::now())
    .bind(to.as_str())
    .bind(Utc::now())
    .bind(id.to_string())
    .bind(from.as_str())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(moved > 0)
}

pub async fn get(db: &Db, id: JobId) -> Result<Option<Job>, DbError> {
    let row: Option<JobRow> = sqlx::query_as("SELECT * FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(db.pool())
        .await?;
    row.map(Job::try_from).transpose()
}

/// The stored operation of a job, as written by [`insert`].
pub async fn spec(db: &Db, id: JobId) -> Result<Option<String>, DbError> {
    Ok(sqlx::query_scalar("SELECT spec FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(db.pool())
        .await?)
}

/// Up to `limit` jobs, newest first, older than the job numbered `before` when given. Each job
/// comes with its sequence number, the key of the next page.
pub async fn list(
    db: &Db,
    status: Option<JobStatus>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<(i64, Job)>, DbError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM jobs WHERE 1 = 1");
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(before) = before {
        query.push(" AND seq < ").push_bind(before);
    }
    query
        .push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(limit));
    let rows: Vec<JobRow> = query.build_query_as().fetch_all(db.pool()).await?;
    rows.into_iter()
        .map(|row| {
            let seq = row.seq;
            Job::try_from(row).map(|job| (seq, job))
        })
        .collect()
}

/// Fails every job that is Queued or Running, with `error`: at server start, no job task runs.
pub async fn fail_unfinished(db: &Db, error: &ErrorDetail) -> Result<u64, DbError> {
    Ok(sqlx::query(
        "UPDATE jobs SET status = 'failed', error = ?, ended_at = ? \
         WHERE status IN ('queued', 'running')",
    )
    .bind(to_json("job error", error)?)
    .bind(Utc::now())
    .execute(db.pool())
    .await?
    .rows_affected())
}
