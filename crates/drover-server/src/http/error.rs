//! The API's one error type. Every failure of a handler or a job step is an [`ApiError`]; it
//! becomes the HTTP status (one `match`) and the body `{"error":{"code","message","action"}}`
//! (another). A 5xx says nothing of its cause to the client; the chain goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no valid bearer token")]
    Unauthenticated,
    #[error("the token has expired")]
    TokenExpired,
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("malformed JSON body: {0}")]
    InvalidJson(String),
    #[error("malformed query: {0}")]
    InvalidQuery(String),
    #[error("no such route: {0}")]
    RouteNotFound(String),
    #[error("this route does not take {0}")]
    MethodNotAllowed(String),
    #[error("this endpoint speaks WebSocket only")]
    WebSocketRequired,
    #[error("no VM '{0}'")]
    VmNotFound(String),
    #[error("no host '{0}'")]
    HostNotFound(String),
    #[error("no job '{0}'")]
    JobNotFound(String),
    #[error("no host group '{0}'")]
    HostGroupNotFound(String),
    #[error("a host group named '{0}' already exists")]
    HostGroupExists(String),
    #[error("host group '{group}' is not empty: {holds}")]
    HostGroupNotEmpty { group: String, holds: String },
    #[error("cannot move host group '{group}' under '{parent}': '{parent}' is inside '{group}'")]
    HostGroupCycle { group: String, parent: String },
    #[error("{0}")]
    InvalidGroupSettings(String),
    #[error("{0}")]
    RootGroupFixed(String),
    #[error("host '{0}' is in maintenance mode")]
    HostInMaintenance(String),
    #[error("no host in '{group}' can take the VM:\n{reasons}")]
    NoSuitableHost { group: String, reasons: String },
    #[error("{0}")]
    InvalidName(String),
    #[error("invalid address '{address}': {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("{0}")]
    InvalidVmSpec(String),
    #[error("a VM named '{0}' already exists")]
    VmExists(String),
    #[error("a host named or at '{0}' already exists")]
    HostExists(String),
    #[error("host '{host}' still has VMs: {vms}")]
    HostHasVms { host: String, vms: String },
    #[error("host '{0}' is not responding")]
    HostNotResponding(String),
    #[error("host '{host}' needs attention: {reason}")]
    HostNeedsAttention { host: String, reason: String },
    #[error("{0}")]
    InsufficientHostResources(String),
    #[error("VM '{vm}' is {state}; cannot {action} it")]
    VmStateConflict {
        vm: String,
        state: String,
        action: String,
    },
    #[error("VM '{0}' is not running")]
    VmNotRunning(String),
    #[error("VM '{vm}' cannot move: {reason}")]
    VmNotMovable { vm: String, reason: String },
    #[error("job {id} is {status}; only a queued job or a running migration can be canceled")]
    JobNotCancelable { id: String, status: String },
    #[error("job {id} is {status}; only a failed or canceled job can be restarted")]
    JobNotRestartable { id: String, status: String },
    #[error("VM '{vm}' has no NIC '{nic}'")]
    NicNotFound { vm: String, nic: String },
    #[error("no network '{0}'")]
    NetworkNotFound(String),
    #[error("a network named '{0}' already exists")]
    NetworkExists(String),
    #[error("{0}")]
    InvalidNetwork(String),
    #[error("subnet {subnet} overlaps network '{other}' ({other_subnet})")]
    SubnetOverlap {
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("network '{network}' is used by VMs: {vms}")]
    NetworkInUse { network: String, vms: String },
    #[error("network '{0}' has no free address left in its DHCP range")]
    IpPoolExhausted(String),
    #[error("network '{network}' needs attention on host '{host}': {reason}")]
    NetworkNeedsAttention {
        network: String,
        host: String,
        reason: String,
    },
    #[error(
        "network '{network}' is carried only by the hosts of group '{group}'; host '{host}' is not among them"
    )]
    NetworkNotInGroup {
        network: String,
        group: String,
        host: String,
    },
    #[error(
        "host '{host}' cannot leave the scope of network '{network}' (group '{group}'): VMs on the host use it: {vms}"
    )]
    NetworkInUseOnHost {
        host: String,
        network: String,
        group: String,
        vms: String,
    },
    #[error(
        "moving group '{group}' under '{parent}' takes hosts out of the scope of networks they carry: {carried}"
    )]
    GroupMoveLeavesNetworkScope {
        group: String,
        parent: String,
        carried: String,
    },
    #[error("VM '{vm}' has no {protocol} forward of host port {host_port}")]
    PortForwardNotFound {
        vm: String,
        protocol: String,
        host_port: u16,
    },
    #[error("the MAC address pool has no free address")]
    MacPoolExhausted,
    #[error("{0}")]
    PortForwardConflict(String),
    #[error("{0}")]
    InvalidPortForward(String),
    #[error("VM '{0}' has no NIC on the user-mode network to forward ports through")]
    NoUserNic(String),
    #[error("no library share '{0}'")]
    ShareNotFound(String),
    #[error("a library share named '{0}' (or at that directory) already exists")]
    ShareExists(String),
    #[error("{0}")]
    ShareRequired(String),
    #[error("the share directory '{0}' is not an absolute path")]
    InvalidSharePath(String),
    #[error("host '{0}' is not a library server")]
    NotLibraryServer(String),
    #[error("no library item '{0}'")]
    LibraryItemNotFound(String),
    #[error("a library item named '{0}' already exists")]
    LibraryItemExists(String),
    #[error("{item} is used by templates: {templates}")]
    LibraryItemInUse { item: String, templates: String },
    #[error("no {kind} profile '{name}'")]
    ProfileNotFound { kind: &'static str, name: String },
    #[error("a {kind} profile named '{name}' already exists")]
    ProfileExists { kind: &'static str, name: String },
    #[error("{profile} is used by templates: {templates}")]
    ProfileInUse { profile: String, templates: String },
    #[error("{0}")]
    InvalidProfile(String),
    #[error("no template '{0}'")]
    TemplateNotFound(String),
    #[error("a template named '{0}' already exists")]
    TemplateExists(String),
    #[error("VM '{vm}' has no checkpoint '{checkpoint}'")]
    CheckpointNotFound { vm: String, checkpoint: String },
    #[error("VM '{vm}' already has a checkpoint named '{name}'")]
    CheckpointExists { vm: String, name: String },
    #[error("VM '{vm}' has {limit} checkpoints, the most it may have")]
    CheckpointLimitReached { vm: String, limit: usize },
    #[error("VM '{0}' has no disk to hold checkpoints")]
    VmHasNoDisk(String),
    #[error("the agent refused the enrollment code")]
    EnrollmentCodeInvalid,
    /// The agent answered with its own error; its status and body pass through.
    #[error("the agent answered {status}: {detail}")]
    Agent { status: u16, detail: ErrorDetail },
    #[error("cannot reach the agent at {address}")]
    HostUnreachable { address: String },
    #[error("the job was canceled")]
    JobCanceled,
    #[error("{0}")]
    InvalidMigrationTarget(String),
    #[error("{item} is in the CD-ROM drive of VMs: {vms}")]
    IsoInUse { item: String, vms: String },
    #[error("VM '{0}' runs without a CD-ROM drive; a drive cannot be added to a running VM")]
    NoCdromDrive(String),
    #[error("host '{host}' is in maintenance mode, but these VMs could not leave it: {failures}")]
    EvacuationIncomplete { host: String, failures: String },
    /// Anything unexpected: a database failure, a bug. Logged with its chain, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(error.into())
    }

    /// `vm` is in a state where `action` does not apply.
    pub fn vm_state_conflict(vm: &drover_api::Vm, action: &str) -> ApiError {
        ApiError::VmStateConflict {
            vm: vm.name.clone(),
            state: vm.state.to_string(),
            action: action.to_owned(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::TokenExpired | ApiError::InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::InvalidJson(_) | ApiError::InvalidQuery(_) | ApiError::WebSocketRequired => {
                StatusCode::BAD_REQUEST
            }
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EnrollmentCodeInvalid => StatusCode::FORBIDDEN,
            ApiError::RouteNotFound(_)
            | ApiError::VmNotFound(_)
            | ApiError::HostNotFound(_)
            | ApiError::JobNotFound(_)
            | ApiError::NetworkNotFound(_)
            | ApiError::NicNotFound { .. }
            | ApiError::HostGroupNotFound(_)
            | ApiError::ShareNotFound(_)
            | ApiError::LibraryItemNotFound(_)
            | ApiError::ProfileNotFound { .. }
            | ApiError::TemplateNotFound(_)
            | ApiError::CheckpointNotFound { .. }
            | ApiError::PortForwardNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::VmExists(_)
            | ApiError::HostExists(_)
            | ApiError::HostHasVms { .. }
            | ApiError::ShareExists(_)
            | ApiError::LibraryItemExists(_)
            | ApiError::LibraryItemInUse { .. }
            | ApiError::ProfileExists { .. }
            | ApiError::ProfileInUse { .. }
            | ApiError::TemplateExists(_)
            | ApiError::NotLibraryServer(_)
            | ApiError::HostNotResponding(_)
            | ApiError::HostNeedsAttention { .. }
            | ApiError::VmStateConflict { .. }
            | ApiError::VmNotRunning(_)
            | ApiError::VmNotMovable { .. }
            | ApiError::JobNotCancelable { .. }
            | ApiError::JobNotRestartable { .. }
            | ApiError::JobCanceled
            | ApiError::EvacuationIncomplete { .. }
            | ApiError::NetworkExists(_)
            | ApiError::SubnetOverlap { .. }
            | ApiError::NetworkInUse { .. }
            | ApiError::IpPoolExhausted(_)
            | ApiError::PortForwardConflict(_)
            | ApiError::MacPoolExhausted
            | ApiError::NetworkNeedsAttention { .. }
            | ApiError::NetworkNotInGroup { .. }
            | ApiError::NetworkInUseOnHost { .. }
            | ApiError::GroupMoveLeavesNetworkScope { .. }
            | ApiError::NoUserNic(_)
            | ApiError::HostGroupExists(_)
            | ApiError::HostGroupNotEmpty { .. }
            | ApiError::RootGroupFixed(_)
            | ApiError::HostInMaintenance(_)
            | ApiError::NoSuitableHost { .. }
            | ApiError::CheckpointExists { .. }
            | ApiError::CheckpointLimitReached { .. }
            | ApiError::VmHasNoDisk(_)
            | ApiError::IsoInUse { .. }
            | ApiError::NoCdromDrive(_) => StatusCode::CONFLICT,
            ApiError::InvalidName(_)
            | ApiError::InvalidAddress { .. }
            | ApiError::InvalidVmSpec(_)
            | ApiError::InsufficientHostResources(_)
            | ApiError::HostGroupCycle { .. }
            | ApiError::InvalidGroupSettings(_)
            | ApiError::ShareRequired(_)
            | ApiError::InvalidSharePath(_)
            | ApiError::InvalidNetwork(_)
            | ApiError::InvalidPortForward(_)
            | ApiError::InvalidMigrationTarget(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidProfile(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Agent { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ApiError::HostUnreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code, the message and the recommended action.
    pub fn detail(&self) -> ErrorDetail {
        let message = self.to_string();
        let (code, action) = match self {
            ApiError::Unauthenticated => (
                "unauthenticated",
                "log in with `drover login` and send the token as `Authorization: Bearer TOKEN`",
            ),
            ApiError::TokenExpired => ("token_expired", "log in again with `drover login`"),
            ApiError::InvalidCredentials => (
                "invalid_credentials",
                "check the user name and password; the admin password is printed at the server's first start",
            ),
            ApiError::InvalidJson(_) => {
                ("invalid_json", "send a JSON body as docs/api.md describes")
            }
            ApiError::InvalidQuery(_) => (
                "invalid_query",
                "fix the query parameters as docs/api.md describes",
            ),
            ApiError::RouteNotFound(_) => ("not_found", "check the URL against docs/api.md"),
            ApiError::MethodNotAllowed(_) => {
                ("method_not_allowed", "check the method against docs/api.md")
            }
            ApiError::WebSocketRequired => (
                "websocket_required",
                "connect with a WebSocket client (`drover vm console`, `drover job watch`)",
            ),
            ApiError::VmNotFound(_) => ("vm_not_found", "list VMs with `drover vm list`"),
            ApiError::HostNotFound(_) => ("host_not_found", "list hosts with `drover host list`"),
            ApiError::JobNotFound(_) => ("job_not_found", "list jobs with `drover job list`"),
            ApiError::HostGroupNotFound(_) => (
                "host_group_not_found",
                "list host groups with `drover hostgroup list`",
            ),
            ApiError::HostGroupExists(_) => (
                "host_group_exists",
                "choose another name; group names are unique in the whole tree",
            ),
            ApiError::HostGroupNotEmpty { .. } => (
                "host_group_not_empty",
                "move its hosts (`drover host move`) and groups (`drover hostgroup move`) elsewhere first",
            ),
            ApiError::HostGroupCycle { .. } => (
                "host_group_cycle",
                "choose a parent that is not the group itself or below it",
            ),
            ApiError::InvalidGroupSettings(_) => (
                "invalid_group_settings",
                "give reserves of 0 to 100 % CPU and weights of 0 to 100",
            ),
            ApiError::RootGroupFixed(_) => (
                "host_group_root",
                "\"All Hosts\" is the root: it cannot be deleted or moved and sets every setting",
            ),
            ApiError::HostInMaintenance(_) => (
                "host_in_maintenance",
                "choose another host, or end maintenance with `drover host maintenance off HOST`",
            ),
            ApiError::NoSuitableHost { .. } => (
                "no_suitable_host",
                "see each host's reasons; ask for less, free capacity, or lower the group's reserves",
            ),
            ApiError::InvalidName(_) => ("invalid_name", "choose another name"),
            ApiError::InvalidAddress { .. } => (
                "invalid_address",
                "give the agent's address as HOST:PORT, for example kvm1.example.com:8101",
            ),
            ApiError::InvalidVmSpec(_) => (
                "invalid_vm_spec",
                "give at least 1 vCPU and 64 MiB of memory",
            ),
            ApiError::VmExists(_) => ("vm_exists", "choose another name or delete the other VM"),
            ApiError::HostExists(_) => (
                "host_exists",
                "the host is already managed; see `drover host list`",
            ),
            ApiError::HostHasVms { .. } => {
                ("host_has_vms", "delete or move the VMs on the host first")
            }
            ApiError::HostNotResponding(_) => (
                "host_not_responding",
                "check that the agent runs on the host and is reachable, then retry",
            ),
            ApiError::HostNeedsAttention { .. } => (
                "host_needs_attention",
                "fix what the reason names (`drover host show HOST`), or choose another host",
            ),
            ApiError::InsufficientHostResources(_) => (
                "insufficient_host_resources",
                "ask for fewer vCPUs or less memory, or choose another host",
            ),
            ApiError::VmStateConflict { .. } => (
                "vm_state_conflict",
                "check the VM's state with `drover vm show` and choose an action that fits it",
            ),
            ApiError::VmNotRunning(_) => ("vm_not_running", "start the VM with `drover vm start`"),
            ApiError::VmNotMovable { .. } => (
                "vm_not_movable",
                "stop the VM and migrate it stopped (a quick migration copies its whole disks and keeps its checkpoints), or delete its checkpoints (`drover vm checkpoint delete`) and migrate it live",
            ),
            ApiError::JobNotCancelable { .. } => (
                "job_not_cancelable",
                "wait for the job to end; of running jobs, only migrations can be canceled",
            ),
            ApiError::JobNotRestartable { .. } => (
                "job_not_restartable",
                "restart only jobs that failed or were canceled",
            ),
            ApiError::JobCanceled => (
                "job_canceled",
                "restart the job with `drover job restart ID` to try again",
            ),
            ApiError::InvalidMigrationTarget(_) => (
                "invalid_migration_target",
                "name another host with --to, or leave it out to let placement choose",
            ),
            ApiError::EvacuationIncomplete { .. } => (
                "evacuation_incomplete",
                "see each VM's migration job, fix the cause and run `drover host maintenance on HOST` again",
            ),
            ApiError::NicNotFound { .. } => {
                ("nic_not_found", "list the VM's NICs with `drover vm show`")
            }
            ApiError::NetworkNotFound(_) => (
                "network_not_found",
                "list networks with `drover network list`",
            ),
            ApiError::NetworkExists(_) => (
                "network_exists",
                "choose another name or delete the other network",
            ),
            ApiError::InvalidNetwork(_) => (
                "invalid_network",
                "fix the setting the message names; see `drover network create --help`",
            ),
            ApiError::SubnetOverlap { .. } => (
                "subnet_overlap",
                "choose a subnet that no other network uses",
            ),
            ApiError::NetworkInUse { .. } => (
                "network_in_use",
                "delete the VMs or remove their NICs on the network first",
            ),
            ApiError::IpPoolExhausted(_) => (
                "ip_pool_exhausted",
                "free addresses by deleting VMs on the network, or use a network with a larger DHCP range",
            ),
            ApiError::NetworkNeedsAttention { .. } => (
                "network_needs_attention",
                "fix the host as the reason says (add the uplink interface, for example) or choose another host",
            ),
            ApiError::NetworkNotInGroup { .. } => (
                "network_not_in_group",
                "place the VM on a host of the network's group (`drover placement rate --network NAME`)",
            ),
            ApiError::NetworkInUseOnHost { .. } => (
                "network_in_use_on_host",
                "migrate those VMs to another host of the network's group or remove their NICs on it, then move the host again",
            ),
            ApiError::GroupMoveLeavesNetworkScope { .. } => (
                "group_move_leaves_network_scope",
                "move those hosts out of the group first with `drover host move HOST --group G`, which removes the networks from them, then move the group",
            ),
            ApiError::PortForwardNotFound { .. } => (
                "port_forward_not_found",
                "list the VM's forwards with `drover vm show NAME`",
            ),
            ApiError::MacPoolExhausted => (
                "mac_pool_exhausted",
                "delete unused VMs to return their MAC addresses to the pool",
            ),
            ApiError::PortForwardConflict(_) => (
                "port_forward_conflict",
                "choose a host port no other forward on the host uses",
            ),
            ApiError::InvalidPortForward(_) => (
                "invalid_port_forward",
                "give HOSTPORT:GUESTPORT with ports from 1 to 65535",
            ),
            ApiError::NoUserNic(_) => (
                "vm_has_no_user_nic",
                "port forwards need a NIC on the `user` network; create the VM with `--network user`",
            ),
            ApiError::ShareNotFound(_) => (
                "share_not_found",
                "list shares with `drover library share list`",
            ),
            ApiError::ShareExists(_) => (
                "share_exists",
                "choose another name or directory; see `drover library share list`",
            ),
            ApiError::ShareRequired(_) => (
                "share_required",
                "name the share with --share (see `drover library share list`), or add one with `drover library share add`",
            ),
            ApiError::InvalidSharePath(_) => (
                "invalid_share_path",
                "give the share's directory as an absolute path on the library server",
            ),
            ApiError::NotLibraryServer(_) => (
                "not_a_library_server",
                "run the host's agent with `--roles host,library`; see `drover library server list`",
            ),
            ApiError::LibraryItemNotFound(_) => (
                "library_item_not_found",
                "list items with `drover library list`; files dropped into a share appear after `drover library refresh`",
            ),
            ApiError::LibraryItemExists(_) => (
                "library_item_exists",
                "choose another name with --name, or remove the other item first",
            ),
            ApiError::LibraryItemInUse { .. } => {
                ("library_item_in_use", "remove the templates named first")
            }
            ApiError::IsoInUse { .. } => (
                "library_item_in_use",
                "eject it from the VMs named first (`drover vm iso eject NAME`)",
            ),
            ApiError::NoCdromDrive(_) => (
                "no_cdrom_drive",
                "stop the VM, insert the ISO (a stopped VM gets a drive), then start it",
            ),
            ApiError::ProfileNotFound { .. } => (
                "profile_not_found",
                "list profiles with `drover profile hardware list` or `drover profile guest-os list`",
            ),
            ApiError::ProfileExists { .. } => ("profile_exists", "choose another name"),
            ApiError::ProfileInUse { .. } => (
                "profile_in_use",
                "delete the templates named first (`drover template delete NAME`)",
            ),
            ApiError::InvalidProfile(_) => (
                "invalid_profile",
                "fix the value the message names; `drover profile ... create --help` lists the rules",
            ),
            ApiError::TemplateNotFound(_) => (
                "template_not_found",
                "list templates with `drover template list`",
            ),
            ApiError::TemplateExists(_) => ("template_exists", "choose another name"),
            ApiError::CheckpointNotFound { .. } => (
                "checkpoint_not_found",
                "list the VM's checkpoints with `drover vm checkpoint list VM`",
            ),
            ApiError::CheckpointExists { .. } => ("checkpoint_exists", "choose another name"),
            ApiError::CheckpointLimitReached { .. } => (
                "checkpoint_limit_reached",
                "delete checkpoints the VM no longer needs with `drover vm checkpoint delete`",
            ),
            ApiError::VmHasNoDisk(_) => (
                "vm_has_no_disk",
                "checkpoints live in the VM's disk; create the VM with a disk to use them",
            ),
            ApiError::EnrollmentCodeInvalid => (
                "enrollment_code_invalid",
                "use the one-time code the agent printed at its start (or run `drover agent enroll-code` on the host)",
            ),
            ApiError::Agent { detail, .. } => return detail.clone(),
            ApiError::HostUnreachable { .. } => (
                "host_unreachable",
                "check that the agent runs and that the server can reach its control port",
            ),
            ApiError::Internal(_) => {
                return ErrorDetail::new(
                    "internal_error",
                    "the server failed unexpectedly; the cause is in the server log",
                    "retry; if it fails again, report it with the server log",
                );
            }
        };
        ErrorDetail::new(code, message, action)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            // The cause stays in the log; the caller gets an id to find it there.
            ApiError::Internal(cause) => {
                let request_id = format!("{:08x}", rand::random::<u32>());
                tracing::error!(%request_id, error = ?cause, "request failed");
                internal_detail(&request_id)
            }
            _ => self.detail(),
        };
        (status, axum::Json(ErrorBody::from(detail))).into_response()
    }
}

impl From<crate::db::networks::AllocationError> for ApiError {
    fn from(error: crate::db::networks::AllocationError) -> ApiError {
        use crate::db::networks::AllocationError;
        match error {
            AllocationError::IpPoolExhausted(network) => ApiError::IpPoolExhausted(network),
            AllocationError::MacPoolExhausted => ApiError::MacPoolExhausted,
            AllocationError::Db(error) => error.into(),
        }
    }
}

/// What a caller sees of an internal fault: no cause, only where to find it.
fn internal_detail(request_id: &str) -> ErrorDetail {
    ErrorDetail::new(
        "internal_error",
        format!("the server failed unexpectedly (request id {request_id})"),
        "retry; if it fails again, report it with the request id and the server log",
    )
}

impl From<crate::db::DbError> for ApiError {
    fn from(error: crate::db::DbError) -> ApiError {
        ApiError::internal(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_table() {
        let detail = ErrorDetail::new("image_not_found", "no such image", "check the path");
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Unauthenticated, 401, "unauthenticated"),
            (
                ApiError::CheckpointNotFound {
                    vm: "a".into(),
                    checkpoint: "c".into(),
                },
                404,
                "checkpoint_not_found",
            ),
            (
                ApiError::CheckpointExists {
                    vm: "a".into(),
                    name: "c".into(),
                },
                409,
                "checkpoint_exists",
            ),
            (
                ApiError::CheckpointLimitReached {
                    vm: "a".into(),
                    limit: 50,
                },
                409,
                "checkpoint_limit_reached",
            ),
            (ApiError::VmHasNoDisk("a".into()), 409, "vm_has_no_disk"),
            (
                ApiError::IsoInUse {
                    item: "i".into(),
                    vms: "a".into(),
                },
                409,
                "library_item_in_use",
            ),
            (ApiError::NoCdromDrive("a".into()), 409, "no_cdrom_drive"),
            (ApiError::TokenExpired, 401, "token_expired"),
            (ApiError::InvalidCredentials, 401, "invalid_credentials"),
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::InvalidQuery("x".into()), 400, "invalid_query"),
            (ApiError::RouteNotFound("/x".into()), 404, "not_found"),
            (
                ApiError::NetworkNotInGroup {
                    network: "n".into(),
                    group: "g".into(),
                    host: "h".into(),
                },
                409,
                "network_not_in_group",
            ),
            (
                ApiError::NetworkInUseOnHost {
                    host: "h".into(),
                    network: "n".into(),
                    group: "g".into(),
                    vms: "a, b".into(),
                },
                409,
                "network_in_use_on_host",
            ),
            (
                ApiError::GroupMoveLeavesNetworkScope {
                    group: "g".into(),
                    parent: "p".into(),
                    carried: "n on h".into(),
                },
                409,
                "group_move_leaves_network_scope",
            ),
            (
                ApiError::PortForwardNotFound {
                    vm: "v".into(),
                    protocol: "udp".into(),
                    host_port: 5353,
                },
                404,
                "port_forward_not_found",
            ),
            (
                ApiError::MethodNotAllowed("PUT".into()),
                405,
                "method_not_allowed",
            ),
            (ApiError::WebSocketRequired, 400, "websocket_required"),
            (ApiError::VmNotFound("x".into()), 404, "vm_not_found"),
            (ApiError::HostNotFound("x".into()), 404, "host_not_found"),
            (ApiError::JobNotFound("x".into()), 404, "job_not_found"),
            (
                ApiError::HostGroupNotFound("x".into()),
                404,
                "host_group_not_found",
            ),
            (
                ApiError::HostGroupExists("x".into()),
                409,
                "host_group_exists",
            ),
            (
                ApiError::HostGroupNotEmpty {
                    group: "g".into(),
                    holds: "1 host".into(),
                },
                409,
                "host_group_not_empty",
            ),
            (
                ApiError::HostGroupCycle {
                    group: "a".into(),
                    parent: "b".into(),
                },
                422,
                "host_group_cycle",
            ),
            (
                ApiError::InvalidGroupSettings("x".into()),
                422,
                "invalid_group_settings",
            ),
            (ApiError::RootGroupFixed("x".into()), 409, "host_group_root"),
            (
                ApiError::HostInMaintenance("h".into()),
                409,
                "host_in_maintenance",
            ),
            (
                ApiError::NoSuitableHost {
                    group: "g".into(),
                    reasons: "r".into(),
                },
                409,
                "no_suitable_host",
            ),
            (ApiError::InvalidName("x".into()), 422, "invalid_name"),
            (
                ApiError::InvalidAddress {
                    address: "x".into(),
                    reason: "y".into(),
                },
                422,
                "invalid_address",
            ),
            (ApiError::InvalidVmSpec("x".into()), 422, "invalid_vm_spec"),
            (ApiError::VmExists("x".into()), 409, "vm_exists"),
            (ApiError::HostExists("x".into()), 409, "host_exists"),
            (ApiError::ShareNotFound("s".into()), 404, "share_not_found"),
            (ApiError::ShareExists("s".into()), 409, "share_exists"),
            (ApiError::ShareRequired("x".into()), 422, "share_required"),
            (
                ApiError::InvalidSharePath("x".into()),
                422,
                "invalid_share_path",
            ),
            (
                ApiError::NotLibraryServer("h".into()),
                409,
                "not_a_library_server",
            ),
            (
                ApiError::LibraryItemNotFound("i".into()),
                404,
                "library_item_not_found",
            ),
            (
                ApiError::LibraryItemExists("i".into()),
                409,
                "library_item_exists",
            ),
            (
                ApiError::HostHasVms {
                    host: "h".into(),
                    vms: "a".into(),
                },
                409,
                "host_has_vms",
            ),
            (
                ApiError::HostNotResponding("h".into()),
                409,
                "host_not_responding",
            ),
            (
                ApiError::HostNeedsAttention {
                    host: "h".into(),
                    reason: "r".into(),
                },
                409,
                "host_needs_attention",
            ),
            (
                ApiError::InsufficientHostResources("x".into()),
                422,
                "insufficient_host_resources",
            ),
            (
                ApiError::VmStateConflict {
                    vm: "v".into(),
                    state: "Stopped".into(),
                    action: "pause".into(),
                },
                409,
                "vm_state_conflict",
            ),
            (ApiError::VmNotRunning("v".into()), 409, "vm_not_running"),
            (
                ApiError::JobNotCancelable {
                    id: "j".into(),
                    status: "Running".into(),
                },
                409,
                "job_not_cancelable",
            ),
            (
                ApiError::JobNotRestartable {
                    id: "j".into(),
                    status: "Completed".into(),
                },
                409,
                "job_not_restartable",
            ),
            (
                ApiError::NetworkNotFound("n".into()),
                404,
                "network_not_found",
            ),
            (ApiError::NetworkExists("n".into()), 409, "network_exists"),
            (ApiError::InvalidNetwork("x".into()), 422, "invalid_network"),
            (
                ApiError::SubnetOverlap {
                    subnet: "10.0.0.0/24".into(),
                    other: "n".into(),
                    other_subnet: "10.0.0.0/16".into(),
                },
                409,
                "subnet_overlap",
            ),
            (
                ApiError::NetworkInUse {
                    network: "n".into(),
                    vms: "a".into(),
                },
                409,
                "network_in_use",
            ),
            (
                ApiError::IpPoolExhausted("n".into()),
                409,
                "ip_pool_exhausted",
            ),
            (ApiError::MacPoolExhausted, 409, "mac_pool_exhausted"),
            (
                ApiError::NetworkNeedsAttention {
                    network: "n".into(),
                    host: "h".into(),
                    reason: "no uplink eth9".into(),
                },
                409,
                "network_needs_attention",
            ),
            (
                ApiError::PortForwardConflict("x".into()),
                409,
                "port_forward_conflict",
            ),
            (ApiError::NoUserNic("v".into()), 409, "vm_has_no_user_nic"),
            (
                ApiError::InvalidPortForward("x".into()),
                422,
                "invalid_port_forward",
            ),
            (
                ApiError::EnrollmentCodeInvalid,
                403,
                "enrollment_code_invalid",
            ),
            (
                ApiError::Agent {
                    status: 422,
                    detail: detail.clone(),
                },
                422,
                "image_not_found",
            ),
            (
                ApiError::HostUnreachable {
                    address: "a:1".into(),
                },
                503,
                "host_unreachable",
            ),
            (
                ApiError::internal(anyhow::anyhow!("disk full")),
                500,
                "internal_error",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            let detail = error.detail();
            assert_eq!(detail.code, code, "{error:?}");
            assert!(
                !detail.message.is_empty() && !detail.action.is_empty(),
                "{error:?}"
            );
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let detail = ApiError::internal(anyhow::anyhow!("secret path /etc/x")).detail();
        assert!(!detail.message.contains("secret"));
    }

    #[tokio::test]
    async fn internal_responses_carry_a_request_id_and_other_5xx_keep_their_code() {
        let body_of = async |error: ApiError| {
            let response = error.into_response();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let body: ErrorBody = serde_json::from_slice(&bytes).expect("error body");
            (status, body.error)
        };
        let (status, internal) = body_of(ApiError::internal(anyhow::anyhow!("secret"))).await;
        assert_eq!((status, internal.code.as_str()), (500, "internal_error"));
        assert!(internal.message.contains("request id "), "{internal:?}");
        assert!(!internal.message.contains("secret"));
        let unreachable = ApiError::HostUnreachable {
            address: "127.0.0.1:8101".into(),
        };
        let (status, detail) = body_of(unreachable).await;
        assert_eq!((status, detail.code.as_str()), (503, "host_unreachable"));
    }
}
