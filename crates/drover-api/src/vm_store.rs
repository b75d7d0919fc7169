//! Storing VMs in the library and deploying them back: `POST /api/v1/vms/{vm}/store` and
//! `POST /api/v1/vms/{vm}/deploy`. A stored VM (state Stored) keeps its configuration in Drover
//! and its disks in a library share; its host is the share's library server, and it claims no
//! capacity anywhere.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/vms/{vm}/store`: move a stopped VM's disks into the library.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmStore {
    /// The share (id or name); the only share when omitted and there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
}

/// `POST /api/v1/vms/{vm}/deploy`: bring a stored VM back to a host, Stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmDeploy {
    /// The host (id or name); placed in `group` by rating when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host group to place it in ("All Hosts" when omitted); not with `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}
