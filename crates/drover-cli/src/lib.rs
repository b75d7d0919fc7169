//! Drover's command-line interface, `drover <noun> <verb>` (DESIGN.md section 5), over
//! drover-client: the clap command tree, human tables or `-o json`, progress displays for jobs,
//! the serial console, login and the stored credentials, and the daemon flags shared with the
//! `drover` binary. It starts no daemon: that is the binary's wiring.

mod checkpoint;
pub mod console;
pub mod credentials;
mod error;
mod host;
mod hostgroup;
mod job;
mod library;
mod login;
mod migrate;
mod network;
pub mod output;
mod placement;
mod progress;
pub mod settings;
mod template;
mod v2v;
mod vm;
mod vm_devices;

pub use error::{CliError, print_error};
pub use host::HostCommand;
pub use hostgroup::HostGroupCommand;
pub use job::JobCommand;
pub use library::LibraryCommand;
pub use login::LoginArgs;
pub use network::{NetworkCommand, NetworkCreateArgs};
pub use output::OutputFormat;
pub use placement::PlacementCommand;
pub use progress::JobOptions;
pub use settings::PortsArgs;
pub use template::{ProfileCommand, TemplateCommand};
pub use v2v::V2vCommand;
pub use vm::{VmCommand, VmCreateArgs, VmTarget};

/// Options every client command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Output format: human tables, or the API's JSON objects.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The client commands of `drover`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Log in to a Drover server and store the credentials for later commands.
    Login(LoginArgs),
    /// Virtualization hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Host groups: the tree of hosts, with reserves and rating weights.
    #[command(subcommand)]
    Hostgroup(HostGroupCommand),
    /// Intelligent placement: rate hosts for a VM.
    #[command(subcommand)]
    Placement(PlacementCommand),
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Virtual networks: bridges, NAT, VLANs, DHCP, overlays.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Jobs: every change is one.
    #[command(subcommand)]
    Job(JobCommand),
    /// The library: servers, shares, disk images and ISOs.
    #[command(subcommand)]
    Library(LibraryCommand),
    /// Hardware and guest OS profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Templates: a library disk with a hardware and a guest OS profile.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// The ports Drover uses, with the values in force and where each is set.
    Ports(PortsArgs),
    /// V2V: virtual machines from other hypervisors (OVA, OVF, VMX, VMDK, VHD, VHDX).
    #[command(subcommand)]
    V2v(V2vCommand),
}

/// Runs one client command.
pub async fn run(command: &Command, global: &GlobalArgs) -> Result<(), CliError> {
    let output = global.output;
    match command {
        Command::Login(args) => login::login(args).await,
        Command::Ports(args) => settings::ports(args, output),
        Command::Host(command) => host::run(&credentials::client()?, command, output).await,
        Command::Hostgroup(command) => {
            hostgroup::run(&credentials::client()?, command, output).await
        }
        Command::Placement(command) => {
            placement::run(&credentials::client()?, command, output).await
        }
        Command::Vm(command) => vm::run(&credentials::client()?, command, output).await,
        Command::Network(command) => network::run(&credentials::client()?, command, output).await,
        Command::Job(command) => job::run(&credentials::client()?, command, output).await,
        Command::Library(command) => library::run(&credentials::client()?, command, output).await,
        Command::Profile(command) => {
            template::run_profile(&credentials::client()?, command, output).await
        }
        Command::Template(command) => {
            template::run_template(&credentials::client()?, command, output).await
        }
        Command::V2v(command) => v2v::run(&credentials::client()?, command, output).await,
    }
}
