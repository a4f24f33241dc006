//! docker's `--filter key=value` for containers: `id`, `name`, `status`, `label`
//! (`k` or `k=v`), `ancestor`. The same key given twice matches either value; different
//! keys must all match.

use std::collections::BTreeMap;

use super::container::Record;
use super::Error;

/// Parsed filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

const KEYS: &[&str] = &["id", "name", "status", "label", "ancestor"];

impl Filters {
    /// Parses `key=value` strings.
    pub fn parse(items: &[String]) -> Result<Filters, Error> {
        let mut f = Filters::default();
        for item in items {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!("bad filter {item:?}: use key=value"))
            })?;
            if !KEYS.contains(&k) {
                return Err(Error::InvalidArgument(format!(
                    "unknown filter {k:?} (known: {})",
                    KEYS.join(", ")
                )));
            }
            if k == "status"
                && ![
                    "created",
                    "running",
                    "exited",
                    "removing",
                    "restarting",
                    "paused",
                    "dead",
                ]
                .contains(&v)
            {
                return Err(Error::InvalidArgument(format!(
                    "unknown status {v:?} in filter"
                )));
            }
            f.by_key
                .entry(k.to_string())
                .or_default()
                .push(v.to_string());
        }
        Ok(f)
    }

    /// Whether the filters ask about stopped containers explicitly (then `ps` without
    /// `-a` shows them too, as docker does for a status filter).
    pub fn wants_status(&self) -> bool {
        self.by_key.contains_key("status")
    }

    /// Does `rec` (from an image with `image_ref` as given and id `image_id`) match?
    pub fn matches(&self, rec: &Record) -> bool {
        self.by_key.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "id" => rec.id.starts_with(v.as_str()),
                "name" => rec.name.contains(v.as_str()),
                "status" => rec.state.status_str() == v,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => rec.config.labels.get(lk).is_some_and(|x| x == lv),
                    None => rec.config.labels.contains_key(v.as_str()),
                },
                "ancestor" => {
                    with_tag(&rec.config.image) == with_tag(v)
                        || (!v.is_empty()
                            && rec.image_id.starts_with(v.trim_start_matches("sha256:")))
                }
                _ => false,
            })
        })
    }
}

/// `name` with `:latest` added when it has no tag (a `host:port/` prefix is not a tag).
fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::container::{State, Status};
    use crate::daemon::ContainerConfig;

    fn rec(name: &str, status: Status, labels: &[(&str, &str)]) -> Record {
        Record {
            id: format!("abc{name}"),
            name: name.into(),
            created: 0,
            image_id: "ffee".into(),
            config: ContainerConfig {
                image: "demo/busybox".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            args: vec![],
            env: vec![],
            workdir: "/".into(),
            hostname: "h".into(),
            user: (0, 0),
            user_spec: None,
            mounts: Vec::new(),
            network_default: false,
            network_reason: String::new(),
            network_addr: None,
            state: State {
                status,
                ..Default::default()
            },
        }
    }

    fn f(items: &[&str]) -> Filters {
        Filters::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn keys_and_values_combine_like_docker() {
        let web = rec("web", Status::Running, &[("tier", "front")]);
        let db = rec("db", Status::Exited, &[("tier", "back")]);
        assert!(f(&["status=running"]).matches(&web));
        assert!(!f(&["status=running"]).matches(&db));
        assert!(f(&["status=running", "status=exited"]).matches(&db));
        assert!(!f(&["status=running", "name=db"]).matches(&db));
        assert!(f(&["label=tier=back"]).matches(&db));
        assert!(f(&["label=tier"]).matches(&web));
        assert!(f(&["ancestor=demo/busybox"]).matches(&web));
        assert!(f(&["ancestor=demo/busybox:latest"]).matches(&web));
        assert!(f(&["ancestor=ffe"]).matches(&web));
        assert!(!f(&["ancestor=other"]).matches(&web));
    }

    #[test]
    fn bad_filters_are_errors() {
        assert!(Filters::parse(&["colour=red".into()]).is_err());
        assert!(Filters::parse(&["status".into()]).is_err());
        assert!(Filters::parse(&["status=sleeping".into()]).is_err());
    }
}
