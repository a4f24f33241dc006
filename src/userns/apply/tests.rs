//! Tests of the map-writing decisions, through a recording fake system.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Find(String),
    Write(PathBuf, String),
    Run(PathBuf, Vec<String>),
}

/// Records every side effect; helpers live in /usr/bin unless `missing`.
struct Fake {
    euid: u32,
    egid: u32,
    calls: RefCell<Vec<Call>>,
    helper_output: HelperOutput,
    missing: Option<&'static str>,
    write_error: Option<(&'static str, io::ErrorKind)>,
}

impl Fake {
    fn new(euid: u32, egid: u32) -> Fake {
        Fake {
            euid,
            egid,
            calls: RefCell::new(Vec::new()),
            helper_output: HelperOutput {
                success: true,
                status: "exit status: 0".to_string(),
                message: String::new(),
            },
            missing: None,
            write_error: None,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
}

impl MapWriter for Fake {
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::Write(path.to_path_buf(), data.to_string()));
        match self.write_error {
            Some((file, kind)) if path.ends_with(file) => Err(io::Error::from(kind)),
            _ => Ok(()),
        }
    }

    fn run_helper(&self, helper: &Path, args: &[String]) -> io::Result<HelperOutput> {
        self.calls
            .borrow_mut()
            .push(Call::Run(helper.to_path_buf(), args.to_vec()));
        Ok(self.helper_output.clone())
    }

    fn find_helper(&self, name: &str) -> Result<PathBuf, Error> {
        self.calls.borrow_mut().push(Call::Find(name.to_string()));
        if self.missing == Some(name) {
            return Err(Error::HelperMissing {
                name: name.to_string(),
            });
        }
        Ok(Path::new("/usr/bin").join(name))
    }

    fn euid(&self) -> u32 {
        self.euid
    }

    fn egid(&self) -> u32 {
        self.egid
    }
}

fn entry(container_id: u32, host_id: u32, size: u32) -> IdMapEntry {
    IdMapEntry {
        container_id,
        host_id,
        size,
    }
}

fn multi() -> IdMaps {
    IdMaps {
        uid: vec![entry(0, 1000, 1), entry(1, 100000, 65536)],
        gid: vec![
            entry(0, 1001, 1),
            entry(1, 200000, 10),
            entry(11, 300000, 5),
        ],
    }
}

fn write(path: &str, data: &str) -> Call {
    Call::Write(PathBuf::from(path), data.to_string())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn wrote_setgroups(calls: &[Call]) -> bool {
    calls
        .iter()
        .any(|call| matches!(call, Call::Write(path, _) if path.ends_with("setgroups")))
}

#[test]
fn root_writes_both_maps_directly() {
    let fake = Fake::new(0, 0);
    multi().apply_with(&fake, 42).unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            write("/proc/42/uid_map", "0 1000 1\n1 100000 65536\n"),
            write("/proc/42/gid_map", "0 1001 1\n1 200000 10\n11 300000 5\n"),
        ]
    );
}

#[test]
fn unprivileged_multi_range_runs_both_helpers_without_setgroups() {
    let fake = Fake::new(1000, 1001);
    multi().apply_with(&fake, 42).unwrap();
    let calls = fake.calls();
    assert_eq!(
        calls,
        vec![
            Call::Find("newuidmap".into()),
            Call::Run(
                "/usr/bin/newuidmap".into(),
                args(&["42", "0", "1000", "1", "1", "100000", "65536"])
            ),
            Call::Find("newgidmap".into()),
            Call::Run(
                "/usr/bin/newgidmap".into(),
                args(&["42", "0", "1001", "1", "1", "200000", "10", "11", "300000", "5"])
            ),
        ]
    );
    assert!(!wrote_setgroups(&calls));
}

#[test]
fn unprivileged_single_id_denies_setgroups_before_gid_map() {
    let fake = Fake::new(1000, 1001);
    IdMaps::single(1000, 1001).apply_with(&fake, 7).unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            write("/proc/7/uid_map", "0 1000 1\n"),
            write("/proc/7/setgroups", "deny"),
            write("/proc/7/gid_map", "0 1001 1\n"),
        ]
    );
}

#[test]
fn uid_and_gid_helpers_are_chosen_separately() {
    // Subordinate uids but a single gid: newuidmap, then setgroups + gid_map.
    let fake = Fake::new(1000, 1001);
    let maps = IdMaps {
        uid: multi().uid,
        gid: vec![entry(0, 1001, 1)],
    };
    maps.apply_with(&fake, 9).unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::Find("newuidmap".into()),
            Call::Run(
                "/usr/bin/newuidmap".into(),
                args(&["9", "0", "1000", "1", "1", "100000", "65536"])
            ),
            write("/proc/9/setgroups", "deny"),
            write("/proc/9/gid_map", "0 1001 1\n"),
        ]
    );

    // A single uid but subordinate gids: uid_map directly, newgidmap, no setgroups.
    let fake = Fake::new(1000, 1001);
    let maps = IdMaps {
        uid: vec![entry(0, 1000, 1)],
        gid: multi().gid,
    };
    maps.apply_with(&fake, 9).unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0], write("/proc/9/uid_map", "0 1000 1\n"));
    assert_eq!(calls[1], Call::Find("newgidmap".into()));
    assert!(matches!(&calls[2], Call::Run(path, _) if path.ends_with("newgidmap")));
    assert_eq!(calls.len(), 3);
    assert!(!wrote_setgroups(&calls));
}

#[test]
fn single_line_for_another_id_needs_the_helper() {
    let fake = Fake::new(1000, 1000);
    let maps = IdMaps {
        uid: vec![entry(0, 100000, 1)],
        gid: vec![entry(0, 1000, 1)],
    };
    maps.apply_with(&fake, 3).unwrap();
    assert_eq!(
        fake.calls()[..2],
        [
            Call::Find("newuidmap".into()),
            Call::Run(
                "/usr/bin/newuidmap".into(),
                args(&["3", "0", "100000", "1"])
            ),
        ]
    );
    assert!(needs_helper(&[entry(0, 1000, 2)], 1000));
    assert!(!needs_helper(&[entry(5, 1000, 1)], 1000));
}

#[test]
fn helper_failure_surfaces_its_message_and_a_hint() {
    let mut fake = Fake::new(1000, 1001);
    fake.helper_output = HelperOutput {
        success: false,
        status: "exit status: 1".to_string(),
        message: "newuidmap: uid range [1-65537) -> [100000-165536) not allowed".to_string(),
    };
    let err = multi().apply_with(&fake, 42).unwrap_err();
    let text = err.to_string();
    match &err {
        Error::HelperFailed {
            name,
            status,
            stderr,
            hint,
        } => {
            assert_eq!(name, "newuidmap");
            assert_eq!(status, "exit status: 1");
            assert!(stderr.contains("not allowed"));
            assert!(hint.contains("/etc/subuid"), "{hint}");
            assert!(hint.contains("ls -l /usr/bin/newuidmap"), "{hint}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        text.starts_with("newuidmap failed (exit status: 1): newuidmap: uid range"),
        "{text}"
    );
    // Nothing is attempted for gids after the uid helper failed.
    assert_eq!(fake.calls().len(), 2);
}

#[test]
fn silent_helper_failure_says_so() {
    let mut fake = Fake::new(1000, 1001);
    fake.helper_output.success = false;
    fake.helper_output.status = "signal: 9 (SIGKILL)".to_string();
    let maps = IdMaps {
        uid: vec![entry(0, 1000, 1)],
        gid: multi().gid,
    };
    let text = maps.apply_with(&fake, 42).unwrap_err().to_string();
    assert!(
        text.contains("newgidmap failed (signal: 9 (SIGKILL))"),
        "{text}"
    );
    assert!(text.contains("printed no message"), "{text}");
    assert!(text.contains("/etc/subgid"), "{text}");
}

#[test]
fn missing_helper_stops_before_any_write() {
    let mut fake = Fake::new(1000, 1001);
    fake.missing = Some("newuidmap");
    let err = multi().apply_with(&fake, 42).unwrap_err();
    assert!(matches!(err, Error::HelperMissing { ref name } if name == "newuidmap"));
    assert!(
        err.to_string().contains(
            "install the \"uidmap\" package (apt-get install uidmap / dnf install shadow-utils)"
        ),
        "{err}"
    );
    assert_eq!(fake.calls(), vec![Call::Find("newuidmap".into())]);
}

#[test]
fn write_errors_name_the_file() {
    let mut fake = Fake::new(1000, 1000);
    fake.write_error = Some(("gid_map", io::ErrorKind::PermissionDenied));
    let err = IdMaps::single(1000, 1000).apply_with(&fake, 5).unwrap_err();
    match &err {
        Error::WriteMap { path, source } => {
            assert_eq!(path, Path::new("/proc/5/gid_map"));
            assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().starts_with("cannot write /proc/5/gid_map"));

    // A kernel without /proc/PID/setgroups needs no denial.
    let mut fake = Fake::new(1000, 1000);
    fake.write_error = Some(("setgroups", io::ErrorKind::NotFound));
    IdMaps::single(1000, 1000).apply_with(&fake, 5).unwrap();
    assert_eq!(fake.calls().len(), 3);

    let mut fake = Fake::new(1000, 1000);
    fake.write_error = Some(("setgroups", io::ErrorKind::PermissionDenied));
    let err = IdMaps::single(1000, 1000).apply_with(&fake, 5).unwrap_err();
    assert!(matches!(err, Error::WriteMap { ref path, .. } if path.ends_with("setgroups")));
}

#[test]
fn invalid_input_is_rejected_before_any_side_effect() {
    let fake = Fake::new(1000, 1000);
    let err = multi().apply_with(&fake, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidPid { pid: 0 }));
    let maps = IdMaps {
        uid: Vec::new(),
        gid: vec![entry(0, 1000, 1)],
    };
    let err = maps.apply_with(&fake, 5).unwrap_err();
    assert!(
        matches!(err, Error::InvalidMap { kind: "uid", .. }),
        "{err:?}"
    );
    assert!(maps.preflight_with(&fake).is_err());
    assert!(fake.calls().is_empty());

    // As root, a map too long for one write is refused.
    let root = Fake::new(0, 0);
    let long: Vec<IdMapEntry> = (0..300)
        .map(|i| entry(i * 10_000_000, 4_000_000_000 - i, 1))
        .collect();
    let maps = IdMaps {
        uid: long,
        gid: vec![entry(0, 0, 1)],
    };
    let err = maps.apply_with(&root, 5).unwrap_err();
    assert!(err.to_string().contains("at most 4095"), "{err}");
    assert!(maps.preflight_with(&root).is_err());
    assert!(root.calls().is_empty());
}

#[test]
fn preflight_checks_only_the_needed_helpers() {
    let root = Fake::new(0, 0);
    multi().preflight_with(&root).unwrap();
    assert!(root.calls().is_empty());

    let fake = Fake::new(1000, 1001);
    multi().preflight_with(&fake).unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            Call::Find("newuidmap".into()),
            Call::Find("newgidmap".into())
        ]
    );

    let fake = Fake::new(1000, 1001);
    IdMaps::single(1000, 1001).preflight_with(&fake).unwrap();
    assert!(fake.calls().is_empty());

    let mut fake = Fake::new(1000, 1001);
    fake.missing = Some("newgidmap");
    let err = multi().preflight_with(&fake).unwrap_err();
    assert!(matches!(err, Error::HelperMissing { ref name } if name == "newgidmap"));
}

#[test]
fn check_privileged_cases() {
    let path = Path::new("/usr/bin/newuidmap");
    assert!(check_privileged(path, 0o104755, 0, false).is_ok());
    assert!(check_privileged(path, 0o100755, 0, true).is_ok());
    assert!(check_privileged(path, 0o100755, 1000, true).is_ok());
    // Setuid but owned by someone else, or root-owned without setuid.
    let err = check_privileged(path, 0o104755, 1000, false).unwrap_err();
    assert!(matches!(err, Error::HelperNotPrivileged { ref path } if path.ends_with("newuidmap")));
    let text = err.to_string();
    assert!(text.contains("cap_setuid"), "{text}");
    assert!(text.contains("sudo chmod u+s /usr/bin/newuidmap"), "{text}");
    assert!(text.contains("uidmap"), "{text}");
    assert!(check_privileged(path, 0o100755, 0, false).is_err());
    // setgid is not setuid.
    assert!(check_privileged(path, 0o102755, 0, false).is_err());

    let gid_text = check_privileged(Path::new("/usr/bin/newgidmap"), 0o755, 0, false)
        .unwrap_err()
        .to_string();
    assert!(gid_text.contains("cap_setgid"), "{gid_text}");
}

/// `struct vfs_cap_data` as stored in the xattr.
fn cap_data(revision: u32, permitted: u32, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    data[..4].copy_from_slice(&(revision | 1).to_le_bytes());
    data[4..8].copy_from_slice(&permitted.to_le_bytes());
    data
}

#[test]
fn cap_xattr_parsing() {
    let setuid = 1 << CAP_SETUID;
    let setgid = 1 << CAP_SETGID;
    assert!(cap_xattr_grants(
        &cap_data(0x0200_0000, setuid, 20),
        CAP_SETUID
    ));
    assert!(!cap_xattr_grants(
        &cap_data(0x0200_0000, setuid, 20),
        CAP_SETGID
    ));
    assert!(cap_xattr_grants(
        &cap_data(0x0300_0000, setgid, 24),
        CAP_SETGID
    ));
    assert!(cap_xattr_grants(
        &cap_data(0x0100_0000, setuid | setgid, 12),
        CAP_SETUID
    ));
    // Truncated, unknown revision, or empty values grant nothing.
    assert!(!cap_xattr_grants(
        &cap_data(0x0200_0000, setuid, 12),
        CAP_SETUID
    ));
    assert!(!cap_xattr_grants(
        &cap_data(0x0700_0000, setuid, 20),
        CAP_SETUID
    ));
    assert!(!cap_xattr_grants(&[], CAP_SETUID));
}

fn executable(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn find_helper_in_directories() {
    let empty = tempfile::tempdir().unwrap();
    let plain = tempfile::tempdir().unwrap();
    let setuid = tempfile::tempdir().unwrap();
    let dirs = |list: &[&tempfile::TempDir]| -> Vec<PathBuf> {
        list.iter().map(|d| d.path().to_path_buf()).collect()
    };

    let err = find_helper_in("newuidmap", &dirs(&[&empty])).unwrap_err();
    assert!(matches!(err, Error::HelperMissing { ref name } if name == "newuidmap"));

    // Non-executable files and relative directories are not candidates.
    std::fs::write(empty.path().join("newuidmap"), "").unwrap();
    let relative = vec![PathBuf::from("."), empty.path().to_path_buf()];
    let err = find_helper_in("newuidmap", &relative).unwrap_err();
    assert!(matches!(err, Error::HelperMissing { .. }), "{err:?}");

    let plain_path = executable(plain.path(), "newuidmap", 0o755);
    let err = find_helper_in("newuidmap", &dirs(&[&plain])).unwrap_err();
    assert!(matches!(err, Error::HelperNotPrivileged { ref path } if *path == plain_path));

    // A setuid copy counts only when root owns it (tests may run as root).
    let setuid_path = executable(setuid.path(), "newuidmap", 0o4755);
    let owned_by_root = std::fs::metadata(&setuid_path).unwrap().uid() == 0;
    let found = find_helper_in("newuidmap", &dirs(&[&plain, &setuid]));
    if owned_by_root {
        assert_eq!(found.unwrap(), setuid_path);
    } else {
        assert!(
            matches!(found, Err(Error::HelperNotPrivileged { ref path }) if *path == plain_path)
        );
    }
}

#[test]
fn real_write_file_writes_whole_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uid_map");
    std::fs::write(&path, "").unwrap();
    System
        .write_file(&path, "0 1000 1\n1 100000 65536\n")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "0 1000 1\n1 100000 65536\n"
    );
    // It never creates files: /proc map files always exist.
    let err = System
        .write_file(&dir.path().join("nope"), "x")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn real_run_helper_reports_status_and_stderr() {
    let output = System
        .run_helper(
            Path::new("/bin/sh"),
            &args(&["-c", "echo 'range not allowed' >&2; exit 3"]),
        )
        .unwrap();
    assert!(!output.success);
    assert_eq!(output.status, "exit status: 3");
    assert_eq!(output.message, "range not allowed");
    let ok = System
        .run_helper(Path::new("/bin/sh"), &args(&["-c", "true"]))
        .unwrap();
    assert!(ok.success);
    let err = System
        .run_helper(Path::new("/nonexistent/newuidmap"), &[])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
