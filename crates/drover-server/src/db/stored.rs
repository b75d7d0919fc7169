//! VMs stored in the library: where a stored VM's files are (`vms.stored`), and the two moves
//! between a host and the library, each one conditional UPDATE so that a VM is never half moved.

use super::placement::Reserves;
use super::{Db, DbError, from_json, signed, to_json};
use chrono::Utc;
use drover_api::transfer::AgentVmFile;
use drover_api::{HostId, HostState, LibraryShareId, VmId, VmState};
use serde::{Deserialize, Serialize};

/// Where a stored VM's files are: a share of its library server, and the files as they were
/// verified there (their SHA-256 checks the deploy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCopy {
    pub share_id: LibraryShareId,
    pub files: Vec<AgentVmFile>,
}

/// Makes a Stopped VM Stored on the share's library server; false when the VM is no longer
/// Stopped (the host's event stream saw it start).
pub async fn mark_stored(
    db: &Db,
    vm_id: VmId,
    library_host: HostId,
    copy: &StoredCopy,
) -> Result<bool, DbError> {
    let changed = sqlx::query(
        "UPDATE vms SET host_id = ?1, state = ?2, state_reason = NULL, stored = ?3, \
         updated_at = ?4 WHERE id = ?5 AND state = ?6",
    )
    .bind(library_host.to_string())
    .bind(VmState::Stored.as_str())
    .bind(to_json("stored copy", copy)?)
    .bind(Utc::now())
    .bind(vm_id.to_string())
    .bind(VmState::Stopped.as_str())
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Where the VM's stored files are; `None` unless it is Stored.
pub async fn stored_copy(db: &Db, vm_id: VmId) -> Result<Option<StoredCopy>, DbError> {
    let text: Option<Option<String>> =
        sqlx::query_scalar("SELECT stored FROM vms WHERE id = ? AND state = ?")
            .bind(vm_id.to_string())
            .bind(VmState::Stored.as_str())
            .fetch_optional(db.pool())
            .await?;
    text.flatten()
        .map(|text| from_json("stored copy", &text))
        .transpose()
}

/// The condition that host `?1` still responds (`?2`) and has the memory and disk for the VM
/// after reserves `?3` (MiB) and `?4` (bytes) and the claims already there, as a create's claim.
const HOST_HAS_ROOM: &str = "EXISTS (SELECT 1 FROM hosts h \
     WHERE h.id = ?1 AND h.state = ?2 AND h.cpus >= vms.cpus \
     AND h.memory_mib - ?3 - h.claimed_memory_mib >= vms.memory_mib \
     AND h.disk_free_bytes - ?4 - h.claimed_disk_bytes >= vms.disk_bytes)";

/// `sql`, a conditional UPDATE of Stored VM `?5` (`?6`) on host `?1` using [`HOST_HAS_ROOM`],
/// with `?1` to `?6` bound; further parameters are the caller's.
fn stored_vm_update(
    sql: String,
    vm_id: VmId,
    host: HostId,
    reserves: Reserves,
) -> sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(host.to_string())
        .bind(HostState::Responding.as_str())
        .bind(signed(reserves.memory_mib))
        .bind(signed(reserves.disk_bytes))
        .bind(vm_id.to_string())
        .bind(VmState::Stored.as_str())
}

/// Claims `host`'s capacity for a Stored VM about to be copied there, if the host has room (a
/// claim it holds there already stands); false when not. [`release_deploy`] gives it back.
pub async fn claim_deploy(
    db: &Db,
    vm_id: VmId,
    host: HostId,
    reserves: Reserves,
) -> Result<bool, DbError> {
    let sql = format!(
        "UPDATE vms SET deploy_host = ?1 WHERE id = ?5 AND state = ?6 \
         AND (deploy_host = ?1 OR (deploy_host IS NULL AND {HOST_HAS_ROOM}))"
    );
    let changed = stored_vm_update(sql, vm_id, host, reserves)
        .execute(db.pool())
        .await?;
    Ok(changed.rows_affected() > 0)
}

/// Gives back the capacity a deploy claimed (none claimed: nothing changes).
pub async fn release_deploy(db: &Db, vm_id: VmId) -> Result<(), DbError> {
    sqlx::query("UPDATE vms SET deploy_host = NULL WHERE id = ?")
        .bind(vm_id.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Makes a Stored VM Stopped on `host`, taking over the capacity [`claim_deploy`] claimed there;
/// without such a claim, only if the host has room as for a create. False when not.
pub async fn claim_deployed(
    db: &Db,
    vm_id: VmId,
    host: HostId,
    reserves: Reserves,
) -> Result<bool, DbError> {
    let sql = format!(
        "UPDATE vms SET host_id = ?1, state = ?7, state_reason = NULL, stored = NULL, \
         deploy_host = NULL, updated_at = ?8 WHERE id = ?5 AND state = ?6 \
         AND (deploy_host = ?1 OR {HOST_HAS_ROOM})"
    );
    let changed = stored_vm_update(sql, vm_id, host, reserves)
        .bind(VmState::Stopped.as_str())
        .bind(Utc::now())
        .execute(db.pool())
        .await?;
    Ok(changed.rows_affected() > 0)
}

/// The transfer endpoint (`HOST:PORT`) of a host's agent; `None` for an unknown host.
pub async fn transfer_address(db: &Db, host_id: HostId) -> Result<Option<String>, DbError> {
    let row: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT address, transfer_port FROM hosts WHERE id = ?")
            .bind(host_id.to_string())
            .fetch_optional(db.pool())
            .await?;
    row.map(|(address, port)| {
        let port = super::unsigned("transfer_port", port.unwrap_or_default())?;
        Ok(super::library::transfer_address(&address, port))
    })
    .transpose()
}
