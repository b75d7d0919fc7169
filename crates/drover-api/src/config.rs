//! Drover's settings: one table of keys with defaults, overridden in order by `drover.toml`, by
//! `DROVER_<SECTION>_<KEY>` environment variables and by command-line flags. Every value keeps
//! where it came from, so that `drover ports` can say why a port is what it is.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// A setting that can be written in `drover.toml` as `[section] key = value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// `section.key`.
    pub key: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "server.api_port",
        default: "8100",
        help: "HTTPS port of the REST API, web console and WebSocket streams",
    },
    Setting {
        key: "server.bind_address",
        default: "0.0.0.0",
        help: "address the server listens on",
    },
    Setting {
        key: "server.migrations_per_host",
        default: "2",
        help: "live migrations one host runs at once (as source or destination); more wait",
    },
    Setting {
        key: "portal.port",
        default: "8443",
        help: "HTTPS port of a separate self-service portal front end",
    },
    Setting {
        key: "portal.server_url",
        default: "https://localhost:8100",
        help: "where a separate portal front end finds the server",
    },
    Setting {
        key: "agent.control_port",
        default: "8101",
        help: "agent control and event stream (mutual TLS)",
    },
    Setting {
        key: "agent.transfer_port",
        default: "8102",
        help: "agent file transfers (mutual TLS, HTTP ranges)",
    },
    Setting {
        key: "agent.migration_ports",
        default: "49152-49215",
        help: "ports an agent may open for incoming live migrations",
    },
    Setting {
        key: "agent.bind_address",
        default: "0.0.0.0",
        help: "address the agent listens on",
    },
    Setting {
        key: "network.vxlan_port",
        default: "4789",
        help: "UDP port of overlay networks between hosts",
    },
    Setting {
        key: "database.url",
        default: "",
        help: "PostgreSQL URL; empty means SQLite in the data directory",
    },
    Setting {
        key: "p2v.library_url",
        default: "",
        help: "library transfer endpoint a p2v source sends to",
    },
    Setting {
        key: "agent.transfer_rate_limit",
        default: "0",
        help: "bytes per second the transfer endpoint sends each file at most (0: no limit; K, M, G)",
    },
    Setting {
        key: "agent.cache_min_free",
        default: "2G",
        help: "free disk space below which a host removes unused cached base images, oldest use first",
    },
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("unknown setting '{key}' ({source_of_value}); known settings: {known}")]
    Unknown {
        key: String,
        source_of_value: Source,
        known: String,
    },
    #[error("setting {key} = '{value}' ({source_of_value}) is invalid: {reason}")]
    Invalid {
        key: String,
        value: String,
        source_of_value: Source,
        reason: String,
    },
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Default for Config {
    fn default() -> Self {
        let values = SETTINGS
            .iter()
            .map(|setting| (setting.key, (setting.default.to_owned(), Source::Default)))
            .collect();
        Self { values }
    }
}

/// The environment variable that sets `key`: `server.api_port` is `DROVER_SERVER_API_PORT`.
pub fn env_name(key: &str) -> String {
    format!("DROVER_{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment. Command-line flags come
    /// last, through [`Config::set_flag`].
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, std::env::vars())
    }

    pub fn load_from(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
            for (section, entries) in table {
                let source = Source::File(path.to_owned());
                let toml::Value::Table(entries) = entries else {
                    return Err(config.unknown(&section, source));
                };
                for (name, value) in entries {
                    let text = match value {
                        toml::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    config.set(&format!("{section}.{name}"), text, source.clone())?;
                }
            }
        }
        let environment: BTreeMap<String, String> = environment.into_iter().collect();
        for setting in SETTINGS {
            let name = env_name(setting.key);
            if let Some(value) = environment.get(&name) {
                config.set(setting.key, value.clone(), Source::Env(name))?;
            }
        }
        for (key, (value, source)) in &config.values {
            validate(key, value, source)?;
        }
        Ok(config)
    }

    /// Sets `key` from the command-line flag `flag` (as the user spells it, `--api-port`).
    pub fn set_flag(&mut self, key: &str, flag: &str, value: String) -> Result<(), ConfigError> {
        let source = Source::Flag(flag.to_owned());
        validate(key, &value, &source)?;
        self.set(key, value, source)
    }

    fn unknown(&self, key: &str, source: Source) -> ConfigError {
        ConfigError::Unknown {
            key: key.to_owned(),
            source_of_value: source,
            known: SETTINGS
                .iter()
                .map(|s| s.key)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Sets one value, refusing keys that do not exist.
    pub fn set(&mut self, key: &str, value: String, source: Source) -> Result<(), ConfigError> {
        let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
            return Err(self.unknown(key, source));
        };
        self.values.insert(setting.key, (value, source));
        Ok(())
    }

    /// The value of `key` and where it came from.
    pub fn entry(&self, key: &str) -> Option<(&str, &Source)> {
        self.values
            .get(key)
            .map(|(value, source)| (value.as_str(), source))
    }

    fn value(&self, key: &str) -> &str {
        self.entry(key).map(|(value, _)| value).unwrap_or_default()
    }

    fn port(&self, key: &str) -> u16 {
        parse_port(self.value(key)).unwrap_or_default()
    }

    fn address(&self, key: &str) -> IpAddr {
        self.value(key)
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    pub fn api_port(&self) -> u16 {
        self.port("server.api_port")
    }

    pub fn server_bind_address(&self) -> IpAddr {
        self.address("server.bind_address")
    }

    pub fn agent_control_port(&self) -> u16 {
        self.port("agent.control_port")
    }

    pub fn agent_transfer_port(&self) -> u16 {
        self.port("agent.transfer_port")
    }

    pub fn agent_bind_address(&self) -> IpAddr {
        self.address("agent.bind_address")
    }

    /// UDP port of overlay networks' VXLAN tunnels.
    pub fn vxlan_port(&self) -> u16 {
        self.port("network.vxlan_port")
    }

    pub fn migration_ports(&self) -> RangeInclusive<u16> {
        parse_port_range(self.value("agent.migration_ports")).unwrap_or(0..=0)
    }

    /// How many live migrations one host runs at once.
    pub fn migrations_per_host(&self) -> usize {
        parse_count(self.value("server.migrations_per_host")).unwrap_or(1)
    }

    /// Bytes per second a transfer endpoint sends each file at most; `None`: no limit.
    pub fn transfer_rate_limit(&self) -> Option<u64> {
        crate::size::parse_bytes(self.value("agent.transfer_rate_limit"))
            .ok()
            .filter(|rate| *rate > 0)
    }

    /// Free space below which a host evicts unused base images from its cache.
    pub fn cache_min_free(&self) -> u64 {
        crate::size::parse_bytes(self.value("agent.cache_min_free")).unwrap_or_default()
    }

    /// `None` means SQLite in the data directory.
    pub fn database_url(&self) -> Option<&str> {
        Some(self.value("database.url")).filter(|url| !url.is_empty())
    }
}

/// Checks a value against the kind of setting its key names (`*_port`, `*_ports`, `*_address`).
fn validate(key: &str, value: &str, source: &Source) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        source_of_value: source.clone(),
        reason,
    };
    if key.ends_with("_port") {
        parse_port(value).map_err(invalid)?;
    } else if key.ends_with("_ports") {
        parse_port_range(value).map_err(invalid)?;
    } else if key.ends_with("_per_host") {
        parse_count(value).map_err(invalid)?;
    } else if key.ends_with("_limit") || key.ends_with("_free") {
        crate::size::parse_bytes(value).map_err(invalid)?;
    } else if key.ends_with("_address") {
        value
            .parse::<IpAddr>()
            .map_err(|_| invalid("not an IP address".to_owned()))?;
    }
    Ok(())
}

/// A count of at least 1.
fn parse_count(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|count| *count >= 1)
        .ok_or_else(|| "not a whole number of at least 1".to_owned())
}

/// A TCP or UDP port; 0 asks the kernel for a free one (tests use it).
pub fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .map_err(|_| "not a port number (0 to 65535)".to_owned())
}

/// `A-B` with A <= B, or a single port.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let first = parse_port(first)?;
    let last = parse_port(last)?;
    if first > last {
        return Err("the range's first port is above its last".to_owned());
    }
    Ok(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("drover-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("drover.toml");
        std::fs::write(
            &file,
            "[server]\napi_port = 9100\n[agent]\ncontrol_port = 9101\ntransfer_port = 9102\n",
        )
        .expect("write config");
        let environment = [
            ("DROVER_AGENT_CONTROL_PORT".to_owned(), "7101".to_owned()),
            ("DROVER_AGENT_TRANSFER_PORT".to_owned(), "7102".to_owned()),
        ];
        let mut config = Config::load_from(Some(&file), environment).expect("loads");
        config
            .set_flag("agent.transfer_port", "--transfer-port", "6102".to_owned())
            .expect("a valid flag");
        assert_eq!(config.api_port(), 9100);
        assert_eq!(
            config.entry("server.api_port").map(|e| e.1.clone()),
            Some(Source::File(file.clone()))
        );
        assert_eq!(config.agent_control_port(), 7101);
        assert_eq!(
            config.entry("agent.control_port").map(|e| e.1.clone()),
            Some(Source::Env("DROVER_AGENT_CONTROL_PORT".to_owned()))
        );
        assert_eq!(config.agent_transfer_port(), 6102);
        assert_eq!(config.migration_ports(), 49152..=49215);
        assert_eq!(
            config.entry("network.vxlan_port").map(|e| e.1.clone()),
            Some(Source::Default)
        );
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            ("server.api_port", "70000"),
            ("agent.migration_ports", "5000-4000"),
            ("agent.bind_address", "localhost:1"),
            ("server.no_such_key", "1"),
        ];
        for (key, value) in cases {
            let mut config = Config::default();
            assert!(
                config.set_flag(key, "--flag", value.to_owned()).is_err(),
                "{key}={value}"
            );
            assert_eq!(config, Config::default(), "a refused value changes nothing");
            let environment = [(env_name(key), value.to_owned())];
            let known = SETTINGS.iter().any(|setting| setting.key == key);
            assert_eq!(
                Config::load_from(None, environment).is_err(),
                known,
                "{key}={value} from the environment"
            );
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("server.api_port"), "DROVER_SERVER_API_PORT");
    }
}
