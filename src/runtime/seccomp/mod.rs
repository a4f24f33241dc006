//! seccomp: the spec's `linux.seccomp` compiled to a classic BPF program, cached by the
//! digest of its JSON, and loaded last before the command's execve.
//!
//! The compiler is hand-written (see `bpf.rs`) rather than libseccomp's: it needs no C
//! library at build or run time, and the OCI rule language is small — per system call an
//! ordered list of (argument conditions, action), and a default action. System calls are
//! found by a binary search over their numbers, so a filter of several hundred rules costs
//! a handful of instructions per call. Names this architecture does not have are skipped,
//! as libseccomp does. Only the native architecture (x86_64) is filtered: calls of other
//! ABIs (i386, x32) get the default action.

mod bpf;
mod x86_64;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag};
use oci_spec::runtime::{LinuxSeccompArg, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

use bpf::{Asm, Cmp, Label};

/// Errors of the seccomp compiler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile asks for something the compiler cannot express.
    #[error("seccomp profile: {0}")]
    Profile(String),
    /// The program cannot be assembled (too long).
    #[error("seccomp profile: {0}")]
    Asm(#[from] bpf::AsmError),
    /// This architecture has no syscall table here.
    #[error("seccomp filters are only supported on x86_64 (this is {0}); use --security-opt seccomp=unconfined")]
    Arch(&'static str),
}

/// AUDIT_ARCH_X86_64: what `seccomp_data.arch` says for native x86_64 calls.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 system calls are x86_64's with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Bumped when the generated code changes, so that cached programs are not reused.
const COMPILER_VERSION: &str = "skiff-seccomp-1";

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The BPF program.
    pub program: Vec<libc::sock_filter>,
    /// seccomp(2) flags (`SECCOMP_FILTER_FLAG_*`).
    pub flags: u32,
}

/// The number of a system call of this architecture.
pub fn syscall_number(name: &str) -> Option<u32> {
    x86_64::SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| x86_64::SYSCALLS[i].1)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, Error> {
    if a == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::Profile(
            "SCMP_ACT_NOTIFY is not supported (no seccomp agent)".into(),
        ));
    }
    // The OCI default errno is EPERM.
    Ok(a.as_u32(Some(errno.unwrap_or(libc::EPERM as u32) & 0xffff)))
}

/// One rule of a system call: all conditions must hold.
#[derive(Debug, Clone)]
struct Rule {
    args: Vec<LinuxSeccompArg>,
    action: u32,
}

/// Compiles the spec's seccomp section.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter, Error> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::Arch(std::env::consts::ARCH));
    }
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut rules: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for sc in s.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        let args = sc.args().clone().unwrap_or_default();
        for a in &args {
            if a.index() > 5 {
                return Err(Error::Profile(format!(
                    "argument index {} of {:?}: system calls have 6 arguments (0 to 5)",
                    a.index(),
                    sc.names()
                )));
            }
        }
        for name in sc.names() {
            match syscall_number(name) {
                Some(nr) => rules.entry(nr).or_default().push(Rule {
                    args: args.clone(),
                    action: act,
                }),
                None => tracing::debug!("seccomp: no system call {name:?} on this architecture"),
            }
        }
    }
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    Ok(Filter {
        program: generate(default, &rules)?,
        flags,
    })
}

fn generate(
    default: u32,
    rules: &BTreeMap<u32, Vec<Rule>>,
) -> Result<Vec<libc::sock_filter>, Error> {
    let mut asm = Asm::default();
    let deny = asm.label();
    // Another ABI (i386) or x32: the default action.
    asm.load(4);
    asm.jump_unless(Cmp::Eq, AUDIT_ARCH_X86_64, deny);
    asm.load(0);
    asm.jump_if(Cmp::Ge, X32_SYSCALL_BIT, deny);
    // Shared returns for system calls with one unconditional rule, else a block each.
    let mut returns: BTreeMap<u32, Label> = BTreeMap::new();
    let mut blocks: Vec<(Label, &Vec<Rule>)> = Vec::new();
    let mut leaves: Vec<(u32, Label)> = Vec::new();
    for (nr, list) in rules {
        let target = match list.first() {
            Some(r) if r.args.is_empty() => *returns.entry(r.action).or_insert_with(|| asm.label()),
            _ => {
                let l = asm.label();
                blocks.push((l, list));
                l
            }
        };
        leaves.push((*nr, target));
    }
    search(&mut asm, &leaves, deny);
    asm.bind(deny);
    asm.ret(default);
    for (action, l) in &returns {
        asm.bind(*l);
        asm.ret(*action);
    }
    for (l, list) in blocks {
        asm.bind(l);
        for rule in list {
            let next = asm.label();
            for a in &rule.args {
                condition(&mut asm, a, next);
            }
            asm.ret(rule.action);
            asm.bind(next);
        }
        asm.ret(default);
    }
    Ok(asm.finish()?)
}

/// A binary search over the sorted `leaves` (number → target); `A` holds the number.
fn search(asm: &mut Asm, leaves: &[(u32, Label)], miss: Label) {
    if leaves.len() <= 4 {
        for (nr, target) in leaves {
            asm.jump_if(Cmp::Eq, *nr, *target);
        }
        asm.jump(miss);
        return;
    }
    let mid = leaves.len() / 2;
    let upper = asm.label();
    asm.jump_if(Cmp::Ge, leaves[mid].0, upper);
    search(asm, &leaves[..mid], miss);
    asm.bind(upper);
    search(asm, &leaves[mid..], miss);
}

/// Falls through when the 64-bit comparison holds, jumps to `fail` otherwise.
fn condition(asm: &mut Asm, a: &LinuxSeccompArg, fail: Label) {
    let lo_off = 16 + 8 * a.index() as u32;
    let hi_off = lo_off + 4;
    let hi = |v: u64| (v >> 32) as u32;
    let lo = |v: u64| v as u32;
    let v = a.value();
    let pass = asm.label();
    match a.op() {
        LinuxSeccompOperator::ScmpCmpEq => {
            asm.load(hi_off);
            asm.jump_unless(Cmp::Eq, hi(v), fail);
            asm.load(lo_off);
            asm.jump_unless(Cmp::Eq, lo(v), fail);
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // value is the mask, valueTwo the value (libseccomp's datum_a, datum_b).
            let want = a.value_two().unwrap_or(0);
            asm.load(hi_off);
            asm.and(hi(v));
            asm.jump_unless(Cmp::Eq, hi(want), fail);
            asm.load(lo_off);
            asm.and(lo(v));
            asm.jump_unless(Cmp::Eq, lo(want), fail);
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            asm.load(hi_off);
            asm.jump_unless(Cmp::Eq, hi(v), pass);
            asm.load(lo_off);
            asm.jump_if(Cmp::Eq, lo(v), fail);
        }
        op @ (LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe) => {
            let low = if op == LinuxSeccompOperator::ScmpCmpGt {
                Cmp::Gt
            } else {
                Cmp::Ge
            };
            asm.load(hi_off);
            asm.jump_if(Cmp::Gt, hi(v), pass);
            asm.jump_unless(Cmp::Eq, hi(v), fail);
            asm.load(lo_off);
            asm.jump_unless(low, lo(v), fail);
        }
        op @ (LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe) => {
            // Lt = not Ge, Le = not Gt.
            let low = if op == LinuxSeccompOperator::ScmpCmpLt {
                Cmp::Ge
            } else {
                Cmp::Gt
            };
            asm.load(hi_off);
            asm.jump_if(Cmp::Gt, hi(v), fail);
            asm.jump_unless(Cmp::Eq, hi(v), pass);
            asm.load(lo_off);
            asm.jump_if(low, lo(v), fail);
        }
    }
    asm.bind(pass);
}

/// The cache file of a profile: `DIR/<sha256 of the compiler version and the JSON>.bpf`.
fn cache_path(dir: &Path, s: &LinuxSeccomp) -> Option<PathBuf> {
    let json = serde_json::to_vec(s).ok()?;
    let mut h = Sha256::new();
    h.update(COMPILER_VERSION.as_bytes());
    h.update(&json);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Some(dir.join(format!("{hex}.bpf")))
}

fn encode(f: &Filter) -> Vec<u8> {
    let mut out = f.flags.to_le_bytes().to_vec();
    for i in &f.program {
        out.extend(i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend(i.k.to_le_bytes());
    }
    out
}

fn decode(b: &[u8]) -> Option<Filter> {
    let (flags, rest) = b.split_first_chunk::<4>()?;
    if rest.is_empty() || rest.len() % 8 != 0 {
        return None;
    }
    let program = rest
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Some(Filter {
        program,
        flags: u32::from_le_bytes(*flags),
    })
}

/// [`compile`], reusing the program compiled earlier for the same profile from `dir`
/// (and storing a new one there). The cache is an optimisation: when it cannot be read
/// or written the profile is compiled in memory.
pub fn compile_cached(s: &LinuxSeccomp, dir: Option<&Path>) -> Result<Filter, Error> {
    let path = dir.and_then(|d| cache_path(d, s));
    if let Some(f) = path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| decode(&b))
    {
        return Ok(f);
    }
    let f = compile(s)?;
    if let (Some(dir), Some(path)) = (dir, path) {
        let stored = crate::fsutil::ensure_private_dir(dir)
            .and_then(|()| crate::fsutil::atomic_write(&path, &encode(&f)));
        match stored {
            Ok(()) => prune_cache(dir, CACHE_KEEP, &path),
            Err(e) => tracing::debug!("caching the seccomp filter in {}: {e}", path.display()),
        }
    }
    Ok(f)
}

/// How many compiled programs the cache keeps. Each distinct profile (the default, and every
/// `--security-opt seccomp=FILE` or changed default) adds one file of a few KiB; beyond this
/// the oldest are removed when a new one is stored, so the cache stays small however many
/// profiles a user tries. A removed program is just compiled again when next needed.
const CACHE_KEEP: usize = 32;

/// Removes all but the `keep` newest (by modification time) `.bpf` files of `dir`, never
/// `just_stored` (timestamps are coarse: files stored in the same tick tie). Errors are
/// logged and ignored: the cache is an optimisation.
fn prune_cache(dir: &Path, keep: usize, just_stored: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!("pruning the seccomp cache {}: {e}", dir.display());
            return;
        }
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bpf") && e.path() != just_stored)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    let others = keep.saturating_sub(1);
    if files.len() <= others {
        return;
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in files.drain(others..) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::debug!("pruning {}: {e}", old.display());
        }
    }
}

/// Loads `f` into this thread (it needs no_new_privs or CAP_SYS_ADMIN).
pub fn load(f: &Filter) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: f.program.len() as u16,
        filter: f.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program that `prog` points at, which lives until the
    // call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
            f.flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
