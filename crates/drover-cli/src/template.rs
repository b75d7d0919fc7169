//! `drover profile hardware|guest-os create|list|show|delete` and
//! `drover template create|list|show|delete`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish};
use drover_api::size::format_bytes;
use drover_api::template::{
    GuestOsProfileCreate, GuestOsSpec, HardwareProfileCreate, HardwareSpec, TemplateCreate,
};
use drover_client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProfileCommand {
    /// Hardware profiles: CPUs, memory, disks, NICs, boot order, machine, direct kernel boot.
    #[command(subcommand)]
    Hardware(HardwareCommand),
    /// Guest OS profiles: host name, users, SSH keys, password hash, time zone, user-data.
    #[command(subcommand, name = "guest-os")]
    GuestOs(GuestOsCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HardwareCommand {
    Create(Box<HardwareCreateArgs>),
    List,
    Show {
        profile: String,
    },
    /// Delete a profile; refused while templates use it.
    Delete(ProfileDeleteArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct HardwareCreateArgs {
    name: String,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory, for example 512M or 2G.
    #[arg(long, default_value = "512M", value_parser = crate::vm::parse_memory_mib)]
    memory: u64,
    /// An extra blank data disk of this size (repeatable), for example 10G.
    #[arg(long = "data-disk", value_parser = drover_api::size::parse_bytes)]
    data_disks: Vec<u64>,
    /// A network adapter on this network (repeatable).
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// Boot devices in order: disk, cdrom, network.
    #[arg(long, value_delimiter = ',')]
    boot_order: Vec<String>,
    /// QEMU machine type.
    #[arg(long)]
    machine: Option<String>,
    #[command(flatten)]
    boot: DirectBootArgs,
    #[command(flatten)]
    job: JobOptions,
}

/// Direct kernel boot: a kernel, initrd and command line, files on the host.
#[derive(Debug, Clone, clap::Args)]
pub struct DirectBootArgs {
    #[arg(long)]
    pub kernel: Option<String>,
    #[arg(long)]
    pub initrd: Option<String>,
    #[arg(long)]
    pub cmdline: Option<String>,
}

/// `delete PROFILE`, refused while templates use it.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileDeleteArgs {
    profile: String,
    #[command(flatten)]
    job: JobOptions,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GuestOsCommand {
    Create(Box<GuestOsCreateArgs>),
    List,
    Show {
        profile: String,
    },
    /// Delete a profile; refused while templates use it.
    Delete(ProfileDeleteArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct GuestOsCreateArgs {
    name: String,
    /// Host name pattern; each `*` becomes a random letter or digit.
    #[arg(long)]
    hostname: String,
    /// A user to create (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// An authorized SSH public key (repeatable).
    #[arg(long = "ssh-key")]
    ssh_keys: Vec<String>,
    /// A crypt(3) password hash (`mkpasswd -m sha-512`); never a clear password.
    #[arg(long)]
    password_hash: Option<String>,
    #[arg(long)]
    timezone: Option<String>,
    /// A file of extra cloud-config user-data.
    #[arg(long, value_name = "FILE")]
    user_data: Option<std::path::PathBuf>,
    #[command(flatten)]
    job: JobOptions,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TemplateCommand {
    /// A template: a library disk, a hardware profile and optionally a guest OS profile.
    Create {
        name: String,
        /// The library item (disk image).
        #[arg(long)]
        disk: String,
        /// The hardware profile.
        #[arg(long)]
        hardware: String,
        /// The guest OS profile.
        #[arg(long)]
        guest_os: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
    List,
    Show {
        template: String,
    },
    /// Delete a template (VMs made from it keep running: they do not depend on it).
    Delete {
        template: String,
        #[command(flatten)]
        job: JobOptions,
    },
}

fn optional(value: Option<&String>) -> String {
    value.cloned().unwrap_or_else(|| "-".to_owned())
}

pub async fn run_profile(
    client: &Client,
    command: &ProfileCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        ProfileCommand::Hardware(HardwareCommand::Create(args)) => {
            let create = HardwareProfileCreate {
                name: args.name.clone(),
                spec: HardwareSpec {
                    cpus: args.cpus,
                    memory_mib: args.memory,
                    data_disks: args.data_disks.clone(),
                    nics: args.nics.clone(),
                    boot_order: args.boot_order.clone(),
                    machine: args.machine.clone(),
                    kernel: args.boot.kernel.clone(),
                    initrd: args.boot.initrd.clone(),
                    cmdline: args.boot.cmdline.clone(),
                },
            };
            let started = client.create_hardware_profile(&create).await?;
            finish(client, started, args.job, output).await
        }
        ProfileCommand::Hardware(HardwareCommand::Delete(args)) => {
            let started = client.delete_hardware_profile(&args.profile).await?;
            finish(client, started, args.job, output).await
        }
        ProfileCommand::GuestOs(GuestOsCommand::Delete(args)) => {
            let started = client.delete_guest_os_profile(&args.profile).await?;
            finish(client, started, args.job, output).await
        }
        ProfileCommand::Hardware(HardwareCommand::List) => {
            let profiles = client.hardware_profiles().await?;
            if output == OutputFormat::Json {
                return print_json(&profiles);
            }
            let mut table = Table::new(&["NAME", "CPUS", "MEMORY", "DATA DISKS", "NICS", "KERNEL"]);
            for profile in &profiles {
                table.row(vec![
                    profile.name.clone(),
                    profile.spec.cpus.to_string(),
                    format_bytes(profile.spec.memory_mib << 20),
                    profile.spec.data_disks.len().to_string(),
                    profile.spec.nics.len().to_string(),
                    optional(profile.spec.kernel.as_ref()),
                ]);
            }
            table.print();
            Ok(())
        }
        ProfileCommand::Hardware(HardwareCommand::Show { profile }) => {
            let profile = client.hardware_profile(profile).await?;
            if output == OutputFormat::Json {
                return print_json(&profile);
            }
            let spec = &profile.spec;
            print_fields(&[
                ("Name", profile.name.clone()),
                ("CPUs", spec.cpus.to_string()),
                ("Memory", format_bytes(spec.memory_mib << 20)),
                (
                    "Data disks",
                    spec.data_disks
                        .iter()
                        .map(|size| format_bytes(*size))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                ("NICs", spec.nics.join(", ")),
                ("Boot order", spec.boot_order.join(", ")),
                ("Machine", optional(spec.machine.as_ref())),
                ("Kernel", optional(spec.kernel.as_ref())),
                ("Initrd", optional(spec.initrd.as_ref())),
                ("Command line", optional(spec.cmdline.as_ref())),
                ("Created", time(&profile.created_at)),
            ]);
            Ok(())
        }
        ProfileCommand::GuestOs(GuestOsCommand::Create(args)) => {
            let user_data = match &args.user_data {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
                    CliError::local(
                        "user_data_unreadable",
                        format!("cannot read {}: {error}", path.display()),
                        "name a readable cloud-config file",
                    )
                })?),
                None => None,
            };
            let create = GuestOsProfileCreate {
                name: args.name.clone(),
                spec: GuestOsSpec {
                    hostname: args.hostname.clone(),
                    users: args.users.clone(),
                    ssh_keys: args.ssh_keys.clone(),
                    password_hash: args.password_hash.clone(),
                    timezone: args.timezone.clone(),
                    user_data,
                },
            };
            let started = client.create_guest_os_profile(&create).await?;
            finish(client, started, args.job, output).await
        }
        ProfileCommand::GuestOs(GuestOsCommand::List) => {
            let profiles = client.guest_os_profiles().await?;
            if output == OutputFormat::Json {
                return print_json(&profiles);
            }
            let mut table = Table::new(&["NAME", "HOSTNAME", "USERS", "SSH KEYS", "TIMEZONE"]);
            for profile in &profiles {
                table.row(vec![
                    profile.name.clone(),
                    profile.spec.hostname.clone(),
                    profile.spec.users.join(","),
                    profile.spec.ssh_keys.len().to_string(),
                    optional(profile.spec.timezone.as_ref()),
                ]);
            }
            table.print();
            Ok(())
        }
        ProfileCommand::GuestOs(GuestOsCommand::Show { profile }) => {
            let profile = client.guest_os_profile(profile).await?;
            if output == OutputFormat::Json {
                return print_json(&profile);
            }
            let spec = &profile.spec;
            print_fields(&[
                ("Name", profile.name.clone()),
                ("Host name", spec.hostname.clone()),
                ("Users", spec.users.join(", ")),
                ("SSH keys", spec.ssh_keys.len().to_string()),
                (
                    "Password",
                    if spec.password_hash.is_some() {
                        "hash set"
                    } else {
                        "none"
                    }
                    .to_owned(),
                ),
                ("Time zone", optional(spec.timezone.as_ref())),
                (
                    "User-data",
                    if spec.user_data.is_some() {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_owned(),
                ),
                ("Created", time(&profile.created_at)),
            ]);
            Ok(())
        }
    }
}

pub async fn run_template(
    client: &Client,
    command: &TemplateCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        TemplateCommand::Create {
            name,
            disk,
            hardware,
            guest_os,
            job,
        } => {
            let create = TemplateCreate {
                name: name.clone(),
                disk: disk.clone(),
                hardware: hardware.clone(),
                guest_os: guest_os.clone(),
            };
            let started = client.create_template(&create).await?;
            finish(client, started, *job, output).await
        }
        TemplateCommand::Delete { template, job } => {
            let started = client.delete_template(template).await?;
            finish(client, started, *job, output).await
        }
        TemplateCommand::List => {
            let templates = client.templates().await?;
            if output == OutputFormat::Json {
                return print_json(&templates);
            }
            let mut table = Table::new(&["NAME", "DISK", "HARDWARE", "GUEST OS"]);
            for template in &templates {
                table.row(vec![
                    template.name.clone(),
                    template.disk.clone(),
                    template.hardware.clone(),
                    optional(template.guest_os.as_ref()),
                ]);
            }
            table.print();
            Ok(())
        }
        TemplateCommand::Show { template } => {
            let template = client.template(template).await?;
            if output == OutputFormat::Json {
                return print_json(&template);
            }
            print_fields(&[
                ("Name", template.name.clone()),
                ("Id", template.id.to_string()),
                ("Disk", template.disk.clone()),
                ("Hardware profile", template.hardware.clone()),
                ("Guest OS profile", optional(template.guest_os.as_ref())),
                ("Created", time(&template.created_at)),
            ]);
            Ok(())
        }
    }
}
