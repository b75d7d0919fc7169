//! `drover library server list`, `library share add|list`, `library import|list|show|remove|refresh`.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_fields, print_json, time};
use crate::progress::{JobOptions, finish};
use drover_api::library::{LibraryImport, LibraryItem, LibraryRefresh, LibraryShareAdd};
use drover_api::size::format_bytes;
use drover_client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LibraryCommand {
    /// Library servers: hosts whose agent runs with the library role.
    #[command(subcommand)]
    Server(LibraryServerCommand),
    /// Library shares: directories on library servers.
    #[command(subcommand)]
    Share(LibraryShareCommand),
    /// Import a disk image (qcow2, raw, VMDK, VHD, VHDX) or ISO into a share: disks are converted
    /// to qcow2, checked and fingerprinted. An OVA, OVF or VMX imports each of its disks
    /// (NAME-diskN when several) and a hardware profile NAME from its description.
    Import {
        /// An absolute path on the library server, or an http(s) URL it downloads.
        source: String,
        /// The share (default: the only one).
        #[arg(long)]
        share: Option<String>,
        /// The item's name (default: the source's file name without extension).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
    /// List library items.
    List {
        /// Only the items of this share.
        #[arg(long)]
        share: Option<String>,
    },
    /// A library item's details.
    Show { item: String },
    /// Remove an item and its file.
    Remove {
        item: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// Index files dropped into shares by hand (the server also does it every 15 minutes).
    Refresh {
        /// Only this share.
        #[arg(long)]
        share: Option<String>,
        #[command(flatten)]
        job: JobOptions,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LibraryServerCommand {
    /// List the library servers.
    List,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LibraryShareCommand {
    /// Serve a directory of a library server as a share (made when missing).
    Add {
        name: String,
        /// The library server (host name or id).
        #[arg(long)]
        server: String,
        /// An absolute directory on the library server.
        #[arg(long)]
        path: String,
        #[command(flatten)]
        job: JobOptions,
    },
    /// List the shares.
    List,
}

fn item_table(items: &[LibraryItem]) -> Table {
    let mut table = Table::new(&[
        "NAME", "KIND", "FORMAT", "SIZE", "ON DISK", "SHARE", "SHA-256",
    ]);
    for item in items {
        table.row(vec![
            item.name.clone(),
            item.file.kind.as_str().to_owned(),
            item.file.format.clone(),
            format_bytes(item.file.virtual_size),
            format_bytes(item.file.actual_size),
            item.share.clone(),
            item.file.sha256.chars().take(12).collect(),
        ]);
    }
    table
}

pub async fn run(
    client: &Client,
    command: &LibraryCommand,
    output: OutputFormat,
) -> Result<(), CliError> {
    match command {
        LibraryCommand::Server(LibraryServerCommand::List) => {
            let servers = client.library_servers().await?;
            if output == OutputFormat::Json {
                return print_json(&servers);
            }
            let mut table = Table::new(&["NAME", "TRANSFER ADDRESS", "SHARES"]);
            for server in &servers {
                table.row(vec![
                    server.name.clone(),
                    server.transfer_address.clone(),
                    server.share_count.to_string(),
                ]);
            }
            table.print();
            Ok(())
        }
        LibraryCommand::Share(LibraryShareCommand::Add {
            name,
            server,
            path,
            job,
        }) => {
            let add = LibraryShareAdd {
                name: name.clone(),
                server: server.clone(),
                path: path.clone(),
            };
            let started = client.add_library_share(&add).await?;
            finish(client, started, *job, output).await
        }
        LibraryCommand::Share(LibraryShareCommand::List) => {
            let shares = client.library_shares().await?;
            if output == OutputFormat::Json {
                return print_json(&shares);
            }
            let mut table = Table::new(&["NAME", "SERVER", "PATH", "ITEMS"]);
            for share in &shares {
                table.row(vec![
                    share.name.clone(),
                    share.server.clone(),
                    share.path.clone(),
                    share.item_count.to_string(),
                ]);
            }
            table.print();
            Ok(())
        }
        LibraryCommand::Import {
            source,
            share,
            name,
            job,
        } => {
            let import = LibraryImport {
                source: source.clone(),
                share: share.clone(),
                name: name.clone(),
            };
            let started = client.import_library_item(&import).await?;
            finish(client, started, *job, output).await
        }
        LibraryCommand::List { share } => {
            let items = client.library_items(share.as_deref()).await?;
            match output {
                OutputFormat::Json => print_json(&items),
                OutputFormat::Table => {
                    item_table(&items).print();
                    Ok(())
                }
            }
        }
        LibraryCommand::Show { item } => {
            let item = client.library_item(item).await?;
            if output == OutputFormat::Json {
                return print_json(&item);
            }
            let chain = if item.file.backing_chain.is_empty() {
                "none".to_owned()
            } else {
                item.file.backing_chain.join(" -> ")
            };
            print_fields(&[
                ("Name", item.name.clone()),
                ("Id", item.id.to_string()),
                ("Kind", item.file.kind.as_str().to_owned()),
                ("Format", item.file.format.clone()),
                ("Virtual size", format_bytes(item.file.virtual_size)),
                ("On disk", format_bytes(item.file.actual_size)),
                ("Backing chain", chain),
                ("SHA-256", item.file.sha256.clone()),
                ("Share", item.share.clone()),
                ("Path", item.file.path.clone()),
                ("Added", time(&item.created_at)),
            ]);
            Ok(())
        }
        LibraryCommand::Remove { item, job } => {
            let started = client.remove_library_item(item).await?;
            finish(client, started, *job, output).await
        }
        LibraryCommand::Refresh { share, job } => {
            let refresh = LibraryRefresh {
                share: share.clone(),
            };
            let started = client.refresh_library(&refresh).await?;
            finish(client, started, *job, output).await
        }
    }
}
