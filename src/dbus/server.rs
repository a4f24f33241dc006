//! Running the API: connect to the bus, export the objects, take the name, and turn the
//! backend's events into signals and object changes.

use std::sync::Arc;

use futures_util::StreamExt;
use zbus::connection::socket::{BoxedSplit, Socket, Split};
use zbus::object_server::SignalEmitter;
use zbus::{connection, Connection};

use super::caller::CallerCheck;
use super::container::ContainerObject;
use super::gate::{Gate, GateReader};
use super::image::{register_image, Jobs};
use super::manager::{Ctx, Manager};
use super::{container_path, BUS_NAME, MANAGER_PATH};
use crate::daemon::{Daemon, Event};

/// Errors of the server's set-up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Connecting or exporting failed.
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    /// The bus cannot be reached.
    #[error(transparent)]
    Connect(#[from] super::socket::Error),
    /// Another skiffd owns the name.
    #[error("the name {BUS_NAME} is already taken on this bus: is another skiffd running?")]
    NameTaken,
}

/// Connects to the bus at `address` (or the session bus), exports everything and takes
/// the name. Returns the connection; the server runs as long as it lives.
pub async fn serve(daemon: Daemon, address: Option<&str>) -> Result<Connection, ServeError> {
    let address = match address {
        Some(a) => zbus::Address::try_from(a)?,
        None => zbus::Address::session()?,
    };
    // The caller check asks the bus over a connection of its own (see gate.rs).
    let checker = connection::Builder::address(address.clone())
        .build()
        .await?;
    let callers = Arc::new(CallerCheck::new(&checker).await?);
    let (gate, answers) = Gate::new(callers.clone());
    let (read, write) = super::socket::connect(&address).await?.split().take();
    let socket: BoxedSplit = Split::new(Box::new(GateReader::new(read, gate)), Box::new(write));
    let ctx = Ctx {
        daemon: daemon.clone(),
        jobs: Arc::new(Jobs::default()),
    };
    // Objects first, the name last: a call that activated us must find them (zbus note).
    let conn = connection::Builder::socket(socket)
        .serve_at(MANAGER_PATH, Manager { ctx: ctx.clone() })
        .serve_at(MANAGER_PATH, super::volume::Volumes { ctx: ctx.clone() })
        .serve_at(MANAGER_PATH, zbus::fdo::ObjectManager)
        .build()
        .await?;
    Gate::send_answers(conn.clone(), answers);
    for rec in daemon.list(true) {
        let p = container_path(&rec.id);
        conn.object_server()
            .at(
                p.as_str(),
                ContainerObject {
                    ctx: ctx.clone(),
                    id: rec.id.clone(),
                },
            )
            .await?;
    }
    if let Ok(images) = daemon.list_images() {
        for img in images {
            register_image(&ctx, conn.object_server(), &conn, &img.id).await;
        }
    }
    if let Ok(volumes) = daemon.list_volumes(&[]) {
        for v in volumes {
            if let Some(name) = v["Name"].as_str() {
                super::volume::register(&ctx, conn.object_server(), name).await;
            }
        }
    }
    forward_events(conn.clone(), ctx.clone());
    forget_departed_callers(callers);
    let flags = zbus::fdo::RequestNameFlags::DO_NOT_QUEUE;
    match conn.request_name_with_flags(BUS_NAME, flags).await {
        Ok(zbus::fdo::RequestNameReply::PrimaryOwner)
        | Ok(zbus::fdo::RequestNameReply::AlreadyOwner) => Ok(conn),
        Ok(_) => Err(ServeError::NameTaken),
        Err(zbus::Error::NameTaken) => Err(ServeError::NameTaken),
        Err(e) => Err(e.into()),
    }
}

/// Emits `Event` for every backend event, and keeps container objects and their
/// properties in step with it.
fn forward_events(conn: Connection, ctx: Ctx) {
    let mut rx = ctx.daemon.subscribe();
    tokio::spawn(async move {
        let Ok(emitter) = SignalEmitter::new(&conn, MANAGER_PATH) else {
            return;
        };
        loop {
            let ev: Event = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("event forwarding lagged by {n} events");
                    continue;
                }
                Err(_) => break,
            };
            let attrs = ev.attributes.clone().into_iter().collect();
            if let Err(e) =
                Manager::event(&emitter, &ev.typ, &ev.action, &ev.id, attrs, ev.time).await
            {
                tracing::warn!("emitting event: {e}");
            }
            if ev.typ == "volume" {
                match ev.action.as_str() {
                    "create" => super::volume::register(&ctx, conn.object_server(), &ev.id).await,
                    "destroy" => super::volume::unregister(conn.object_server(), &ev.id).await,
                    _ => {}
                }
                continue;
            }
            if ev.typ != "container" {
                continue;
            }
            let p = container_path(&ev.id);
            match ev.action.as_str() {
                "start" | "die" | "rename" => {
                    if let Ok(iface) = conn
                        .object_server()
                        .interface::<_, ContainerObject>(p.as_str())
                        .await
                    {
                        let e = iface.signal_emitter();
                        let obj = iface.get().await;
                        let _ = obj.state_changed(e).await;
                        let _ = obj.pid_changed(e).await;
                        let _ = obj.exit_code_changed(e).await;
                        let _ = obj.started_at_changed(e).await;
                        let _ = obj.finished_at_changed(e).await;
                        let _ = obj.restart_count_changed(e).await;
                        let _ = obj.name_changed(e).await;
                    }
                }
                "destroy" => {
                    let _ = conn
                        .object_server()
                        .remove::<ContainerObject, _>(p.as_str())
                        .await;
                    if let Ok(op) = zbus::ObjectPath::try_from(p.as_str()) {
                        let _ = Manager::container_removed(&emitter, &ev.id, op).await;
                    }
                }
                _ => {}
            }
        }
    });
}

/// Drops verified callers that left the bus, so the cache stays small.
fn forget_departed_callers(caller: Arc<CallerCheck>) {
    tokio::spawn(async move {
        let Ok(mut stream) = caller.bus().receive_name_owner_changed().await else {
            return;
        };
        while let Some(sig) = stream.next().await {
            if let Ok(args) = sig.args() {
                if args.new_owner().is_none() {
                    caller.forget(args.name().as_str());
                }
            }
        }
    });
}

/// Kills container `id` if the client `sender` leaves the bus while it runs (the CLI was
/// killed, or the client crashed), like flatpak's WATCH_BUS.
pub fn kill_on_disconnect(conn: Connection, daemon: Daemon, sender: String, id: String) {
    let Ok(c) = daemon.lookup(&id) else {
        return;
    };
    let ended =
        crate::daemon::container::wait_for(c.watch(), crate::daemon::WaitCondition::NextExit);
    tokio::spawn(async move {
        let Ok(dbus) = zbus::fdo::DBusProxy::new(&conn).await else {
            return;
        };
        let Ok(mut stream) = dbus
            .receive_name_owner_changed_with_args(&[(0, sender.as_str())])
            .await
        else {
            return;
        };
        // The client may already be gone.
        let gone = match zbus::names::BusName::try_from(sender.as_str()) {
            Ok(name) => !dbus.name_has_owner(name).await.unwrap_or(true),
            Err(_) => false,
        };
        tokio::pin!(ended);
        let left = async {
            if gone {
                return;
            }
            while let Some(sig) = stream.next().await {
                if sig.args().map(|a| a.new_owner().is_none()).unwrap_or(false) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = &mut ended => {}
            _ = left => {
                tracing::info!("client {sender} left the bus: killing container {}", &id[..12]);
                daemon.kill_for_departed_client(&id).await;
            }
        }
    });
}
