//! The agent's one HTTP error type: every failure of the control API becomes an
//! [`drover_api::ErrorBody`] with a stable code, a message and a recommended action. Not used for
//! start-up failures, which are `anyhow` errors for the binary to print.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_api::{ErrorBody, ErrorDetail, VmAction, VmId, VmState};
use drover_hv::DriverError;
use drover_image::ImageError;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the enrollment code is not the one this agent printed")]
    EnrollmentCodeInvalid,
    #[error("this agent is not enrolled yet")]
    NotEnrolled,
    #[error("this agent is already enrolled")]
    AlreadyEnrolled,
    #[error("enrollment was not begun: no certificate request is pending")]
    EnrollmentNotBegun,
    #[error("the certificate or CA sent to complete enrollment is not usable: {0}")]
    EnrollmentCertificateInvalid(#[source] drover_tls::TlsError),
    #[error("the request is invalid: {0}")]
    RequestInvalid(String),
    #[error("no such path on the agent's control API")]
    RouteNotFound,
    #[error("VM {0} is not defined on this host")]
    VmNotFound(VmId),
    #[error("VM {0} is being defined or deleted by another request")]
    VmBusy(VmId),
    #[error("VM {0} is already defined here with a different spec")]
    VmSpecConflict(VmId),
    #[error("the VM spec is invalid: {0}")]
    VmSpecInvalid(String),
    #[error("cannot {action} VM {vm_id}: it is {state}")]
    VmStateConflict {
        vm_id: VmId,
        action: VmAction,
        state: VmState,
    },
    #[error("VM {vm_id} is not running (it is {state})")]
    VmNotRunning { vm_id: VmId, state: VmState },
    #[error("VM {vm_id} did not power off within {after:?} of the ACPI shutdown request")]
    ShutdownTimeout { vm_id: VmId, after: Duration },
    #[error("the {what} file {path} does not exist or cannot be read")]
    FileMissing { what: &'static str, path: PathBuf },
    #[error("the VM cannot run on this host: {0}")]
    Unsupported(String),
    #[error("the VM did not start: {0}")]
    StartFailed(String),
    #[error("network {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("this agent does not have the library role")]
    NotLibraryServer,
    #[error("this agent serves no share named '{0}'")]
    ShareNotFound(String),
    #[error("cannot use {path} as a share directory")]
    ShareUnusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Image(#[from] drover_image::ImageError),
    #[error("the download of {url} failed: {detail}")]
    DownloadFailed { url: String, detail: String },
    #[error("VM {0} has no disk to hold checkpoints")]
    VmHasNoDisk(VmId),
    #[error("VM {vm_id} has no checkpoint {tag} on this host")]
    CheckpointNotFound { vm_id: VmId, tag: String },
    #[error("cannot {operation} VM {vm_id}: it is {state}")]
    CheckpointStateConflict {
        vm_id: VmId,
        operation: &'static str,
        state: VmState,
    },
    #[error("{0}")]
    CheckpointFailed(String),
    #[error("no live migration of VM {0} is known here")]
    MigrationNotFound(VmId),
    #[error("no free port for a migration in agent.migration_ports ({0})")]
    MigrationPortsExhausted(String),
    #[error("the live migration failed: {0}")]
    MigrationFailed(String),
    #[error("the VM's disk needs {needed} bytes but {path} has {free} bytes free")]
    DiskSpaceLow {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error(
        "VM {vm_id} has other NICs than when checkpoint {tag} was taken; its memory cannot be loaded into them"
    )]
    CheckpointDevicesChanged { vm_id: VmId, tag: String },
    #[error("the hypervisor driver failed")]
    Driver(#[source] DriverError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    #[error("VM {vm_id} has a QEMU process (it is {state}); its files cannot be copied now")]
    VmHasProcess { vm_id: VmId, state: VmState },
    #[error("VM {vm_id} has no file '{name}' here")]
    VmFileNotFound { vm_id: VmId, name: String },
    #[error("VM {0} is defined on this host; its files are not written over")]
    VmDefinedHere(VmId),
    #[error("no transfer '{0}' is running on this agent")]
    TransferNotFound(String),
}

impl From<DriverError> for AgentError {
    fn from(error: DriverError) -> Self {
        match error {
            DriverError::MissingFile { what, path } => AgentError::FileMissing { what, path },
            DriverError::Unsupported(reason) => AgentError::Unsupported(reason),
            DriverError::StartFailed(reason) => AgentError::StartFailed(reason),
            error @ DriverError::Snapshot { .. } => AgentError::CheckpointFailed(error.to_string()),
            other => AgentError::Driver(other),
        }
    }
}

impl From<JsonRejection> for AgentError {
    fn from(rejection: JsonRejection) -> Self {
        AgentError::RequestInvalid(rejection.body_text())
    }
}

impl From<PathRejection> for AgentError {
    fn from(rejection: PathRejection) -> Self {
        AgentError::RequestInvalid(rejection.body_text())
    }
}

impl From<QueryRejection> for AgentError {
    fn from(rejection: QueryRejection) -> Self {
        AgentError::RequestInvalid(rejection.body_text())
    }
}

impl From<WebSocketUpgradeRejection> for AgentError {
    fn from(rejection: WebSocketUpgradeRejection) -> Self {
        AgentError::RequestInvalid(rejection.body_text())
    }
}

impl AgentError {
    /// The error body's detail, for an error reported inside an answer rather than as one.
    pub fn detail(&self) -> ErrorDetail {
        let (_, code, action) = self.mapping();
        ErrorDetail::new(code, self.to_string(), action)
    }

    /// Status, stable code and recommended action: the whole HTTP mapping in one place.
    fn mapping(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            AgentError::EnrollmentCodeInvalid => (
                StatusCode::FORBIDDEN,
                "enrollment_code_invalid",
                "Use the enrollment code the agent printed at its first start (also in its data directory, file enrollment-code).",
            ),
            AgentError::NotEnrolled => (
                StatusCode::CONFLICT,
                "agent_not_enrolled",
                "Add this host to a Drover server with `drover host add ADDRESS --code CODE` first.",
            ),
            AgentError::AlreadyEnrolled => (
                StatusCode::CONFLICT,
                "agent_already_enrolled",
                "To enroll with another server, stop the agent and remove its tls directory and identity from the data directory.",
            ),
            AgentError::EnrollmentNotBegun => (
                StatusCode::CONFLICT,
                "enrollment_not_begun",
                "Call POST /v1/enroll with the code first, then complete with the signed certificate.",
            ),
            AgentError::EnrollmentCertificateInvalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "enrollment_certificate_invalid",
                "Sign the certificate request returned by POST /v1/enroll and send the chain with the CA in PEM.",
            ),
            AgentError::RequestInvalid(_) => (
                StatusCode::BAD_REQUEST,
                "request_invalid",
                "Send a body and path that follow the agent protocol in drover-api.",
            ),
            AgentError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "route_not_found",
                "Check the path against the agent protocol table; server and agent must be the same version.",
            ),
            AgentError::VmNotFound(_) => (
                StatusCode::NOT_FOUND,
                "vm_not_found",
                "Check the VM id; list the VMs of this host with GET /v1/vms.",
            ),
            AgentError::VmBusy(_) => (
                StatusCode::CONFLICT,
                "vm_busy",
                "Wait for the other request on this VM to finish, then retry.",
            ),
            AgentError::VmSpecConflict(_) => (
                StatusCode::CONFLICT,
                "vm_spec_conflict",
                "Delete the VM first to define it again with another spec.",
            ),
            AgentError::VmSpecInvalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_spec_invalid",
                "Fix the spec: its id must match the URL and its name must be valid.",
            ),
            AgentError::VmStateConflict { .. } => (
                StatusCode::CONFLICT,
                "vm_state_conflict",
                "Bring the VM to a state where the action applies (for example start it before pausing it).",
            ),
            AgentError::VmNotRunning { .. } => (
                StatusCode::CONFLICT,
                "vm_not_running",
                "Start the VM first.",
            ),
            AgentError::ShutdownTimeout { .. } => (
                StatusCode::CONFLICT,
                "vm_shutdown_timeout",
                "The guest ignored the ACPI power button; use stop for a hard stop.",
            ),
            AgentError::FileMissing { what, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                match *what {
                    "kernel" => "kernel_not_found",
                    "initrd" => "initrd_not_found",
                    _ => "image_not_found",
                },
                "Put the file on the host at that path (readable by the agent), or name another file.",
            ),
            AgentError::Unsupported(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_spec_unsupported",
                "Change the spec to fit this host (fewer vCPUs or less memory), or place the VM on another host.",
            ),
            AgentError::StartFailed(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_start_failed",
                "Read the reason; the VM's qemu.log in the agent's data directory has the details.",
            ),
            AgentError::Network(crate::network::NetworkError::NotRealized(_)) => (
                StatusCode::CONFLICT,
                "network_not_realized",
                "Realize the network on this host first (PUT /v1/networks/{id}); the server does it before it defines a VM.",
            ),
            AgentError::Network(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "network_setup_failed",
                "Read the failed command and its output; check that ip, bridge, nft and dnsmasq are installed and the agent runs as root.",
            ),
            AgentError::NotLibraryServer => (
                StatusCode::CONFLICT,
                "not_a_library_server",
                "Run the agent with `--roles host,library` (or `--roles library`) to serve library shares.",
            ),
            AgentError::ShareNotFound(_) => (
                StatusCode::NOT_FOUND,
                "share_not_found",
                "Add the share to this library server with `drover library share add` first.",
            ),
            AgentError::ShareUnusable { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "share_unusable",
                "Name a directory the agent can create, read and write.",
            ),
            AgentError::Image(error) => image_mapping(error),
            AgentError::DownloadFailed { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "import_download_failed",
                "Check that the URL is reachable from the library server and serves the whole file, then import again.",
            ),
            AgentError::VmHasNoDisk(_) => (
                StatusCode::CONFLICT,
                "vm_has_no_disk",
                "Checkpoints live in the VM's disk; give the VM a disk to use them.",
            ),
            AgentError::CheckpointNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "checkpoint_not_found",
                "List the VM's checkpoints; the host's disk may have lost this one.",
            ),
            AgentError::CheckpointStateConflict { .. } => (
                StatusCode::CONFLICT,
                "vm_state_conflict",
                "Bring the VM to a state where the operation applies (a saved VM: stop it to discard its saved state).",
            ),
            AgentError::CheckpointDevicesChanged { .. } => (
                StatusCode::CONFLICT,
                "checkpoint_devices_changed",
                "Give the VM back the NICs it had when the checkpoint was taken, or restore a checkpoint taken since.",
            ),
            AgentError::CheckpointFailed(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "checkpoint_failed",
                "Read QEMU's reason; the VM's qmp.log in the agent's data directory has the details.",
            ),
            AgentError::MigrationNotFound(_) => (
                StatusCode::NOT_FOUND,
                "migration_not_found",
                "Start the migration with `drover vm migrate` first.",
            ),
            AgentError::MigrationPortsExhausted(_) => (
                StatusCode::CONFLICT,
                "migration_ports_exhausted",
                "Wait for running migrations to end, or widen agent.migration_ports on the destination host.",
            ),
            AgentError::MigrationFailed(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "migration_failed",
                "The VM still runs on its source host; fix what the message names (such as the destination's free disk space, or hosts that cannot reach each other on agent.migration_ports), then migrate again.",
            ),
            AgentError::DiskSpaceLow { .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_disk_space",
                "Free space on the destination host or choose another with `drover vm migrate NAME --to HOST`.",
            ),
            AgentError::VmHasProcess { .. } => (
                StatusCode::CONFLICT,
                "vm_has_process",
                "Stop or shut down the VM first; its disks are copied only while no QEMU process writes them.",
            ),
            AgentError::VmFileNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "vm_file_not_found",
                "List the VM's files with GET /v1/vms/{id}/files (with ?share=S for a stored VM).",
            ),
            AgentError::VmDefinedHere(_) => (
                StatusCode::CONFLICT,
                "vm_defined_here",
                "Delete the VM on this host first, or fetch its files into a share.",
            ),
            AgentError::TransferNotFound(_) => (
                StatusCode::NOT_FOUND,
                "transfer_not_found",
                "The transfer has finished or never started; its fetch call has the result.",
            ),
            AgentError::Driver(_) | AgentError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Retry; if it fails again, read the agent's log.",
            ),
        }
    }
}

fn image_mapping(error: &ImageError) -> (StatusCode, &'static str, &'static str) {
    match error {
        ImageError::Unreadable { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_unreadable",
            "The file is truncated, corrupt or (for a VMDK descriptor) names a missing extent; import a complete copy.",
        ),
        ImageError::NotAnImage { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_not_an_image",
            "Import a qcow2, raw (.raw or .img), VMDK, VHD, VHDX or ISO file.",
        ),
        ImageError::CheckFailed { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_corrupt",
            "The image failed `qemu-img check`; repair it (`qemu-img check -r all`) or import a good copy.",
        ),
        ImageError::OutsideShare { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "path_outside_share",
            "Name a path relative to the share, without `..` or a leading `/`.",
        ),
        ImageError::Exists { .. } => (
            StatusCode::CONFLICT,
            "library_file_exists",
            "Choose another name with --name, or remove the existing item first.",
        ),
        ImageError::Missing { .. } => (
            StatusCode::NOT_FOUND,
            "library_file_not_found",
            "Run `drover library refresh` to re-index the share.",
        ),
        ImageError::Io { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_io_failed",
            "Check that the file exists on the library server and that the agent can read it and write the share.",
        ),
        ImageError::TransferFailed { .. } => (
            StatusCode::BAD_GATEWAY,
            "transfer_failed",
            "Check that the library server is up and reachable on its transfer port, then retry: the transfer resumes where it stopped.",
        ),
        ImageError::TransferCorrupt { .. } => (
            StatusCode::BAD_GATEWAY,
            "transfer_corrupt",
            "The file on the library server changed or is damaged; run `drover library refresh` and retry.",
        ),
        ImageError::PackageInvalid { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "package_invalid",
            "Fix the package: a well-formed OVF or VMX whose disks are all in the package, named by plain relative paths.",
        ),
        ImageError::DigestMismatch { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "package_digest_mismatch",
            "The package is damaged or was changed after its manifest was made; copy it again from its source.",
        ),
        ImageError::QemuImgMissing(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Install qemu-utils on the library server.",
        ),
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code, action) = self.mapping();
        let message = if status.is_server_error() {
            tracing::error!(error = ?anyhow::Error::from(self), "request failed");
            "the agent failed to handle the request; its log has the details".to_owned()
        } else {
            self.to_string()
        };
        let body = ErrorBody::from(ErrorDetail::new(code, message, action));
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_table() {
        let vm_id = VmId::new();
        let cases: Vec<(AgentError, StatusCode, &str)> = vec![
            (
                AgentError::VmHasNoDisk(vm_id),
                StatusCode::CONFLICT,
                "vm_has_no_disk",
            ),
            (
                AgentError::CheckpointNotFound {
                    vm_id,
                    tag: "t".into(),
                },
                StatusCode::NOT_FOUND,
                "checkpoint_not_found",
            ),
            (
                AgentError::from(DriverError::Snapshot {
                    operation: "snapshot-save".into(),
                    reason: "no space".into(),
                }),
                StatusCode::UNPROCESSABLE_ENTITY,
                "checkpoint_failed",
            ),
            (
                AgentError::EnrollmentCodeInvalid,
                StatusCode::FORBIDDEN,
                "enrollment_code_invalid",
            ),
            (
                AgentError::NotEnrolled,
                StatusCode::CONFLICT,
                "agent_not_enrolled",
            ),
            (
                AgentError::AlreadyEnrolled,
                StatusCode::CONFLICT,
                "agent_already_enrolled",
            ),
            (
                AgentError::EnrollmentNotBegun,
                StatusCode::CONFLICT,
                "enrollment_not_begun",
            ),
            (
                AgentError::EnrollmentCertificateInvalid(drover_tls::TlsError::Pem {
                    what: "certificate",
                }),
                StatusCode::UNPROCESSABLE_ENTITY,
                "enrollment_certificate_invalid",
            ),
            (
                AgentError::RequestInvalid("x".into()),
                StatusCode::BAD_REQUEST,
                "request_invalid",
            ),
            (
                AgentError::RouteNotFound,
                StatusCode::NOT_FOUND,
                "route_not_found",
            ),
            (
                AgentError::VmNotFound(vm_id),
                StatusCode::NOT_FOUND,
                "vm_not_found",
            ),
            (AgentError::VmBusy(vm_id), StatusCode::CONFLICT, "vm_busy"),
            (
                AgentError::VmSpecConflict(vm_id),
                StatusCode::CONFLICT,
                "vm_spec_conflict",
            ),
            (
                AgentError::VmSpecInvalid("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_spec_invalid",
            ),
            (
                AgentError::VmStateConflict {
                    vm_id,
                    action: VmAction::Pause,
                    state: VmState::Stopped,
                },
                StatusCode::CONFLICT,
                "vm_state_conflict",
            ),
            (
                AgentError::VmNotRunning {
                    vm_id,
                    state: VmState::Stopped,
                },
                StatusCode::CONFLICT,
                "vm_not_running",
            ),
            (
                AgentError::ShutdownTimeout {
                    vm_id,
                    after: Duration::from_secs(60),
                },
                StatusCode::CONFLICT,
                "vm_shutdown_timeout",
            ),
            (
                AgentError::FileMissing {
                    what: "kernel",
                    path: "/k".into(),
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "kernel_not_found",
            ),
            (
                AgentError::FileMissing {
                    what: "initrd",
                    path: "/i".into(),
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "initrd_not_found",
            ),
            (
                AgentError::FileMissing {
                    what: "image",
                    path: "/d".into(),
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "image_not_found",
            ),
            (
                AgentError::Unsupported("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_spec_unsupported",
            ),
            (
                AgentError::StartFailed("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
                "vm_start_failed",
            ),
            (
                AgentError::Driver(DriverError::NotRunning),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
            (
                AgentError::Internal(anyhow::anyhow!("boom")),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
            (
                AgentError::VmHasProcess {
                    vm_id,
                    state: VmState::Running,
                },
                StatusCode::CONFLICT,
                "vm_has_process",
            ),
            (
                AgentError::VmFileNotFound {
                    vm_id,
                    name: "x".into(),
                },
                StatusCode::NOT_FOUND,
                "vm_file_not_found",
            ),
            (
                AgentError::VmDefinedHere(vm_id),
                StatusCode::CONFLICT,
                "vm_defined_here",
            ),
            (
                AgentError::TransferNotFound("x".into()),
                StatusCode::NOT_FOUND,
                "transfer_not_found",
            ),
        ];
        for (error, status, code) in cases {
            let (actual_status, actual_code, action) = error.mapping();
            assert_eq!((actual_status, actual_code), (status, code), "{error}");
            assert!(!action.is_empty(), "{error} has an action");
        }
    }

    #[test]
    fn driver_errors_keep_their_cause() {
        let missing = AgentError::from(DriverError::MissingFile {
            what: "kernel",
            path: "/nowhere/vmlinux".into(),
        });
        assert_eq!(missing.mapping().1, "kernel_not_found");
        assert!(missing.to_string().contains("/nowhere/vmlinux"));
        let unsupported = AgentError::from(DriverError::Unsupported("64 vCPUs".into()));
        assert_eq!(unsupported.mapping().1, "vm_spec_unsupported");
    }

    #[tokio::test]
    async fn server_errors_hide_the_chain() {
        let response = AgentError::Internal(anyhow::anyhow!("secret detail")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: ErrorBody = serde_json::from_slice(&bytes).expect("error body");
        assert_eq!(body.error.code, "internal_error");
        assert!(!body.error.message.contains("secret"));
    }
}
