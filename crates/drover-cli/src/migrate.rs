//! `drover vm migrate NAME [--to HOST]`: moves a VM to another host (job `vm.migrate`).

use crate::CliError;
use crate::output::OutputFormat;
use crate::progress::{JobOptions, finish};
use drover_api::migration::VmMigrate;
use drover_client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    pub vm: String,
    /// The destination host (id or name); the best-rated other host when left out.
    #[arg(long, value_name = "HOST")]
    pub to: Option<String>,
    /// Caps the disk copy's speed, in bytes per second (spares a busy network).
    #[arg(long, value_name = "BYTES")]
    pub mirror_speed: Option<u64>,
    #[command(flatten)]
    pub job: JobOptions,
}

pub async fn run(
    client: &Client,
    args: &MigrateArgs,
    output: OutputFormat,
) -> Result<(), CliError> {
    let request = VmMigrate {
        to: args.to.clone(),
        mirror_bytes_per_second: args.mirror_speed,
    };
    let started = client.migrate_vm(&args.vm, &request).await?;
    finish(client, started, args.job, output).await
}
