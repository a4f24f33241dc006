//! The gate every message to skiffd passes before zbus dispatches it: the one place where
//! the caller is checked (every method call, of every interface — skiff's, `Properties`,
//! `ObjectManager`, `Introspectable`, `Peer` — on every path, existing or not), and where
//! `Properties.Set` on skiff's read-only properties is answered `PropertyReadOnly` (zbus
//! would say `UnknownProperty`).
//!
//! zbus 6 has no hook between reading a message and dispatching it, so the gate sits in
//! the socket's read half ([`GateReader`]): a message it refuses never reaches zbus; its
//! answer is sent by a task of the served connection ([`Gate::send_answers`]).

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, LazyLock};

use tokio::sync::mpsc;
use zbus::connection::socket::ReadHalf;
use zbus::connection::AuthMechanism;
use zbus::export::async_trait::async_trait;
use zbus::message::{Flags, Type};
use zbus::{Connection, Message};

use super::caller::CallerCheck;

/// How many answers may wait to be sent; more are dropped (a flood of refused calls).
const ANSWER_QUEUE: usize = 256;

/// The checks, shared by the reader and the tasks around it.
pub struct Gate {
    callers: Arc<CallerCheck>,
    answers: mpsc::Sender<Message>,
}

/// What becomes of a message.
enum Decision {
    /// zbus gets it.
    Pass,
    /// The gate answers it with this error reply.
    Answer(Message),
    /// Refused, and the caller expects no reply.
    Drop,
}

impl Gate {
    /// A gate checking with `callers`, and the receiver of its answers, for
    /// [`Gate::send_answers`].
    pub fn new(callers: Arc<CallerCheck>) -> (Arc<Gate>, mpsc::Receiver<Message>) {
        let (answers, rx) = mpsc::channel(ANSWER_QUEUE);
        (Arc::new(Gate { callers, answers }), rx)
    }

    /// Sends the gate's answers over the served connection, as long as it lives.
    pub fn send_answers(conn: Connection, mut rx: mpsc::Receiver<Message>) {
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let Err(e) = conn.send(&m).await {
                    tracing::debug!("answering a refused call: {e}");
                }
            }
        });
    }

    async fn decide(&self, msg: &Message) -> Decision {
        let hdr = msg.header();
        if hdr.message_type() != Type::MethodCall {
            // Replies to our calls, and signals we subscribed to (zbus matches them).
            return Decision::Pass;
        }
        let Some(sender) = hdr.sender() else {
            // Only a peer-to-peer connection has no sender; skiffd's is to a bus.
            return Decision::Pass;
        };
        if sender.as_str() == "org.freedesktop.DBus" {
            return Decision::Pass;
        }
        let wants_reply = !hdr.primary().flags().contains(Flags::NO_REPLY_EXPECTED);
        let member = hdr.member().map(|m| m.as_str()).unwrap_or_default();
        crate::phase::mark2("gate-in", member);
        let refusal = match self.callers.check(sender).await {
            Ok(()) => read_only_refusal(msg),
            Err(reason) => Some(("org.freedesktop.DBus.Error.AccessDenied", reason)),
        };
        crate::phase::mark2("gate-out", member);
        let Some((name, text)) = refusal else {
            return Decision::Pass;
        };
        if !wants_reply {
            return Decision::Drop;
        }
        match Message::error(&hdr, name).build(&(text,)) {
            Ok(m) => Decision::Answer(m),
            Err(e) => {
                tracing::warn!("cannot build the answer {name}: {e}");
                Decision::Drop
            }
        }
    }
}

/// `Properties.Set` of one of skiff's properties: all of them are read-only.
fn read_only_refusal(msg: &Message) -> Option<(&'static str, String)> {
    let hdr = msg.header();
    if hdr.interface().map(|i| i.as_str()) != Some("org.freedesktop.DBus.Properties")
        || hdr.member().map(|m| m.as_str()) != Some("Set")
    {
        return None;
    }
    let body = msg.body();
    let (iface, prop, _): (&str, &str, zbus::Variant<'_>) = body.deserialize().ok()?;
    if !READ_ONLY.contains(&(iface.to_string(), prop.to_string())) {
        return None;
    }
    Some((
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        format!("property {prop} of {iface} is read-only"),
    ))
}

/// The (interface, property) pairs of the API's read-only properties, from the checked-in
/// description (which tests/e2e_api.rs holds equal to what is exported).
static READ_ONLY: LazyLock<HashSet<(String, String)>> =
    LazyLock::new(|| read_only_properties(include_str!("../../data/org.skiff.skiff1.xml")));

fn read_only_properties(xml: &str) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    let mut iface = String::new();
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<interface ") {
            iface = attr(line, "name").unwrap_or_default().to_string();
        } else if line.starts_with("<property ") && attr(line, "access") == Some("read") {
            if let Some(p) = attr(line, "name") {
                out.insert((iface.clone(), p.to_string()));
            }
        }
    }
    out
}

/// The value of `key="…"` in a one-line XML tag.
fn attr<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {key}=\""))? + key.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// A socket's read half with the gate in front: zbus receives only what the gate passes.
pub struct GateReader<R> {
    inner: R,
    gate: Arc<Gate>,
}

impl<R> GateReader<R> {
    /// Puts `gate` in front of `inner`.
    pub fn new(inner: R, gate: Arc<Gate>) -> GateReader<R> {
        GateReader { inner, gate }
    }
}

impl<R: std::fmt::Debug> std::fmt::Debug for GateReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateReader")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl<R: ReadHalf> ReadHalf for GateReader<R> {
    async fn receive_message(
        &mut self,
        seq: u64,
        already_received_bytes: &mut Vec<u8>,
        already_received_fds: &mut Vec<OwnedFd>,
    ) -> zbus::Result<Message> {
        loop {
            let msg = self
                .inner
                .receive_message(seq, already_received_bytes, already_received_fds)
                .await?;
            match self.gate.decide(&msg).await {
                Decision::Pass => return Ok(msg),
                Decision::Drop => {}
                Decision::Answer(m) => {
                    if self.gate.answers.try_send(m).is_err() {
                        tracing::debug!("too many refused calls waiting: one left unanswered");
                    }
                }
            }
        }
    }

    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        self.inner.recvmsg(buf).await
    }

    fn can_pass_unix_fd(&self) -> bool {
        self.inner.can_pass_unix_fd()
    }

    async fn peer_credentials(&mut self) -> io::Result<zbus::fdo::ConnectionCredentials> {
        self.inner.peer_credentials().await
    }

    fn auth_mechanism(&self) -> AuthMechanism {
        self.inner.auth_mechanism()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_only_properties_come_from_the_description() {
        let ro = read_only_properties(include_str!("../../data/org.skiff.skiff1.xml"));
        assert!(ro.contains(&("org.skiff.skiff1.Container".into(), "Name".into())));
        assert!(ro.contains(&("org.skiff.skiff1.Manager".into(), "Version".into())));
        assert!(!ro.contains(&("org.skiff.skiff1.Container".into(), "Start".into())));
    }
}
