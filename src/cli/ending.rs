//! How a foreground `skiff run` learns that its container ended, without depending on
//! one signal.
//!
//! The `Event` subscription is drained by a task of its own from the moment it exists:
//! zbus queues at most 64 messages per subscription and then stops reading the
//! connection altogether, so an unread subscription during the `RunContainer` call
//! (other containers' events) would also hold back that call's reply — the CLI hung for
//! ever. Besides the events, the CLI asks `Container.Wait`, so a missed event cannot
//! leave it waiting either.

use std::collections::HashMap;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::{Connection, MatchRule, MessageStream};

use crate::dbus::proxy::ContainerProxy;

/// A container event the CLI cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The container's run ended with this exit code (`die`).
    Died(i32),
    /// The container was removed (`destroy`).
    Destroyed,
}

/// Container events, read off the bus as they come.
pub struct Endings {
    rx: mpsc::UnboundedReceiver<(String, Ending)>,
}

impl Endings {
    /// Subscribes to skiffd's `Event` signals and starts draining them at once. One
    /// `AddMatch` round trip: the rule names skiffd's well-known name as the sender,
    /// which the bus checks against its current owner (a proxy's `receive_event` first
    /// follows that owner itself: `AddMatch` for `NameOwnerChanged` and `GetNameOwner`,
    /// two more round trips before the first call).
    pub async fn subscribe(conn: &Connection) -> zbus::Result<Endings> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(crate::dbus::BUS_NAME)
            .path(crate::dbus::MANAGER_PATH)
            .interface("org.skiff.skiff1.Manager")
            .member("Event")
            .build()?;
        let events = MessageStream::for_match_rule(rule, conn, None).await?;
        Ok(Endings::drain(events))
    }

    /// Starts draining `events` (`Event` signals) at once.
    fn drain(mut events: MessageStream) -> Endings {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = events.next().await {
                let Ok(msg) = msg else { continue };
                let body = msg.body();
                let Ok((typ, action, id, attributes, _time)) =
                    body.deserialize::<(&str, &str, &str, HashMap<&str, &str>, u64)>()
                else {
                    continue;
                };
                if typ != "container" {
                    continue;
                }
                let ending = match action {
                    "die" => Ending::Died(
                        attributes
                            .get("exitCode")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(125),
                    ),
                    "destroy" => Ending::Destroyed,
                    _ => continue,
                };
                if tx.send((id.to_string(), ending)).is_err() {
                    break;
                }
            }
        });
        Endings { rx }
    }

    /// The next ending of container `id` (None: the connection is gone).
    pub async fn next_for(&mut self, id: &str) -> Option<Ending> {
        loop {
            let (of, ending) = self.rx.recv().await?;
            if of == id {
                return Some(ending);
            }
        }
    }
}

/// Asks skiffd when the container's run ends (and, with `rm`, once it is removed);
/// returns its exit code. Never returns when skiffd cannot tell (the container is being
/// or was removed when asked): then the events tell.
pub async fn wait_call(target: &ContainerProxy<'_>, rm: bool) -> i32 {
    // With --rm, one call: `removed` answers with the exit code of the run that ended
    // before the removal (the state keeps it), so `not-running` need not be asked first.
    // An error (the container is being removed, or is gone) leaves it to the events:
    // `die` carries the code, and `destroy` comes once the removal is complete.
    let condition = if rm { "removed" } else { "not-running" };
    match target.wait(condition).await {
        Ok((code, _)) => code,
        Err(_) => std::future::pending().await,
    }
}
