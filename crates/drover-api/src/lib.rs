//! Drover's wire types: the REST resources, jobs, events, the error body, the agent protocol,
//! the port table and the configuration file. This crate has no async runtime, no HTTP stack and
//! no database; every type that crosses a process boundary lives here, and nothing else does.

pub mod agent;
pub mod auth;
pub mod cdrom;
pub mod checkpoint;
pub mod config;
pub mod devices;
pub mod error;
pub mod event;
pub mod host;
pub mod hostgroup;
pub mod id;
pub mod job;
pub mod library;
pub mod migration;
pub mod network;
pub mod page;
pub mod placement;
pub mod ports;
pub mod size;
pub mod template;
pub mod transfer;
pub mod v2v;
pub mod vm;
pub mod vm_store;

pub use checkpoint::{Checkpoint, CheckpointCreate};
pub use devices::VmDevices;
pub use error::{ErrorBody, ErrorDetail};
pub use event::Event;
pub use host::{Accelerator, Host, HostAdd, HostState};
pub use hostgroup::{HostGroup, HostGroupCreate, HostGroupUpdate};
pub use id::{
    CheckpointId, HostGroupId, HostId, JobId, LibraryItemId, LibraryShareId, NetworkId, ProfileId,
    TemplateId, VmId,
};
pub use job::{Job, JobStatus, JobStep, JobTarget};
pub use network::{Network, NetworkCreate, NetworkMode, NicAdd, PortForward, VmNic};
pub use page::Page;
pub use placement::{HostRating, PlacementGoal, PlacementRating, PlacementRequest};
pub use vm::{CloudInitSeed, Vm, VmAction, VmActionRequest, VmCreate, VmDisk, VmState};

/// The version every Drover component reports; server and agents of one release speak one protocol.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Path prefix of the public REST API.
pub const API_PREFIX: &str = "/api/v1";
