//! Events streamed to clients over `GET /api/v1/events` (WebSocket, one JSON object per message).

use crate::host::Host;
use crate::hostgroup::HostGroup;
use crate::id::{HostGroupId, HostId, NetworkId, VmId};
use crate::job::Job;
use crate::network::Network;
use crate::vm::Vm;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "type", content = "object")]
pub enum Event {
    VmChanged(Vm),
    VmDeleted(VmId),
    HostChanged(Host),
    HostRemoved(HostId),
    JobChanged(Job),
    /// A network was created, or changed how it stands on a host (realized, needs attention).
    NetworkChanged(Network),
    NetworkDeleted(NetworkId),
    /// A host group was created, changed or moved.
    HostGroupChanged(HostGroup),
    HostGroupDeleted(HostGroupId),
}
