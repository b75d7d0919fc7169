//! Imports real packages made by the test (an OVA tarred by `tar`, with streamOptimized VMDKs
//! from `qemu-img` and a manifest from `sha256sum`; a VMX next to its VMDK; a lone VHDX), and
//! checks that each bad package gives its error and leaves the share empty.

use drover_api::library::PackageHardware;
use drover_image::{ImageError, package};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(program: &str, dir: &Path, arguments: &[&str]) -> String {
    let output = Command::new(program)
        .current_dir(dir)
        .args(arguments)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {output:?}"
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// A disk in `format` whose first bytes are `marker`.
fn disk(dir: &Path, name: &str, format: &str, options: &[&str], marker: &[u8]) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    let mut bytes = vec![0_u8; 4 << 20];
    bytes[..marker.len()].copy_from_slice(marker);
    std::fs::write(&raw, bytes).expect("write raw");
    let target = dir.join(name);
    let mut arguments = vec!["convert", "-f", "raw", "-O", format];
    arguments.extend_from_slice(options);
    arguments.extend([raw.to_str().expect("utf-8"), name]);
    run("qemu-img", dir, &arguments);
    std::fs::remove_file(raw).expect("remove raw");
    target
}

const STREAM: &[&str] = &["-o", "subformat=streamOptimized"];

fn ovf(disks: &[&str]) -> String {
    let files: String = disks
        .iter()
        .enumerate()
        .map(|(index, href)| format!(r#"<File ovf:id="f{index}" ovf:href="{href}"/>"#))
        .collect();
    let section: String = (0..disks.len())
        .map(|index| {
            format!(
                r#"<Disk ovf:diskId="d{index}" ovf:fileRef="f{index}" ovf:capacity="4194304"/>"#
            )
        })
        .collect();
    let items: String = (0..disks.len())
        .map(|index| {
            format!("<Item><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/d{index}</rasd:HostResource></Item>")
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>{files}</References>
  <DiskSection>{section}<Disk ovf:diskId="scratch" ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20"/></DiskSection>
  <VirtualSystem ovf:id="web"><VirtualHardwareSection>
    <Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
    <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
    <Item><rasd:ResourceType>10</rasd:ResourceType></Item>
    {items}
    <Item><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/scratch</rasd:HostResource></Item>
  </VirtualHardwareSection></VirtualSystem>
</Envelope>"#
    )
}

/// Tars `members` of `dir` (in order, as OVF asks: descriptor first) into `name`.
fn ova(dir: &Path, name: &str, members: &[&str]) -> PathBuf {
    let mut arguments = vec!["-cf", name];
    arguments.extend_from_slice(members);
    run("tar", dir, &arguments);
    dir.join(name)
}

fn share_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root).expect("read").next().is_none()
}

fn first_bytes(image: &Path, scratch: &Path) -> Vec<u8> {
    let back = scratch.join("back.raw");
    run(
        "qemu-img",
        scratch,
        &[
            "convert",
            "-O",
            "raw",
            image.to_str().expect("utf-8"),
            "back.raw",
        ],
    );
    let bytes = std::fs::read(&back).expect("read");
    std::fs::remove_file(back).expect("remove");
    bytes[..8].to_vec()
}

#[test]
fn an_ova_imports_its_disks_and_hardware() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");
    let dir = sources.path();
    disk(dir, "web-1.vmdk", "vmdk", STREAM, b"bootdisk");
    disk(dir, "web-2.vmdk", "vmdk", STREAM, b"datadisk");
    std::fs::write(dir.join("web.ovf"), ovf(&["web-1.vmdk", "web-2.vmdk"])).expect("ovf");
    let manifest = run(
        "sha256sum",
        dir,
        &["--tag", "web.ovf", "web-1.vmdk", "web-2.vmdk"],
    );
    std::fs::write(dir.join("web.mf"), manifest.replace(") = ", ")= ")).expect("mf");
    let source = ova(
        dir,
        "web.ova",
        &["web.ovf", "web.mf", "web-1.vmdk", "web-2.vmdk"],
    );

    let imported = package::import(library.path(), &source, "web").expect("imports");
    assert_eq!(
        imported.hardware,
        Some(PackageHardware {
            cpus: Some(2),
            memory_mib: Some(512),
            nics: 1,
            blank_disks: vec![64 << 20],
        })
    );
    let paths: Vec<&str> = imported.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["web-disk1.qcow2", "web-disk2.qcow2"]);
    assert!(imported.files.iter().all(|file| file.format == "qcow2"));
    assert_eq!(
        first_bytes(&library.path().join("web-disk1.qcow2"), dir),
        b"bootdisk"
    );
    assert_eq!(
        first_bytes(&library.path().join("web-disk2.qcow2"), dir),
        b"datadisk"
    );
    // Nothing else stays in the share: the unpacked OVA is gone.
    assert_eq!(
        drover_testkit::dir_names(library.path()),
        ["web-disk1.qcow2", "web-disk2.qcow2"]
    );
}

#[test]
fn bad_packages_leave_nothing() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");
    let dir = sources.path();
    disk(dir, "a.vmdk", "vmdk", STREAM, b"aaaaaaaa");
    std::fs::write(dir.join("two.ovf"), ovf(&["a.vmdk", "b.vmdk"])).expect("ovf");
    std::fs::write(dir.join("broken.ovf"), "<Envelope><References>").expect("ovf");
    std::fs::write(
        dir.join("bad.mf"),
        format!("SHA256(a.vmdk)= {}\n", "0".repeat(64)),
    )
    .expect("mf");
    std::fs::write(dir.join("one.ovf"), ovf(&["a.vmdk"])).expect("ovf");

    let malformed = ova(dir, "malformed.ova", &["broken.ovf", "a.vmdk"]);
    let missing = ova(dir, "missing.ova", &["two.ovf", "a.vmdk"]);
    let mismatch = ova(dir, "mismatch.ova", &["one.ovf", "bad.mf", "a.vmdk"]);
    let not_tar = dir.join("notes.ova");
    std::fs::write(&not_tar, "just text, no archive\n".repeat(40)).expect("write");
    // A second disk that is truncated: the first, already imported, must go again.
    let whole = disk(dir, "b.vmdk", "vmdk", &[], b"bbbbbbbb");
    let bytes = std::fs::read(&whole).expect("read");
    std::fs::write(&whole, &bytes[..bytes.len() / 3]).expect("truncate");
    let half_bad = ova(dir, "halfbad.ova", &["two.ovf", "a.vmdk", "b.vmdk"]);

    for (source, expected) in [
        (&malformed, "malformed XML"),
        (&missing, "'b.vmdk', which the package does not hold"),
        (&not_tar, "tar"),
    ] {
        match package::import(library.path(), source, "p") {
            Err(ImageError::PackageInvalid { detail, .. }) => {
                assert!(detail.contains(expected), "{}: {detail}", source.display())
            }
            other => panic!("{}: {other:?}", source.display()),
        }
        assert!(share_is_empty(library.path()), "{}", source.display());
    }
    assert!(matches!(
        package::import(library.path(), &mismatch, "p"),
        Err(ImageError::DigestMismatch { .. })
    ));
    assert!(share_is_empty(library.path()));
    let error = package::import(library.path(), &half_bad, "p").expect_err("truncated disk");
    assert!(
        matches!(
            error,
            ImageError::Unreadable { .. } | ImageError::CheckFailed { .. }
        ),
        "{error:?}"
    );
    assert!(share_is_empty(library.path()));

    // A member that climbs out of the archive's directory.
    let escaping = dir.join("escape.ova");
    let mut builder = tar::Builder::new(std::fs::File::create(&escaping).expect("create"));
    let content = ovf(&["a.vmdk"]);
    let mut header = tar::Header::new_old();
    let name = b"../escape.ovf";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(content.len() as u64);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, content.as_bytes()).expect("append");
    builder.finish().expect("finish");
    drop(builder);
    match package::import(library.path(), &escaping, "p") {
        Err(ImageError::PackageInvalid { detail, .. }) => {
            assert!(detail.contains("not a file name inside"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert!(share_is_empty(library.path()));
    assert!(!dir.join("escape.ovf").exists() && !library.path().join("../escape.ovf").exists());
}

#[test]
fn a_vmx_and_a_lone_disk_import() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");
    let dir = sources.path();
    std::fs::create_dir(dir.join("disks")).expect("mkdir");
    disk(
        dir,
        "disks/app.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
        b"appdisk!",
    );
    let vmx = dir.join("app.vmx");
    std::fs::write(
        &vmx,
        "numvcpus = \"1\"\nmemsize = \"192\"\nscsi0:0.present = \"TRUE\"\n\
         scsi0:0.fileName = \"disks/app.vmdk\"\nethernet0.present = \"TRUE\"\n",
    )
    .expect("vmx");
    let imported = package::import(library.path(), &vmx, "app").expect("imports");
    assert_eq!(imported.files.len(), 1);
    assert_eq!(imported.files[0].path, "app.qcow2");
    assert_eq!(
        imported.hardware,
        Some(PackageHardware {
            cpus: Some(1),
            memory_mib: Some(192),
            nics: 1,
            blank_disks: Vec::new(),
        })
    );
    assert_eq!(
        first_bytes(&library.path().join("app.qcow2"), dir),
        b"appdisk!"
    );

    let vhdx = disk(dir, "lone.vhdx", "vhdx", &[], b"lonedisk");
    let lone = package::import(library.path(), &vhdx, "lone").expect("imports");
    assert_eq!(lone.hardware, None);
    assert_eq!(lone.files[0].path, "lone.qcow2");

    // A VMX naming a disk outside its directory or a missing one is refused.
    std::fs::write(&vmx, "scsi0:0.fileName = \"../app.vmdk\"\n").expect("vmx");
    assert!(matches!(
        package::import(library.path(), &vmx, "bad"),
        Err(ImageError::PackageInvalid { .. })
    ));
    std::fs::write(&vmx, "scsi0:0.fileName = \"gone.vmdk\"\n").expect("vmx");
    assert!(matches!(
        package::import(library.path(), &vmx, "bad"),
        Err(ImageError::PackageInvalid { .. })
    ));
}
