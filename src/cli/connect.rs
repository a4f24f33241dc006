//! Connecting to skiffd and turning D-Bus errors into messages a user can act on.

use zbus::Connection;

use super::Failure;
use crate::dbus::BUS_NAME;

const HOW_TO_START: &str = "start it with `skiffd &` (or `systemctl --user start skiffd`)";

/// Connects to the bus named by `--bus-address`, `$SKIFF_BUS_ADDRESS`, or the session bus,
/// and checks that skiffd is there (or can be activated).
pub async fn connect(address: Option<&str>) -> Result<Connection, Failure> {
    let env = std::env::var("SKIFF_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty());
    let address = address.map(str::to_string).or(env);
    let conn = match &address {
        Some(a) => zbus::connection::Builder::address(a.as_str()).build().await,
        None => {
            if let Some(why) = crate::dbus::session::missing() {
                return Err(Failure::msg(format!(
                    "{why}; skiff finds skiffd on your session bus: {}",
                    crate::dbus::session::HOW_TO_GET_A_BUS
                )));
            }
            Connection::session().await
        }
    };
    let conn = conn.map_err(|e| {
        Failure::msg(format!(
            "cannot connect to the D-Bus {}: {e}; skiffd runs on your session bus — {HOW_TO_START}",
            address.as_deref().unwrap_or("session bus")
        ))
    })?;
    Ok(conn)
}

/// A proxy for skiffd's manager, without a property cache (which would cost a round
/// trip at creation, and the CLI reads no properties).
pub async fn manager(conn: &Connection) -> zbus::Result<crate::dbus::proxy::ManagerProxy<'_>> {
    crate::dbus::proxy::ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Describes an error from a call to skiffd.
pub fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, desc, _) => {
            let name = name.as_str();
            if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
            {
                return format!(
                    "skiffd is not running ({BUS_NAME} is not on the bus): {HOW_TO_START}"
                );
            }
            desc.clone().unwrap_or_else(|| name.to_string())
        }
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                format!("skiffd is not running ({BUS_NAME} is not on the bus): {HOW_TO_START}")
            }
            // A standard error (InvalidArgs, AccessDenied, …): its message says it all.
            other => zbus::DBusError::description(other)
                .map(str::to_string)
                .unwrap_or_else(|| other.to_string()),
        },
        other => other.to_string(),
    }
}

/// The D-Bus error name of a failed call, if any.
pub fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_string()),
        zbus::Error::FDO(fdo) => Some(zbus::DBusError::name(fdo.as_ref()).to_string()),
        _ => None,
    }
}

/// A failure with exit code `code` for a failed call.
pub fn fail(e: zbus::Error, code: i32) -> Failure {
    Failure {
        message: describe(&e),
        code,
    }
}
