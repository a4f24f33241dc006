//! Every line the CLI prints goes through here, never `println!` (which panics when stdout
//! is closed, e.g. `skiff ps -a | head -2`; clippy's `print_stdout` lint keeps it out of
//! the CLI). Like docker, skiff then ends quietly: killed by SIGPIPE, the way any program
//! writing into a closed pipe ends, with no message. A message to stderr that cannot be
//! written is dropped (there is nowhere to report it).

use std::io::Write;

/// Prints a line on stdout, as `println!`; a closed stdout ends skiff quietly.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Prints a line on stderr, as `eprintln!`, without panicking when stderr is closed.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::err_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;

/// Writes `args` and a newline to stdout (what [`outln!`] expands to).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| o.write_all(b"\n"))
        .and_then(|()| o.flush());
    if let Err(e) = r {
        drop(o);
        stdout_failed(e);
    }
}

/// Writes `text` to stdout as it is; a closed stdout ends skiff quietly.
pub fn text(text: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        drop(o);
        stdout_failed(e);
    }
}

/// The exit code of a command line skiff cannot use (an unknown flag, a bad value, a
/// missing argument): docker's and podman's 125, on every command.
pub const USAGE_EXIT: i32 = 125;

/// Ends skiff after clap's verdict on the command line: help and version go to stdout
/// through [`text`] (clap's own printing would swallow a closed stdout and exit 0),
/// errors to stderr as clap prints them (with a huge value cut), exit code 125.
pub fn clap_exit(e: clap::Error) -> ! {
    let to_stdout = !e.use_stderr();
    if to_stdout {
        if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            text(&e.render().to_string());
            std::process::exit(e.exit_code());
        }
        e.exit()
    }
    // A huge value in the message (clap quotes it whole) is cut; clap prints the rest.
    let plain = e.render().to_string();
    if let std::borrow::Cow::Owned(short) = crate::elide::long_inputs(&plain) {
        err_line(format_args!("{}", short.trim_end()));
    } else {
        let _ = e.print();
    }
    std::process::exit(USAGE_EXIT)
}

/// Writes `args` and a newline to stderr (what [`errln!`] expands to).
/// A huge input the message echoes is cut (`crate::elide`).
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let msg = args.to_string();
    let msg = crate::elide::long_inputs(&msg);
    let mut e = std::io::stderr().lock();
    let _ = e
        .write_all(msg.as_bytes())
        .and_then(|()| e.write_all(b"\n"))
        .and_then(|()| e.flush());
}

/// Ends skiff after a failed write to stdout: quietly by SIGPIPE when the reader is gone,
/// else with a message and exit code 1.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restoring the default action of SIGPIPE and raising it in this process
        // only; the default action ends the process, as a write into a closed pipe ends a
        // program that does not ignore SIGPIPE (Rust ignores it at start-up).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
        // Not reached unless SIGPIPE is blocked: the shell's code for a SIGPIPE death.
        std::process::exit(128 + libc::SIGPIPE);
    }
    err_line(format_args!("skiff: Error: cannot write to stdout: {e}"));
    std::process::exit(1);
}
