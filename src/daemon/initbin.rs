//! `--init`'s binary: `skiff-init` (src/pid1/main.rs, built static by build.rs) is
//! embedded in skiffd and written once to `$XDG_DATA_HOME/skiff/init/skiff-init-HASH`
//! (mode 0555, atomically), from where each `--init` container bind-mounts it
//! read-only. The name carries the content's digest, so daemons of different versions
//! never share or overwrite each other's binary.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::Error;
use crate::fsutil;

/// The static `skiff-init` executable.
pub static SKIFF_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/skiff-init"));

/// Serialises installs within the daemon (concurrent starts of `--init` containers).
static INSTALL: Mutex<()> = Mutex::new(());

/// The path of the installed init under `data` (`$XDG_DATA_HOME/skiff`), writing it
/// first when it is missing or not the embedded one.
pub fn install(data: &Path) -> Result<PathBuf, Error> {
    let digest = hex(&Sha256::digest(SKIFF_INIT));
    let dir = data.join("init");
    let path = dir.join(format!("skiff-init-{}", &digest[..16]));
    let _guard = match INSTALL.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if std::fs::read(&path).is_ok_and(|have| have == SKIFF_INIT) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&tmp)?;
        f.write_all(SKIFF_INIT)?;
        f.sync_all()?;
        f.set_permissions(std::fs::Permissions::from_mode(0o555))?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        fsutil::sync_dir(&dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&path, e));
    }
    tracing::debug!("installed {}", path.display());
    Ok(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_static_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = install(dir.path()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), SKIFF_INIT);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o555);
        assert_eq!(install(dir.path()).unwrap(), p);
        // A 64-bit ELF without a program interpreter (PT_INTERP): static, so it runs in
        // images without a C library.
        let b = SKIFF_INIT;
        assert_eq!(&b[..5], b"\x7fELF\x02");
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        assert!(phnum > 0);
        for i in 0..phnum {
            let o = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            assert_ne!(p_type, 3, "skiff-init has a program interpreter");
        }
    }
}
