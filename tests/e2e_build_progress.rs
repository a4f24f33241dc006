//! End to end: a build job's progress as a D-Bus client sees it (`gdbus monitor` on the
//! private bus): its steps done and in all, the running step, COPY's bytes, the phase;
//! `Job.Cancel` over D-Bus stops the running step and records nothing.

mod bus_monitor;
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use bus_monitor::Monitor;
use common::{stderr, stdout, Env};

const BIG: usize = 3 << 20;

#[test]
fn a_build_job_reports_its_steps_and_copied_bytes_and_cancels_over_dbus() {
    let env = Env::new();
    let ctx = env.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(ctx.join("big.bin"), &big).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY big.bin /big.bin\nENV X=1\n\
         RUN echo waiting-$((1+1)); sleep 1000\nCMD [\"true\"]\n",
    )
    .unwrap();
    let mon = Monitor::start(&env);
    let mut child = env
        .skiff_cmd(&["build", "-t", "me/progress", ctx.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The RUN's own output: step 4 runs, steps 1 to 3 are done.
    assert!(
        lines.any(|l| l.unwrap_or_default() == "waiting-2"),
        "{}",
        env.daemon_log()
    );
    let jobs = mon.jobs();
    assert_eq!(jobs.len(), 1, "{:#?}", mon.lines());
    let job = &jobs[0];
    assert!(
        mon.wait_for(|l| l.starts_with(job.as_str())
            && l.contains("'Step': <'STEP 4/5: RUN echo waiting-$((1+1)); sleep 1000'>")),
        "{:#?}",
        mon.lines()
    );
    assert!(
        mon.wait_for(|l| l.starts_with(job.as_str()) && l.contains("'StepsDone': <uint32 3>")),
        "{:#?}",
        mon.lines()
    );
    assert_eq!(mon.numbers(job, "StepsTotal").last(), Some(&5));
    let done = mon.numbers(job, "StepsDone");
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(mon.prop(job, "Phase").contains(&"'building'".to_string()));
    // COPY's bytes: the file, copied whole.
    assert_eq!(mon.numbers(job, "BytesDone").last(), Some(&(BIG as u64)));
    assert_eq!(mon.numbers(job, "BytesTotal").last(), Some(&(BIG as u64)));
    let fraction: f64 = mon.prop(job, "Progress").last().unwrap().parse().unwrap();
    assert!((fraction - 0.6).abs() < 1e-9, "{fraction}");

    // Cancel over D-Bus: the running step stops, nothing is tagged.
    let out = env.dbus_call(job, "org.skiff.skiff1.Job.Cancel", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mon.wait_end(job).contains("'cancelled'"));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(env.eventually(20, || stdout(&env.skiff(&["ps", "-a", "-q"])).is_empty()));
    assert!(!env
        .skiff(&["image", "inspect", "me/progress"])
        .status
        .success());

    // A build that ends: all its steps done (steps 2 and 3 from the cache: no bytes).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY big.bin /big.bin\nENV X=1\nRUN echo quick\nCMD [\"true\"]\n",
    )
    .unwrap();
    let out = env.skiff(&["build", "-t", "me/progress", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = mon.jobs();
    assert_eq!(jobs.len(), 2, "{:#?}", mon.lines());
    let job = &jobs[1];
    assert!(mon.wait_end(job).contains("'done'"));
    assert_eq!(mon.numbers(job, "StepsDone").last(), Some(&5));
    assert_eq!(mon.numbers(job, "StepsTotal").last(), Some(&5));
    assert_eq!(mon.numbers(job, "BytesDone").last(), Some(&0));
    assert_eq!(
        mon.prop(job, "Phase").last().map(String::as_str),
        Some("'done'")
    );
}
