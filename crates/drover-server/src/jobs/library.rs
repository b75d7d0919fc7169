//! Library jobs: add a share to a library server, import a file or URL into a share, refresh
//! (index files dropped into shares by hand) and remove an item. The library server's agent does
//! the file work; the database holds the index. Jobs on one share run in order, so an import and
//! a refresh never index the same new file twice.

use super::{JobRun, Plan};
use crate::db::{self, DbError};
use crate::http::ApiError;
use crate::state::AppState;
use drover_api::library::{
    AgentImport, LibraryFile, LibraryImport, LibraryItem, LibraryRefresh, LibraryServer,
    LibraryShare, LibraryShareAdd,
};
use drover_api::{JobTarget, LibraryItemId, LibraryShareId};

/// How often the server indexes files dropped into shares by hand (`drover library refresh`
/// does it at once).
pub const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Submits a refresh of every share every [`REFRESH_INTERVAL`], as the `system` user.
pub fn schedule_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
        ticks.tick().await; // the first tick is now: the server has just started
        loop {
            ticks.tick().await;
            let has_shares = db::library::shares(&state.db)
                .await
                .is_ok_and(|shares| !shares.is_empty());
            if !has_shares {
                continue;
            }
            let spec = super::JobSpec::LibraryRefresh {
                request: LibraryRefresh::default(),
            };
            if let Err(error) = super::submit(&state, spec, "system", None).await {
                tracing::warn!(error = ?anyhow::Error::from(error), "cannot start the scheduled library refresh");
            }
        }
    })
}

/// Jobs on one share (imports, refreshes, removals) share this target, hence one queue.
pub(super) fn share_target(share_id: LibraryShareId, name: &str) -> JobTarget {
    JobTarget {
        kind: "library_share".to_owned(),
        id: share_id.to_string(),
        name: name.to_owned(),
    }
}

async fn library_server(state: &AppState, id_or_name: &str) -> Result<LibraryServer, ApiError> {
    if let Some(server) = db::library::server(&state.db, id_or_name).await? {
        return Ok(server);
    }
    match db::hosts::get(&state.db, id_or_name).await? {
        Some(host) => Err(ApiError::NotLibraryServer(host.name)),
        None => Err(ApiError::HostNotFound(id_or_name.to_owned())),
    }
}

pub(crate) async fn find_share(
    state: &AppState,
    id_or_name: &str,
) -> Result<LibraryShare, ApiError> {
    db::library::share(&state.db, id_or_name)
        .await?
        .ok_or_else(|| ApiError::ShareNotFound(id_or_name.to_owned()))
}

pub(crate) async fn find_item(state: &AppState, id_or_name: &str) -> Result<LibraryItem, ApiError> {
    db::library::item(&state.db, id_or_name)
        .await?
        .ok_or_else(|| ApiError::LibraryItemNotFound(id_or_name.to_owned()))
}

/// The control address of the share's library server.
pub(super) async fn server_address(
    state: &AppState,
    share: &LibraryShare,
) -> Result<String, ApiError> {
    let host = db::hosts::get_by_id(&state.db, share.host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(share.server.clone()))?;
    Ok(host.address)
}

pub(super) async fn prepare_share_add(
    state: &AppState,
    share_id: LibraryShareId,
    request: &LibraryShareAdd,
) -> Result<Plan, ApiError> {
    drover_api::vm::validate_name(&request.name).map_err(ApiError::InvalidName)?;
    if !request.path.starts_with('/') {
        return Err(ApiError::InvalidSharePath(request.path.clone()));
    }
    library_server(state, &request.server).await?;
    if db::library::share(&state.db, &request.name)
        .await?
        .is_some()
    {
        return Err(ApiError::ShareExists(request.name.clone()));
    }
    Ok(Plan {
        description: format!("Add library share {}", request.name),
        target: share_target(share_id, &request.name),
        done: Vec::new(),
        steps: vec![
            "Make the directory a share on the library server",
            "Record the share",
        ],
    })
}

pub(super) async fn run_share_add(
    state: &AppState,
    run: &mut JobRun,
    share_id: LibraryShareId,
    request: LibraryShareAdd,
) -> Result<(), ApiError> {
    let server = library_server(state, &request.server).await?;
    let host = db::hosts::get_by_id(&state.db, server.host_id)
        .await?
        .ok_or_else(|| ApiError::HostNotFound(server.name.clone()))?;
    run.step(async {
        state
            .agents
            .at(&host.address)
            .add_share(&request.name, &request.path)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    run.step(async {
        db::library::insert_share(&state.db, share_id, &request.name, host.id, &request.path)
            .await
            .map_err(|error| match error {
                DbError::Duplicate { .. } => ApiError::ShareExists(request.name.clone()),
                other => other.into(),
            })
    })
    .await
}

/// The share an import goes to: the one named, or the only one there is.
pub(super) async fn import_share(
    state: &AppState,
    request: &LibraryImport,
) -> Result<LibraryShare, ApiError> {
    share_or_only(state, request.share.as_deref()).await
}

/// The share named, or the only share when none is named.
pub(crate) async fn share_or_only(
    state: &AppState,
    share: Option<&str>,
) -> Result<LibraryShare, ApiError> {
    if let Some(share) = share {
        return find_share(state, share).await;
    }
    let mut shares = db::library::shares(&state.db).await?;
    match shares.len() {
        1 => Ok(shares.remove(0)),
        0 => Err(ApiError::ShareRequired(
            "there is no library share yet".to_owned(),
        )),
        _ => Err(ApiError::ShareRequired(format!(
            "there are {} library shares; say which one",
            shares.len()
        ))),
    }
}

fn import_name(request: &LibraryImport) -> String {
    request
        .name
        .clone()
        .unwrap_or_else(|| drover_api::library::name_from_source(&request.source))
}

pub(super) async fn prepare_import(
    state: &AppState,
    request: &LibraryImport,
) -> Result<Plan, ApiError> {
    let share = import_share(state, request).await?;
    let name = import_name(request);
    drover_api::vm::validate_name(&name).map_err(ApiError::InvalidName)?;
    if db::library::item(&state.db, &name).await?.is_some() {
        return Err(ApiError::LibraryItemExists(name));
    }
    if drover_api::library::is_package(&request.source)
        && db::templates::hardware_profile(&state.db, &name)
            .await?
            .is_some()
    {
        return Err(ApiError::ProfileExists {
            kind: "hardware",
            name,
        });
    }
    Ok(Plan {
        description: format!(
            "Import {} into library share {} as {name}",
            request.source, share.name
        ),
        target: share_target(share.id, &share.name),
        done: Vec::new(),
        steps: if drover_api::library::is_package(&request.source) {
            super::package::LIBRARY_IMPORT_STEPS.to_vec()
        } else {
            vec![
                "Copy, convert to qcow2, check and fingerprint the image on the library server",
                "Index the item",
            ]
        },
    })
}

pub(super) async fn run_import(
    state: &AppState,
    run: &mut JobRun,
    item_id: LibraryItemId,
    request: LibraryImport,
) -> Result<(), ApiError> {
    let share = import_share(state, &request).await?;
    let name = import_name(&request);
    if drover_api::library::is_package(&request.source) {
        return super::package::run_library_import(
            state,
            run,
            item_id,
            share,
            &request.source,
            &name,
        )
        .await;
    }
    let address = server_address(state, &share).await?;
    let agent = state.agents.at(&address);
    let file = run
        .step(async {
            agent
                .import(
                    &share.name,
                    &AgentImport {
                        source: request.source.clone(),
                        name: name.clone(),
                    },
                )
                .await
                .map_err(ApiError::from)
        })
        .await?;
    let indexed = run
        .step(async {
            db::library::insert_item(&state.db, item_id, &name, share.id, &file)
                .await
                .map_err(|error| match error {
                    DbError::Duplicate { .. } => ApiError::LibraryItemExists(name.clone()),
                    other => other.into(),
                })
        })
        .await;
    if indexed.is_err() {
        // No library item without its file, and no file without its item.
        if let Err(error) = agent.remove_file(&share.name, &file.path).await {
            tracing::warn!(error = ?anyhow::Error::from(error), "cannot remove the imported file after a failed import");
        }
    }
    indexed
}

pub(super) async fn prepare_refresh(
    state: &AppState,
    request: &LibraryRefresh,
) -> Result<Plan, ApiError> {
    let target = match &request.share {
        Some(share) => {
            let share = find_share(state, share).await?;
            share_target(share.id, &share.name)
        }
        None => JobTarget {
            kind: "library".to_owned(),
            id: "all".to_owned(),
            name: "library".to_owned(),
        },
    };
    Ok(Plan {
        description: format!("Refresh {}", target.name),
        target,
        done: Vec::new(),
        steps: vec!["Index the files of each share on its library server"],
    })
}

pub(super) async fn run_refresh(
    state: &AppState,
    run: &mut JobRun,
    request: LibraryRefresh,
) -> Result<(), ApiError> {
    let shares = match &request.share {
        Some(share) => vec![find_share(state, share).await?],
        None => db::library::shares(&state.db).await?,
    };
    let summary = run
        .step(async {
            let mut added = 0;
            let mut updated = 0;
            for share in &shares {
                // A refresh of every share still waits for the jobs of each share it indexes.
                let _turn = match &request.share {
                    Some(_) => None,
                    None => Some(
                        state
                            .engine
                            .turn(&share_target(share.id, &share.name))
                            .await,
                    ),
                };
                let (share_added, share_updated) = refresh_share(state, share).await?;
                added += share_added;
                updated += share_updated;
            }
            Ok::<_, ApiError>(format!("{added} new, {updated} changed"))
        })
        .await?;
    run.note(&summary).await;
    Ok(())
}

/// Indexes one share's files: new files become items, changed files are re-indexed. Items whose
/// file is gone stay (a share may be offline for a while); `library remove` forgets them.
async fn refresh_share(state: &AppState, share: &LibraryShare) -> Result<(u64, u64), ApiError> {
    let address = server_address(state, share).await?;
    let files = state.agents.at(&address).share_files(&share.name).await?;
    let known = db::library::items(&state.db, Some(share.id)).await?;
    let (mut added, mut updated) = (0, 0);
    for file in files {
        match known.iter().find(|item| item.file.path == file.path) {
            Some(item) if item.file == file => {}
            Some(item) => {
                db::library::update_item_file(&state.db, item.id, &file).await?;
                updated += 1;
            }
            None => {
                let name = free_item_name(state, &file).await?;
                db::library::insert_item(&state.db, LibraryItemId::new(), &name, share.id, &file)
                    .await?;
                added += 1;
            }
        }
    }
    Ok((added, updated))
}

/// An item name for a file found in a share: its stem, or with its fingerprint when taken.
async fn free_item_name(state: &AppState, file: &LibraryFile) -> Result<String, ApiError> {
    let stem = drover_api::library::name_from_source(&file.path);
    let stem = if drover_api::vm::validate_name(&stem).is_ok() {
        stem
    } else {
        "item".to_owned()
    };
    if db::library::item(&state.db, &stem).await?.is_none() {
        return Ok(stem);
    }
    let short: String = file.sha256.chars().take(12).collect();
    Ok(format!("{stem}-{short}"))
}

/// An item a template uses, or an ISO in a VM's CD-ROM drive, stays: the refusal names them.
async fn refuse_if_used(state: &AppState, item: &LibraryItem) -> Result<(), ApiError> {
    let templates = db::templates::names_using_item(&state.db, item.id).await?;
    if !templates.is_empty() {
        return Err(ApiError::LibraryItemInUse {
            item: format!("library item '{}'", item.name),
            templates: templates.join(", "),
        });
    }
    let vms = db::vms::names_with_iso(&state.db, &item.name).await?;
    if !vms.is_empty() {
        return Err(ApiError::IsoInUse {
            item: format!("library item '{}'", item.name),
            vms: vms.join(", "),
        });
    }
    Ok(())
}

pub(super) async fn prepare_remove(
    state: &AppState,
    item_id: LibraryItemId,
) -> Result<Plan, ApiError> {
    let item = find_item(state, &item_id.to_string()).await?;
    refuse_if_used(state, &item).await?;
    Ok(Plan {
        description: format!("Remove library item {}", item.name),
        target: share_target(item.share_id, &item.share),
        done: Vec::new(),
        steps: vec!["Remove the file from its share", "Forget the item"],
    })
}

pub(super) async fn run_remove(
    state: &AppState,
    run: &mut JobRun,
    item_id: LibraryItemId,
) -> Result<(), ApiError> {
    let item = find_item(state, &item_id.to_string()).await?;
    refuse_if_used(state, &item).await?;
    let share = find_share(state, &item.share_id.to_string()).await?;
    let address = server_address(state, &share).await?;
    run.step(async {
        state
            .agents
            .at(&address)
            .remove_file(&share.name, &item.file.path)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    run.step(async {
        db::library::delete_item(&state.db, item.id).await?;
        Ok(())
    })
    .await
}
