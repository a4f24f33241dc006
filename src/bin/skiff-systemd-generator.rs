//! `skiff-systemd-generator`: a systemd user generator (systemd.generator(7)) that
//! turns `~/.config/skiff/units/NAME.container` (or `$XDG_CONFIG_HOME/skiff/units`)
//! into `NAME.service` in the normal output directory (argv[1]). A file with an error is
//! reported on stderr with its file and line and skipped; the others are still
//! generated. No daemon is needed.

use std::path::{Path, PathBuf};

use skiff::units::{self, ContainerUnit};

/// The `skiff` CLI the services run: the one beside this generator's real path, else
/// PREFIX/bin/skiff for a generator installed as PREFIX/lib/systemd/user-generators/,
/// else `skiff` on systemd's search path.
fn skiff_path() -> PathBuf {
    let Some(dir) = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    else {
        return PathBuf::from("skiff");
    };
    [dir.join("skiff"), dir.join("../../../bin/skiff")]
        .into_iter()
        .filter_map(|p| p.canonicalize().ok())
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

fn generate(out: &Path, u: &ContainerUnit, skiff: &Path) -> Result<(), String> {
    let name = format!("{}.service", u.unit);
    let path = out.join(&name);
    std::fs::write(&path, units::service_text(u, skiff))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for (target, kind) in units::render::install_targets(u) {
        let dir = out.join(format!("{target}.{kind}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let link = dir.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{name}"), &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1).filter(|a| !a.is_empty()).map(PathBuf::from) else {
        eprintln!(
            "usage: skiff-systemd-generator NORMAL_DIR [EARLY_DIR LATE_DIR] (systemd runs it)"
        );
        return std::process::ExitCode::from(2);
    };
    let Some(dir) = units::units_dir() else {
        eprintln!("skiff-systemd-generator: neither XDG_CONFIG_HOME nor HOME is set");
        return std::process::ExitCode::SUCCESS;
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // No units directory: nothing to generate.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("skiff-systemd-generator: {}: {e}", dir.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "container"))
        .collect();
    files.sort();
    let skiff = skiff_path();
    let mut failed = false;
    for f in files {
        let result = ContainerUnit::load(&f)
            .map_err(|e| e.to_string())
            .and_then(|u| generate(&out, &u, &skiff));
        if let Err(e) = result {
            eprintln!("skiff-systemd-generator: {e} (unit skipped)");
            failed = true;
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
