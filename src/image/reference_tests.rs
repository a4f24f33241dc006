use super::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn norm(s: &str) -> String {
    Reference::parse(s)
        .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
        .to_string()
}

fn reason(s: &str) -> String {
    match Reference::parse(s) {
        Err(Error::InvalidReference { reference, reason }) => {
            assert_eq!(reference, s);
            reason
        }
        other => panic!("{s:?} should be invalid, got {other:?}"),
    }
}

#[test]
fn docker_normalisation() {
    assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
    assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
    assert_eq!(norm("org/app"), "docker.io/org/app:latest");
    assert_eq!(norm("org/team/app:v2"), "docker.io/org/team/app:v2");
    assert_eq!(
        norm("docker.io/busybox"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        norm("index.docker.io/library/busybox:1"),
        "docker.io/library/busybox:1"
    );
    assert_eq!(norm("docker.io/org/app"), "docker.io/org/app:latest");
    assert_eq!(norm("localhost/x"), "localhost/x:latest");
    assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
    assert_eq!(
        norm("127.0.0.1:5000/library/busybox:1.36"),
        "127.0.0.1:5000/library/busybox:1.36"
    );
    assert_eq!(
        norm("registry.example.com:5000/a.b/c__d/e-f--g:V1_x.y-z"),
        "registry.example.com:5000/a.b/c__d/e-f--g:V1_x.y-z"
    );
    assert_eq!(norm("[::1]:5000/app:1"), "[::1]:5000/app:1");
    assert_eq!(norm("Example.COM/app"), "Example.COM/app:latest");
    // A first component without '.', ':' or "localhost" is a path, not a domain.
    assert_eq!(norm("myhost/app"), "docker.io/myhost/app:latest");
    assert_eq!(norm("a0:_tag"), "docker.io/library/a0:_tag");
    let t = "x".repeat(128);
    assert_eq!(
        norm(&format!("app:{t}")),
        format!("docker.io/library/app:{t}")
    );
    // Normalising is idempotent.
    for s in ["busybox", "org/app:1", "localhost:5000/x", "q.io/a/b:c"] {
        assert_eq!(norm(&norm(s)), norm(s));
    }
}

#[test]
fn digests() {
    let r = Reference::parse(&format!("busybox@sha256:{HEX}")).unwrap();
    assert_eq!(r.domain(), "docker.io");
    assert_eq!(r.path(), "library/busybox");
    assert_eq!(r.tag(), None, "a digest reference gets no default tag");
    assert_eq!(r.digest(), Some(format!("sha256:{HEX}").as_str()));
    assert_eq!(
        r.to_string(),
        format!("docker.io/library/busybox@sha256:{HEX}")
    );

    let r = Reference::parse(&format!("localhost:5000/x:1.0@sha256:{HEX}")).unwrap();
    assert_eq!(r.domain(), "localhost:5000");
    assert_eq!(r.tag(), Some("1.0"));
    assert_eq!(r.to_string(), format!("localhost:5000/x:1.0@sha256:{HEX}"));
    assert_eq!(norm(&r.to_string()), r.to_string());

    assert!(reason(&format!("busybox@sha512:{HEX}")).contains("only sha256"));
    assert!(reason("busybox@sha256:abc").contains("exactly 64"));
    assert!(reason(&format!("busybox@sha256:{}", HEX.to_uppercase())).contains("lower-case"));
    assert!(reason(&format!("busybox@{HEX}")).contains("no algorithm"));
    assert!(reason(&format!("@sha256:{HEX}")).contains("before the '@'"));
}

#[test]
fn accessors() {
    let r = Reference::parse("localhost:5000/team/app:2").unwrap();
    assert_eq!(r.domain(), "localhost:5000");
    assert_eq!(r.path(), "team/app");
    assert_eq!(r.repository(), "localhost:5000/team/app");
    assert_eq!(r.tag(), Some("2"));
    assert_eq!(r.digest(), None);
    let d = format!("sha256:{HEX}");
    let pinned = r.with_digest(&d).unwrap();
    assert_eq!(pinned.to_string(), format!("localhost:5000/team/app@{d}"));
    assert_eq!(
        pinned.with_tag("3").unwrap().to_string(),
        "localhost:5000/team/app:3"
    );
    assert!(r.with_tag("-no").is_err());
    assert!(r.with_digest("sha256:xyz").is_err());
}

#[test]
fn display_and_from_str() {
    let r: Reference = "alpine".parse().unwrap();
    assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
    assert_eq!(parse("a/b:c").unwrap().to_string(), "docker.io/a/b:c");
}

#[test]
fn bad_references_say_what_is_wrong() {
    assert!(reason("").contains("empty"));
    assert!(reason("Alpine").contains("lowercase"));
    assert!(reason("library/Alpine").contains("lowercase"));
    assert!(reason("a//b").contains("empty path component"));
    assert!(reason("a/").contains("empty path component"));
    assert!(reason("/a").contains("empty path component"));
    assert!(reason("localhost:5000/").contains("empty path component"));
    assert!(reason("alpine:").contains("tag after ':' is empty"));
    assert!(reason(":tag").contains("name before"));
    assert!(reason("alpine:-x").contains("must start with"));
    assert!(reason("alpine:a+b").contains("'+'"));
    assert!(reason(&format!("app:{}", "x".repeat(129))).contains("at most 128"));
    assert!(reason("a..b").contains("separator"));
    assert!(reason("a___b").contains("separator"));
    assert!(reason("a._b").contains("separator"));
    assert!(reason("-a").contains("must start and end"));
    assert!(reason("a.").contains("must start and end"));
    assert!(reason("a b").contains("invalid character ' '"));
    assert!(reason("caf\u{e9}").contains('\u{e9}'));
    assert!(reason("exa_mple.com/app").contains("host"));
    assert!(reason("example.com:port/app").contains("not a number"));
    assert!(reason("[::1/app").contains("unclosed"));
    assert!(reason(&"a".repeat(256)).contains("at most 255"));
    assert!(reason(&format!("{}/x", "a".repeat(250))).contains("normalised name"));
    assert!(reason(HEX).contains("image id"));
}
