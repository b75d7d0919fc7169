//! Checkpoints of VMs and their conversion to the API's type. A VM's checkpoints form a tree
//! through `parent_id`; one of them is `current`. Deleting one hands its children to its parent.

use super::{Db, DbError, duplicate_as, parse_id};
use chrono::{DateTime, Utc};
use drover_api::{Checkpoint, CheckpointId, VmId};

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    id: String,
    vm_id: String,
    name: String,
    with_memory: bool,
    parent_id: Option<String>,
    current: bool,
    created_at: DateTime<Utc>,
}

impl TryFrom<CheckpointRow> for Checkpoint {
    type Error = DbError;

    fn try_from(row: CheckpointRow) -> Result<Checkpoint, DbError> {
        Ok(Checkpoint {
            id: parse_id("checkpoint id", &row.id)?,
            vm_id: parse_id("VM id", &row.vm_id)?,
            name: row.name,
            with_memory: row.with_memory,
            parent: row
                .parent_id
                .as_deref()
                .map(|id| parse_id("checkpoint id", id))
                .transpose()?,
            current: row.current,
            on_host: None,
            created_at: row.created_at,
        })
    }
}

const SELECT: &str = "SELECT id, vm_id, name, with_memory, parent_id, current, created_at \
                      FROM checkpoints";

/// A transaction that takes SQLite's write lock at once: one that reads first could not take it
/// later if another connection wrote meanwhile (`SQLITE_BUSY` without waiting).
async fn write_transaction(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, DbError> {
    Ok(db.pool().begin_with("BEGIN IMMEDIATE").await?)
}

/// The VM's checkpoints, oldest first.
pub async fn list(db: &Db, vm_id: VmId) -> Result<Vec<Checkpoint>, DbError> {
    let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE vm_id = ? ORDER BY created_at, id"
    )))
    .bind(vm_id.to_string())
    .fetch_all(db.pool())
    .await?;
    rows.into_iter().map(Checkpoint::try_from).collect()
}

/// The VM's checkpoint with this id or name.
pub async fn get(db: &Db, vm_id: VmId, id_or_name: &str) -> Result<Option<Checkpoint>, DbError> {
    let row: Option<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE vm_id = ? AND (id = ? OR name = ?)"
    )))
    .bind(vm_id.to_string())
    .bind(id_or_name.to_owned())
    .bind(id_or_name.to_owned())
    .fetch_optional(db.pool())
    .await?;
    row.map(Checkpoint::try_from).transpose()
}

pub async fn count(db: &Db, vm_id: VmId) -> Result<usize, DbError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM checkpoints WHERE vm_id = ?")
        .bind(vm_id.to_string())
        .fetch_one(db.pool())
        .await?;
    super::unsigned("checkpoint count", count)
}

/// Records a new checkpoint as the VM's current one, a child of the previous current one.
pub async fn insert(
    db: &Db,
    id: CheckpointId,
    vm_id: VmId,
    name: &str,
    with_memory: bool,
) -> Result<Checkpoint, DbError> {
    let mut transaction = write_transaction(db).await?;
    let parent: Option<String> =
        sqlx::query_scalar("SELECT id FROM checkpoints WHERE vm_id = ? AND current")
            .bind(vm_id.to_string())
            .fetch_optional(&mut *transaction)
            .await?;
    sqlx::query("UPDATE checkpoints SET current = 0 WHERE vm_id = ?")
        .bind(vm_id.to_string())
        .execute(&mut *transaction)
        .await?;
    sqlx::query(
        "INSERT INTO checkpoints (id, vm_id, name, with_memory, parent_id, current, created_at) \
         VALUES (?, ?, ?, ?, ?, 1, ?)",
    )
    .bind(id.to_string())
    .bind(vm_id.to_string())
    .bind(name.to_owned())
    .bind(with_memory)
    .bind(parent)
    .bind(Utc::now())
    .execute(&mut *transaction)
    .await
    .map_err(duplicate_as("checkpoint name"))?;
    transaction.commit().await?;
    get(db, vm_id, &id.to_string())
        .await?
        .ok_or_else(|| DbError::Corrupt {
            what: "checkpoint",
            value: id.to_string(),
        })
}

/// Marks the checkpoint the VM was just restored to as its current one.
pub async fn make_current(db: &Db, vm_id: VmId, id: CheckpointId) -> Result<(), DbError> {
    sqlx::query("UPDATE checkpoints SET current = (id = ?) WHERE vm_id = ?")
        .bind(id.to_string())
        .bind(vm_id.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Deletes a checkpoint; its children become its parent's, and when it was current its parent
/// becomes current.
pub async fn delete(db: &Db, vm_id: VmId, id: CheckpointId) -> Result<(), DbError> {
    let mut transaction = write_transaction(db).await?;
    let Some((parent, current)): Option<(Option<String>, bool)> =
        sqlx::query_as("SELECT parent_id, current FROM checkpoints WHERE id = ? AND vm_id = ?")
            .bind(id.to_string())
            .bind(vm_id.to_string())
            .fetch_optional(&mut *transaction)
            .await?
    else {
        return Ok(());
    };
    sqlx::query("UPDATE checkpoints SET parent_id = ? WHERE parent_id = ?")
        .bind(parent.clone())
        .bind(id.to_string())
        .execute(&mut *transaction)
        .await?;
    if current && let Some(parent) = &parent {
        sqlx::query("UPDATE checkpoints SET current = 1 WHERE id = ?")
            .bind(parent.clone())
            .execute(&mut *transaction)
            .await?;
    }
    sqlx::query("DELETE FROM checkpoints WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(())
}
