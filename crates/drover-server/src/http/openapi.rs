//! `GET /api/v1/openapi.json`: the OpenAPI document, generated from the handlers' annotations and
//! the API types' schemas, so it cannot drift from the code.

use super::{
    auth, checkpoints, console, events, hostgroups, hosts, jobs, library, migrations, networks,
    placement, templates, v2v, vm_cdrom, vm_store, vms,
};
use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drover API",
        description = "Drover's REST API. Every route but login needs `Authorization: Bearer TOKEN`."
    ),
    paths(
        auth::login,
        hosts::list,
        hosts::get,
        hosts::create,
        hosts::delete,
        hosts::move_to_group,
        hosts::maintenance,
        hostgroups::list,
        hostgroups::get,
        hostgroups::create,
        hostgroups::update,
        hostgroups::delete,
        placement::rate,
        vms::list,
        vms::get,
        vms::create,
        vms::change_state,
        vms::delete,
        vms::add_port_forward,
        vms::remove_port_forward,
        vms::add_nic,
        vms::remove_nic,
        checkpoints::list,
        checkpoints::create,
        checkpoints::restore,
        checkpoints::delete,
        migrations::migrate,
        networks::list,
        networks::get,
        networks::create,
        networks::delete,
        console::attach,
        library::servers,
        library::shares,
        library::add_share,
        library::items,
        library::item,
        library::import,
        library::remove,
        library::refresh,
        templates::hardware_list,
        templates::hardware_get,
        templates::hardware_create,
        templates::guest_os_list,
        templates::guest_os_get,
        templates::guest_os_create,
        templates::list,
        templates::get,
        templates::create,
        templates::create_vm,
        templates::hardware_delete,
        templates::guest_os_delete,
        templates::delete,
        v2v::import,
        jobs::list,
        jobs::get,
        jobs::cancel,
        jobs::restart,
        events::stream,
        vm_store::store,
        vm_store::deploy,
        vm_cdrom::change,
    ),
    components(schemas(drover_api::ErrorBody, drover_api::ErrorDetail, drover_api::Event))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
