//! Monitors of a test's private bus: `gdbus monitor` of skiffd's signals as a D-Bus
//! client sees them (jobs started and ended, their property changes), for the progress
//! tests; `dbus-monitor` of the method calls made to skiffd's Manager.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{require, Env};

/// A bus monitor's output, its lines collected as they come.
pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    /// `gdbus monitor` of skiffd's signals.
    pub fn start(env: &Env) -> Monitor {
        Monitor::spawn(
            &[
                "gdbus",
                "monitor",
                "--address",
                &env.address,
                "--dest",
                "org.skiff.skiff1",
            ],
            // gdbus is ready once it has seen the name's owner.
            |l| l.contains("is owned by"),
        )
    }

    /// `dbus-monitor` of the method calls to skiffd's Manager.
    pub fn method_calls(env: &Env) -> Monitor {
        Monitor::watching(
            env,
            "type='method_call',interface='org.skiff.skiff1.Manager'",
        )
    }

    /// `dbus-monitor` of every method call on the bus (the bus daemon's own too).
    pub fn all_method_calls(env: &Env) -> Monitor {
        Monitor::watching(env, "type='method_call'")
    }

    fn watching(env: &Env, rule: &str) -> Monitor {
        Monitor::spawn(
            &["dbus-monitor", "--address", &env.address, rule],
            // dbus-monitor is a monitor once the bus took its own name away.
            |l| l.contains("member=NameLost"),
        )
    }

    /// The methods called so far by the bus client `sender` (a unique name), in order.
    pub fn members_of(&self, sender: &str) -> Vec<String> {
        let from = format!("sender={sender} ");
        self.lines()
            .iter()
            .filter(|l| l.starts_with("method call") && l.contains(&from))
            .filter_map(|l| l.split("member=").nth(1).map(|m| m.trim().to_string()))
            .collect()
    }

    /// The unique name of the client that made the first call of `member`.
    pub fn caller_of(&self, member: &str) -> Option<String> {
        let tail = format!("member={member}");
        self.lines()
            .iter()
            .find(|l| l.starts_with("method call") && l.trim_end().ends_with(&tail))
            .and_then(|l| l.split("sender=").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string)
    }

    /// Runs `argv` line-buffered (the monitors write with stdio, which a pipe would
    /// block-buffer) and waits until a line says it is `ready`.
    fn spawn(argv: &[&str], ready: impl Fn(&str) -> bool) -> Monitor {
        let mut child = Command::new(require("stdbuf"))
            .arg("-oL")
            .args(argv)
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
            m.wait_for(ready),
            "{} did not start: {:?}",
            argv[0],
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

    /// The methods called so far (of a [`Monitor::method_calls`]), in order.
    pub fn members(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("method call"))
            .filter_map(|l| l.split("member=").nth(1).map(|m| m.trim().to_string()))
            .collect()
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
