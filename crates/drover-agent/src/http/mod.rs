//! The agent's control API (the agent protocol of `drover_api::agent`) as an axum router: a
//! module per resource, one shared [`AgentState`]. Only the enrollment routes answer before the
//! agent is enrolled. TLS and the listener are set up in the crate root, not here.

mod cdrom;
mod checkpoints;
mod console;
mod enroll;
mod events;
mod host;
mod library;
mod migration;
mod networks;
mod transfer;
mod vm_files;
mod vms;

use crate::enrollment::Enrollment;
use crate::error::AgentError;
use crate::library::Library;
use crate::migration::Migrations;
use crate::network::Networks;
use crate::registry::Registry;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use drover_api::agent::VmRuntime;
use drover_hv::VmDriver;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;

use tokio_util::sync::CancellationToken;
pub(crate) use vms::resolve_library_disk;

/// What every handler shares.
pub struct AgentState {
    pub data_dir: PathBuf,
    pub driver: Arc<dyn VmDriver>,
    pub networks: Arc<Networks>,
    pub registry: Registry,
    pub enrollment: Enrollment,
    /// `host`, `library`.
    pub roles: Vec<String>,
    pub library: Library,
    /// Base images fetched from library servers, by fingerprint.
    pub images: crate::cache::ImageCache,
    /// Where the transfer endpoint listens.
    pub transfer_port: u16,
    /// Fetches in progress, for their callers' progress display.
    pub transfers: crate::transfers::Transfers,
    /// Bytes per second the transfer endpoint sends each file at most (`agent.transfer_rate_limit`).
    pub transfer_rate_limit: Option<u64>,
    /// Every VM state change, as the actors publish them.
    pub changes: broadcast::Sender<VmRuntime>,
    /// Cancelled when the agent stops: ends event streams and console relays.
    pub shutdown: CancellationToken,
    /// Live migrations to and from this host.
    pub migrations: Migrations,
}

async fn require_enrollment(
    State(state): State<Arc<AgentState>>,
    request: Request,
    next: Next,
) -> Result<Response, AgentError> {
    if !state.enrollment.is_enrolled() {
        return Err(AgentError::NotEnrolled);
    }
    Ok(next.run(request).await)
}

async fn route_not_found() -> AgentError {
    AgentError::RouteNotFound
}

/// The transfer endpoint's router (`agent.transfer_port`): enrolled peers only.
pub fn transfer_router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/v1/shares/{name}/files/{*path}", get(transfer::get_file))
        .route("/v1/vms/{id}/files/{name}", get(transfer::get_vm_file))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_enrollment,
        ))
        .fallback(route_not_found)
        .with_state(state)
}

pub fn router(state: Arc<AgentState>) -> Router {
    let enrolled_only = Router::new()
        .route("/v1/host", get(host::get))
        .route("/v1/events", get(events::stream))
        .route(
            "/v1/networks/{id}",
            put(networks::realize).delete(networks::remove),
        )
        .route("/v1/vms", get(vms::list))
        .route("/v1/vms/validate", post(vms::validate))
        .route("/v1/vms/{id}", put(vms::define).delete(vms::delete))
        .route("/v1/vms/{id}/actions", post(vms::change_state))
        .route("/v1/vms/{id}/port-forwards", post(vms::add_port_forward))
        .route(
            "/v1/vms/{id}/port-forwards/{protocol}/{host_port}",
            delete(vms::remove_port_forward),
        )
        .route("/v1/vms/{id}/leases", get(vms::leases))
        .route("/v1/vms/{id}/nics", post(vms::add_nic))
        .route("/v1/vms/{id}/nics/{name}", delete(vms::remove_nic))
        .route("/v1/vms/{id}/cdrom", put(cdrom::change))
        .route("/v1/vms/{id}/console", get(console::attach))
        .route(
            "/v1/vms/{id}/checkpoints",
            get(checkpoints::list).post(checkpoints::create),
        )
        .route(
            "/v1/vms/{id}/checkpoints/{tag}/restore",
            post(checkpoints::restore),
        )
        .route(
            "/v1/vms/{id}/checkpoints/{tag}",
            delete(checkpoints::delete),
        )
        .route("/v1/images/fetch", post(transfer::fetch))
        .route("/v1/migrations/incoming", post(migration::receive))
        .route("/v1/migrations/incoming/{id}", delete(migration::abort))
        .route(
            "/v1/migrations/incoming/{id}/resume",
            post(migration::resume),
        )
        .route(
            "/v1/vms/{id}/migration",
            post(migration::send)
                .get(migration::progress)
                .delete(migration::cancel),
        )
        .route("/v1/library/shares/{name}", put(library::add_share))
        .route("/v1/library/shares/{name}/files", get(library::files))
        .route("/v1/library/shares/{name}/import", post(library::import))
        .route(
            "/v1/library/shares/{name}/packages",
            post(library::import_package),
        )
        .route(
            "/v1/library/shares/{name}/files/{*path}",
            delete(library::remove_file),
        )
        .route(
            "/v1/vms/{id}/files",
            get(vm_files::list).delete(vm_files::remove_stored),
        )
        .route("/v1/vms/{id}/files/fetch", post(vm_files::fetch))
        .route("/v1/transfers/{id}", get(vm_files::progress))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_enrollment,
        ));
    Router::new()
        .route("/v1/enroll", post(enroll::begin))
        .route("/v1/enroll/complete", post(enroll::complete))
        .merge(enrolled_only)
        .fallback(route_not_found)
        .with_state(state)
}
