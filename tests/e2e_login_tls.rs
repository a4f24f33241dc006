//! `skiff login` to a registry that speaks only TLS (a real docker-registry on 127.0.0.1
//! with basic auth and a certificate of a test CA): with the CA trusted through
//! `SSL_CERT_FILE` it logs in over HTTPS; without, it fails with the TLS error and its
//! hint, not with the HTTP 400 that the registry answers to plain HTTP.

mod common;
mod registry_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{require, stderr, stdout, Env};

/// A TLS-only docker-registry with htpasswd auth; killed on drop.
struct TlsRegistry {
    child: Child,
    addr: String,
    /// The CA that signed its certificate (PEM).
    ca: PathBuf,
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

fn tls_registry(env: &Env, user: &str, password: &str) -> TlsRegistry {
    let dir = env.dir.path().join("tlsreg");
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let days = ["-days", "1"];
    openssl(
        &dir,
        &[
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes"][..],
            &days,
            &[
                "-subj",
                "/CN=skiff test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            &[
                "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            ][..],
            &["-CAcreateserial", "-extfile", "ext.cnf", "-out", "cert.pem"],
            &days,
        ]
        .concat(),
    );
    let out = Command::new(require("htpasswd"))
        .args(["-Bbn", user, password])
        .output()
        .unwrap();
    assert!(out.status.success(), "htpasswd failed");
    std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
    let addr = format!("127.0.0.1:{}", registry_support::free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\n\
         http:\n  addr: {addr}\n  tls:\n    certificate: {d}/cert.pem\n    key: {d}/key.pem\n\
         auth:\n  htpasswd:\n    realm: skiff-test\n    path: {d}/htpasswd\n",
        d = dir.display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new(require("docker-registry"))
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .unwrap();
    let reg = TlsRegistry {
        child,
        addr,
        ca: dir.join("ca.pem"),
    };
    assert!(
        env.eventually(20, || std::net::TcpStream::connect(&reg.addr).is_ok()),
        "docker-registry did not listen"
    );
    reg
}

/// `skiff login -u USER --password-stdin REGISTRY`, with `SSL_CERT_FILE` when given.
fn login(env: &Env, reg: &TlsRegistry, password: &str, ca: Option<&Path>) -> Output {
    let mut cmd = env.skiff_cmd(&["login", "-u", "alice", "--password-stdin", &reg.addr]);
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_to_a_tls_only_registry() {
    let env = Env::bus_only();
    let reg = tls_registry(&env, "alice", "s3cret");
    let file = env.dir.path().join("runtime/containers/auth.json");

    // Its CA not trusted: the TLS error and how to go on, not plain HTTP's 400.
    let out = login(&env, &reg, "s3cret", None);
    let e = stderr(&out);
    assert!(
        !out.status.success(),
        "logged in over an untrusted certificate"
    );
    assert!(e.contains("TLS with the registry"), "{e}");
    assert!(e.contains("log in with --tls-verify=false"), "{e}");
    assert!(!e.contains("HTTP 400"), "{e}");
    assert!(!file.exists(), "nothing stored after a failure");

    // Trusted through SSL_CERT_FILE: HTTPS, the password checked.
    let out = login(&env, &reg, "wrong", Some(&reg.ca));
    assert!(!out.status.success(), "a wrong password was accepted");
    let e = stderr(&out);
    assert!(e.contains("refused the user name and password"), "{e}");
    let out = login(&env, &reg, "s3cret", Some(&reg.ca));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"), "{}", stdout(&out));
    let auths: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(auths["auths"][&reg.addr]["auth"].is_string(), "{auths}");

    // --tls-verify=false: any certificate.
    let mut cmd = env.skiff_cmd(&[
        "login",
        "-u",
        "alice",
        "--password-stdin",
        "--tls-verify=false",
        &reg.addr,
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
