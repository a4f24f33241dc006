//! Linux capabilities: names and numbers, and applying a spec's `process.capabilities`
//! (bounding set, then effective/permitted/inheritable with capset(2), then ambient).

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::Error;

/// Every capability the kernel knows, by number (`CAP_` + name).
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// CAP_SYS_ADMIN's number.
pub const SYS_ADMIN: u32 = 21;

/// The number of a capability name, with or without `CAP_`, in any case.
pub fn number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// `CAP_` + the name of capability `n`.
pub fn name(n: u32) -> String {
    match NAMES.get(n as usize) {
        Some(s) => format!("CAP_{s}"),
        None => format!("CAP_{n}"),
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Every capability this kernel knows, as a mask.
pub fn all_mask() -> u64 {
    let last = last_cap().min(63);
    if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// A set of the spec as a bit mask.
pub fn mask(set: &Capabilities) -> Result<u64, Error> {
    let mut m = 0u64;
    for c in set {
        // The spec's names are "CAP_X" (serde's form of the enum).
        let s = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let n = number(&s)
            .ok_or_else(|| Error::Spec(format!("unknown capability {s:?} in the spec")))?;
        m |= 1 << n;
    }
    Ok(m)
}

/// The capability sets of a spec, as masks (`None`: leave that set as it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: Option<u64>,
    /// Effective set.
    pub effective: Option<u64>,
    /// Permitted set.
    pub permitted: Option<u64>,
    /// Inheritable set.
    pub inheritable: Option<u64>,
    /// Ambient set.
    pub ambient: Option<u64>,
}

impl CapSets {
    /// Reads `process.capabilities`.
    pub fn of(caps: &LinuxCapabilities) -> Result<CapSets, Error> {
        let m = |s: &Option<Capabilities>| s.as_ref().map(mask).transpose();
        Ok(CapSets {
            bounding: m(caps.bounding())?,
            effective: m(caps.effective())?,
            permitted: m(caps.permitted())?,
            inheritable: m(caps.inheritable())?,
            ambient: m(caps.ambient())?,
        })
    }

    /// Every capability in every set but ambient (`--privileged`).
    pub fn all() -> CapSets {
        let all = all_mask();
        CapSets {
            bounding: Some(all),
            effective: Some(all),
            permitted: Some(all),
            inheritable: Some(0),
            ambient: Some(0),
        }
    }
}

/// Drops what is not in the bounding set (needs CAP_SETPCAP: call it while still root).
pub fn drop_bounding(bounding: u64) -> Result<(), Error> {
    for cap in 0..=last_cap() {
        if bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                continue; // a capability this kernel does not know
            }
            return Err(Error::io(
                format!("drop {} from the bounding set", name(cap)),
                e,
            ));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective, permitted and inheritable sets of this thread.
pub fn get() -> Result<(u64, u64, u64), Error> {
    let mut hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) into `data`, which has room for them.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(Error::io("capget", std::io::Error::last_os_error()));
    }
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets the effective, permitted and inheritable sets of this thread.
pub fn set(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Error> {
    let mut hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: capset reads the header and two CapData (version 3) that live on our stack.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(Error::io("capset", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Clears the ambient set and raises the capabilities of `ambient` (each must be
/// permitted and inheritable).
pub fn set_ambient(ambient: u64) -> Result<(), Error> {
    // SAFETY: PR_CAP_AMBIENT takes integers and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for cap in 0..64u32 {
        if ambient & (1 << cap) == 0 {
            continue;
        }
        // SAFETY: as above.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(Error::io(
                format!("raise ambient {}", name(cap)),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(number("CAP_SYS_ADMIN"), Some(SYS_ADMIN));
        assert_eq!(number("sys_admin"), Some(SYS_ADMIN));
        assert_eq!(number("NET_BIND_SERVICE"), Some(10));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("FLY"), None);
        assert_eq!(name(0), "CAP_CHOWN");
    }

    #[test]
    fn every_oci_capability_has_a_number() {
        for n in NAMES {
            let c: oci_spec::runtime::Capability =
                serde_json::from_value(serde_json::json!(format!("CAP_{n}"))).unwrap();
            let set: Capabilities = [c].into_iter().collect();
            assert_eq!(mask(&set).unwrap(), 1 << number(n).unwrap());
        }
    }
}
