//! The compiled programs run against real system calls: a forked child loads the filter
//! and makes calls whose arguments the filter sees (getppid ignores its arguments, so
//! any 64-bit values can be passed).

use super::*;
use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

fn arg(op: LinuxSeccompOperator, value: u64, two: Option<u64>) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(1usize)
        .value(value)
        .op(op);
    match two {
        Some(t) => b.value_two(t),
        None => b,
    }
    .build()
    .unwrap()
}

fn errno_rule(
    name: &str,
    errno: u32,
    args: Vec<LinuxSeccompArg>,
) -> oci_spec::runtime::LinuxSyscall {
    LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .args(args)
        .build()
        .unwrap()
}

/// Forks, loads `f` in the child, calls getppid(0, arg1) for each case and checks the
/// errno (0 = the call succeeded). Returns the index of the first wrong case + 1, or 0.
fn run_cases(f: &Filter, cases: &[(u64, i32)]) -> i32 {
    // SAFETY: the child only makes raw system calls and exits with _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain system calls on integers and our own memory.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            }
            if load(f).is_err() {
                // SAFETY: ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(100) };
            }
            for (i, (a1, want)) in cases.iter().enumerate() {
                // SAFETY: getppid ignores its arguments.
                let r = unsafe { libc::syscall(libc::SYS_getppid, 0u64, *a1) };
                let got = if r < 0 {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                } else {
                    0
                };
                if got != *want {
                    // SAFETY: as above.
                    unsafe { libc::_exit(i as i32 + 1) };
                }
            }
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(libc::WIFEXITED(status), "child died: {status:#x}");
            libc::WEXITSTATUS(status)
        }
        _ => panic!("fork failed"),
    }
}

fn allow_all_but(rules: Vec<oci_spec::runtime::LinuxSyscall>) -> Filter {
    compile(
        &LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(rules)
            .build()
            .unwrap(),
    )
    .unwrap()
}

const BIG: u64 = 0x1_0000_0005;

#[test]
fn comparisons_on_64_bit_arguments() {
    use LinuxSeccompOperator as Op;
    type Case<'a> = (Op, u64, Option<u64>, &'a [(u64, i32)]);
    let cases: &[Case] = &[
        (Op::ScmpCmpEq, BIG, None, &[(BIG, 11), (5, 0), (BIG + 1, 0)]),
        (
            Op::ScmpCmpNe,
            BIG,
            None,
            &[(BIG, 0), (5, 11), (1 << 33, 11)],
        ),
        (
            Op::ScmpCmpGt,
            BIG,
            None,
            &[(BIG, 0), (BIG + 1, 11), (6, 0), (1 << 40, 11)],
        ),
        (
            Op::ScmpCmpGe,
            BIG,
            None,
            &[(BIG, 11), (BIG - 1, 0), (u64::MAX, 11)],
        ),
        (
            Op::ScmpCmpLt,
            BIG,
            None,
            &[(BIG, 0), (BIG - 1, 11), (7, 11), (1 << 40, 0)],
        ),
        (
            Op::ScmpCmpLe,
            BIG,
            None,
            &[(BIG, 11), (BIG + 1, 0), (0, 11)],
        ),
        (
            Op::ScmpCmpMaskedEq,
            0x7E02_0000,
            Some(0),
            &[(0, 11), (0x11, 11), (0x1000_0000, 0), (0x0002_0011, 0)],
        ),
    ];
    for (i, (op, v, two, calls)) in cases.iter().enumerate() {
        let f = allow_all_but(vec![errno_rule("getppid", 11, vec![arg(*op, *v, *two)])]);
        assert_eq!(run_cases(&f, calls), 0, "case {i}: {op:?}");
    }
}

#[test]
fn first_matching_rule_wins_and_default_applies() {
    // Deny by default (EACCES); getppid allowed only when arg1 == 1, else EIO by a later
    // rule; unknown names are skipped.
    let s = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(13u32)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["getppid".to_string(), "no_such_call".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg(LinuxSeccompOperator::ScmpCmpEq, 1, None)])
                .build()
                .unwrap(),
            errno_rule("getppid", 5, vec![]),
            // Everything the child needs to run and exit.
            LinuxSyscallBuilder::default()
                .names(vec!["exit_group".to_string(), "exit".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let f = compile(&s).unwrap();
    assert_eq!(run_cases(&f, &[(1, 0), (2, 5), (0, 5)]), 0);
}

#[test]
fn cache_round_trips_and_is_keyed_by_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let a = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![errno_rule("mkdir", 13, vec![])])
        .build()
        .unwrap();
    let first = compile_cached(&a, Some(dir.path())).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let again = compile_cached(&a, Some(dir.path())).unwrap();
    assert_eq!(encode(&first), encode(&again));
    let mut b = a.clone();
    b.set_default_errno_ret(Some(2));
    compile_cached(&b, Some(dir.path())).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn cache_keeps_only_the_newest_programs() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = None;
    for errno in 1..=(CACHE_KEEP as u32 + 5) {
        let s = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![errno_rule("mkdir", errno, vec![])])
            .build()
            .unwrap();
        compile_cached(&s, Some(dir.path())).unwrap();
        last = cache_path(dir.path(), &s);
    }
    let count = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(count, CACHE_KEEP, "the cache was not pruned to its size");
    assert!(last.unwrap().exists(), "the newest program was pruned");
}

#[test]
fn notify_and_bad_indexes_are_refused() {
    let s = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActNotify)
        .build()
        .unwrap();
    assert!(compile(&s).unwrap_err().to_string().contains("NOTIFY"));
    let bad = LinuxSeccompArgBuilder::default()
        .index(6usize)
        .value(0u64)
        .build()
        .unwrap();
    let e = compile(
        &LinuxSeccompBuilder::default()
            .syscalls(vec![errno_rule("mkdir", 1, vec![bad])])
            .build()
            .unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("index 6"), "{e}");
}

#[test]
fn syscall_table_is_sorted_and_knows_the_usual_calls() {
    assert!(x86_64::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(syscall_number("read"), Some(0));
    assert_eq!(syscall_number("clone3"), Some(435));
    assert_eq!(syscall_number("mseal"), Some(462));
    assert_eq!(syscall_number("_llseek"), None);
}

#[test]
fn assembler_refuses_backward_and_unbound_jumps() {
    let mut a = Asm::default();
    let back = a.label();
    a.bind(back);
    a.ret(0);
    a.jump(back);
    assert!(a.finish().is_err());
    let mut a = Asm::default();
    let never = a.label();
    a.jump(never);
    assert!(a.finish().is_err());
}
