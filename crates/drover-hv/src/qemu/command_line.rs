//! QEMU's command line for a VM, as a pure function of the spec.
//!
//! Choices worth knowing:
//! - `-machine pc`: its ACPI power button is what `system_powerdown` presses.
//! - `-S`, then `cont` once the agent listens to QMP, so no event of the guest is missed.
//! - `-daemonize -pidfile`: QEMU leaves the agent's process tree (setsid) and outlives it, and
//!   the launching process exits only once QEMU initialized, with a non-zero status and a message
//!   on stderr when it could not.
//! - No `-no-reboot`: a reboot inside the guest should reset it in place, as on real hardware.
//!   With `-no-reboot` QEMU turns every reset, even QMP `system_reset`, into an exit.
//! - No `-no-shutdown`: QEMU exits after the guest powers off, so the VM becomes stopped.

use drover_api::Accelerator;
use drover_api::PortForward;
use drover_api::agent::{AgentNic, AgentVmSpec, NicAttachment};
use drover_api::vm::VmDisk;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use super::VmFiles;

/// The arguments (without the program) that start `spec`'s VM with its files in `files`.
/// Kernel and initrd paths are used as given; pass absolute ones (QEMU runs in `/`).
pub fn command_line(
    spec: &AgentVmSpec,
    files: &VmFiles,
    accelerator: Accelerator,
) -> Vec<OsString> {
    let mut args = Arguments::default();
    args.push("-name")
        .push(join(&[OsStr::new("guest="), &escape(&spec.name)]));
    args.push("-accel").push(accelerator.as_str());
    args.push("-machine")
        .push(spec.devices.machine.as_deref().unwrap_or("pc"));
    args.push("-cpu").push(match accelerator {
        Accelerator::Kvm => "host",
        Accelerator::Tcg => "max",
    });
    args.push("-smp").push(spec.cpus.to_string());
    args.push("-m").push(format!("{}M", spec.memory_mib));
    args.push("-nodefaults").push("-no-user-config");
    args.push("-display").push("none");
    args.push("-S");
    args.push("-daemonize");
    args.push("-pidfile").push(files.pidfile());
    args.push("-qmp").push(join(&[
        OsStr::new("unix:"),
        &escape(files.qmp_socket()),
        OsStr::new(",server=on,wait=off"),
    ]));
    args.push("-chardev").push(join(&[
        OsStr::new("socket,id=serial0,path="),
        &escape(files.serial_socket()),
        OsStr::new(",server=on,wait=off,logfile="),
        &escape(files.serial_log()),
        OsStr::new(",logappend=on"),
    ]));
    args.push("-serial").push("chardev:serial0");
    if spec.disk != VmDisk::None {
        args.push("-blockdev").push(join(&[
            OsStr::new("driver=file,node-name=disk0-file,filename="),
            &escape(files.disk()),
        ]));
        args.push("-blockdev")
            .push("driver=qcow2,node-name=disk0,file=disk0-file");
        args.push("-device").push(format!(
            "virtio-blk-pci,drive=disk0,id=vd0{}",
            boot_index(spec, "disk")
        ));
    }
    for index in 1..=spec.devices.data_disks.len() {
        args.push("-blockdev").push(join(&[
            OsStr::new(&format!("driver=file,node-name=disk{index}-file,filename=")),
            &escape(files.data_disk(index)),
        ]));
        args.push("-blockdev").push(format!(
            "driver=qcow2,node-name=disk{index},file=disk{index}-file"
        ));
        args.push("-device")
            .push(format!("virtio-blk-pci,drive=disk{index},id=vd{index}"));
    }
    if spec.devices.has_cdrom_drive() {
        cdrom_drive(&mut args, spec);
    }
    if spec.seed.is_some() {
        // QEMU's vvfat shows the seed directory as a FAT disk: no image to build, no tool.
        args.push("-blockdev").push(join(&[
            OsStr::new("driver=vvfat,node-name=seed0,read-only=on,label=cidata,fat-type=16,dir="),
            &escape(files.seed_dir()),
        ]));
        args.push("-device")
            .push("virtio-blk-pci,drive=seed0,id=seed0");
    }
    // -kernel, -initrd and -append take their value verbatim: no option syntax to escape.
    if let Some(kernel) = &spec.kernel {
        args.push("-kernel").push(kernel);
    }
    if let Some(initrd) = &spec.initrd {
        args.push("-initrd").push(initrd);
    }
    if let Some(cmdline) = &spec.cmdline {
        args.push("-append").push(cmdline);
    }
    let forwarding_nic = spec.user_nic().map(|nic| nic.name.as_str());
    for nic in &spec.nics {
        let netdev = netdev_id(&nic.name);
        let mut backend = match &nic.attachment {
            NicAttachment::User => format!("user,id={netdev}"),
            NicAttachment::Network { tap, .. } => {
                format!("tap,id={netdev},ifname={tap},script=no,downscript=no,vhost=off")
            }
        };
        if forwarding_nic == Some(nic.name.as_str()) {
            for forward in &spec.port_forwards {
                backend.push_str(&format!(",hostfwd={}", hostfwd_rule(forward)));
            }
        }
        args.push("-netdev").push(backend);
        let boot = if spec.nics.first() == Some(nic) {
            boot_index(spec, "network")
        } else {
            String::new()
        };
        args.push("-device").push(format!(
            "virtio-net-pci,netdev={netdev},id={},mac={}{boot}",
            nic.name, nic.mac
        ));
    }
    args.0
}

/// The CD-ROM drive: an `ide-cd` on the machine's own IDE controller (PIIX on `pc`, AHCI on
/// `q35`), so no controller is added and every guest kernel with ATA finds it. Its medium is the
/// ISO in the host's cache, opened read-only as raw; without one the drive is empty and QMP
/// `blockdev-change-medium` can fill it later.
fn cdrom_drive(args: &mut Arguments, spec: &AgentVmSpec) {
    let device = drover_api::cdrom::CDROM_DEVICE;
    let boot = boot_index(spec, "cdrom");
    match spec.devices.cdrom_iso().and_then(|iso| iso.path.as_ref()) {
        Some(path) => {
            args.push("-blockdev").push(join(&[
                OsStr::new(&format!(
                    "driver=file,node-name={device}-file,read-only=on,filename="
                )),
                &escape(path),
            ]));
            args.push("-blockdev").push(format!(
                "driver=raw,node-name={device}-medium,file={device}-file,read-only=on"
            ));
            args.push("-device")
                .push(format!("ide-cd,drive={device}-medium,id={device}{boot}"));
        }
        None => {
            args.push("-device")
                .push(format!("ide-cd,id={device}{boot}"));
        }
    }
}

/// `,bootindex=N` for the device that boots as `device` (`disk`: the first disk; `cdrom`: the
/// CD-ROM drive; `network`: the first NIC) when the boot order names it; nothing otherwise.
/// SeaBIOS tries devices by bootindex. Numbers start at 1: QEMU gives a direct-boot kernel's
/// option ROM bootindex 0, so `-kernel` still boots first.
fn boot_index(spec: &AgentVmSpec, device: &str) -> String {
    spec.devices
        .boot_order
        .iter()
        .position(|named| named == device)
        .map(|index| format!(",bootindex={}", index + 1))
        .unwrap_or_default()
}

/// The `netdev_add` arguments of a NIC's backend, as `-netdev` gives them at start. The agent
/// made the tap and put it on the bridge. No vhost: /dev/vhost-net is missing on some hosts, and
/// under TCG it would gain nothing.
pub fn netdev_arguments(nic: &AgentNic) -> serde_json::Value {
    let id = netdev_id(&nic.name);
    match &nic.attachment {
        NicAttachment::User => serde_json::json!({ "type": "user", "id": id }),
        NicAttachment::Network { tap, .. } => serde_json::json!({
            "type": "tap", "id": id, "ifname": tap, "script": "no", "downscript": "no",
            "vhost": false,
        }),
    }
}

/// The `device_add` arguments of a NIC.
pub fn device_arguments(nic: &AgentNic) -> serde_json::Value {
    serde_json::json!({
        "driver": "virtio-net-pci", "id": nic.name, "netdev": netdev_id(&nic.name), "mac": nic.mac,
    })
}

/// The id of a NIC's backend (`-netdev`), named after its device.
pub fn netdev_id(nic: &str) -> String {
    format!("{nic}-backend")
}

/// A forward in QEMU's hostfwd syntax, bound to the host's loopback only: a forwarded port is
/// for the host's own users, never opened to the network.
pub fn hostfwd_rule(forward: &PortForward) -> String {
    format!("{}-:{}", hostfwd_source(forward), forward.guest_port)
}

/// The host side of a forward (`udp:127.0.0.1:5353`), which names it to `hostfwd_remove`.
pub fn hostfwd_source(forward: &PortForward) -> String {
    format!("{}:127.0.0.1:{}", forward.protocol, forward.host_port)
}

/// A value inside QEMU's `key=value,...` option syntax: a comma is written twice.
fn escape(value: impl AsRef<OsStr>) -> OsString {
    let mut bytes = Vec::new();
    for &byte in value.as_ref().as_bytes() {
        bytes.push(byte);
        if byte == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

fn join(parts: &[&OsStr]) -> OsString {
    let mut joined = OsString::new();
    for part in parts {
        joined.push(part);
    }
    joined
}

#[derive(Default)]
struct Arguments(Vec<OsString>);

impl Arguments {
    fn push(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(arg.as_ref().to_os_string());
        self
    }
}

/// The command as one line, for logs (not quoted: not for a shell).
pub fn display(program: &Path, args: &[OsString]) -> String {
    let mut text = program.display().to_string();
    for arg in args {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_api::id::VmId;
    use drover_api::network::PortProtocol;

    fn spec(disk: VmDisk) -> AgentVmSpec {
        AgentVmSpec {
            id: VmId::new(),
            name: "web,1".into(),
            cpus: 2,
            memory_mib: 256,
            disk,
            kernel: Some("/guest/vmlinux".into()),
            initrd: Some("/guest/initramfs.cpio.gz".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
            nics: vec![AgentNic {
                name: "nic0".into(),
                mac: "52:54:00:d0:00:01".into(),
                attachment: NicAttachment::User,
            }],
            port_forwards: vec![],
            seed: None,
            devices: Default::default(),
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn full_command_line_under_tcg() {
        let files = VmFiles::new("/vms/a");
        let args = command_line(
            &spec(VmDisk::Blank { size_bytes: 1 }),
            &files,
            Accelerator::Tcg,
        );
        assert_eq!(
            text(&args),
            "-name guest=web,,1 -accel tcg -machine pc -cpu max -smp 2 -m 256M \
             -nodefaults -no-user-config -display none -S -daemonize -pidfile /vms/a/qemu.pid \
             -qmp unix:/vms/a/qmp.sock,server=on,wait=off \
             -chardev socket,id=serial0,path=/vms/a/serial.sock,server=on,wait=off,logfile=/vms/a/serial.log,logappend=on \
             -serial chardev:serial0 \
             -blockdev driver=file,node-name=disk0-file,filename=/vms/a/disk.qcow2 \
             -blockdev driver=qcow2,node-name=disk0,file=disk0-file \
             -device virtio-blk-pci,drive=disk0,id=vd0 \
             -kernel /guest/vmlinux -initrd /guest/initramfs.cpio.gz -append console=ttyS0 quiet \
             -netdev user,id=nic0-backend \
             -device virtio-net-pci,netdev=nic0-backend,id=nic0,mac=52:54:00:d0:00:01"
        );
    }

    #[test]
    fn port_forwards_go_to_the_first_user_nic_on_loopback() {
        let mut spec = spec(VmDisk::None);
        spec.nics.push(AgentNic {
            name: "nic1".into(),
            mac: "52:54:00:d0:00:02".into(),
            attachment: NicAttachment::User,
        });
        spec.port_forwards = vec![
            PortForward {
                host_port: 8080,
                guest_port: 80,
                protocol: PortProtocol::Tcp,
            },
            PortForward {
                host_port: 5353,
                guest_port: 53,
                protocol: PortProtocol::Udp,
            },
        ];
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        assert!(
            line.contains(
                "-netdev user,id=nic0-backend,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53 "
            ),
            "{line}"
        );
        assert!(
            line.contains("-netdev user,id=nic1-backend -device"),
            "{line}"
        );
    }

    #[test]
    fn network_nics_use_their_tap_without_vhost() {
        let mut spec = spec(VmDisk::None);
        spec.nics = vec![AgentNic {
            name: "nic0".into(),
            mac: "52:54:00:d0:00:07".into(),
            attachment: NicAttachment::Network {
                bridge: "dr-lab".into(),
                tap: "dt0123abcdn0".into(),
                ip: Some("10.10.0.2".into()),
            },
        }];
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        assert!(
            line.ends_with(
                "-netdev tap,id=nic0-backend,ifname=dt0123abcdn0,script=no,downscript=no,vhost=off \
                 -device virtio-net-pci,netdev=nic0-backend,id=nic0,mac=52:54:00:d0:00:07"
            ),
            "{line}"
        );
    }

    #[test]
    fn data_disks_boot_order_and_machine() {
        let mut spec = spec(VmDisk::Blank { size_bytes: 1 });
        spec.devices = drover_api::VmDevices {
            data_disks: vec![
                VmDisk::Blank { size_bytes: 1 },
                VmDisk::Image {
                    path: "/i.qcow2".into(),
                },
            ],
            boot_order: vec!["network".into(), "cdrom".into(), "disk".into()],
            machine: Some("q35".into()),
            cdrom: None,
        };
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        for expected in [
            "-machine q35 ",
            "-device virtio-blk-pci,drive=disk0,id=vd0,bootindex=3 ",
            "-blockdev driver=file,node-name=disk1-file,filename=/v/disk1.qcow2 \
             -blockdev driver=qcow2,node-name=disk1,file=disk1-file \
             -device virtio-blk-pci,drive=disk1,id=vd1 ",
            "-device virtio-blk-pci,drive=disk2,id=vd2 ",
            "id=nic0,mac=52:54:00:d0:00:01,bootindex=1",
            "-device ide-cd,id=cd0,bootindex=2 ",
        ] {
            assert!(line.contains(expected), "{expected} not in {line}");
        }
    }

    #[test]
    fn an_iso_is_a_read_only_raw_medium_in_an_ide_cd_drive() {
        let mut spec = spec(VmDisk::None);
        let cdrom = |path: Option<&str>| drover_api::cdrom::VmCdrom {
            iso: Some(Box::new(drover_api::cdrom::CdromIso {
                item: "tools".into(),
                sha256: "0".repeat(64),
                url: String::new(),
                path: path.map(str::to_owned),
            })),
        };
        spec.devices.boot_order = vec!["cdrom".into()];
        spec.devices.cdrom = Some(cdrom(Some("/images/a,b.qcow2")));
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        assert!(
            line.contains(
                "-blockdev driver=file,node-name=cd0-file,read-only=on,filename=/images/a,,b.qcow2 \
                 -blockdev driver=raw,node-name=cd0-medium,file=cd0-file,read-only=on \
                 -device ide-cd,drive=cd0-medium,id=cd0,bootindex=1 "
            ),
            "{line}"
        );
        // Not fetched yet (or ejected): an empty drive.
        spec.devices.cdrom = Some(cdrom(None));
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        assert!(
            line.contains("-device ide-cd,id=cd0,bootindex=1 "),
            "{line}"
        );
        spec.devices = Default::default();
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        assert!(!line.contains("ide-cd"), "{line}");
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let args = command_line(&spec(VmDisk::None), &VmFiles::new("/v"), Accelerator::Kvm);
        let line = text(&args);
        assert!(line.contains("-accel kvm -machine pc -cpu host"), "{line}");
    }

    #[test]
    fn without_disk_or_kernel() {
        let mut spec = spec(VmDisk::None);
        spec.kernel = None;
        spec.initrd = None;
        spec.cmdline = None;
        let line = text(&command_line(&spec, &VmFiles::new("/v"), Accelerator::Tcg));
        for absent in ["-blockdev", "virtio-blk", "-kernel", "-initrd", "-append"] {
            assert!(!line.contains(absent), "{absent} in {line}");
        }
    }

    #[test]
    fn a_seed_is_a_read_only_fat_disk_labelled_cidata() {
        let mut spec = spec(VmDisk::None);
        spec.seed = Some(drover_api::CloudInitSeed {
            meta_data: "local-hostname: a\n".into(),
            user_data: "#cloud-config\n".into(),
        });
        let line = text(&command_line(
            &spec,
            &VmFiles::new("/v,x"),
            Accelerator::Tcg,
        ));
        assert!(
            line.contains(
                "-blockdev driver=vvfat,node-name=seed0,read-only=on,label=cidata,fat-type=16,dir=/v,,x/seed \
                 -device virtio-blk-pci,drive=seed0,id=seed0"
            ),
            "{line}"
        );
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let args = command_line(&spec(VmDisk::None), &VmFiles::new("/v,x"), Accelerator::Tcg);
        let line = text(&args);
        assert!(
            line.contains("-qmp unix:/v,,x/qmp.sock,server=on"),
            "{line}"
        );
        // The pid file is a plain argument, not option syntax.
        assert!(line.contains("-pidfile /v,x/qemu.pid "), "{line}");
    }
}
