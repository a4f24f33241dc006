//! Restart policies (docker's `--restart`) and the restart manager's backoff: 100 ms,
//! doubling after each quick failure, reset once a run lasted 10 s.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::Error;

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Restart when the exit code is not 0, at most `max` times (unlimited when None).
    OnFailure(Option<u32>),
    /// Always restart, and start again when the daemon starts.
    Always,
    /// Like `Always`, except after the user stopped it.
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidConfig(format!(
                "key \"restart\": {s:?} {why}: use no, on-failure[:N], always or unless-stopped"
            ))
        };
        match s.split_once(':') {
            None => match s {
                "" | "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure(None)),
                "always" => Ok(RestartPolicy::Always),
                "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
                _ => Err(bad("is not a restart policy")),
            },
            Some(("on-failure", n)) => n
                .parse::<u32>()
                .map(|n| RestartPolicy::OnFailure(Some(n)))
                .map_err(|_| bad("has a bad retry count")),
            Some(_) => Err(bad("takes a count only with on-failure")),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure(None) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl RestartPolicy {
    /// Whether a container that just exited with `exit_code`, after `restarts` restarts,
    /// should be started again. A stop by the user never triggers a restart.
    pub fn should_restart(self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure(max) => exit_code != 0 && max.is_none_or(|m| restarts < m),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether the daemon starts a container with this policy again when it starts
    /// (docker: `always`, and `unless-stopped` unless the user stopped it).
    pub fn start_on_daemon_start(self, stopped_by_user: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped => !stopped_by_user,
            _ => false,
        }
    }
}

/// First delay before a restart.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// A run at least this long resets the delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// The delay never grows past this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The delay before the next restart, given the previous delay and how long the last run
/// lasted.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= BACKOFF_RESET_AFTER => BACKOFF_START,
        None => BACKOFF_START,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_policies() {
        assert_eq!("no".parse::<RestartPolicy>().unwrap(), RestartPolicy::No);
        assert_eq!(
            "on-failure:3".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure(Some(3))
        );
        assert_eq!(
            "on-failure".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure(None)
        );
        assert_eq!(
            "unless-stopped".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert!("always:3".parse::<RestartPolicy>().is_err());
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert_eq!(
            RestartPolicy::OnFailure(Some(2)).to_string(),
            "on-failure:2"
        );
    }

    #[test]
    fn restart_decisions() {
        let p = RestartPolicy::OnFailure(Some(2));
        assert!(p.should_restart(1, 0, false));
        assert!(p.should_restart(1, 1, false));
        assert!(!p.should_restart(1, 2, false));
        assert!(!p.should_restart(0, 0, false));
        assert!(!RestartPolicy::Always.should_restart(1, 0, true));
        assert!(RestartPolicy::Always.should_restart(0, 100, false));
        assert!(!RestartPolicy::No.should_restart(1, 0, false));
        assert!(RestartPolicy::UnlessStopped.start_on_daemon_start(false));
        assert!(!RestartPolicy::UnlessStopped.start_on_daemon_start(true));
        assert!(RestartPolicy::Always.start_on_daemon_start(true));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let d1 = next_delay(None, Duration::from_millis(5));
        assert_eq!(d1, Duration::from_millis(100));
        let d2 = next_delay(Some(d1), Duration::from_millis(5));
        assert_eq!(d2, Duration::from_millis(200));
        assert_eq!(next_delay(Some(d2), Duration::from_secs(11)), BACKOFF_START);
        assert_eq!(
            next_delay(Some(Duration::from_secs(50)), Duration::ZERO),
            BACKOFF_MAX
        );
    }
}
