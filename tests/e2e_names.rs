//! End to end: container names are unique (skiffd keeps a name → id index with its
//! containers): of concurrent creates with one name exactly one succeeds, the others
//! get docker's conflict message naming the holder; a rename moves the name, a removal
//! frees it, and a restarted skiffd knows them all again.

mod common;

use common::{stderr, Env};

fn conflict(name: &str, holder: &str) -> String {
    format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )
}

fn create(env: &Env, name: &str) -> std::process::Output {
    env.skiff(&[
        "create",
        "--network",
        "none",
        "--name",
        name,
        "demo/busybox",
        "true",
    ])
}

fn id_of(env: &Env, name: &str) -> String {
    env.inspect(name)["Id"]
        .as_str()
        .unwrap_or_else(|| panic!("no container {name}"))
        .to_string()
}

#[test]
fn one_name_one_container_under_concurrent_creates_renames_and_removals() {
    let mut env = Env::new();
    let racers: Vec<std::process::Child> = (0..6)
        .map(|_| {
            env.skiff_cmd(&[
                "create",
                "--network",
                "none",
                "--name",
                "same",
                "demo/busybox",
                "true",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outs: Vec<std::process::Output> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won: Vec<&std::process::Output> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    let winner = id_of(&env, "same");
    assert_eq!(common::stdout(won[0]).trim(), winner);
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            stderr(o).contains(&conflict("same", &winner)),
            "{}",
            stderr(o)
        );
    }
    let all = env.skiff_ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert_eq!(all.lines().collect::<Vec<_>>(), [winner.as_str()]);

    // A rename moves the name: the old one is free, the new one taken.
    env.skiff_ok(&["rename", "same", "moved"]);
    assert_eq!(id_of(&env, "moved"), winner);
    let out = create(&env, "same");
    assert!(out.status.success(), "{}", stderr(&out));
    let second = id_of(&env, "same");
    assert_ne!(second, winner);
    let out = create(&env, "moved");
    assert!(
        stderr(&out).contains(&conflict("moved", &winner)),
        "{}",
        stderr(&out)
    );
    // Renamed onto a taken name: refused, nothing changes.
    let out = env.skiff(&["rename", "moved", "same"]);
    assert!(
        stderr(&out).contains(&conflict("same", &second)),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        (id_of(&env, "moved"), id_of(&env, "same")),
        (winner.clone(), second.clone())
    );

    // Known again after a restart (the index is rebuilt from the records).
    env.stop_daemon();
    env.start_daemon();
    let out = create(&env, "moved");
    assert!(
        stderr(&out).contains(&conflict("moved", &winner)),
        "{}",
        stderr(&out)
    );
    assert_eq!(id_of(&env, "same"), second);

    // A removal frees the name.
    env.skiff_ok(&["rm", "moved"]);
    let out = create(&env, "moved");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(id_of(&env, "moved"), winner);
    env.skiff_ok(&["rm", "moved", "same"]);
}
