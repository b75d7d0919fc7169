//! What a migration changes in the database: its claim on the destination's capacity while it
//! runs, the VM's host; and, since a VM changes hosts, the rule that a host's reports touch only
//! the VMs that are on it.

use super::placement::Reserves;
use super::{Db, DbError, signed};
use chrono::Utc;
use drover_api::{HostId, HostState, Vm, VmId, VmState};

/// Claims the VM's vCPUs, memory and disk on host `to` for the time of its migration, only if
/// the host still responds and has room for it after `reserves` and every claim there (one
/// INSERT ... SELECT, as a create's claim). `false` when it does not fit.
pub async fn claim_destination(
    db: &Db,
    vm_id: VmId,
    to: HostId,
    reserves: Reserves,
) -> Result<bool, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO migration_claims (vm_id, host_id, cpus, memory_mib, disk_bytes) \
         SELECT v.id, h.id, v.cpus, v.memory_mib, v.disk_bytes FROM vms v, hosts h \
         WHERE v.id = ?1 AND h.id = ?2 AND h.state = ?3 AND h.cpus >= v.cpus \
         AND h.memory_mib - ?4 - h.claimed_memory_mib >= v.memory_mib \
         AND h.disk_free_bytes - ?5 - h.claimed_disk_bytes >= v.disk_bytes",
    )
    .bind(vm_id.to_string())
    .bind(to.to_string())
    .bind(HostState::Responding.as_str())
    .bind(signed(reserves.memory_mib))
    .bind(signed(reserves.disk_bytes))
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// Gives back the VM's migration claim, if it has one.
pub async fn release_destination(db: &Db, vm_id: VmId) -> Result<(), DbError> {
    sqlx::query("DELETE FROM migration_claims WHERE vm_id = ?")
        .bind(vm_id.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Gives back every migration claim: at server start no migration runs.
pub async fn release_all(db: &Db) -> Result<(), DbError> {
    sqlx::query("DELETE FROM migration_claims")
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Moves a VM from `from` to `to`, in `state` there, only while it is still on `from`; the
/// placement triggers move its claim along, and its migration claim on `to` goes in the same
/// transaction. The moved VM, or `None` when it was elsewhere.
pub async fn move_to_host(
    db: &Db,
    vm_id: VmId,
    from: HostId,
    to: HostId,
    state: VmState,
) -> Result<Option<Vm>, DbError> {
    let mut transaction = db.pool().begin().await?;
    let moved = sqlx::query(
        "UPDATE vms SET host_id = ?1, state = ?2, state_reason = NULL, updated_at = ?3 \
         WHERE id = ?4 AND host_id = ?5",
    )
    .bind(to.to_string())
    .bind(state.as_str())
    .bind(Utc::now())
    .bind(vm_id.to_string())
    .bind(from.to_string())
    .execute(&mut *transaction)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    sqlx::query("DELETE FROM migration_claims WHERE vm_id = ?")
        .bind(vm_id.to_string())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    super::vms::get_by_id(db, vm_id).await
}
