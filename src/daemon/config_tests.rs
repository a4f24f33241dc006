use super::*;
use serde_json::json;

#[test]
fn unknown_key_is_named() {
    let e = ContainerConfig::from_json_value(json!({"image": "x", "colour": "red"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn wrong_type_names_the_key() {
    let e = ContainerConfig::from_json_value(json!({"image": "x", "env": "A=1"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("env"), "{e}");
}

#[test]
fn userns_and_limit_keys() {
    assert!(ContainerConfig::from_json_value(json!({"image": "x", "userns": "keep-id"})).is_ok());
    assert!(ContainerConfig::from_json_value(json!({"image": "x", "userns": "auto"})).is_err());
    // A size is a string, as shm-size.
    let e = ContainerConfig::from_json_value(json!({"image": "x", "memory": 1024})).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
}

#[test]
fn network_keys() {
    let cfg = ContainerConfig::from_json_value(json!({"image": "x", "network": "pasta",
        "publish": ["8080:80", "127.0.0.1::53/udp"], "dns": ["192.0.2.1"],
        "dns-search": ["a.test"], "dns-option": ["ndots:1"], "add-host": ["db:192.0.2.2"],
        "host-loopback": true, "publish-all": true, "expose": ["90-91/udp"]}))
    .unwrap();
    assert_eq!(cfg.port_mappings().unwrap().len(), 2);
    assert_eq!(cfg.exposed_mappings().unwrap().len(), 2);
    let cfg = ContainerConfig::from_json_value(
        json!({"image": "x", "publish": ["127.0.0.1:8000-8002:80-82", "[::1]:9000:90"]}),
    )
    .unwrap();
    assert_eq!(cfg.port_mappings().unwrap().len(), 4);
    for bad in [
        json!({"image": "x", "network": "bogus"}),
        json!({"image": "x", "network": "none", "publish": ["80"]}),
        json!({"image": "x", "network": "host", "publish-all": true}),
        json!({"image": "x", "publish": ["80/sctp"]}),
        json!({"image": "x", "publish": ["8000-8001:80-82"]}),
        json!({"image": "x", "expose": ["8080:80"]}),
        json!({"image": "x", "dns": ["resolver"]}),
        json!({"image": "x", "add-host": ["db"]}),
        json!({"image": "x", "network": "none", "dns": ["192.0.2.1"]}),
        json!({"image": "x", "network": "none", "dns-search": ["a.test"]}),
        json!({"image": "x", "network": "none", "dns-option": ["ndots:1"]}),
    ] {
        assert!(
            ContainerConfig::from_json_value(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn good_config_round_trips() {
    let cfg = ContainerConfig::from_json_str(
        r#"{"image":"demo/busybox","command":["sh","-c","true"],"env":["A=1"],"auto-remove":true,"labels":{"a":"b"}}"#,
    )
    .unwrap();
    assert_eq!(cfg.image, "demo/busybox");
    assert!(cfg.auto_remove);
    assert_eq!(cfg.labels.get("a").map(String::as_str), Some("b"));
}

#[test]
fn names_follow_docker_rules() {
    assert!(validate_name("web-1.a_b").is_ok());
    assert!(validate_name("-web").is_err());
    assert!(validate_name("a").is_err());
    assert!(validate_name("we b").is_err());
}

#[test]
fn restart_log_and_stop_keys() {
    let cfg = ContainerConfig::from_json_value(json!({
        "image": "x", "restart": "on-failure:2", "stop-signal": 15, "stop-timeout": 3,
        "log-opts": {"max-size": "1m", "max-file": "3"}
    }))
    .unwrap();
    assert_eq!(
        cfg.restart_policy().unwrap(),
        RestartPolicy::OnFailure(Some(2))
    );
    assert_eq!(cfg.log_limits().unwrap(), (1 << 20, 3));
    assert!(ContainerConfig::from_json_value(
        json!({"image":"x","restart":"always","auto-remove":true})
    )
    .is_err());
    assert!(
        ContainerConfig::from_json_value(json!({"image":"x","log-opts":{"max-size":"big"}}))
            .is_err()
    );
    assert!(ContainerConfig::from_json_value(json!({"image":"x","stop-signal":99})).is_err());
    assert_eq!(parse_size("10m"), Some(10 << 20));
    assert_eq!(parse_size("512"), Some(512));
    assert_eq!(parse_size("x"), None);
    let cfg = ContainerConfig::from_json_value(
        json!({"image":"x","shm-size":"1m","init":true,"group-add":["audio","29"]}),
    )
    .unwrap();
    assert_eq!(cfg.shm_bytes().unwrap(), Some(1 << 20));
    for bad in [
        json!({"image":"x","shm-size":"0"}),
        json!({"image":"x","shm-size":"lots"}),
        json!({"image":"x","group-add":["a b"]}),
        json!({"image":"x","user":"a:b:c"}),
    ] {
        assert!(
            ContainerConfig::from_json_value(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn users() {
    assert_eq!(parse_user("root").unwrap(), (0, 0));
    assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
    assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
    assert_eq!(parse_user("bob").unwrap(), (0, 0));
    assert_eq!(parse_user("1000:staff").unwrap(), (1000, 0));
    for bad in ["", "a:b:c", "bad name", "1000:", "99999999999", "a,b"] {
        assert!(parse_user(bad).is_err(), "{bad}");
    }
}

#[test]
fn missing_image_and_bad_values() {
    assert!(ContainerConfig::from_json_str("{}").is_err());
    assert!(ContainerConfig::from_json_str("[]").is_err());
    assert!(ContainerConfig::from_json_value(json!({"image":"x","workdir":"rel"})).is_err());
    assert!(ContainerConfig::from_json_value(json!({"image":"x","network":"bogus"})).is_err());
}
