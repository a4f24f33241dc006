//! skiff — a rootless container runtime: a per-user daemon (`skiffd`) on D-Bus and a thin
//! CLI (`skiff`). See README.md for the user's view and docs/ for the design.

pub mod cgroup;
pub mod cli;
pub mod cp;
pub mod daemon;
pub mod dbus;
pub mod dockerignore;
pub mod elide;
pub mod fdpass;
pub mod fdutil;
pub mod fsutil;
pub mod fuse;
pub mod helpers;
pub mod image;
pub mod logging;
pub mod monitor;
pub mod netns;
pub mod paths;
pub mod phase;
pub mod procstat;
pub mod procutil;
pub mod runtime;
pub mod timefmt;
pub mod units;
pub mod userns;
