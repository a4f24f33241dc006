//! Timestamps of the phases of a container's start and end, for finding where the time
//! goes (`bench/start-phases.sh`, docs/benchmarks.md).
//!
//! Each [`mark`] is a `debug` event of the target [`TARGET`] with the phase's name and
//! the wall-clock time in µs since the epoch (`t_us`), so marks from the CLI's peer
//! processes — skiffd, the monitor, the intermediate, the container's init before its
//! exec — order on one time line in the daemon's log (helpers log there, see
//! [`crate::logging`]). Off by default; `skiffd --log-level info,skiff::phase=debug`
//! turns them on. A disabled mark costs one check of a cached flag: the clock is not
//! read.

/// The tracing target of the marks.
pub const TARGET: &str = "skiff::phase";

/// Marks that `phase` is reached now (one word, e.g. `monitor-locked`).
#[inline]
pub fn mark(phase: &str) {
    tracing::debug!(target: TARGET, phase, t_us = crate::timefmt::now_us());
}

/// [`mark`] with a second word, e.g. the D-Bus method a gate event is about.
#[inline]
pub fn mark2(phase: &str, what: &str) {
    tracing::debug!(target: TARGET, phase, what, t_us = crate::timefmt::now_us());
}
