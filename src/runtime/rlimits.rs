//! Resource limits: docker's `--ulimit` names and the spec's `process.rlimits`.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

use super::Error;

/// docker's `--ulimit` names and the spec's types, in the kernel's order.
pub const NAMES: [(&str, PosixRlimitType); 16] = [
    ("cpu", PosixRlimitType::RlimitCpu),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("data", PosixRlimitType::RlimitData),
    ("stack", PosixRlimitType::RlimitStack),
    ("core", PosixRlimitType::RlimitCore),
    ("rss", PosixRlimitType::RlimitRss),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("as", PosixRlimitType::RlimitAs),
    ("locks", PosixRlimitType::RlimitLocks),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
];

/// The kernel's resource number (RLIMIT_*) of a spec type: its index in [`NAMES`].
fn resource(t: PosixRlimitType) -> u32 {
    NAMES.iter().position(|(_, x)| *x == t).unwrap_or(0) as u32
}

/// docker's name of a type (`nofile`).
pub fn name(t: PosixRlimitType) -> &'static str {
    NAMES.iter().find(|(_, x)| *x == t).map_or("?", |(n, _)| n)
}

/// This process's (soft, hard) limit of `t`.
pub fn get(t: PosixRlimitType) -> Result<(u64, u64), Error> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `l`.
    if unsafe { libc::getrlimit(resource(t) as _, &mut l) } != 0 {
        return Err(Error::io("getrlimit", std::io::Error::last_os_error()));
    }
    Ok((l.rlim_cur, l.rlim_max))
}

/// Applies the spec's limits to this process (before it drops its capabilities: raising a
/// hard limit needs CAP_SYS_RESOURCE, which a user namespace cannot give beyond the
/// limits it was started with).
pub fn apply(limits: &[PosixRlimit]) -> Result<(), Error> {
    for l in limits {
        let lim = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        // SAFETY: setrlimit reads one rlimit from our stack.
        if unsafe { libc::setrlimit(resource(l.typ()) as _, &lim) } != 0 {
            let e = std::io::Error::last_os_error();
            let hint = match get(l.typ()) {
                Ok((_, hard)) if e.raw_os_error() == Some(libc::EPERM) => format!(
                    ": the hard limit cannot be raised above skiffd's ({hard}) in a rootless container"
                ),
                _ => String::new(),
            };
            return Err(Error::Setup(format!(
                "set the {} limit to {}:{}: {e}{hint}",
                name(l.typ()),
                l.soft(),
                l.hard()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_kernels() {
        assert_eq!(resource(PosixRlimitType::RlimitNofile), libc::RLIMIT_NOFILE);
        assert_eq!(resource(PosixRlimitType::RlimitNproc), libc::RLIMIT_NPROC);
        assert_eq!(resource(PosixRlimitType::RlimitAs), libc::RLIMIT_AS);
        assert_eq!(resource(PosixRlimitType::RlimitRttime), libc::RLIMIT_RTTIME);
        assert_eq!(name(PosixRlimitType::RlimitNofile), "nofile");
    }
}
