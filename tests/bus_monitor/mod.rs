//! `gdbus monitor` on a test's private bus: the signals of skiffd as a D-Bus client
//! sees them (jobs started and ended, their property changes), for the progress tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{require, Env};

/// `gdbus monitor` of skiffd's signals, its lines collected as they come.
pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    pub fn start(env: &Env) -> Monitor {
        // Line-buffered: gdbus writes with stdio, which a pipe would block-buffer.
        let mut child = Command::new(require("stdbuf"))
            .args(["-oL", "gdbus", "monitor", "--address", &env.address])
            .args(["--dest", "org.skiff.skiff1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let m = Monitor { child, lines };
        assert!(
            m.wait_for(|l| l.contains("is owned by")),
            "gdbus monitor did not start: {:?}",
            m.lines()
        );
        m
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn wait_for(&self, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| f(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The object paths of the jobs started, in order.
    pub fn jobs(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.contains("org.skiff.skiff1.Manager.JobNew"))
            .filter_map(|l| l.split('\'').nth(1).map(str::to_string))
            .collect()
    }

    /// Waits for the end of job `path` (its final publication is sent before it).
    pub fn wait_end(&self, path: &str) -> String {
        let removed = format!("objectpath '{path}'");
        assert!(
            self.wait_for(|l| l.contains("Manager.JobRemoved") && l.contains(&removed)),
            "job {path} never ended: {:#?}",
            self.lines()
        );
        self.lines()
            .into_iter()
            .find(|l| l.contains("Manager.JobRemoved") && l.contains(&removed))
            .unwrap()
    }

    /// The successive values of property `name` of job `path`, as gdbus prints them.
    pub fn prop(&self, path: &str, name: &str) -> Vec<String> {
        let head = format!("{path}: org.freedesktop.DBus.Properties.PropertiesChanged");
        let key = format!("'{name}': <");
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&head))
            .filter_map(|l| {
                let rest = &l[l.find(&key)? + key.len()..];
                Some(rest[..rest.find(">}")?].to_string())
            })
            .collect()
    }

    /// The successive values of an unsigned property (`uint32 3`, `uint64 5`).
    pub fn numbers(&self, path: &str, name: &str) -> Vec<u64> {
        self.prop(path, name)
            .iter()
            .map(|v| v.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
