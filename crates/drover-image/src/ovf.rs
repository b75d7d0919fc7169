//! The OVF descriptor (DMTF DSP0243, versions 1 and 2): which files a package's disks are in,
//! their order, and the virtual hardware (CPUs, memory, NICs, disks without a file). Elements
//! are matched by local name, so the `ovf:`, `rasd:`, `sasd:` and `epasd:` prefixes a producer
//! chose do not matter. Nothing else of the descriptor is read.

use roxmltree::{Document, Node};

/// `rasd:ResourceType` values (CIM_ResourceAllocationSettingData).
const RESOURCE_CPU: &str = "3";
const RESOURCE_MEMORY: &str = "4";
const RESOURCE_ETHERNET: &str = "10";
const RESOURCE_DISK: &str = "17";

/// What a descriptor says, before any file is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub nics: u32,
    /// The disks in the order the virtual hardware lists them (the first boots).
    pub disks: Vec<DescriptorDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DescriptorDisk {
    /// A disk image in the package, by its file name (`ovf:href`).
    File(String),
    /// A blank disk of this many bytes (a `Disk` without a `fileRef`).
    Blank(u64),
}

/// Parses a descriptor; the error says what is wrong in words a user can act on.
pub fn parse(text: &str) -> Result<Descriptor, String> {
    let document = Document::parse(text).map_err(|error| format!("malformed XML: {error}"))?;
    let envelope = document.root_element();
    if envelope.tag_name().name() != "Envelope" {
        return Err(format!(
            "the root element is <{}>, not an OVF <Envelope>",
            envelope.tag_name().name()
        ));
    }
    let files: Vec<(String, String)> = descendants(envelope, "File")
        .map(|file| Ok((required(file, "id")?, required(file, "href")?)))
        .collect::<Result<_, String>>()?;
    let section_disks: Vec<Node> = descendants(envelope, "Disk").collect();
    let disk_of = |disk: Node| -> Result<DescriptorDisk, String> {
        match attribute(disk, "fileRef") {
            Some(reference) => files
                .iter()
                .find(|(id, _)| id == reference)
                .map(|(_, href)| DescriptorDisk::File(href.clone()))
                .ok_or_else(|| format!("disk '{}' names no file of the package", reference)),
            None => {
                let capacity = required(disk, "capacity")?;
                let units = attribute(disk, "capacityAllocationUnits").unwrap_or("byte");
                Ok(DescriptorDisk::Blank(scaled(&capacity, units)?))
            }
        }
    };
    let mut descriptor = Descriptor {
        cpus: None,
        memory_mib: None,
        nics: 0,
        disks: Vec::new(),
    };
    let hardware = descendants(envelope, "VirtualHardwareSection").next();
    for item in hardware.iter().flat_map(|section| section.children()) {
        if !item.is_element() {
            continue;
        }
        let field = |name: &str| {
            item.children()
                .find(|child| child.tag_name().name() == name)
                .and_then(|child| child.text())
                .map(str::trim)
        };
        match field("ResourceType") {
            Some(RESOURCE_CPU) => {
                let quantity = field("VirtualQuantity").unwrap_or("1");
                descriptor.cpus =
                    Some(quantity.parse().map_err(|_| {
                        format!("the CPU count '{quantity}' is not a whole number")
                    })?);
            }
            Some(RESOURCE_MEMORY) => {
                let quantity = field("VirtualQuantity").ok_or("the memory item has no size")?;
                let units = field("AllocationUnits").unwrap_or("byte * 2^20");
                descriptor.memory_mib = Some(scaled(quantity, units)? >> 20);
            }
            Some(RESOURCE_ETHERNET) => descriptor.nics += 1,
            Some(RESOURCE_DISK) => {
                let Some(resource) = field("HostResource") else {
                    continue;
                };
                let id = resource
                    .rsplit('/')
                    .next()
                    .filter(|_| resource.contains("/disk/"))
                    .ok_or_else(|| format!("the disk resource '{resource}' is not ovf:/disk/ID"))?;
                let disk = section_disks
                    .iter()
                    .find(|disk| attribute(**disk, "diskId") == Some(id))
                    .ok_or_else(|| {
                        format!(
                            "the virtual hardware names disk '{id}', which the DiskSection lacks"
                        )
                    })?;
                descriptor.disks.push(disk_of(*disk)?);
            }
            _ => {}
        }
    }
    // A descriptor whose hardware names no disk still carries the disks of its DiskSection.
    if descriptor.disks.is_empty() {
        for disk in &section_disks {
            descriptor.disks.push(disk_of(*disk)?);
        }
    }
    Ok(descriptor)
}

fn descendants<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.descendants()
        .filter(move |child| child.is_element() && child.tag_name().name() == name)
}

/// An attribute by local name, whatever its namespace.
fn attribute<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attributes()
        .find(|attribute| attribute.name() == name)
        .map(|attribute| attribute.value())
}

fn required(node: Node, name: &str) -> Result<String, String> {
    attribute(node, name).map(str::to_owned).ok_or_else(|| {
        format!(
            "a <{}> element has no {name} attribute",
            node.tag_name().name()
        )
    })
}

/// `quantity` in `units` as bytes: DSP0004's programmatic units (`byte * 2^20`, `byte * 1024`)
/// and the common words (`MegaBytes`, `GB`).
fn scaled(quantity: &str, units: &str) -> Result<u64, String> {
    let bad_units = || format!("'{units}' is not a unit of bytes");
    let quantity: u64 = quantity
        .trim()
        .parse()
        .map_err(|_| format!("'{quantity}' is not a whole number"))?;
    let compact: String = units.chars().filter(|c| !c.is_whitespace()).collect();
    let factor: u64 = match compact.to_ascii_lowercase().as_str() {
        "byte" | "bytes" | "b" => 1,
        "kilobytes" | "kb" | "kib" => 1 << 10,
        "megabytes" | "mb" | "mib" => 1 << 20,
        "gigabytes" | "gb" | "gib" => 1 << 30,
        "terabytes" | "tb" | "tib" => 1 << 40,
        other => {
            let factor = other.strip_prefix("byte*").ok_or_else(bad_units)?;
            match factor.split_once('^') {
                Some((base, exponent)) => {
                    let base: u64 = base.parse().map_err(|_| bad_units())?;
                    let exponent: u32 = exponent.parse().map_err(|_| bad_units())?;
                    base.checked_pow(exponent).ok_or_else(bad_units)?
                }
                None => factor.parse().map_err(|_| bad_units())?,
            }
        }
    };
    quantity
        .checked_mul(factor)
        .ok_or_else(|| format!("{quantity} {units} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVF_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:id="file1" ovf:href="web-disk1.vmdk" ovf:size="1024"/>
    <File ovf:id="file2" ovf:href="web-disk2.vmdk"/>
  </References>
  <DiskSection>
    <Disk ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30"/>
    <Disk ovf:diskId="scratch" ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20"/>
  </DiskSection>
  <VirtualSystem ovf:id="web">
    <VirtualHardwareSection>
      <Item><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/scratch</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;

    #[test]
    fn reads_hardware_and_disks_in_hardware_order() {
        let descriptor = parse(OVF_1).expect("parses");
        assert_eq!(
            descriptor,
            Descriptor {
                cpus: Some(2),
                memory_mib: Some(512),
                nics: 2,
                disks: vec![
                    DescriptorDisk::File("web-disk1.vmdk".into()),
                    DescriptorDisk::File("web-disk2.vmdk".into()),
                    DescriptorDisk::Blank(64 << 20),
                ],
            }
        );
    }

    #[test]
    fn units() {
        for (quantity, units, bytes) in [
            ("2", "byte * 2^30", 2 << 30),
            ("512", "MegaBytes", 512 << 20),
            ("3", "byte*1024", 3 << 10),
            ("7", "byte", 7),
        ] {
            assert_eq!(scaled(quantity, units), Ok(bytes), "{quantity} {units}");
        }
        for (quantity, units) in [("x", "byte"), ("1", "furlongs"), ("1", "byte * 2^999")] {
            assert!(scaled(quantity, units).is_err(), "{quantity} {units}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (text, expected) in [
            ("<Envelope><References>", "malformed XML"),
            ("<Package/>", "not an OVF <Envelope>"),
            (
                r#"<Envelope><DiskSection><Disk diskId="d" fileRef="nope"/></DiskSection></Envelope>"#,
                "names no file",
            ),
            (
                r#"<Envelope><VirtualSystem><VirtualHardwareSection><Item><ResourceType>17</ResourceType><HostResource>ovf:/disk/gone</HostResource></Item></VirtualHardwareSection></VirtualSystem></Envelope>"#,
                "DiskSection lacks",
            ),
            (
                r#"<Envelope><VirtualSystem><VirtualHardwareSection><Item><ResourceType>3</ResourceType><VirtualQuantity>two</VirtualQuantity></Item></VirtualHardwareSection></VirtualSystem></Envelope>"#,
                "not a whole number",
            ),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
