//! The build's progress output to the client (`STEP n/m`, RUN's output, cache hits).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

/// The progress output to the client (write errors ignored: a client gone does not
/// stop the build; a cancel does).
pub(crate) struct Out(Option<File>);

impl Out {
    /// Progress written to `f`.
    pub(crate) fn new(f: File) -> Out {
        Out(Some(f))
    }

    pub(crate) fn line(&mut self, s: &str) {
        let Some(f) = &mut self.0 else { return };
        // A client that stops reading stalls its build (as RUN's output would), not a
        // runtime thread other requests need.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let written = if multi {
            tokio::task::block_in_place(|| writeln!(f, "{s}"))
        } else {
            writeln!(f, "{s}")
        };
        if written.is_err() {
            self.0 = None;
        }
    }

    pub(crate) fn fd(&self) -> Option<OwnedFd> {
        self.0
            .as_ref()
            .and_then(|f| f.try_clone().ok())
            .map(OwnedFd::from)
    }
}
