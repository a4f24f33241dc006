//! Containers as systemd user units: the `.container` files that
//! `skiff-systemd-generator` turns into `.service` units ([`parse`], [`render`]), and
//! systemd's command-line quoting ([`quote`]), shared with `skiff generate systemd`.

pub mod parse;
pub mod quote;
pub mod render;

pub use parse::{ContainerUnit, UnitError};
pub use render::service_text;

/// The directory of a user's `.container` files: `$XDG_CONFIG_HOME/skiff/units`, else
/// `~/.config/skiff/units`.
pub fn units_dir() -> Option<std::path::PathBuf> {
    if let Some(c) = std::env::var_os("XDG_CONFIG_HOME").filter(|c| !c.is_empty()) {
        return Some(std::path::PathBuf::from(c).join("skiff/units"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(std::path::PathBuf::from(home).join(".config/skiff/units"))
}
