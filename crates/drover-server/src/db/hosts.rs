//! The hosts table and its conversion to [`drover_api::Host`].

use super::{Db, DbError, duplicate_as, lookup, parse_id, signed, unsigned};
use chrono::{DateTime, Utc};
use drover_api::agent::AgentHostInfo;
use drover_api::{Accelerator, Host, HostId, HostState};

const SELECT: &str = "SELECT hosts.*, \
    (SELECT COUNT(*) FROM vms WHERE vms.host_id = hosts.id) AS vm_count FROM hosts";

#[derive(sqlx::FromRow)]
struct HostRow {
    id: String,
    name: String,
    address: String,
    state: String,
    state_reason: Option<String>,
    cpus: i64,
    memory_mib: i64,
    memory_free_mib: i64,
    disk_free_bytes: i64,
    accelerator: String,
    agent_version: String,
    last_seen: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    vm_count: i64,
}

impl TryFrom<HostRow> for Host {
    type Error = DbError;

    fn try_from(row: HostRow) -> Result<Host, DbError> {
        let corrupt = |what, value: &str| DbError::Corrupt {
            what,
            value: value.to_owned(),
        };
        Ok(Host {
            id: parse_id("host id", &row.id)?,
            state: HostState::parse(&row.state).ok_or_else(|| corrupt("host state", &row.state))?,
            accelerator: match row.accelerator.as_str() {
                "kvm" => Accelerator::Kvm,
                "tcg" => Accelerator::Tcg,
                other => return Err(corrupt("accelerator", other)),
            },
            name: row.name,
            address: row.address,
            state_reason: row.state_reason,
            cpus: unsigned("cpus", row.cpus)?,
            memory_mib: unsigned("memory_mib", row.memory_mib)?,
            memory_free_mib: unsigned("memory_free_mib", row.memory_free_mib)?,
            disk_free_bytes: unsigned("disk_free_bytes", row.disk_free_bytes)?,
            agent_version: row.agent_version,
            vm_count: unsigned("vm_count", row.vm_count)?,
            last_seen: row.last_seen,
            created_at: row.created_at,
        })
    }
}

fn convert(rows: Vec<HostRow>) -> Result<Vec<Host>, DbError> {
    rows.into_iter().map(Host::try_from).collect()
}

/// Stores a new host; [`DbError::Duplicate`] when its name or address is taken.
pub async fn insert(db: &Db, host: &Host) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO hosts (id, name, address, state, state_reason, cpus, memory_mib, \
         memory_free_mib, disk_free_bytes, accelerator, agent_version, last_seen, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(host.id.to_string())
    .bind(host.name.clone())
    .bind(host.address.clone())
    .bind(host.state.as_str())
    .bind(host.state_reason.clone())
    .bind(i64::from(host.cpus))
    .bind(signed(host.memory_mib))
    .bind(signed(host.memory_free_mib))
    .bind(signed(host.disk_free_bytes))
    .bind(host.accelerator.as_str())
    .bind(host.agent_version.clone())
    .bind(host.last_seen)
    .bind(host.created_at)
    .execute(db.pool())
    .await
    .map_err(duplicate_as("host name or address"))?;
    Ok(())
}

pub async fn get_by_id(db: &Db, id: HostId) -> Result<Option<Host>, DbError> {
    get(db, &id.to_string()).await
}

/// Looks a host up by id or by name.
pub async fn get(db: &Db, id_or_name: &str) -> Result<Option<Host>, DbError> {
    lookup::<HostRow, Host>(db, SELECT, ("id", "name"), id_or_name).await
}

pub async fn address_taken(db: &Db, address: &str) -> Result<bool, DbError> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE address = ?")
        .bind(address.to_owned())
        .fetch_one(db.pool())
        .await?;
    Ok(count > 0)
}

/// Up to `limit` hosts in (name, id) order, after the key `after` when given.
pub async fn list(
    db: &Db,
    after: Option<(String, String)>,
    limit: u32,
) -> Result<Vec<Host>, DbError> {
    let (name, id) = after.unwrap_or_default();
    let rows: Vec<HostRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE (name, id) > (?, ?) ORDER BY name, id LIMIT ?"
    )))
    .bind(name)
    .bind(id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    convert(rows)
}

/// Every host, for starting their supervisors.
pub async fn all(db: &Db) -> Result<Vec<Host>, DbError> {
    let rows: Vec<HostRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY name")))
        .fetch_all(db.pool())
        .await?;
    convert(rows)
}

/// Records what the agent reports: its figures, and the state and reason they earn.
pub async fn apply_info(
    db: &Db,
    id: HostId,
    info: &AgentHostInfo,
    (state, reason): (HostState, Option<String>),
) -> Result<Option<Host>, DbError> {
    sqlx::query(
        "UPDATE hosts SET state = ?, state_reason = ?, cpus = ?, memory_mib = ?, \
         memory_free_mib = ?, disk_free_bytes = ?, accelerator = ?, agent_version = ?, last_seen = ?, \
         roles = ?, transfer_port = ? WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(reason)
    .bind(i64::from(info.cpus))
    .bind(signed(info.memory_mib))
    .bind(signed(info.memory_free_mib))
    .bind(signed(info.disk_free_bytes))
    .bind(info.accelerator.as_str())
    .bind(info.agent_version.clone())
    .bind(Utc::now())
    .bind(info.roles.join(","))
    .bind(info.transfer_port.map(i64::from))
    .bind(id.to_string())
    .execute(db.pool())
    .await?;
    get_by_id(db, id).await
}

/// Marks a host Not Responding; `None` when it already was (nothing to announce).
pub async fn mark_not_responding(
    db: &Db,
    id: HostId,
    reason: &str,
) -> Result<Option<Host>, DbError> {
    let changed =
        sqlx::query("UPDATE hosts SET state = ?, state_reason = ? WHERE id = ? AND state != ?")
            .bind(HostState::NotResponding.as_str())
            .bind(reason.to_owned())
            .bind(id.to_string())
            .bind(HostState::NotResponding.as_str())
            .execute(db.pool())
            .await?
            .rows_affected();
    if changed == 0 {
        return Ok(None);
    }
    get_by_id(db, id).await
}

pub async fn delete(db: &Db, id: HostId) -> Result<bool, DbError> {
    let deleted = sqlx::query("DELETE FROM hosts WHERE id = ?")
        .bind(id.to_string())
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(deleted > 0)
}
