//! What a migration changes in the database: the VM's host; and, since a VM changes hosts, the
//! rule that a host's reports touch only the VMs that are on it.

use super::{Db, DbError};
use chrono::Utc;
use drover_api::{HostId, Vm, VmId, VmState};

/// Moves a VM from `from` to `to`, in `state` there, only while it is still on `from`; the
/// placement triggers move its claim along. The moved VM, or `None` when it was elsewhere.
pub async fn move_to_host(
    db: &Db,
    vm_id: VmId,
    from: HostId,
    to: HostId,
    state: VmState,
) -> Result<Option<Vm>, DbError> {
    let moved = sqlx::query(
        "UPDATE vms SET host_id = ?1, state = ?2, state_reason = NULL, updated_at = ?3 \
         WHERE id = ?4 AND host_id = ?5",
    )
    .bind(to.to_string())
    .bind(state.as_str())
    .bind(Utc::now())
    .bind(vm_id.to_string())
    .bind(from.to_string())
    .execute(db.pool())
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    super::vms::get_by_id(db, vm_id).await
}
