//! Image commands: import, images, and `info`.

use std::collections::HashMap;
use std::os::fd::AsFd;

use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::{table, Failure};
use crate::timefmt::human_ago;

/// `skiff image import FILE|- REF`.
pub async fn import(conn: &Connection, file: &str, reference: &str) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
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
    options.insert(
        "wait",
        OwnedVariant::try_from(Variant::from(true)).map_err(|e| Failure::msg(e.to_string()))?,
    );
    mgr.import_image(fd, reference, options)
        .await
        .map_err(|e| fail(e, 1))?;
    let path = mgr.get_image(reference).await.map_err(|e| fail(e, 1))?;
    let id = path
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    println!("sha256:{id}");
    Ok(0)
}

/// `skiff images`.
pub async fn list(conn: &Connection, quiet: bool) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let images = mgr.list_images(&[], 0).await.map_err(|e| fail(e, 1))?;
    let mut rows = Vec::new();
    for (id, tags, created, size, _) in images {
        let short = id[..12.min(id.len())].to_string();
        if quiet {
            println!("{short}");
            continue;
        }
        let tags = if tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            tags
        };
        for t in tags {
            let (repo, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), "<none>"));
            rows.push(vec![
                repo.to_string(),
                tag.to_string(),
                short.clone(),
                human_ago(created),
                table::human_size(size),
            ]);
        }
    }
    if !quiet {
        table::print(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    }
    Ok(0)
}

/// `skiff info`.
pub async fn info(conn: &Connection) -> Result<i32, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    println!("{}", mgr.info().await.map_err(|e| fail(e, 1))?);
    Ok(0)
}
