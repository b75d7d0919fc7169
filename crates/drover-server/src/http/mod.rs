//! The REST API under `/api/v1`: one module per resource, the router, and what every handler
//! shares (extractors that answer in the one error shape, pagination, the 202 answer of jobs).
//! Handlers check and translate; the work is in `jobs` and `db`.

mod auth;
mod checkpoints;
mod console;
mod error;
mod events;
mod hostgroups;
mod hosts;
mod jobs;
mod library;
mod migrations;
mod networks;
mod openapi;
mod placement;
mod templates;
mod v2v;
mod vm_cdrom;
mod vm_store;
mod vms;

pub use auth::{ADMIN, CurrentUser, ensure_admin, issue_token};
pub use error::ApiError;

use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Router, middleware};
use drover_api::Job;
use drover_api::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use serde::de::DeserializeOwned;

/// The whole API. Every route but login needs a bearer token.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/hosts", get(hosts::list).post(hosts::create))
        .route("/hosts/{host}", get(hosts::get).delete(hosts::delete))
        .route("/hosts/{host}/move", post(hosts::move_to_group))
        .route("/hosts/{host}/maintenance", post(hosts::maintenance))
        .route(
            "/hostgroups",
            get(hostgroups::list).post(hostgroups::create),
        )
        .route(
            "/hostgroups/{group}",
            get(hostgroups::get)
                .patch(hostgroups::update)
                .delete(hostgroups::delete),
        )
        .route("/placement/rate", post(placement::rate))
        .route("/vms", get(vms::list).post(vms::create))
        .route("/vms/{vm}", get(vms::get).delete(vms::delete))
        .route("/vms/{vm}/actions", post(vms::change_state))
        .route("/vms/{vm}/console", get(console::attach))
        .route("/vms/{vm}/port-forwards", post(vms::add_port_forward))
        .route(
            "/vms/{vm}/port-forwards/{protocol}/{host_port}",
            delete(vms::remove_port_forward),
        )
        .route("/vms/{vm}/nics", post(vms::add_nic))
        .route("/vms/{vm}/nics/{nic}", delete(vms::remove_nic))
        .route(
            "/vms/{vm}/checkpoints",
            get(checkpoints::list).post(checkpoints::create),
        )
        .route(
            "/vms/{vm}/checkpoints/{checkpoint}/restore",
            post(checkpoints::restore),
        )
        .route(
            "/vms/{vm}/checkpoints/{checkpoint}",
            delete(checkpoints::delete),
        )
        .route("/vms/{vm}/migrate", post(migrations::migrate))
        .route("/vms/{vm}/store", post(vm_store::store))
        .route("/vms/{vm}/deploy", post(vm_store::deploy))
        .route("/vms/{vm}/cdrom", post(vm_cdrom::change))
        .route("/networks", get(networks::list).post(networks::create))
        .route(
            "/networks/{network}",
            get(networks::get).delete(networks::delete),
        )
        .route("/library/servers", get(library::servers))
        .route(
            "/library/shares",
            get(library::shares).post(library::add_share),
        )
        .route("/library/items", get(library::items).post(library::import))
        .route(
            "/library/items/{item}",
            get(library::item).delete(library::remove),
        )
        .route("/library/refresh", post(library::refresh))
        .route(
            "/profiles/hardware",
            get(templates::hardware_list).post(templates::hardware_create),
        )
        .route(
            "/profiles/hardware/{profile}",
            get(templates::hardware_get).delete(templates::hardware_delete),
        )
        .route(
            "/profiles/guest-os",
            get(templates::guest_os_list).post(templates::guest_os_create),
        )
        .route(
            "/profiles/guest-os/{profile}",
            get(templates::guest_os_get).delete(templates::guest_os_delete),
        )
        .route("/templates", get(templates::list).post(templates::create))
        .route(
            "/templates/{template}",
            get(templates::get).delete(templates::delete),
        )
        .route("/templates/{template}/vms", post(templates::create_vm))
        .route("/v2v", post(v2v::import))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{job}", get(jobs::get))
        .route("/jobs/{job}/cancel", post(jobs::cancel))
        .route("/jobs/{job}/restart", post(jobs::restart))
        .route("/events", get(events::stream))
        .route("/openapi.json", get(openapi::document))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let api = Router::new()
        .route("/auth/login", post(auth::login))
        .merge(protected);
    Router::new()
        .nest(drover_api::API_PREFIX, api)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// A JSON body; a malformed one is a 400 `invalid_json` in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(|rejection| ApiError::InvalidJson(rejection.body_text()))
    }
}

/// Query parameters; malformed ones are a 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))
    }
}

/// `202 Accepted` with the job and `Location: /api/v1/jobs/{id}`.
fn accepted(job: Job) -> Response {
    let location = format!("{}/jobs/{}", drover_api::API_PREFIX, job.id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(job),
    )
        .into_response()
}

fn page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_PAGE_SIZE).clamp(1, MAX_PAGE_SIZE)
}

/// Opaque list cursors: the sort key of the last item of a page, hex-encoded so that clients
/// treat it as a token rather than something to build.
mod cursor {
    use super::ApiError;

    pub fn encode(key: &[&str]) -> String {
        hex::encode(key.join("\n"))
    }

    /// The `parts` fields of a cursor made by [`encode`].
    pub fn decode(text: &str, parts: usize) -> Result<Vec<String>, ApiError> {
        let invalid =
            || ApiError::InvalidQuery(format!("cursor '{text}' is not one this server made"));
        let bytes = hex::decode(text).map_err(|_| invalid())?;
        let joined = String::from_utf8(bytes).map_err(|_| invalid())?;
        let fields: Vec<String> = joined.split('\n').map(str::to_owned).collect();
        if fields.len() != parts {
            return Err(invalid());
        }
        Ok(fields)
    }

    /// A (name, id) cursor.
    pub fn decode_pair(text: Option<&str>) -> Result<Option<(String, String)>, ApiError> {
        let Some(text) = text else {
            return Ok(None);
        };
        let mut fields = decode(text, 2)?.into_iter();
        match (fields.next(), fields.next()) {
            (Some(name), Some(id)) => Ok(Some((name, id))),
            _ => Err(ApiError::InvalidQuery(format!(
                "cursor '{text}' is not one this server made"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let text = cursor::encode(&["web1", "6f1c"]);
        assert_eq!(
            cursor::decode_pair(Some(&text)).expect("decodes"),
            Some(("web1".to_owned(), "6f1c".to_owned()))
        );
        for junk in ["zz", "41", ""] {
            assert!(cursor::decode_pair(Some(junk)).is_err(), "{junk}");
        }
        assert_eq!(page_size(Some(100_000)), MAX_PAGE_SIZE);
        assert_eq!(page_size(Some(0)), 1);
    }
}
