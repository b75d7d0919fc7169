//! The state every handler, job and supervisor shares: database, certificates, the agent client,
//! the job engine, the host supervisors and the event bus. Cheap to clone.

use crate::agents::{Agents, Supervisors};
use crate::db::Db;
use crate::jobs::Engine;
use crate::pki::Pki;
use anyhow::Context;
use drover_api::Event;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many events a slow WebSocket client may fall behind before it misses some.
const EVENT_BACKLOG: usize = 4096;

#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub db: Db,
    pub pki: Pki,
    pub agents: Agents,
    pub engine: Engine,
    pub supervisors: Supervisors,
    events: broadcast::Sender<Event>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Opens the database and loads (or makes) the certificates in `data_dir`. Starts no task:
    /// component tests drive the router of such a state directly.
    pub async fn open(data_dir: &Path) -> anyhow::Result<AppState> {
        crate::pki::create_private_dir(data_dir).context("cannot create the data directory")?;
        let pki =
            Pki::load_or_create(&data_dir.join("pki")).context("cannot set up the certificates")?;
        let db = Db::open(&data_dir.join("drover.db"))
            .await
            .context("cannot open the database")?;
        let agents = Agents::new(&pki).context("cannot set up the agent client")?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Ok(AppState(Arc::new(Shared {
            db,
            pki,
            agents,
            engine: Engine::default(),
            supervisors: Supervisors::default(),
            events,
        })))
    }

    /// Announces a change to every event subscriber (nobody listening is fine).
    pub fn publish(&self, event: Event) {
        let _no_subscriber_is_fine = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}
