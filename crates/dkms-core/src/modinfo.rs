//! Reading a kernel module's `.modinfo` section (`version=`, `vermagic=`, ...) without
//! spawning `modinfo`, for uncompressed modules; compressed ones go through `modinfo`.

use crate::exec::Command;
use std::path::Path;

/// The `key=value` strings of a module's `.modinfo` ELF section.
pub fn read(path: &Path) -> Option<Vec<(String, String)>> {
    let name = path.file_name()?.to_string_lossy();
    if !name.ends_with(".ko") {
        return read_with_tool(path);
    }
    let bytes = std::fs::read(path).ok()?;
    let section = modinfo_section(&bytes)?;
    Some(
        section
            .split(|&b| b == 0)
            .filter_map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                let (k, v) = entry.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// The first value of `key`, as `modinfo -F key` prints it.
pub fn field(path: &Path, key: &str) -> Option<String> {
    read(path)?
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn read_with_tool(path: &Path) -> Option<Vec<(String, String)>> {
    let out = Command::new("modinfo", "read compressed kernel modules")
        .arg("-0")
        .arg(path.as_os_str())
        .read()
        .ok()?;
    Some(
        out.split(|&b| b == 0)
            .filter_map(|entry| {
                let entry = String::from_utf8_lossy(entry);
                let (k, v) = entry.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect(),
    )
}

/// Finds the `.modinfo` section of a 64- or 32-bit little- or big-endian ELF file.
fn modinfo_section(elf: &[u8]) -> Option<&[u8]> {
    if elf.get(0..4)? != b"\x7fELF" {
        return None;
    }
    let is64 = *elf.get(4)? == 2;
    let little = *elf.get(5)? == 1;
    let read = |off: usize, len: usize| -> Option<u64> {
        let b = elf.get(off..off + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if little { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (
            read(0x28, 8)?,
            read(0x3a, 2)?,
            read(0x3c, 2)?,
            read(0x3e, 2)?,
        )
    } else {
        (
            read(0x20, 4)?,
            read(0x2e, 2)?,
            read(0x30, 2)?,
            read(0x32, 2)?,
        )
    };
    let header = |index: u64| -> Option<(u64, u64, u64)> {
        let base = usize::try_from(shoff + index * shentsize).ok()?;
        if is64 {
            Some((read(base, 4)?, read(base + 0x18, 8)?, read(base + 0x20, 8)?))
        } else {
            Some((read(base, 4)?, read(base + 0x10, 4)?, read(base + 0x14, 4)?))
        }
    };
    let (_, names_off, names_size) = header(shstrndx)?;
    let names =
        elf.get(usize::try_from(names_off).ok()?..usize::try_from(names_off + names_size).ok()?)?;
    for index in 0..shnum {
        let (name_off, off, size) = header(index)?;
        let name = names.get(usize::try_from(name_off).ok()?..)?;
        if name.starts_with(b".modinfo\0") {
            return elf.get(usize::try_from(off).ok()?..usize::try_from(off + size).ok()?);
        }
    }
    None
}
