//! Imports real files made with `qemu-img` in every supported format into a share, and checks
//! that each bad input gives its error and leaves the share empty.

use drover_api::library::LibraryItemKind;
use drover_image::{ImageError, digest, qemu_img, share};
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: &str = "8M";

fn qemu_img(arguments: &[&str]) {
    let status = Command::new("qemu-img")
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("qemu-img runs");
    assert!(status.success(), "qemu-img {arguments:?}");
}

/// A raw disk with a recognizable first sector, and its copy in `format` (with `options`).
fn make(dir: &Path, name: &str, format: &str, options: &[&str]) -> PathBuf {
    let raw = dir.join("source.raw");
    if !raw.exists() {
        qemu_img(&["create", "-f", "raw", path_str(&raw), SIZE]);
        let mut bytes = std::fs::read(&raw).expect("read raw");
        bytes[..12].copy_from_slice(b"drover-image");
        std::fs::write(&raw, bytes).expect("write raw");
    }
    let target = dir.join(name);
    let mut arguments = vec!["convert", "-f", "raw", "-O", format];
    arguments.extend_from_slice(options);
    arguments.extend([path_str(&raw), path_str(&target)]);
    qemu_img(&arguments);
    target
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn share_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root)
        .expect("read share")
        .next()
        .is_none()
}

#[test]
fn every_format_imports_as_checked_qcow2() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");
    let cases: [(&str, &str, &[&str], &str); 7] = [
        ("a.qcow2", "qcow2", &[], "qcow2"),
        ("b.raw", "raw", &[], "raw"),
        (
            "c.vmdk",
            "vmdk",
            &["-o", "subformat=monolithicSparse"],
            "vmdk",
        ),
        (
            "d.vmdk",
            "vmdk",
            &["-o", "subformat=monolithicFlat"],
            "vmdk",
        ),
        (
            "e.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            "vmdk",
        ),
        ("f.vhd", "vpc", &[], "vpc"),
        ("g.vhdx", "vhdx", &[], "vhdx"),
    ];
    for (name, format, options, probed) in cases {
        let source = make(sources.path(), name, format, options);
        assert_eq!(
            qemu_img::info(&source).expect("info").format,
            probed,
            "{name}"
        );
        let item = name.split('.').next().expect("stem");
        let file = share::import(library.path(), &source, item).expect(name);
        assert_eq!(file.kind, LibraryItemKind::Disk);
        assert_eq!(file.format, "qcow2");
        assert_eq!(file.path, format!("{item}.qcow2"));
        // VHD rounds the size up to a whole disk geometry (cylinders, heads, sectors).
        assert!(
            (8 << 20..9 << 20).contains(&file.virtual_size),
            "{name}: {}",
            file.virtual_size
        );
        assert!(file.backing_chain.is_empty());
        let stored = library.path().join(&file.path);
        assert_eq!(digest::sha256_file(&stored).expect("hash"), file.sha256);
        // The converted disk holds the source's bytes.
        let back = sources.path().join(format!("{item}.back.raw"));
        qemu_img(&["convert", "-O", "raw", path_str(&stored), path_str(&back)]);
        assert_eq!(
            &std::fs::read(&back).expect("read")[..12],
            b"drover-image",
            "{name}"
        );
    }
    assert_eq!(share::scan(library.path()).expect("scan").len(), 7);
    // A second import under a taken name is refused and changes nothing.
    let again = sources.path().join("a.qcow2");
    assert!(matches!(
        share::import(library.path(), &again, "a"),
        Err(ImageError::Exists { .. })
    ));
    assert_eq!(share::scan(library.path()).expect("scan").len(), 7);
}

#[test]
fn isos_are_copied_and_indexed() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");
    // The ISO 9660 primary volume descriptor's signature is what marks an ISO.
    let mut bytes = vec![0_u8; 64 * 1024];
    bytes[32769..32774].copy_from_slice(b"CD001");
    let source = sources.path().join("install.iso");
    std::fs::write(&source, &bytes).expect("write iso");
    let file = share::import(library.path(), &source, "install").expect("import iso");
    assert_eq!(file.kind, LibraryItemKind::Iso);
    assert_eq!(file.format, "iso");
    assert_eq!(file.path, "install.iso");
    assert_eq!(
        std::fs::read(library.path().join("install.iso")).expect("read"),
        bytes
    );
}

#[test]
fn bad_inputs_leave_nothing() {
    let sources = tempfile::tempdir().expect("temp dir");
    let library = tempfile::tempdir().expect("temp dir");

    let text = sources.path().join("notes.txt");
    std::fs::write(&text, "not an image\n").expect("write");
    assert!(matches!(
        share::import(library.path(), &text, "notes"),
        Err(ImageError::NotAnImage { .. })
    ));

    // A qcow2 cut short: the header reads, the clusters are gone.
    let whole = make(sources.path(), "whole.qcow2", "qcow2", &[]);
    let cut = sources.path().join("cut.qcow2");
    let bytes = std::fs::read(&whole).expect("read");
    std::fs::write(&cut, &bytes[..100_000]).expect("write");
    let error = share::import(library.path(), &cut, "cut").expect_err("truncated qcow2");
    assert!(matches!(error, ImageError::CheckFailed { .. }), "{error:?}");

    // A VHD cut short fails to open at all.
    let vhd = make(sources.path(), "whole.vhd", "vpc", &[]);
    let cut_vhd = sources.path().join("cut.vhd");
    let bytes = std::fs::read(&vhd).expect("read");
    std::fs::write(&cut_vhd, &bytes[..bytes.len() / 2]).expect("write");
    let error = share::import(library.path(), &cut_vhd, "cutvhd").expect_err("truncated vhd");
    assert!(matches!(error, ImageError::Unreadable { .. }), "{error:?}");

    // A monolithicFlat descriptor whose extent is missing.
    let descriptor = make(
        sources.path(),
        "flat.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicFlat"],
    );
    std::fs::remove_file(sources.path().join("flat-flat.vmdk")).expect("remove extent");
    let error = share::import(library.path(), &descriptor, "flat").expect_err("missing extent");
    match &error {
        ImageError::Unreadable { detail, .. } => {
            assert!(detail.contains("flat-flat.vmdk"), "{detail}")
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }

    // A name that climbs out of the share.
    let good = make(sources.path(), "good.qcow2", "qcow2", &[]);
    assert!(matches!(
        share::import(library.path(), &good, "../escape"),
        Err(ImageError::OutsideShare { .. })
    ));
    assert!(share_is_empty(library.path()));
}
