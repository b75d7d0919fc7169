//! The server's side of the agent protocol (`drover_api::agent`): a client for the agents' control
//! endpoints, enrollment of a new agent, and one supervisor task per host that holds the host's
//! event stream and applies it to the database. Nothing here answers HTTP requests.

mod client;
pub mod health;
mod supervisor;

pub use client::{AgentClient, AgentError, Agents, ConsoleStream, address_host, enroll};
pub use supervisor::Supervisors;
