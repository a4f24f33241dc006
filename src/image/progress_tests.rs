//! Tests of image/progress.rs.

use super::*;

#[test]
fn a_build_reports_its_steps_and_the_bytes_copied() {
    let p = Progress::default();
    assert_eq!(p.steps(), Steps::default());
    p.start_steps(4);
    assert_eq!(p.totals().phase, Phase::Building);
    assert_eq!(p.totals().fraction, 0.0);
    p.begin_step(1, "STEP 1/4: FROM x");
    p.end_step();
    p.begin_step(2, "STEP 2/4: COPY a b");
    p.add_copy_total(10);
    p.copied(4).unwrap();
    let t = p.totals();
    assert_eq!((t.done, t.total, t.fraction), (4, 10, 0.25));
    assert_eq!(p.steps().current, "STEP 2/4: COPY a b");
    assert_eq!(p.steps().done, 1);
    p.cancel().unwrap();
    assert!(p.copied(1).is_err(), "a cancel stops the copy");
}

#[test]
fn a_pull_counts_only_what_is_downloaded() {
    let p = Progress::default();
    assert_eq!(p.totals().fraction, -1.0);
    p.set_blobs(&[
        ("sha256:a".into(), 10, true),
        ("sha256:b".into(), 100, false),
        ("sha256:c".into(), 300, false),
    ]);
    assert_eq!(p.totals().phase, Phase::Downloading);
    p.advance(1, 100);
    p.set_status(1, LayerStatus::Done);
    p.advance(2, 50);
    let t = p.totals();
    assert_eq!((t.done, t.total, t.skipped, t.fetched), (150, 400, 1, 2));
    assert!((t.fraction - 0.375).abs() < 1e-9);
    p.reset(2);
    assert_eq!(p.totals().done, 100);
    let s = p.snapshot();
    assert_eq!(s[0].status, LayerStatus::Skipped);
    assert_eq!(s[2].status, LayerStatus::Downloading);
    p.set_blobs(&[("sha256:a".into(), 10, true)]);
    assert_eq!(p.totals().fraction, 1.0);
}

#[test]
fn a_push_counts_only_what_is_uploaded() {
    let p = Progress::default();
    p.set_push_blobs(&[("sha256:a".into(), 10), ("sha256:b".into(), 100)]);
    assert_eq!(p.totals().phase, Phase::Uploading);
    p.set_status(0, LayerStatus::Exists);
    p.upload(1, 50);
    let t = p.totals();
    assert_eq!((t.done, t.total, t.skipped, t.fetched), (50, 100, 1, 1));
    assert_eq!(p.snapshot()[1].status, LayerStatus::Uploading);
    assert_eq!(LayerStatus::Exists.as_str(), "exists");
}

#[test]
fn extraction_after_a_download_keeps_the_download_counts() {
    let p = Progress::default();
    p.set_blobs(&[
        ("sha256:cfg".into(), 5, false),
        ("sha256:l".into(), 100, false),
    ]);
    p.advance(0, 5);
    p.advance(1, 100);
    let idx = p.plan_extraction(&[("sha256:l".into(), 100, false)]);
    assert_eq!(idx, vec![0]);
    p.extract_position(0, 40);
    let t = p.totals();
    assert_eq!((t.phase, t.done, t.total), (Phase::Extracting, 105, 105));
    assert!((t.fraction - 0.4).abs() < 1e-9);
    let s = p.snapshot();
    assert_eq!(s.len(), 3, "two downloads, one extraction: {s:?}");
    assert_eq!((s[2].status, s[2].done), (LayerStatus::Extracting, 40));
    p.extract_done(0);
    p.set_phase(Phase::Committing);
    assert_eq!(p.snapshot()[2].status, LayerStatus::Extracted);
    assert_eq!(p.totals().fraction, 1.0);
}

#[test]
fn reading_a_pipe_is_unknown_until_the_end_a_file_is_not() {
    let p = Arc::new(Progress::default());
    p.start_reading(None);
    let mut r = CountingReader::new(&b"0123456789"[..], p.clone());
    let mut buf = [0u8; 4];
    assert_eq!(r.read(&mut buf).ok(), Some(4));
    let t = p.totals();
    assert_eq!((t.phase, t.done, t.total), (Phase::Reading, 4, 0));
    assert_eq!(t.fraction, -1.0);
    assert!(io::copy(&mut r, &mut io::sink()).is_ok());
    // Present layers do not count towards the extraction's fraction.
    p.plan_extraction(&[
        ("sha256:x".into(), 50, true),
        ("sha256:y".into(), 50, false),
    ]);
    let t = p.totals();
    assert_eq!((t.done, t.total, t.fraction), (10, 10, 0.0));
    assert_eq!(p.snapshot()[0].status, LayerStatus::Present);
    // A position reported for a present layer changes nothing.
    p.extract_position(0, 10);
    assert_eq!(p.snapshot()[0].status, LayerStatus::Present);

    let f = Progress::default();
    f.start_reading(Some(200));
    f.read(50);
    assert!((f.totals().fraction - 0.25).abs() < 1e-9);
}

#[test]
fn a_cancelled_job_never_commits_and_a_committing_one_cannot_be_cancelled() {
    let p = Arc::new(Progress::default());
    p.start_reading(None);
    assert_eq!(p.cancel(), Ok(()));
    let mut r = CountingReader::new(&b"data"[..], p.clone());
    let e = r.read(&mut [0u8; 4]).unwrap_err();
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert!(!p.enter_commit());
    assert_eq!(p.totals().phase, Phase::Reading);

    let q = Progress::default();
    q.plan_extraction(&[]);
    assert!(q.enter_commit());
    assert_eq!(q.cancel(), Err(Phase::Committing));
    assert!(!q.is_cancelled());
    q.set_phase(Phase::Done);
    assert_eq!(q.cancel(), Err(Phase::Done));
}
