//! Image commands: images, import, load, save, tag, rmi, inspect, history, prune, and
//! `info`.

use super::output::{errln, outln};
use std::collections::HashMap;
use std::os::fd::AsFd;

use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::image_args::{
    HistoryArgs, ImagesArgs, ImportArgs, InspectArgs, LoadArgs, PruneArgs, RmiArgs, SaveArgs,
    TagArgs,
};
use super::progress::JobWatcher;
use super::{rows, Failure};

fn opt<T: Into<Variant<'static>>>(v: T) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(e.to_string()))
}

fn id_of(path: &zbus::OwnedObjectPath) -> String {
    path.as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `skiff import FILE|- REF [--change ...]`.
pub async fn import(conn: &Connection, args: &ImportArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let file = args.file.as_str();
    let opened;
    let stdin = std::io::stdin();
    let fd: zbus::Fd<'_> = if file == "-" {
        stdin.as_fd().into()
    } else {
        opened = std::fs::File::open(file).map_err(|e| Failure::msg(format!("{file}: {e}")))?;
        if opened.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Failure::msg(format!(
                "{file} is a directory: give a tar file"
            )));
        }
        opened.as_fd().into()
    };
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !args.changes.is_empty() {
        options.insert("changes", opt(args.changes.clone())?);
    }
    let watcher = JobWatcher::subscribe(conn).await?;
    let (_, job) = mgr
        .import_image(fd, &args.reference, options)
        .await
        .map_err(|e| fail(e, 1))?;
    let end = watcher
        .follow(conn, &job, Some("tarball"), !args.quiet)
        .await?;
    if end.result != "done" {
        let input = if file == "-" {
            "the tarball on stdin".to_string()
        } else {
            file.to_string()
        };
        return Err(Failure::msg(format!("importing {input}: {}", end.detail)));
    }
    let path = mgr
        .get_image(&args.reference)
        .await
        .map_err(|e| fail(e, 1))?;
    outln!("sha256:{}", id_of(&path));
    Ok(0)
}

/// `skiff load [-i FILE]`.
pub async fn load(conn: &Connection, args: &LoadArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let opened;
    let stdin = std::io::stdin();
    let fd: zbus::Fd<'_> = match &args.input {
        Some(f) if f != "-" => {
            opened = std::fs::File::open(f).map_err(|e| Failure::msg(format!("{f}: {e}")))?;
            opened.as_fd().into()
        }
        _ => {
            if std::io::IsTerminal::is_terminal(&stdin) {
                return Err(Failure::msg(
                    "no archive: give one with -i FILE or on stdin".to_string(),
                ));
            }
            stdin.as_fd().into()
        }
    };
    let options: HashMap<&str, OwnedVariant> = HashMap::new();
    let watcher = JobWatcher::subscribe(conn).await?;
    let (_, job) = mgr.load_image(fd, options).await.map_err(|e| fail(e, 1))?;
    let end = watcher
        .follow(conn, &job, Some("archive"), !args.quiet)
        .await?;
    let (result, ids) = (end.result, end.detail);
    if result != "done" {
        let input = match &args.input {
            Some(f) if f != "-" => f.clone(),
            _ => "the archive on stdin".to_string(),
        };
        return Err(Failure::msg(format!("loading {input}: {ids}")));
    }
    for id in ids.split(',').filter(|s| !s.is_empty()) {
        if args.quiet {
            outln!("sha256:{id}");
            continue;
        }
        let tags = image_proxy(conn, id)
            .await?
            .repo_tags()
            .await
            .unwrap_or_default();
        if tags.is_empty() {
            outln!("Loaded image: sha256:{id}");
        }
        for t in tags {
            outln!("Loaded image: {t}");
        }
    }
    Ok(0)
}

async fn image_proxy<'a>(
    conn: &'a Connection,
    id: &str,
) -> Result<crate::dbus::proxy::ImageProxy<'a>, Failure> {
    crate::dbus::proxy::ImageProxy::builder(conn)
        .path(crate::dbus::image_path(id))
        .build()
        .await
        .map_err(|e| fail(e, 1))
}

/// `skiff save [-o FILE] [--format F] IMAGE...`.
pub async fn save(conn: &Connection, args: &SaveArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let opened;
    let stdout = std::io::stdout();
    let fd: zbus::Fd<'_> = match &args.output {
        Some(f) if f != "-" => {
            opened = std::fs::File::create(f).map_err(|e| Failure::msg(format!("{f}: {e}")))?;
            opened.as_fd().into()
        }
        _ => {
            if std::io::IsTerminal::is_terminal(&stdout) {
                return Err(Failure::msg(
                    "refusing to write an archive to a terminal: give -o FILE or redirect \
                     stdout"
                        .to_string(),
                ));
            }
            stdout.as_fd().into()
        }
    };
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    options.insert("format", opt(args.format.clone())?);
    let refs: Vec<&str> = args.images.iter().map(String::as_str).collect();
    let res = mgr.save_image(&refs, fd, options).await;
    if let (Err(_), Some(f)) = (&res, &args.output) {
        let _ = std::fs::remove_file(f);
    }
    res.map_err(|e| fail(e, 1))?;
    Ok(0)
}

/// `skiff tag SOURCE TARGET...`.
pub async fn tag(conn: &Connection, args: &TagArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    for t in &args.targets {
        mgr.tag_image(&args.source, t)
            .await
            .map_err(|e| fail(e, 1))?;
    }
    Ok(0)
}

fn print_pairs(pairs: &[(String, String)]) {
    for (what, v) in pairs {
        match what.as_str() {
            "untagged" => outln!("Untagged: {v}"),
            "deleted" => outln!("Deleted: sha256:{v}"),
            _ => {}
        }
    }
}

/// `skiff rmi [-f] IMAGE...`: goes on after a failure, exit code 1 if any failed.
pub async fn rmi(conn: &Connection, args: &RmiArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut code = 0;
    for i in &args.images {
        match mgr.remove_image(i, u64::from(args.force)).await {
            Ok(pairs) => print_pairs(&pairs),
            Err(e) => {
                errln!("skiff: Error: {}", super::connect::describe(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `skiff image prune [-a]`.
pub async fn prune(conn: &Connection, args: &PruneArgs) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let pairs = mgr
        .prune_images(u64::from(args.all))
        .await
        .map_err(|e| fail(e, 1))?;
    print_pairs(&pairs);
    let reclaimed = pairs
        .iter()
        .find(|(what, _)| what == "reclaimed")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    outln!(
        "Total reclaimed space: {}",
        super::table::human_size(reclaimed)
    );
    Ok(0)
}

/// An image's inspect JSON.
pub async fn inspect_one(conn: &Connection, name: &str) -> Result<serde_json::Value, zbus::Error> {
    let mgr = super::connect::manager(conn).await?;
    let path = mgr.get_image(name).await?;
    let text = crate::dbus::proxy::ImageProxy::builder(conn)
        .path(crate::dbus::image_path(&id_of(&path)))
        .build()
        .await?
        .inspect()
        .await?;
    serde_json::from_str(&text)
        .map_err(|e| zbus::Error::Failure(format!("bad JSON from skiffd: {e}")))
}

/// `skiff image inspect [-f FORMAT] IMAGE...`: a JSON array, or the template per image.
pub async fn inspect(conn: &Connection, args: &InspectArgs) -> Result<i32, Failure> {
    super::format::check_inspect(args.format.as_deref())?;
    let mut out = Vec::new();
    let mut code = 0;
    for i in &args.images {
        match inspect_one(conn, i).await {
            Ok(v) => out.push(v),
            Err(e) => {
                errln!("skiff: Error: {}", super::connect::describe(&e));
                code = 1;
            }
        }
    }
    super::format::print_inspect(args.format.as_deref(), &out)?;
    Ok(code)
}

/// `skiff history IMAGE`: IMAGE, CREATED, CREATED BY, SIZE and COMMENT, as docker.
pub async fn history(conn: &Connection, args: &HistoryArgs) -> Result<i32, Failure> {
    let format = args.format.as_deref().unwrap_or("");
    super::format::check(format, &rows::HISTORY)?;
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let path = mgr.get_image(&args.image).await.map_err(|e| fail(e, 1))?;
    let text = image_proxy(conn, &id_of(&path))
        .await?
        .history()
        .await
        .map_err(|e| fail(e, 1))?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| Failure::msg(e.to_string()))?;
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| rows::history_row(e, args.no_trunc))
        .collect();
    if args.quiet {
        for r in &list {
            outln!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    super::format::print(format, &list, &rows::HISTORY)?;
    Ok(0)
}

/// `skiff images`.
pub async fn list(conn: &Connection, args: &ImagesArgs) -> Result<i32, Failure> {
    let format = args.format.as_deref().unwrap_or("");
    super::format::check(format, &rows::IMAGES)?;
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let filters: Vec<&str> = args.filters.iter().map(String::as_str).collect();
    let images = mgr
        .list_images(&filters, u64::from(args.all))
        .await
        .map_err(|e| fail(e, 1))?;
    if args.quiet {
        for (id, ..) in &images {
            let id = if args.no_trunc {
                format!("sha256:{id}")
            } else {
                id[..12.min(id.len())].to_string()
            };
            outln!("{id}");
        }
        return Ok(0);
    }
    // Repo digests cost a call per image: only when shown.
    let digests = args.digests || format.contains("Digest") || format.trim() == "json";
    let mut list = Vec::new();
    for (id, tags, created, size, _) in images {
        let repo_digests = if digests || tags.is_empty() {
            match image_proxy(conn, &id).await {
                Ok(p) => p.repo_digests().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let names = if tags.is_empty() {
            untagged_names(&repo_digests)
        } else {
            tags
        };
        for name in names {
            let (repo, _) = rows::split_tag(&name);
            let digest = repo_digests.iter().find_map(|d| {
                d.split_once('@')
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, d)| d)
            });
            let row = rows::ImageRow {
                id: &id,
                name: &name,
                digest,
                created,
                size,
            };
            list.push(rows::image_row(&row, args.no_trunc));
        }
    }
    let table = if args.digests {
        rows::IMAGES_WITH_DIGESTS
    } else {
        rows::IMAGES
    };
    super::format::print(format, &list, &table)?;
    Ok(0)
}

/// The rows of an untagged image, as docker shows them: `REPO:<none>` for each
/// repository it has a repo digest in (e.g. pulled only by digest), else `<none>:<none>`.
fn untagged_names(digests: &[String]) -> Vec<String> {
    let mut repos: Vec<String> = digests
        .iter()
        .filter_map(|d| d.split_once('@').map(|(r, _)| format!("{r}:<none>")))
        .collect();
    repos.sort();
    repos.dedup();
    if repos.is_empty() {
        repos.push("<none>:<none>".to_string());
    }
    repos
}
