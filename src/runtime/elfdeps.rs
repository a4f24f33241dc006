//! What a dynamically linked program loads before it runs: its ELF interpreter
//! (`PT_INTERP`) and the libraries it names (`DT_NEEDED`), read from the file's headers.
//! Used only for read-ahead hints (see [`super::readahead`]): anything unexpected gives
//! nothing, never an error, and nothing here panics on a malformed file.

/// The parts of the file this needs, read on demand: `read(offset, len)` returns the
/// bytes there, or None (not readable now, or past the end).
pub trait Source {
    /// `len` bytes at `offset`, or None.
    fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>>;
}

/// A program's interpreter and needed libraries (as written: names without a `/` are
/// looked for in the library directories).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deps {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interp: Option<String>,
    /// `DT_NEEDED` entries, e.g. `libc.so.6`.
    pub needed: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
/// At most this many program headers and dynamic entries are looked at.
const MAX_ENTRIES: usize = 512;
/// At most this many libraries are named.
const MAX_NEEDED: usize = 16;
/// The longest name taken.
const MAX_NAME: usize = 255;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A NUL-terminated name at the start of `b`.
fn name_in(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0)?;
    let s = std::str::from_utf8(&b[..end]).ok()?;
    (!s.is_empty() && s.len() <= MAX_NAME).then(|| s.to_string())
}

/// One program header: type, file offset, virtual address, size in the file.
struct Phdr {
    typ: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Reads a 64-bit little-endian ELF file's interpreter and needed libraries (x86_64 and
/// aarch64 programs are all of this kind). None for anything else.
pub fn read(src: &impl Source) -> Option<Deps> {
    let eh = src.read(0, 64)?;
    // ELF magic, 64-bit, little-endian (and the whole header there).
    if eh.len() < 64 || &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(&eh, 32)?;
    let phentsize = u16_at(&eh, 54)? as usize;
    let phnum = (u16_at(&eh, 56)? as usize).min(MAX_ENTRIES);
    if phentsize < 56 || phnum == 0 {
        return None;
    }
    let table = src.read(phoff, phentsize.checked_mul(phnum)?)?;
    let phdrs: Vec<Phdr> = (0..phnum)
        .filter_map(|i| {
            let at = i * phentsize;
            Some(Phdr {
                typ: u32_at(&table, at)?,
                offset: u64_at(&table, at + 8)?,
                vaddr: u64_at(&table, at + 16)?,
                filesz: u64_at(&table, at + 32)?,
            })
        })
        .collect();
    let mut deps = Deps::default();
    if let Some(p) = phdrs.iter().find(|p| p.typ == PT_INTERP) {
        let len = (p.filesz as usize).min(MAX_NAME + 1);
        deps.interp = src.read(p.offset, len).and_then(|b| name_in(&b));
    }
    if let Some(dynamic) = phdrs.iter().find(|p| p.typ == PT_DYNAMIC) {
        deps.needed = needed(src, &phdrs, dynamic).unwrap_or_default();
    }
    Some(deps)
}

/// The `DT_NEEDED` names of the dynamic section `dynamic`.
fn needed(src: &impl Source, phdrs: &[Phdr], dynamic: &Phdr) -> Option<Vec<String>> {
    let count = (dynamic.filesz as usize / 16).min(MAX_ENTRIES);
    let table = src.read(dynamic.offset, count * 16)?;
    let mut strtab = None;
    let mut offsets = Vec::new();
    for i in 0..count {
        let tag = u64_at(&table, i * 16)?;
        let val = u64_at(&table, i * 16 + 8)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED if offsets.len() < MAX_NEEDED => offsets.push(val),
            DT_STRTAB => strtab = Some(val),
            _ => {}
        }
    }
    // DT_STRTAB is an address: the file offset is where a loaded segment puts it.
    let addr = strtab?;
    let seg = phdrs
        .iter()
        .find(|p| p.typ == PT_LOAD && addr >= p.vaddr && addr - p.vaddr < p.filesz)?;
    let base = seg.offset.checked_add(addr - seg.vaddr)?;
    Some(
        offsets
            .into_iter()
            .filter_map(|o| {
                let b = src.read(base.checked_add(o)?, MAX_NAME + 1)?;
                name_in(&b)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>);

    impl Source for Bytes {
        fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(len)?.min(self.0.len());
            (start < end).then(|| self.0[start..end].to_vec())
        }
    }

    #[test]
    fn a_dynamic_program_names_its_interpreter_and_libraries() {
        // The machine's own programs: coreutils' true is dynamically linked with glibc.
        let bytes = std::fs::read("/bin/true").unwrap();
        let deps = read(&Bytes(bytes)).unwrap();
        let interp = deps.interp.unwrap();
        assert!(interp.contains("ld-linux"), "{interp}");
        assert!(
            deps.needed.iter().any(|n| n.starts_with("libc.so")),
            "{:?}",
            deps.needed
        );
    }

    #[test]
    fn a_static_program_names_nothing() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else {
            return;
        };
        assert_eq!(read(&Bytes(bytes)), Some(Deps::default()));
    }

    #[test]
    fn malformed_files_give_nothing_and_never_panic() {
        assert_eq!(read(&Bytes(Vec::new())), None);
        assert_eq!(read(&Bytes(b"#!/bin/sh\necho hi\n".to_vec())), None);
        // Every truncation and some corruptions of a real program.
        let real = std::fs::read("/bin/true").unwrap();
        for cut in [4, 20, 63, 64, 100, 500, 1000, 4096, real.len() / 2] {
            let _ = read(&Bytes(real[..cut.min(real.len())].to_vec()));
        }
        // Header fields set to extremes one by one, then bytes all over the file.
        let mut bad = real.clone();
        for at in (16..128).step_by(3) {
            bad[at] = 0xff;
            let _ = read(&Bytes(bad.clone()));
        }
        let mut bad = real.clone();
        for at in (64..real.len()).step_by(997) {
            bad[at] ^= 0xa5;
            let _ = read(&Bytes(bad.clone()));
        }
    }
}
