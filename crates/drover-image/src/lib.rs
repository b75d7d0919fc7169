//! Drover's image work, apart from any server or agent: probe, convert and check images with
//! `qemu-img`, fingerprint files with SHA-256, keep a library share's files (safe relative paths,
//! temporary names renamed only when complete) and decide HTTP range answers for resumable,
//! verified transfers, and fetch files that way; import virtual machine packages (OVA, OVF,
//! VMX) as several disks plus the hardware they describe. All but `transfer` is blocking code:
//! callers run it on a blocking thread.

pub mod digest;
mod error;
mod ovf;
pub mod package;
pub mod qemu_img;
pub mod range;
pub mod serve;
pub mod share;
pub mod transfer;
mod vmx;

pub use error::ImageError;
