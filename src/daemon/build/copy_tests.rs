use super::*;

/// A context of (name, data or `@target` for a symlink) entries.
fn context(entries: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = Header::new_gnu();
        h.set_mode(0o644);
        if let Some(t) = data.strip_prefix('@') {
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, t).unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
    }
    let d = tempfile::tempdir().unwrap();
    let bytes = b.into_inner().unwrap();
    let ctx = Context::receive(&bytes[..], &d.path().join("c.tar")).unwrap();
    (d, ctx)
}

#[test]
fn dotdot_is_refused_and_symlinks_not_followed() {
    assert!(clean_source("../x").is_err());
    assert!(clean_source("a/../../x").is_err());
    assert_eq!(clean_source("./a/../b").unwrap(), Path::new("b"));
    let (_d, ctx) = context(&[("out", "@/etc"), ("loop", "@loop")]);
    let ig = Ignore::default();
    let root = SourceRoot::Context {
        ctx: &ctx,
        ignore: &ig,
    };
    let mut items = Vec::new();
    let e = collect(&root, "out/passwd", Path::new("x"), false, &mut items).unwrap_err();
    assert!(e.contains("never followed"), "{e}");
    let e = collect(&root, "loop/x", Path::new("x"), false, &mut items).unwrap_err();
    assert!(e.contains("never followed"), "{e}");
    // The link itself is copied as a link.
    collect(&root, "out", Path::new("x"), false, &mut items).unwrap();
    collect(&root, "loop", Path::new("y"), false, &mut items).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0].src.meta().unwrap().kind,
        Kind::Symlink(PathBuf::from("/etc"))
    );
    assert_eq!(
        items[1].src.meta().unwrap().kind,
        Kind::Symlink(PathBuf::from("loop"))
    );
}

#[test]
fn the_checksum_follows_contents_names_and_modes_and_globs_use_the_index() {
    let sum = |entries: &[(&str, &str)], src: &str| {
        let (_d, ctx) = context(entries);
        let ig = Ignore::parse("d/*.log\n");
        let root = SourceRoot::Context {
            ctx: &ctx,
            ignore: &ig,
        };
        let mut items = Vec::new();
        collect(&root, src, Path::new("app"), true, &mut items).unwrap();
        let names: Vec<String> = items.iter().map(|i| i.dest.display().to_string()).collect();
        (checksum(&items).unwrap(), names, file_bytes(&items))
    };
    let base = [("d/a", "1"), ("d/b", "22"), ("d/x.log", "l"), ("e", "3")];
    let (s1, names, bytes) = sum(&base, "d");
    assert_eq!(names, ["app/a", "app/b"]);
    assert_eq!(bytes, 3);
    // Same content again: same sum; an ignored file changed: same sum.
    assert_eq!(sum(&base, "d").0, s1);
    let ignored = [("d/a", "1"), ("d/b", "22"), ("d/x.log", "L"), ("e", "3")];
    assert_eq!(sum(&ignored, "d").0, s1);
    // One byte of one copied file changed: another sum.
    let changed = [("d/a", "1"), ("d/b", "23"), ("d/x.log", "l"), ("e", "3")];
    assert_ne!(sum(&changed, "d").0, s1);
    let renamed = [("d/a", "1"), ("d/c", "22"), ("d/x.log", "l"), ("e", "3")];
    assert_ne!(sum(&renamed, "d").0, s1);
    let (_, names, _) = sum(&base, "d/?");
    assert_eq!(names, ["app/a", "app/b"]);
}

#[test]
fn a_re_included_file_below_an_excluded_directory_is_copied() {
    let (_d, ctx) = context(&[
        ("build/x", "1"),
        ("build/keep/f", "2"),
        ("build/other/g", "3"),
        ("src/a", "4"),
    ]);
    let ig = Ignore::parse("build\n!build/keep\n");
    let root = SourceRoot::Context {
        ctx: &ctx,
        ignore: &ig,
    };
    let names = |src: &str| {
        let mut items = Vec::new();
        collect(&root, src, Path::new("app"), true, &mut items).unwrap();
        items
            .iter()
            .map(|i| i.dest.display().to_string())
            .collect::<Vec<_>>()
    };
    // As docker: the CLI sends build/keep/f (and so its parents), nothing else of build/.
    assert_eq!(
        names("."),
        [
            "app/build",
            "app/build/keep",
            "app/build/keep/f",
            "app/src",
            "app/src/a"
        ]
    );
    assert_eq!(names("build"), ["app/keep", "app/keep/f"]);
    // An excluded file, or a directory with nothing re-included, is still refused.
    let mut items = Vec::new();
    let e = collect(&root, "build/x", Path::new("app"), true, &mut items).unwrap_err();
    assert!(e.contains("excluded by .dockerignore"), "{e}");
    let e = collect(&root, "build/other", Path::new("app"), true, &mut items).unwrap_err();
    assert!(e.contains("excluded by .dockerignore"), "{e}");
}

#[test]
fn layer_entries_carry_the_context_data() {
    let (_d, ctx) = context(&[("f", "hello"), ("l", "@f")]);
    let ig = Ignore::default();
    let root = SourceRoot::Context {
        ctx: &ctx,
        ignore: &ig,
    };
    let mut items = Vec::new();
    collect(&root, ".", Path::new("app"), true, &mut items).unwrap();
    let mut b = Builder::new(Vec::new());
    let place = Placement {
        owner: (7, 8),
        mode: Some(0o700),
    };
    append_items(
        &mut b,
        &[PathBuf::from("app")],
        &items,
        Some(&ctx),
        place,
        &|_| Ok(()),
    )
    .unwrap();
    let bytes = b.into_inner().unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = String::new();
        e.read_to_string(&mut data).unwrap();
        let h = e.header();
        seen.push(format!(
            "{} {:o} {}:{} {data}{}",
            e.path().unwrap().display(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            e.link_name()
                .unwrap()
                .map(|l| format!("-> {}", l.display()))
                .unwrap_or_default()
        ));
    }
    assert_eq!(
        seen,
        ["app 755 7:8 ", "app/f 700 7:8 hello", "app/l 777 7:8 -> f"]
    );
}
