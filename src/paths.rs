//! Where skiff keeps its files, following the XDG base directory spec (`xdg` crate):
//! config in `$XDG_CONFIG_HOME/skiff`, data in `$XDG_DATA_HOME/skiff`, runtime state in
//! `$XDG_RUNTIME_DIR/skiff` (falling back to `/tmp/skiff-<uid>` when unset, as podman does).

use std::path::PathBuf;

/// The three directory roots of one user's skiff installation.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/skiff`.
    pub config: PathBuf,
    /// `$XDG_DATA_HOME/skiff`: images, layers, containers.
    pub data: PathBuf,
    /// `$XDG_RUNTIME_DIR/skiff`: sockets, pids, per-boot state.
    pub runtime: PathBuf,
}

impl Paths {
    /// Resolves the directories from the environment.
    pub fn from_env() -> Paths {
        let dirs = xdg::BaseDirectories::with_prefix("skiff");
        let home_fallback = || {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        };
        let config = dirs
            .get_config_home()
            .unwrap_or_else(|| home_fallback().join(".config/skiff"));
        let data = dirs
            .get_data_home()
            .unwrap_or_else(|| home_fallback().join(".local/share/skiff"));
        let runtime = dirs
            .get_runtime_directory()
            .map(|d| d.join("skiff"))
            .unwrap_or_else(|_| PathBuf::from(format!("/tmp/skiff-{}", nix::unistd::getuid())));
        Paths {
            config,
            data,
            runtime,
        }
    }

    /// The image store root.
    pub fn images(&self) -> PathBuf {
        self.data.join("storage")
    }

    /// The containers' persistent directories.
    pub fn containers(&self) -> PathBuf {
        self.data.join("containers")
    }

    /// Named and anonymous volumes.
    pub fn volumes(&self) -> PathBuf {
        self.data.join("volumes")
    }
}
