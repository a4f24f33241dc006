//! The `a{sv}` options of the Manager's image methods (import, load, save, pull,
//! push), checked: an unknown key or a value of the wrong type is `InvalidArgs`.

use std::collections::HashMap;

use zbus::OwnedVariant;

use super::SkiffError;
use crate::daemon::pull::PullRequest;
use crate::daemon::push::PushRequest;

type Options = HashMap<String, OwnedVariant>;

/// ImportImage: `wait` (b), `changes` (as: Dockerfile instructions).
pub(super) fn import(options: &Options) -> Result<(bool, crate::image::ImageChanges), SkiffError> {
    let mut wait = false;
    let mut changes = crate::image::ImageChanges::default();
    for (k, v) in options {
        match (k.as_str(), &**v) {
            ("wait", zbus::Variant::Bool(b)) => wait = *b,
            ("wait", _) => {
                return Err(SkiffError::invalid_args(
                    "option \"wait\" must be a boolean",
                ))
            }
            ("changes", v) => {
                let list: Vec<String> = v
                    .try_clone()
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| {
                        SkiffError::invalid_args("option \"changes\" must be an array of strings")
                    })?;
                for c in &list {
                    crate::image::changes::apply_change(&mut changes, c)
                        .map_err(|e| SkiffError::invalid_args(e.to_string()))?;
                }
            }
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown import option {other:?} (known: wait, changes)"
                )))
            }
        }
    }
    Ok((wait, changes))
}

/// LoadImage: `wait` (b).
pub(super) fn load(options: &Options) -> Result<bool, SkiffError> {
    let mut wait = false;
    for (k, v) in options {
        match (k.as_str(), &**v) {
            ("wait", zbus::Variant::Bool(b)) => wait = *b,
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown or mistyped load option {other:?} (known: wait b)"
                )))
            }
        }
    }
    Ok(wait)
}

/// SaveImage: `format` (s: docker-archive, the default, or oci-archive).
pub(super) fn save(options: &Options) -> Result<String, SkiffError> {
    let mut format = "docker-archive".to_string();
    for (k, v) in options {
        match (k.as_str(), &**v) {
            ("format", zbus::Variant::Str(s)) => format = s.to_string(),
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown or mistyped save option {other:?} (known: format s)"
                )))
            }
        }
    }
    Ok(format)
}

/// PullImage: the request for `reference`, and `wait`.
pub(super) fn pull(reference: &str, options: &Options) -> Result<(PullRequest, bool), SkiffError> {
    let mut req = PullRequest::new(reference);
    let mut wait = false;
    for (k, v) in options {
        let bad = |ty: &str| SkiffError::invalid_args(format!("option {k:?} must be {ty}"));
        match (k.as_str(), &**v) {
            ("wait", zbus::Variant::Bool(b)) => wait = *b,
            ("tls-verify", zbus::Variant::Bool(b)) => req.tls_verify = *b,
            ("auth-file", zbus::Variant::Str(s)) => {
                req.auth_file = Some(std::path::PathBuf::from(s.as_str()))
            }
            ("platform", zbus::Variant::Str(s)) => req.platform = Some(s.to_string()),
            ("wait" | "tls-verify", _) => return Err(bad("a boolean")),
            ("auth-file" | "platform", _) => return Err(bad("a string")),
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown pull option {other:?} (known: tls-verify, auth-file, \
                     platform, wait)"
                )))
            }
        }
    }
    Ok((req, wait))
}

/// PushImage: the request for `image` to `destination`, and `wait`.
pub(super) fn push(
    image: &str,
    destination: &str,
    options: &Options,
) -> Result<(PushRequest, bool), SkiffError> {
    let mut req = PushRequest::new(image, destination);
    let mut wait = false;
    for (k, v) in options {
        let bad = |ty: &str| SkiffError::invalid_args(format!("option {k:?} must be {ty}"));
        match (k.as_str(), &**v) {
            ("wait", zbus::Variant::Bool(b)) => wait = *b,
            ("tls-verify", zbus::Variant::Bool(b)) => req.tls_verify = *b,
            ("auth-file", zbus::Variant::Str(s)) => {
                req.auth_file = Some(std::path::PathBuf::from(s.as_str()))
            }
            ("wait" | "tls-verify", _) => return Err(bad("a boolean")),
            ("auth-file", _) => return Err(bad("a string")),
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown push option {other:?} (known: tls-verify, auth-file, wait)"
                )))
            }
        }
    }
    Ok((req, wait))
}
