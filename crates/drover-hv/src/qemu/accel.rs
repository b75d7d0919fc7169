//! Picks the accelerator: KVM only when it can run an ordinary guest kernel, else TCG.
//!
//! `/dev/kvm` alone proves nothing: on PVM hosts (`kvm_pvm` loaded) it exists but runs an
//! unmodified guest 100-1000 times too slowly and then fails (research/feasibility.md, 2.3).

use drover_api::Accelerator;
use std::path::Path;

/// Probes this host.
pub fn probe() -> Accelerator {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    // Some sandboxes hide /proc/modules; /sys/module names loaded modules too.
    if let Ok(entries) = std::fs::read_dir("/sys/module") {
        for entry in entries.flatten() {
            modules.push_str(&entry.file_name().to_string_lossy());
            modules.push('\n');
        }
    }
    decide(&cpuinfo, &modules, Path::new("/dev/kvm").exists())
}

/// The decision on the host's facts: `cpuinfo` is the text of `/proc/cpuinfo`, `modules` the
/// text of `/proc/modules` (module name first on each line).
pub fn decide(cpuinfo: &str, modules: &str, dev_kvm_exists: bool) -> Accelerator {
    let virtualization = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .filter_map(|line| line.split_once(':'))
        .any(|(_, flags)| {
            flags
                .split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        });
    let pvm = modules
        .lines()
        .any(|line| line.split_whitespace().next() == Some("kvm_pvm"));
    if virtualization && dev_kvm_exists && !pvm {
        Accelerator::Kvm
    } else {
        Accelerator::Tcg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu vme de pse vmx sse2\n";
    const AMD: &str = "processor\t: 0\nflags\t\t: fpu svm lm\n";
    const NONE: &str = "processor\t: 0\nflags\t\t: fpu vme hypervisor\nvmx flags\t: whatever\n";
    const KVM_MODULES: &str = "kvm_intel 409600 0 - Live 0x0\nkvm 1138688 1 kvm_intel, Live 0x0\n";
    const PVM_MODULES: &str = "kvm_pvm 40960 0 - Live 0x0\nkvm 1138688 1 kvm_pvm, Live 0x0\n";

    #[test]
    fn decision_table() {
        let cases = [
            (INTEL, KVM_MODULES, true, Accelerator::Kvm),
            (AMD, KVM_MODULES, true, Accelerator::Kvm),
            (INTEL, "", true, Accelerator::Kvm),
            (INTEL, KVM_MODULES, false, Accelerator::Tcg),
            (INTEL, PVM_MODULES, true, Accelerator::Tcg),
            (NONE, KVM_MODULES, true, Accelerator::Tcg),
            (NONE, PVM_MODULES, true, Accelerator::Tcg),
            ("", "", false, Accelerator::Tcg),
        ];
        for (cpuinfo, modules, dev_kvm, expected) in cases {
            assert_eq!(
                decide(cpuinfo, modules, dev_kvm),
                expected,
                "{cpuinfo:?} {modules:?} {dev_kvm}"
            );
        }
    }

    #[test]
    fn this_machine_uses_tcg() {
        // The development and CI machines have PVM behind /dev/kvm and no vmx/svm.
        assert_eq!(probe(), Accelerator::Tcg);
    }
}
