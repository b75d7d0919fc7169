//! Profiles and templates (SCVMM's hardware profile, guest OS profile and template): what a VM
//! made from a template gets. A template is a library disk plus a hardware profile plus,
//! optionally, a guest OS profile that becomes a cloud-init NoCloud seed.

use crate::id::{LibraryItemId, ProfileId, TemplateId};
use crate::vm::CloudInitSeed;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The hardware a VM gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HardwareSpec {
    pub cpus: u32,
    pub memory_mib: u64,
    /// Extra blank data disks, sizes in bytes (the template's disk is the first disk).
    #[serde(default)]
    pub data_disks: Vec<u64>,
    /// One network adapter per entry, named by the network it joins.
    #[serde(default)]
    pub nics: Vec<String>,
    /// `disk`, `cdrom`, `network`, in order.
    #[serde(default)]
    pub boot_order: Vec<String>,
    /// QEMU machine type (default: the host's `q35`/`microvm` choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Direct kernel boot: paths on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HardwareProfile {
    pub id: ProfileId,
    pub name: String,
    #[serde(flatten)]
    pub spec: HardwareSpec,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/profiles/hardware`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HardwareProfileCreate {
    pub name: String,
    #[serde(flatten)]
    pub spec: HardwareSpec,
}

/// The customization a guest gets at first boot, as cloud-init NoCloud data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestOsSpec {
    /// Host name pattern; each `*` becomes a random letter or digit.
    pub hostname: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// A crypt(3) hash, never a clear password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Extra cloud-config, merged after Drover's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestOsProfile {
    pub id: ProfileId,
    pub name: String,
    #[serde(flatten)]
    pub spec: GuestOsSpec,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/profiles/guest-os`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestOsProfileCreate {
    pub name: String,
    #[serde(flatten)]
    pub spec: GuestOsSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    pub id: TemplateId,
    pub name: String,
    /// The library item whose disk every VM of this template starts from.
    pub disk: String,
    pub disk_id: LibraryItemId,
    pub hardware: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TemplateCreate {
    pub name: String,
    /// A library item (disk image), by id or name.
    pub disk: String,
    /// A hardware profile, by id or name.
    pub hardware: String,
    /// A guest OS profile, by id or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_os: Option<String>,
}

/// `POST /api/v1/templates/{template}/vms`: a VM from a template, a linked clone of its disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmFromTemplate {
    pub name: String,
    /// The host (id or name); when absent, the best-rated host of `group` is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The host group to place the VM in when no host is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub start: bool,
    /// An independent copy of the template's disk instead of an overlay on it (a linked clone).
    #[serde(default)]
    pub full_clone: bool,
    /// A library ISO in the VM's CD-ROM drive (the VM gets a drive even if its hardware profile
    /// has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<String>,
}

/// Checks a profile's hardware: the same bounds as a VM's.
pub fn validate_hardware(spec: &HardwareSpec) -> Result<(), String> {
    if spec.cpus < 1 || spec.memory_mib < 64 {
        return Err(format!(
            "a hardware profile needs at least 1 vCPU and 64 MiB of memory; it has {} vCPUs and {} MiB",
            spec.cpus, spec.memory_mib
        ));
    }
    crate::devices::validate(&spec.boot_order, spec.machine.as_deref())?;
    if spec.data_disks.contains(&0) {
        return Err("a data disk needs a size above 0".to_owned());
    }
    Ok(())
}

/// Checks a guest OS profile's host name pattern: a valid host name once each `*` is a letter.
pub fn validate_guest_os(spec: &GuestOsSpec) -> Result<(), String> {
    let sample = spec.hostname.replace('*', "a");
    let valid = !sample.is_empty()
        && sample.len() <= 63
        && sample
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !sample.starts_with('-')
        && !sample.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a host name pattern: use letters, digits, '-' and '*' (random), at most 63",
            spec.hostname
        ))
    }
}

/// The host name a pattern gives with `random` supplying a character for each `*`.
pub fn hostname_from_pattern(pattern: &str, mut random: impl FnMut() -> char) -> String {
    pattern
        .chars()
        .map(|c| if c == '*' { random() } else { c })
        .collect()
}

/// YAML's double-quoted string, for values that come from users.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The NoCloud seed of a guest OS profile for one VM: `meta-data` names the instance and its
/// host name; `user-data` is cloud-config for the users, keys, password and time zone, then
/// the profile's own user-data (cloud-init merges the parts of a multi-part file; a plain
/// profile user-data replaces Drover's part when it is not cloud-config).
pub fn cloud_init_seed(spec: &GuestOsSpec, instance_id: &str, hostname: &str) -> CloudInitSeed {
    let meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_string(instance_id),
        yaml_string(hostname)
    );
    let mut config = format!("#cloud-config\nhostname: {}\n", yaml_string(hostname));
    if let Some(timezone) = &spec.timezone {
        config.push_str(&format!("timezone: {}\n", yaml_string(timezone)));
    }
    if !spec.users.is_empty() {
        config.push_str("users:\n  - default\n");
        for user in &spec.users {
            config.push_str(&format!("  - name: {}\n", yaml_string(user)));
            if let Some(hash) = &spec.password_hash {
                config.push_str(&format!(
                    "    passwd: {}\n    lock_passwd: false\n",
                    yaml_string(hash)
                ));
            }
            if !spec.ssh_keys.is_empty() {
                config.push_str("    ssh_authorized_keys:\n");
                for key in &spec.ssh_keys {
                    config.push_str(&format!("      - {}\n", yaml_string(key)));
                }
            }
        }
    } else if !spec.ssh_keys.is_empty() {
        config.push_str("ssh_authorized_keys:\n");
        for key in &spec.ssh_keys {
            config.push_str(&format!("  - {}\n", yaml_string(key)));
        }
    }
    let user_data = match &spec.user_data {
        Some(extra) => format!(
            "Content-Type: multipart/mixed; boundary=\"drover\"\nMIME-Version: 1.0\n\n\
             --drover\nContent-Type: text/cloud-config\n\n{config}\n\
             --drover\nContent-Type: text/cloud-config\n\n{extra}\n--drover--\n"
        ),
        None => config,
    };
    CloudInitSeed {
        meta_data,
        user_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(hostname: &str) -> GuestOsSpec {
        GuestOsSpec {
            hostname: hostname.to_owned(),
            users: Vec::new(),
            ssh_keys: Vec::new(),
            password_hash: None,
            timezone: None,
            user_data: None,
        }
    }

    #[test]
    fn hostname_patterns() {
        for good in ["web-*", "db01", "***"] {
            assert!(validate_guest_os(&guest(good)).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_guest_os(&guest(bad)).is_err(), "{bad}");
        }
        assert_eq!(hostname_from_pattern("web-**", || 'q'), "web-qq");
    }

    #[test]
    fn seeds() {
        let mut spec = guest("web-*");
        spec.users = vec!["ops".into()];
        spec.ssh_keys = vec!["ssh-ed25519 AAAA ops@x".into()];
        spec.timezone = Some("Europe/Paris".into());
        let seed = cloud_init_seed(&spec, "vm-1", "web-q");
        assert_eq!(
            seed.meta_data,
            "instance-id: \"vm-1\"\nlocal-hostname: \"web-q\"\n"
        );
        assert!(
            seed.user_data
                .starts_with("#cloud-config\nhostname: \"web-q\"\n")
        );
        assert!(seed.user_data.contains(
            "  - name: \"ops\"\n    ssh_authorized_keys:\n      - \"ssh-ed25519 AAAA ops@x\"\n"
        ));
        spec.user_data = Some("packages: [nginx]".into());
        let seed = cloud_init_seed(&spec, "vm-1", "web-q");
        assert!(seed.user_data.starts_with("Content-Type: multipart/mixed"));
        assert!(seed.user_data.contains("packages: [nginx]"));
    }
}
