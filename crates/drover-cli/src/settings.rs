//! Command-line flags that set daemon settings, shared by `drover server`, `drover agent`,
//! `drover up` and `drover ports` so that all of them load the same [`Config`] and `drover ports`
//! shows what the daemons would use. Also `drover ports` itself.

use crate::CliError;
use crate::output::{OutputFormat, Table, print_json};
use drover_api::config::Config;
use drover_api::ports::PORT_TABLE;
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// `--config FILE`: a `drover.toml`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFile {
    /// Settings file (drover.toml); DROVER_<SECTION>_<KEY> variables and flags override it.
    #[arg(
        id = "config",
        long = "config",
        value_name = "FILE",
        env = "DROVER_CONFIG"
    )]
    pub path: Option<PathBuf>,
}

/// Flags of the server's settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerFlags {
    /// HTTPS port of the API (server.api_port).
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// Address the API listens on (server.bind_address).
    #[arg(long = "bind-address", value_name = "ADDRESS")]
    pub bind_address: Option<IpAddr>,
}

/// Flags of the agent's settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentFlags {
    /// Control port of the agent (agent.control_port).
    #[arg(long, value_name = "PORT")]
    pub control_port: Option<u16>,
    /// File transfer port of the agent (agent.transfer_port).
    #[arg(long, value_name = "PORT")]
    pub transfer_port: Option<u16>,
    /// Address the agent listens on (agent.bind_address).
    #[arg(long = "bind-address", value_name = "ADDRESS")]
    pub bind_address: Option<IpAddr>,
}

/// One flag that was given: the setting, its value, how it was spelled.
type FlagValue = (&'static str, String, &'static str);

impl ServerFlags {
    pub fn values(&self) -> Vec<FlagValue> {
        let mut values = Vec::new();
        if let Some(port) = self.api_port {
            values.push(("server.api_port", port.to_string(), "--api-port"));
        }
        if let Some(address) = self.bind_address {
            values.push(("server.bind_address", address.to_string(), "--bind-address"));
        }
        values
    }
}

impl AgentFlags {
    pub fn values(&self) -> Vec<FlagValue> {
        let mut values = Vec::new();
        if let Some(port) = self.control_port {
            values.push(("agent.control_port", port.to_string(), "--control-port"));
        }
        if let Some(port) = self.transfer_port {
            values.push(("agent.transfer_port", port.to_string(), "--transfer-port"));
        }
        if let Some(address) = self.bind_address {
            values.push(("agent.bind_address", address.to_string(), "--bind-address"));
        }
        values
    }
}

/// Defaults, then the file, then `DROVER_*` variables, then `flags`, each flag recorded under
/// the name it was given as.
pub fn load_config(file: &ConfigFile, flags: &[FlagValue]) -> Result<Config, CliError> {
    let mut config = Config::load(file.path.as_deref())?;
    for (key, value, flag) in flags {
        config.set_flag(key, flag, value.clone())?;
    }
    Ok(config)
}

/// `drover ports`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PortsArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    /// As `drover server --api-port`.
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// As `drover agent --control-port`.
    #[arg(long, value_name = "PORT")]
    pub control_port: Option<u16>,
    /// As `drover agent --transfer-port`.
    #[arg(long, value_name = "PORT")]
    pub transfer_port: Option<u16>,
}

/// One row of `drover ports -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRow {
    pub connection: &'static str,
    pub protocol: &'static str,
    pub port: String,
    pub config_key: Option<&'static str>,
    pub source: String,
}

pub fn port_rows(config: &Config) -> Vec<PortRow> {
    PORT_TABLE
        .iter()
        .map(|row| {
            let (port, source) = match row.config_key.and_then(|key| config.entry(key)) {
                Some((value, source)) => {
                    let value = if value.is_empty() { "(unset)" } else { value };
                    (value.to_owned(), source.to_string())
                }
                None => (row.fixed.to_owned(), "-".to_owned()),
            };
            PortRow {
                connection: row.connection,
                protocol: row.protocol,
                port,
                config_key: row.config_key,
                source,
            }
        })
        .collect()
}

pub fn ports(args: &PortsArgs, output: OutputFormat) -> Result<(), CliError> {
    let server = ServerFlags {
        api_port: args.api_port,
        bind_address: None,
    };
    let agent = AgentFlags {
        control_port: args.control_port,
        transfer_port: args.transfer_port,
        bind_address: None,
    };
    let flags: Vec<FlagValue> = server.values().into_iter().chain(agent.values()).collect();
    let rows = port_rows(&load_config(&args.config, &flags)?);
    if output == OutputFormat::Json {
        return print_json(&rows);
    }
    let mut table = Table::new(&["CONNECTION", "PROTOCOL", "PORT", "CONFIG KEY", "SOURCE"]);
    for row in rows {
        table.row(vec![
            row.connection.to_owned(),
            row.protocol.to_owned(),
            row.port,
            row.config_key.unwrap_or("-").to_owned(),
            row.source,
        ]);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_say_which_flag() {
        let flags = ServerFlags {
            api_port: Some(9100),
            bind_address: Some("127.0.0.1".parse().expect("address")),
        };
        let config = load_config(&ConfigFile::default(), &flags.values()).expect("config");
        assert_eq!(config.api_port(), 9100);
        let rows = port_rows(&config);
        let api = rows
            .iter()
            .find(|row| row.config_key == Some("server.api_port"))
            .expect("api row");
        assert_eq!(api.port, "9100");
        assert_eq!(api.source, "flag --api-port");
        let console = rows
            .iter()
            .find(|row| row.config_key.is_none())
            .expect("a keyless row");
        assert_eq!(console.source, "-");
    }
}
