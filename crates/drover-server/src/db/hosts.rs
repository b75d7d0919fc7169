//! The hosts table and its conversion to [`drover_api::Host`].

use super::{Db, DbError, duplicate_as, lookup, parse_id, signed, unsigned};
use chrono::{DateTime, Utc};
use drover_api::agent::AgentHostInfo;
use drover_api::{Accelerator, Host, HostId, HostState};

const SELECT: &str = "SELECT hosts.*, \
    (SELECT name FROM host_groups WHERE host_groups.id = hosts.group_id) AS group_name, \
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
    cpu_load_percent: i64,
    accelerator: String,
    agent_version: String,
    last_seen: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    vm_count: i64,
    group_id: String,
    group_name: String,
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
            cpu_load_percent: unsigned("cpu_load_percent", row.cpu_load_percent)?,
            agent_version: row.agent_version,
            vm_count: unsigned("vm_count", row.vm_count)?,
            group_id: parse_id("host group id", &row.group_id)?,
            group_name: row.group_name,
            last_seen: row.last_seen,
            created_at: row.created_at,
        })
    }
}

fn convert(rows: Vec<HostRow>) -> Result<Vec<Host>, DbError> {
    rows.into_iter().map(Host::try_from).collect()
}

/// Stores a new host (in its `group_id`); [`DbError::Duplicate`] when its name or address is
/// taken.
pub async fn insert(db: &Db, host: &Host) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO hosts (id, name, address, state, state_reason, cpus, memory_mib, \
         memory_free_mib, disk_free_bytes, accelerator, agent_version, last_seen, created_at, \
         cpu_load_percent, group_id, maintenance) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(i64::from(host.cpu_load_percent))
    .bind(host.group_id.to_string())
    .bind(host.state == HostState::Maintenance)
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

/// Records what the agent reports: its figures, and the state and reason they earn (a host an
/// administrator put in maintenance stays there).
pub async fn apply_info(
    db: &Db,
    id: HostId,
    info: &AgentHostInfo,
    (state, reason): (HostState, Option<String>),
) -> Result<Option<Host>, DbError> {
    sqlx::query(
        "UPDATE hosts SET state = CASE WHEN maintenance THEN ? ELSE ? END, \
         state_reason = CASE WHEN maintenance THEN NULL ELSE ? END, cpus = ?, memory_mib = ?, \
         memory_free_mib = ?, disk_free_bytes = ?, accelerator = ?, agent_version = ?, \
         last_seen = ?, cpu_load_percent = ?, roles = ?, transfer_port = ? WHERE id = ?",
    )
    .bind(HostState::Maintenance.as_str())
    .bind(state.as_str())
    .bind(reason)
    .bind(i64::from(info.cpus))
    .bind(signed(info.memory_mib))
    .bind(signed(info.memory_free_mib))
    .bind(signed(info.disk_free_bytes))
    .bind(info.accelerator.as_str())
    .bind(info.agent_version.clone())
    .bind(Utc::now())
    .bind(i64::from(info.cpu_load_percent))
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

/// Puts a host in maintenance mode or takes it out. A host that is Not Responding stays so;
/// its next heartbeat brings it back in the right state.
pub async fn set_maintenance(db: &Db, id: HostId, enabled: bool) -> Result<Option<Host>, DbError> {
    sqlx::query(
        "UPDATE hosts SET maintenance = ?1, state = CASE \
         WHEN state = ?2 THEN state WHEN ?1 THEN ?3 ELSE ?4 END WHERE id = ?5",
    )
    .bind(enabled)
    .bind(HostState::NotResponding.as_str())
    .bind(HostState::Maintenance.as_str())
    .bind(HostState::Responding.as_str())
    .bind(id.to_string())
    .execute(db.pool())
    .await?;
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
