//! Who may call: only processes of the daemon's own user. The session bus already admits
//! only that user; this is defence in depth (a bus shared across users, a misconfigured
//! policy). Verdicts are remembered per unique name: unique names are never reused on a
//! bus, and a name that leaves is forgotten.

use std::collections::HashMap;
use std::sync::Mutex;

use zbus::names::UniqueName;
use zbus::Connection;

/// Decides whether a sender is of the daemon's user, asking the bus
/// (`GetConnectionCredentials`) once per unique name.
pub struct CallerCheck {
    /// Over a connection of its own: the check runs while the served connection's reader
    /// waits for it, so it cannot ask through that connection.
    dbus: zbus::fdo::DBusProxy<'static>,
    verdicts: Mutex<HashMap<String, Verdict>>,
}

/// What is known of a sender.
#[derive(Clone)]
enum Verdict {
    Ours,
    Refused(String),
}

impl CallerCheck {
    /// Checks callers by asking the bus over `bus` (a connection to the same bus as the one
    /// served).
    pub async fn new(bus: &Connection) -> zbus::Result<CallerCheck> {
        let dbus = zbus::fdo::DBusProxy::builder(bus)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(CallerCheck {
            dbus,
            verdicts: Mutex::new(HashMap::new()),
        })
    }

    /// `Err(reason)` unless the sender's uid is ours.
    pub async fn check(&self, sender: &UniqueName<'_>) -> Result<(), String> {
        let name = sender.as_str();
        if let Some(v) = self.lock().get(name).cloned() {
            return v.into_result();
        }
        let verdict = match self.lookup(sender).await {
            Ok(v) => v,
            // Not remembered: the bus may answer next time.
            Err(reason) => return Err(reason),
        };
        self.lock().insert(name.to_string(), verdict.clone());
        verdict.into_result()
    }

    async fn lookup(&self, sender: &UniqueName<'_>) -> Result<Verdict, String> {
        let creds = self
            .dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| format!("cannot verify the caller: {e}"))?;
        let ours = nix::unistd::getuid().as_raw();
        let verdict = match creds.unix_user_id() {
            Some(uid) if uid == ours => return Ok(Verdict::Ours),
            Some(uid) => format!(
                "caller uid {uid} is not the daemon's uid {ours}: skiffd serves only its own user"
            ),
            None => format!(
                "the bus does not say the caller's uid: skiffd serves only its own user (uid {ours})"
            ),
        };
        tracing::warn!("refusing every message of {sender}: {verdict}");
        Ok(Verdict::Refused(verdict))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verdict>> {
        match self.verdicts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Forgets a name that left the bus.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The bus proxy the checks ask through (it also serves to watch names leave).
    pub fn bus(&self) -> &zbus::fdo::DBusProxy<'static> {
        &self.dbus
    }
}

impl Verdict {
    fn into_result(self) -> Result<(), String> {
        match self {
            Verdict::Ours => Ok(()),
            Verdict::Refused(reason) => Err(reason),
        }
    }
}
