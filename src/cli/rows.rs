//! docker's rows for the list commands (`ps`, `images`, `volume ls`, `history`): one
//! JSON object per row with docker's field names and string values, as docker's
//! formatters give them to `--format` templates, and each command's default table.

use serde_json::{json, Value};

use super::format::Table;
use super::table::human_size;
use crate::timefmt::{human_ago, parse_rfc3339};

/// `ps`: docker's default table and headers.
pub const PS: Table = Table {
    default: "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
    headers: &[
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
        ("Mounts", "MOUNTS"),
        ("Networks", "NETWORKS"),
        ("LocalVolumes", "LOCAL VOLUMES"),
        ("Size", "SIZE"),
    ],
};

/// `images`.
pub const IMAGES: Table = Table {
    default: "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
    headers: &[
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("Digest", "DIGEST"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
        ("VirtualSize", "SIZE"),
        ("SharedSize", "SHARED SIZE"),
        ("UniqueSize", "UNIQUE SIZE"),
        ("Containers", "CONTAINERS"),
    ],
};

/// `images --digests`.
pub const IMAGES_WITH_DIGESTS: Table = Table {
    default: "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
    headers: IMAGES.headers,
};

/// `volume ls`.
pub const VOLUMES: Table = Table {
    default: "table {{.Driver}}\t{{.Name}}",
    headers: &[
        ("Name", "VOLUME NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("Mountpoint", "MOUNTPOINT"),
        ("Labels", "LABELS"),
        ("Links", "LINKS"),
        ("Size", "SIZE"),
    ],
};

/// `history`.
pub const HISTORY: Table = Table {
    default: "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
    headers: &[
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ],
};

/// A time as docker's templates print it: `2024-01-02 15:04:05 +0000 UTC`.
pub fn docker_time(us: u64) -> String {
    let t = crate::timefmt::rfc3339(us);
    let date = t.get(..10).unwrap_or_default();
    let clock = t.get(11..19).unwrap_or_default();
    format!("{date} {clock} +0000 UTC")
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `k=v,k2=v2` (sorted), as docker's `.Labels` of a row.
fn labels(v: &Value) -> String {
    let mut parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    parts.sort();
    parts.join(",")
}

fn ago(v: &Value) -> String {
    v.as_str()
        .and_then(parse_rfc3339)
        .map(human_ago)
        .unwrap_or_default()
}

/// docker's "…" cut: `s` when it fits in `max` characters, else `max - 1` and `…`.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    s.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
}

/// A `ps` row of a container's inspect JSON; `ports` is the PORTS column.
pub fn ps_row(v: &Value, ports: String, no_trunc: bool) -> Value {
    let id = text(&v["Id"]);
    let short = if no_trunc {
        id.clone()
    } else {
        id[..12.min(id.len())].to_string()
    };
    let state = text(&v["State"]["Status"]);
    let created = parse_rfc3339(v["Created"].as_str().unwrap_or("")).unwrap_or(0);
    let mut command = text(&v["Path"]);
    for a in v["Args"].as_array().into_iter().flatten() {
        command.push(' ');
        command.push_str(a.as_str().unwrap_or(""));
    }
    let command = if no_trunc {
        format!("\"{command}\"")
    } else {
        format!("\"{}\"", ellipsis(&command, 20))
    };
    let status = match state.as_str() {
        "exited" => format!(
            "Exited ({}) {}",
            v["State"]["ExitCode"],
            ago(&v["State"]["FinishedAt"])
        ),
        "running" => format!(
            "Up {}",
            ago(&v["State"]["StartedAt"]).trim_end_matches(" ago")
        ),
        "paused" => format!(
            "Up {} (Paused)",
            ago(&v["State"]["StartedAt"]).trim_end_matches(" ago")
        ),
        "created" => "Created".to_string(),
        other => other.to_string(),
    };
    let mounts: Vec<String> = v["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m["Type"].as_str() {
            Some("volume") => text(&m["Name"]),
            _ => text(&m["Source"]),
        })
        .map(|m| if no_trunc { m } else { ellipsis(&m, 15) })
        .collect();
    let local_volumes = v["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"] == "volume")
        .count();
    json!({
        "ID": short,
        "Id": id,
        "Image": text(&v["Config"]["Image"]),
        "Command": command,
        "CreatedAt": docker_time(created),
        "RunningFor": human_ago(created),
        "Status": status,
        "State": state,
        "Ports": ports,
        "Names": text(&v["Name"]).trim_start_matches('/'),
        "Labels": labels(&v["Config"]["Labels"]),
        "Mounts": mounts.join(","),
        "Networks": text(&v["HostConfig"]["NetworkMode"]),
        "LocalVolumes": local_volumes.to_string(),
        "Size": "0B",
    })
}

/// An `images` row.
pub struct ImageRow<'a> {
    /// Hex id.
    pub id: &'a str,
    /// `repo:tag`, or `repo:<none>`.
    pub name: &'a str,
    /// The repo digest of this repository (`sha256:...`), if any.
    pub digest: Option<&'a str>,
    /// Created, µs.
    pub created: u64,
    /// Bytes.
    pub size: u64,
}

/// An `images` row as docker's templates see it.
pub fn image_row(r: &ImageRow<'_>, no_trunc: bool) -> Value {
    let (repo, tag) = split_tag(r.name);
    let id = if no_trunc {
        format!("sha256:{}", r.id)
    } else {
        r.id[..12.min(r.id.len())].to_string()
    };
    json!({
        "ID": id,
        "Repository": repo,
        "Tag": tag,
        "Digest": r.digest.unwrap_or("<none>"),
        "CreatedSince": human_ago(r.created),
        "CreatedAt": docker_time(r.created),
        "Size": human_size(r.size),
        "VirtualSize": human_size(r.size),
        "SharedSize": "N/A",
        "UniqueSize": "N/A",
        "Containers": "N/A",
    })
}

/// `repo:tag` split at the tag's colon (not a registry port's).
pub fn split_tag(t: &str) -> (&str, &str) {
    let slash = t.rfind('/').map_or(0, |i| i + 1);
    match t[slash..].rfind(':') {
        Some(i) => (&t[..slash + i], &t[slash + i + 1..]),
        None => (t, "<none>"),
    }
}

/// A `volume ls` row of a volume's inspect JSON.
pub fn volume_row(v: &Value) -> Value {
    json!({
        "Name": text(&v["Name"]),
        "Driver": v["Driver"].as_str().unwrap_or("local"),
        "Scope": v["Scope"].as_str().unwrap_or("local"),
        "Mountpoint": text(&v["Mountpoint"]),
        "Labels": labels(&v["Labels"]),
        "Links": "N/A",
        "Size": "N/A",
    })
}

/// A `history` row of one of skiffd's history entries (newest first; `Id` is the
/// image's id on the newest, `<missing>` on the others, as docker shows pulled images).
pub fn history_row(e: &Value, no_trunc: bool) -> Value {
    let id = text(&e["Id"]);
    let id = match id.strip_prefix("sha256:") {
        Some(hex) if !no_trunc => hex[..12.min(hex.len())].to_string(),
        _ if id.is_empty() => "<missing>".to_string(),
        _ => id,
    };
    let created = parse_rfc3339(e["Created"].as_str().unwrap_or(""));
    let by = text(&e["CreatedBy"]);
    json!({
        "ID": id,
        "CreatedSince": created.map(human_ago).unwrap_or_else(|| "N/A".into()),
        "CreatedAt": created.map(docker_time).unwrap_or_else(|| "N/A".into()),
        "CreatedBy": if no_trunc { by } else { ellipsis(&by, 45) },
        "Size": human_size(e["Size"].as_u64().unwrap_or(0)),
        "Comment": text(&e["Comment"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_shapes() {
        assert_eq!(
            docker_time(1_767_225_600_000_000),
            "2026-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b", "1")
        );
        assert_eq!(labels(&json!({"b": "2", "a": "1"})), "a=1,b=2");
    }
}
