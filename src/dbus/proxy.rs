//! Client proxies of the API, used by the CLI (and by tests).

use std::collections::HashMap;

use zbus::{proxy, OwnedObjectPath, OwnedVariant};

/// `org.skiff.skiff1.Manager`.
#[proxy(
    interface = "org.skiff.skiff1.Manager",
    default_service = "org.skiff.skiff1",
    default_path = "/org/skiff/skiff1"
)]
pub trait Manager {
    /// See the server side.
    fn get_container(&self, name_or_id: &str) -> zbus::Result<OwnedObjectPath>;
    /// See the server side.
    #[allow(clippy::type_complexity)]
    fn list_containers(
        &self,
        filters: &[&str],
        flags: u64,
    ) -> zbus::Result<Vec<(String, String, String, String, u64, OwnedObjectPath)>>;
    /// See the server side.
    fn inspect_containers(&self, filters: &[&str], flags: u64) -> zbus::Result<String>;
    /// See the server side.
    fn create_container(
        &self,
        config: HashMap<&str, OwnedVariant>,
        flags: u64,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    /// See the server side.
    #[zbus(name = "CreateContainerJSON")]
    fn create_container_json(
        &self,
        config_json: &str,
        flags: u64,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    /// See the server side.
    fn run_container(
        &self,
        config: HashMap<&str, OwnedVariant>,
        fds: HashMap<u32, zbus::Fd<'_>>,
        flags: u64,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    /// See the server side.
    fn import_image(
        &self,
        rootfs_tar: zbus::Fd<'_>,
        reference: &str,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(u32, OwnedObjectPath)>;
    /// See the server side.
    fn list_images(
        &self,
        filters: &[&str],
        flags: u64,
    ) -> zbus::Result<Vec<(String, Vec<String>, u64, u64, OwnedObjectPath)>>;
    /// See the server side.
    fn get_image(&self, reference: &str) -> zbus::Result<OwnedObjectPath>;
    /// See the server side.
    fn info(&self) -> zbus::Result<String>;
    /// See the server side.
    fn disk_usage(&self) -> zbus::Result<String>;
    /// The API version.
    #[zbus(property, name = "APIVersion")]
    fn api_version(&self) -> zbus::Result<u32>;
    /// See the server side.
    fn pull_image(
        &self,
        reference: &str,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(u32, OwnedObjectPath)>;
    /// See the server side.
    fn build_image(
        &self,
        context: zbus::Fd<'_>,
        output: zbus::Fd<'_>,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(u32, OwnedObjectPath)>;
    /// See the server side.
    fn push_image(
        &self,
        image: &str,
        destination: &str,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(u32, OwnedObjectPath)>;
    /// See the server side.
    fn load_image(
        &self,
        archive: zbus::Fd<'_>,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(u32, OwnedObjectPath)>;
    /// See the server side.
    fn save_image(
        &self,
        refs: &[&str],
        out: zbus::Fd<'_>,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<()>;
    /// See the server side.
    fn tag_image(&self, source: &str, target: &str) -> zbus::Result<()>;
    /// See the server side.
    fn remove_image(&self, reference: &str, flags: u64) -> zbus::Result<Vec<(String, String)>>;
    /// See the server side.
    fn prune_images(&self, flags: u64) -> zbus::Result<Vec<(String, String)>>;
    /// Docker-vocabulary events.
    #[zbus(signal)]
    fn event(
        &self,
        typ: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
        time: u64,
    ) -> zbus::Result<()>;
}

/// `org.skiff.skiff1.Container`.
#[proxy(
    interface = "org.skiff.skiff1.Container",
    default_service = "org.skiff.skiff1"
)]
pub trait Container {
    /// See the server side.
    fn start(&self, fds: HashMap<u32, zbus::Fd<'_>>, flags: u64) -> zbus::Result<()>;
    /// See the server side.
    fn wait(&self, condition: &str) -> zbus::Result<(i32, u64)>;
    /// See the server side.
    fn kill(&self, whom: &str, signal: i32) -> zbus::Result<()>;
    /// See the server side.
    fn pause(&self) -> zbus::Result<()>;
    /// See the server side.
    fn unpause(&self) -> zbus::Result<()>;
    /// See the server side.
    fn remove(&self, flags: u64) -> zbus::Result<()>;
    /// See the server side.
    fn inspect(&self) -> zbus::Result<String>;
    /// See the server side.
    fn exec(
        &self,
        argv: &[&str],
        options: HashMap<&str, OwnedVariant>,
        fds: HashMap<u32, zbus::Fd<'_>>,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    /// See the server side.
    fn copy_to(
        &self,
        input: zbus::Fd<'_>,
        path: &str,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<Vec<String>>;
    /// See the server side.
    fn copy_from(
        &self,
        path: &str,
        output: zbus::Fd<'_>,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<()>;
    /// See the server side.
    fn commit(&self, reference: &str, options: HashMap<&str, OwnedVariant>)
        -> zbus::Result<String>;
    /// See the server side.
    fn stop(&self, timeout: u64, flags: u64) -> zbus::Result<()>;
    /// See the server side.
    fn restart(&self, timeout: u64, flags: u64) -> zbus::Result<()>;
    /// See the server side.
    fn rename(&self, name: &str) -> zbus::Result<()>;
    /// See the server side.
    fn open_logs(
        &self,
        options: HashMap<&str, OwnedVariant>,
    ) -> zbus::Result<(zbus::OwnedFd, zbus::OwnedFd)>;
    /// See the server side.
    fn attach(&self, flags: u64) -> zbus::Result<zbus::OwnedFd>;
    /// See the server side.
    fn resize(&self, rows: u32, cols: u32) -> zbus::Result<()>;
    /// See the server side.
    fn top(&self, ps_args: &[&str]) -> zbus::Result<(Vec<String>, Vec<Vec<String>>)>;
    /// See the server side.
    fn stats(&self) -> zbus::Result<HashMap<String, OwnedVariant>>;
    /// The full id.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    /// The state.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
}

/// `org.skiff.skiff1.Exec`.
#[proxy(
    interface = "org.skiff.skiff1.Exec",
    default_service = "org.skiff.skiff1"
)]
pub trait Exec {
    /// See the server side.
    fn wait(&self) -> zbus::Result<i32>;
    /// See the server side.
    fn kill(&self, signal: i32) -> zbus::Result<()>;
    /// See the server side.
    #[zbus(name = "OpenPTY")]
    fn open_pty(&self) -> zbus::Result<(zbus::OwnedFd, String)>;
    /// See the server side.
    fn resize(&self, rows: u32, cols: u32) -> zbus::Result<()>;
}

/// `org.skiff.skiff1.Image`.
#[proxy(
    interface = "org.skiff.skiff1.Image",
    default_service = "org.skiff.skiff1"
)]
pub trait Image {
    /// See the server side.
    fn inspect(&self) -> zbus::Result<String>;
    /// See the server side.
    fn history(&self) -> zbus::Result<String>;
    /// name:tag references.
    #[zbus(property)]
    fn repo_tags(&self) -> zbus::Result<Vec<String>>;
    /// name@sha256:... references.
    #[zbus(property)]
    fn repo_digests(&self) -> zbus::Result<Vec<String>>;
}

/// `org.skiff.skiff1.Job`.
#[proxy(
    interface = "org.skiff.skiff1.Job",
    default_service = "org.skiff.skiff1"
)]
pub trait Job {
    /// See the server side.
    fn wait(&self) -> zbus::Result<(String, String)>;
    /// See the server side.
    fn cancel(&self) -> zbus::Result<()>;
    /// Bytes downloaded.
    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;
    /// Bytes to download.
    #[zbus(property)]
    fn bytes_total(&self) -> zbus::Result<u64>;
    /// Blobs skipped because the store had them.
    #[zbus(property)]
    fn blobs_skipped(&self) -> zbus::Result<u32>;
    /// The manifest digest of a pulled image.
    #[zbus(property)]
    fn digest(&self) -> zbus::Result<String>;
    /// Warnings for the user so far.
    #[zbus(property)]
    fn warnings(&self) -> zbus::Result<Vec<String>>;
    /// One blob's progress.
    #[zbus(signal)]
    fn layer_progress(&self, digest: &str, status: &str, done: u64, total: u64)
        -> zbus::Result<()>;
}

/// `org.skiff.skiff1.Volumes` (on the manager's object).
#[proxy(
    interface = "org.skiff.skiff1.Volumes",
    default_service = "org.skiff.skiff1",
    default_path = "/org/skiff/skiff1"
)]
pub trait Volumes {
    /// See the server side.
    fn create_volume(
        &self,
        name: &str,
        labels: HashMap<&str, &str>,
        flags: u64,
    ) -> zbus::Result<(String, OwnedObjectPath)>;
    /// See the server side.
    fn get_volume(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// See the server side.
    fn list_volumes(&self, filters: &[&str], flags: u64) -> zbus::Result<String>;
    /// See the server side.
    fn remove_volume(&self, name: &str, flags: u64) -> zbus::Result<()>;
    /// See the server side.
    fn prune_volumes(&self, filters: &[&str], flags: u64) -> zbus::Result<(Vec<String>, u64)>;
}
