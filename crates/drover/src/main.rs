//! The `drover` program: parses the command line and hands over to the server, the agent,
//! `drover up` or the CLI. Wiring only; every behaviour lives in a library crate.

mod daemon;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about = "Drover: a virtual machine manager for KVM/QEMU hosts"
)]
struct Cli {
    #[command(flatten)]
    global: drover_cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: REST API, jobs, database, host supervision.
    Server(daemon::ServerArgs),
    /// Run a host agent: runs this machine's VMs for a server.
    Agent(daemon::AgentArgs),
    /// Run a server and a local agent in one process, the local host added, the CLI logged in.
    Up(up::UpArgs),
    #[command(flatten)]
    Client(drover_cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let daemon_outcome = match cli.command {
        Command::Server(args) => runtime.block_on(daemon::server(args)),
        Command::Agent(args) => runtime.block_on(daemon::agent(args)),
        Command::Up(args) => runtime.block_on(up::up(args)),
        Command::Client(command) => {
            return match runtime.block_on(drover_cli::run(&command, &cli.global)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    drover_cli::print_error(&error.detail());
                    ExitCode::FAILURE
                }
            };
        }
    };
    match daemon_outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_are_clap_errors() {
        let error = Cli::try_parse_from(["drover", "vm", "create", "x"]).expect_err("no disk");
        assert_eq!(error.exit_code(), 2);
        let both = [
            "drover", "vm", "create", "x", "--disk", "none", "--host", "a", "--group", "b",
        ];
        let error = Cli::try_parse_from(both).expect_err("--host and --group conflict");
        assert_eq!(error.exit_code(), 2);
    }
}
