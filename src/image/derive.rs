//! Image configurations derived from a parent's (`skiff commit`, each build step): the
//! parent's JSON kept as it is (fields skiff does not model, such as `Healthcheck` or
//! `OnBuild`, survive), the changes applied to its `config`, a layer appended to
//! `rootfs.diff_ids` and an entry to `history`. Serialised with sorted keys, so the same
//! configuration always has the same digest (the image id).

use serde_json::{json, Map, Value};

use super::{Error, ImageChanges};

/// One `history` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339 time.
    pub created: String,
    /// What made the layer (`/bin/sh -c make`, `COPY file:… in /`).
    pub created_by: String,
    /// The commit message (`-m`).
    pub comment: Option<String>,
    /// The author (`-a`).
    pub author: Option<String>,
    /// The step added no layer.
    pub empty_layer: bool,
}

/// A configuration being derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived(pub Value);

impl Derived {
    /// Starts from the parent's configuration blob, or from nothing (`FROM scratch`).
    pub fn new(parent: Option<&[u8]>) -> Result<Derived, Error> {
        let mut v = match parent {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage {
                what: "parent configuration".into(),
                reason: e.to_string(),
            })?,
            None => json!({
                "architecture": super::store::oci_arch(),
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
            }),
        };
        if !v.is_object() {
            return Err(Error::InvalidImage {
                what: "parent configuration".into(),
                reason: "not a JSON object".into(),
            });
        }
        // Fields of the parent's own making that a child must not keep.
        if let Some(o) = v.as_object_mut() {
            o.remove("container");
            o.remove("container_config");
            o.remove("author");
        }
        Ok(Derived(v))
    }

    fn obj(&mut self) -> &mut Map<String, Value> {
        if !self.0.is_object() {
            self.0 = json!({});
        }
        // Checked just above.
        self.0.as_object_mut().expect("an object")
    }

    /// The `config` object (created when missing).
    pub fn config(&mut self) -> &mut Map<String, Value> {
        let o = self.obj();
        let c = o.entry("config").or_insert_with(|| json!({}));
        if !c.is_object() {
            *c = json!({});
        }
        c.as_object_mut().expect("an object")
    }

    /// The `config` object as it is now.
    pub fn config_value(&self) -> Value {
        self.0.get("config").cloned().unwrap_or_else(|| json!({}))
    }

    /// The environment (`NAME=value` entries).
    pub fn env(&self) -> Vec<String> {
        string_list(self.0.get("config").and_then(|c| c.get("Env")))
    }

    /// Sets `NAME=value` in the environment (replacing an earlier `NAME`).
    pub fn set_env(&mut self, name: &str, value: &str) {
        let mut env = self.env();
        let prefix = format!("{name}=");
        match env.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(e) => *e = format!("{name}={value}"),
            None => env.push(format!("{name}={value}")),
        }
        self.config().insert("Env".into(), json!(env));
    }

    /// Applies `--change` instructions: CMD, ENTRYPOINT, WORKDIR, USER, STOPSIGNAL
    /// replace; ENV, LABEL, EXPOSE, VOLUME add.
    pub fn apply(&mut self, changes: &ImageChanges) {
        for e in &changes.env {
            if let Some((k, v)) = e.split_once('=') {
                self.set_env(k, v);
            }
        }
        let c = self.config();
        if let Some(cmd) = &changes.cmd {
            c.insert("Cmd".into(), json!(cmd));
        }
        if let Some(ep) = &changes.entrypoint {
            c.insert("Entrypoint".into(), json!(ep));
        }
        if let Some(w) = &changes.workdir {
            c.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &changes.user {
            c.insert("User".into(), json!(u));
        }
        if let Some(s) = &changes.stop_signal {
            c.insert("StopSignal".into(), json!(s));
        }
        for (key, items) in [
            ("Labels", None),
            ("ExposedPorts", Some(&changes.exposed_ports)),
            ("Volumes", Some(&changes.volumes)),
        ] {
            let add: Vec<(String, Value)> = match items {
                None => changes
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect(),
                Some(list) => list.iter().map(|p| (p.clone(), json!({}))).collect(),
            };
            if add.is_empty() {
                continue;
            }
            let m = c.entry(key).or_insert_with(|| json!({}));
            if !m.is_object() {
                *m = json!({});
            }
            if let Some(m) = m.as_object_mut() {
                m.extend(add);
            }
        }
    }

    /// Appends a layer's diff id to `rootfs.diff_ids`.
    pub fn add_layer(&mut self, diff_id: &str) {
        let o = self.obj();
        let rootfs = o
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        if !rootfs.is_object() {
            *rootfs = json!({"type": "layers", "diff_ids": []});
        }
        let ids = rootfs
            .as_object_mut()
            .expect("an object")
            .entry("diff_ids")
            .or_insert_with(|| json!([]));
        if !ids.is_array() {
            *ids = json!([]);
        }
        if let Some(a) = ids.as_array_mut() {
            a.push(json!(diff_id));
        }
    }

    /// The layers' diff ids.
    pub fn diff_ids(&self) -> Vec<String> {
        string_list(self.0.get("rootfs").and_then(|r| r.get("diff_ids")))
    }

    /// Appends a history entry and sets `created` (and `author`) from it.
    pub fn add_history(&mut self, h: &HistoryEntry) {
        let mut e = Map::new();
        e.insert("created".into(), json!(h.created));
        e.insert("created_by".into(), json!(h.created_by));
        if let Some(c) = &h.comment {
            e.insert("comment".into(), json!(c));
        }
        if let Some(a) = &h.author {
            e.insert("author".into(), json!(a));
        }
        if h.empty_layer {
            e.insert("empty_layer".into(), json!(true));
        }
        let o = self.obj();
        o.insert("created".into(), json!(h.created));
        if let Some(a) = &h.author {
            o.insert("author".into(), json!(a));
        }
        let hist = o.entry("history").or_insert_with(|| json!([]));
        if !hist.is_array() {
            *hist = json!([]);
        }
        if let Some(a) = hist.as_array_mut() {
            a.push(Value::Object(e));
        }
    }

    /// The configuration's bytes, keys sorted.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        // serde_json's Map is a BTreeMap (no preserve_order): keys come out sorted.
        serde_json::to_vec(&self.0)
            .map_err(|e| Error::io("encoding the image config", std::io::Error::other(e)))
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_layers_and_history_on_a_parent() {
        let parent = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"],"Healthcheck":{"Test":["NONE"]}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x"}],"container_config":{}}"#;
        let mut d = Derived::new(Some(parent)).unwrap();
        let mut ch = ImageChanges::default();
        crate::image::changes::apply_change(&mut ch, "ENV A=2 B=3").unwrap();
        crate::image::changes::apply_change(&mut ch, "CMD [\"/app\"]").unwrap();
        crate::image::changes::apply_change(&mut ch, "EXPOSE 80").unwrap();
        crate::image::changes::apply_change(&mut ch, "LABEL k=v").unwrap();
        d.apply(&ch);
        d.add_layer("sha256:bb");
        d.add_history(&HistoryEntry {
            created: "2026-01-01T00:00:00Z".into(),
            created_by: "sh -c make".into(),
            comment: Some("msg".into()),
            author: Some("me".into()),
            empty_layer: false,
        });
        let v: Value = serde_json::from_slice(&d.to_bytes().unwrap()).unwrap();
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(v["config"]["Cmd"], json!(["/app"]));
        assert_eq!(v["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(v["config"]["Labels"], json!({"k": "v"}));
        assert_eq!(v["config"]["Healthcheck"], json!({"Test": ["NONE"]}));
        assert_eq!(v["rootfs"]["diff_ids"], json!(["sha256:aa", "sha256:bb"]));
        assert_eq!(v["history"][1]["comment"], "msg");
        assert_eq!(v["author"], "me");
        assert!(v.get("container_config").is_none());
    }

    #[test]
    fn scratch_has_a_platform_and_no_layers() {
        let d = Derived::new(None).unwrap();
        assert_eq!(d.0["os"], "linux");
        assert!(d.diff_ids().is_empty());
    }
}
