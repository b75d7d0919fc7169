//! Typed object ids: a `VmId` can never be passed where a `HostId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! object_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

object_id!(
    /// Identifies a virtualization host (a machine running an agent with the host role).
    HostId
);
object_id!(
    /// Identifies a virtual machine.
    VmId
);
object_id!(
    /// Identifies a checkpoint of a VM.
    CheckpointId
);
object_id!(
    /// Identifies a job.
    JobId
);
object_id!(
    /// Identifies a host group.
    HostGroupId
);
object_id!(
    /// Identifies a library share (a directory served by a library server).
    LibraryShareId
);
object_id!(
    /// Identifies a library item (a disk image or ISO in a share).
    LibraryItemId
);
object_id!(
    /// Identifies a virtual network.
    NetworkId
);
object_id!(
    /// Identifies a hardware or guest OS profile.
    ProfileId
);
object_id!(
    /// Identifies a template.
    TemplateId
);
