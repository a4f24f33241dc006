//! Who may call: only processes of the daemon's own user. The session bus already admits
//! only that user; this is defence in depth (a bus shared across users, a misconfigured
//! policy). Verified senders are remembered: unique names are never reused on a bus.

use std::collections::HashSet;
use std::sync::Mutex;

use zbus::message::Header;
use zbus::Connection;

use super::SkiffError;

/// Remembers which unique names have been checked.
#[derive(Default)]
pub struct CallerCheck {
    verified: Mutex<HashSet<String>>,
}

impl CallerCheck {
    /// Fails with `AccessDenied` unless the sender's uid is ours.
    pub async fn check(&self, header: &Header<'_>, conn: &Connection) -> Result<(), SkiffError> {
        let Some(sender) = header.sender() else {
            // A peer-to-peer connection has no sender; only our own process can make one.
            return Ok(());
        };
        let name = sender.to_string();
        if self.lock().contains(&name) {
            return Ok(());
        }
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| SkiffError::access_denied(format!("cannot verify the caller: {e}")))?;
        let ours = nix::unistd::getuid().as_raw();
        match creds.unix_user_id() {
            Some(uid) if uid == ours => {
                self.lock().insert(name);
                Ok(())
            }
            other => Err(SkiffError::access_denied(format!(
                "caller uid {other:?} is not the daemon's uid {ours}: skiffd serves only its own user"
            ))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.verified.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Forgets a name that left the bus.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }
}
