//! `drover vm checkpoint create|list|restore|delete`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_json, time};
use crate::progress::{JobOptions, finish};
use drover_api::Checkpoint;
use drover_client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CheckpointCommand {
    /// Take a checkpoint: the VM's disk, and its memory when it runs.
    Create {
        vm: String,
        /// A name unique among the VM's checkpoints (default: a dated one).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
    /// The VM's checkpoints, oldest first; `*` marks the one the VM came from last.
    List { vm: String },
    /// Return the VM to a checkpoint: a running guest's memory too, or a stopped VM.
    Restore {
        vm: String,
        checkpoint: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Delete a checkpoint; the VM stays as it is.
    Delete {
        vm: String,
        checkpoint: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn checkpoint_table(checkpoints: &[Checkpoint]) -> Table {
    let mut table = Table::new(&["", "NAME", "CREATED", "MEMORY", "PARENT", "ON HOST", "ID"]);
    for checkpoint in checkpoints {
        let parent = checkpoint
            .parent
            .and_then(|parent| checkpoints.iter().find(|other| other.id == parent))
            .map(|parent| parent.name.clone())
            .unwrap_or_default();
        table.row(vec![
            if checkpoint.current { "*" } else { "" }.to_owned(),
            checkpoint.name.clone(),
            time(&checkpoint.created_at),
            yes_no(checkpoint.with_memory),
            parent,
            checkpoint
                .on_host
                .map_or_else(|| "unknown".to_owned(), yes_no),
            checkpoint.id.to_string(),
        ]);
    }
    table
}

pub async fn run(
    client: &Client,
    command: &CheckpointCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    let started = match command {
        CheckpointCommand::List { vm } => {
            let checkpoints = client.checkpoints(vm).await?;
            return match output {
                OutputFormat::Json => print_json(&checkpoints),
                OutputFormat::Table => {
                    checkpoint_table(&checkpoints).print();
                    Ok(())
                }
            };
        }
        CheckpointCommand::Create { vm, name, job } => {
            (client.create_checkpoint(vm, name.as_deref()).await?, job)
        }
        CheckpointCommand::Restore {
            vm,
            checkpoint,
            job,
        } => (client.restore_checkpoint(vm, checkpoint).await?, job),
        CheckpointCommand::Delete {
            vm,
            checkpoint,
            job,
        } => (client.delete_checkpoint(vm, checkpoint).await?, job),
    };
    finish(client, started.0, *started.1, output).await
}
