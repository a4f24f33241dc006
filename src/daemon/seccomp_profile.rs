//! Docker's JSON seccomp profiles (`--security-opt seccomp=FILE`, and skiff's default in
//! data/seccomp-default.json) turned into the spec's `linux.seccomp` for a container's
//! capability set: rules with `includes.caps`/`excludes.caps` are kept or dropped by the
//! capabilities the container has, as docker does, so that e.g. namespace-creating
//! `clone`/`unshare` are allowed only with CAP_SYS_ADMIN.

use std::sync::OnceLock;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::Error;
use crate::runtime::caps;

/// Docker's profile format.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    /// The old one-name form.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: usize,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: LinuxSeccompOperator,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// This machine's architecture in libseccomp's names.
const NATIVE: &str = "SCMP_ARCH_X86_64";

impl Profile {
    /// Parses a profile, naming what is wrong and where.
    pub fn parse(json: &str) -> Result<Profile, Error> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let p: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
            Error::InvalidConfig(format!(
                "the seccomp profile is not valid: {} (at {}); it must be docker's JSON \
                 format: {{\"defaultAction\": ..., \"syscalls\": [{{\"names\": [...], \
                 \"action\": ...}}]}}",
                e.inner(),
                e.path()
            ))
        })?;
        for (i, r) in p.syscalls.iter().enumerate() {
            if r.name.is_none() && r.names.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "the seccomp profile is not valid: syscalls[{i}] has no \"names\""
                )));
            }
            if let Some(a) = r.args.iter().find(|a| a.index > 5) {
                return Err(Error::InvalidConfig(format!(
                    "the seccomp profile is not valid: syscalls[{i}]: argument index {} \
                     (system calls have arguments 0 to 5)",
                    a.index
                )));
            }
            for c in r.includes.caps.iter().chain(&r.excludes.caps) {
                if caps::number(c).is_none() {
                    return Err(Error::InvalidConfig(format!(
                        "the seccomp profile is not valid: syscalls[{i}]: unknown capability {c:?}"
                    )));
                }
            }
        }
        if p.default_action == LinuxSeccompAction::ScmpActNotify
            || p.syscalls
                .iter()
                .any(|r| r.action == LinuxSeccompAction::ScmpActNotify)
        {
            return Err(Error::InvalidConfig(
                "the seccomp profile uses SCMP_ACT_NOTIFY, which skiff does not support".into(),
            ));
        }
        Ok(p)
    }

    /// skiff's default profile (docker's semantics; data/seccomp-default.json).
    pub fn default_profile() -> &'static Profile {
        static DEFAULT: OnceLock<Profile> = OnceLock::new();
        DEFAULT.get_or_init(|| {
            Profile::parse(include_str!("../../data/seccomp-default.json")).unwrap_or_else(
                // Checked by a unit test; a broken build-time file is a bug, not input.
                |e| unreachable!("data/seccomp-default.json: {e}"),
            )
        })
    }

    /// Does this profile apply to the native architecture at all?
    fn covers_native(&self) -> bool {
        let listed = self
            .architectures
            .iter()
            .chain(self.arch_map.iter().map(|a| &a.architecture))
            .chain(self.arch_map.iter().flat_map(|a| &a.sub_architectures));
        let mut any = false;
        for a in listed {
            any = true;
            if a == NATIVE || a == "SCMP_ARCH_NATIVE" {
                return true;
            }
        }
        !any
    }

    /// The spec's `linux.seccomp` for a container with capability mask `caps`.
    pub fn to_oci(&self, caps: u64) -> Result<LinuxSeccomp, Error> {
        if !self.covers_native() {
            return Err(Error::InvalidConfig(format!(
                "the seccomp profile does not list this machine's architecture ({NATIVE})"
            )));
        }
        let has = |names: &[String]| {
            names
                .iter()
                .all(|n| caps::number(n).is_some_and(|c| caps & (1 << c) != 0))
        };
        let kernel = kernel_version();
        let mut syscalls = Vec::new();
        for r in &self.syscalls {
            let inc = &r.includes;
            let exc = &r.excludes;
            if (!inc.caps.is_empty() && !has(&inc.caps))
                || (!inc.arches.is_empty() && !inc.arches.iter().any(|a| arch_is_native(a)))
                || inc
                    .min_kernel
                    .as_deref()
                    .is_some_and(|k| parse_kernel(k) > kernel)
            {
                continue;
            }
            if exc.caps.iter().any(|c| has(std::slice::from_ref(c)))
                || exc.arches.iter().any(|a| arch_is_native(a))
                || exc
                    .min_kernel
                    .as_deref()
                    .is_some_and(|k| parse_kernel(k) <= kernel)
            {
                continue;
            }
            syscalls.push(rule_to_oci(r)?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .architectures(vec![oci_spec::runtime::Arch::ScmpArchX86_64])
            .syscalls(syscalls);
        if let Some(e) = self.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        b.build()
            .map_err(|e| Error::Internal(format!("building the seccomp section: {e}")))
    }
}

fn arch_is_native(a: &str) -> bool {
    // docker names "amd64"-style arches in includes/excludes.
    matches!(a, "amd64" | "x86_64" | NATIVE)
}

fn rule_to_oci(r: &Rule) -> Result<LinuxSyscall, Error> {
    let names: Vec<String> = r.name.iter().chain(&r.names).cloned().collect();
    let args: Vec<LinuxSeccompArg> = r
        .args
        .iter()
        .map(|a| {
            oci_spec::runtime::LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .value_two(a.value_two)
                .op(a.op)
                .build()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Internal(format!("building a seccomp rule: {e}")))?;
    let mut b = LinuxSyscallBuilder::default().names(names).action(r.action);
    if !args.is_empty() {
        b = b.args(args);
    }
    if let Some(e) = r.errno_ret {
        b = b.errno_ret(e);
    }
    b.build()
        .map_err(|e| Error::Internal(format!("building a seccomp rule: {e}")))
}

/// "5.8" → (5, 8).
fn parse_kernel(s: &str) -> (u32, u32) {
    let mut it = s
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn kernel_version() -> (u32, u32) {
    nix::sys::utsname::uname()
        .map(|u| parse_kernel(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_follows_the_capabilities() {
        let p = Profile::default_profile();
        let docker = super::super::security::default_caps();
        let plain = p.to_oci(docker).unwrap();
        let names = names_of(&plain);
        assert!(names.contains(&"read".to_string()));
        assert!(names.contains(&"chroot".to_string())); // CAP_SYS_CHROOT is a default
        assert!(!names.contains(&"unshare".to_string()));
        assert!(!names.contains(&"mount".to_string()));
        assert!(!names.contains(&"keyctl".to_string()));
        let admin = p.to_oci(docker | 1 << caps::SYS_ADMIN).unwrap();
        let names = names_of(&admin);
        assert!(names.contains(&"unshare".to_string()));
        assert!(names.contains(&"mount".to_string()));
        // clone3: ENOSYS without SYS_ADMIN.
        let clone3 = plain
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names().contains(&"clone3".to_string()))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        // and the whole thing compiles.
        crate::runtime::seccomp::compile(&plain).unwrap();
        crate::runtime::seccomp::compile(&admin).unwrap();
    }

    #[test]
    fn malformed_profiles_are_clear_errors() {
        for (json, want) in [
            ("{", "not valid"),
            (r#"{"syscalls": []}"#, "defaultAction"),
            (r#"{"defaultAction": "SCMP_ACT_NOPE"}"#, "defaultAction"),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
                "no \"names\"",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
                "index 7",
            ),
        ] {
            let e = Profile::parse(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn foreign_architecture_profiles_are_refused() {
        let p = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"]}"#,
        )
        .unwrap();
        assert!(p.to_oci(0).is_err());
    }
}
