//! Events in docker's vocabulary (`container create|start|die|destroy`, `image import`).

use std::collections::BTreeMap;

use crate::timefmt::now_us;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// `container` or `image`.
    pub typ: String,
    /// `create`, `start`, `die`, `destroy`, `import`, ...
    pub action: String,
    /// The container or image id.
    pub id: String,
    /// Extra facts: `name`, `image`, `exitCode`.
    pub attributes: BTreeMap<String, String>,
    /// When, µs since the epoch.
    pub time: u64,
}

impl Event {
    /// A new event stamped now.
    pub fn new(typ: &str, action: &str, id: &str, attributes: &[(&str, String)]) -> Event {
        Event {
            typ: typ.into(),
            action: action.into(),
            id: id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            time: now_us(),
        }
    }
}
