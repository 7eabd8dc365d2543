//! Authentication the test server offers others: `TokenReview` (`authentication.k8s.io/v1`), which
//! Vault's and OpenBao's Kubernetes auth send to check a pod's service-account token, and service-account
//! tokens in the JWT shape a kubelet projects.
//!
//! Like the test server's plain `system:serviceaccount:NS:NAME` tokens, a JWT is not signed here: its `sub`
//! claim names the service account, and that is all the test server checks. Tests only.

use base64::Engine;
use serde_json::{Value, json};

/// The service account (namespace, name) and uid a JWT-shaped token names in its claims: `sub` must be
/// `system:serviceaccount:NS:NAME`; the uid comes from the `kubernetes.io` claims, when present.
pub(crate) fn service_account_jwt(token: &str) -> Option<(String, String, String)> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    let sub = claims["sub"].as_str()?;
    let (ns, name) = sub
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    if ns.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    let uid = claims["kubernetes.io"]["serviceaccount"]["uid"]
        .as_str()
        .or(claims["kubernetes.io/serviceaccount/service-account.uid"].as_str())
        .unwrap_or_default();
    Some((ns.to_string(), name.to_string(), uid.to_string()))
}

/// The answer to a `TokenReview` create: who `spec.token` is, as the test server's own authentication
/// says (`user` resolves a token to a user name and groups), or not authenticated.
pub(crate) fn token_review(
    body: &[u8],
    user: impl Fn(&str) -> Option<crate::rbac::UserInfo>,
) -> Result<Value, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("not a TokenReview: {e}"))?;
    let token = review["spec"]["token"]
        .as_str()
        .ok_or("TokenReview without spec.token")?;
    let status = match user(token) {
        Some(u) => {
            let uid = service_account_jwt(token)
                .map(|(_, _, uid)| uid)
                .unwrap_or_default();
            json!({
                "authenticated": true,
                "user": {"username": u.name, "uid": uid, "groups": u.groups},
                "audiences": review["spec"]["audiences"].clone(),
            })
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"].clone(),
        "status": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!("{}.{}.c2ln", enc(&json!({"alg": "RS256"})), enc(&claims))
    }

    #[test]
    fn a_service_account_jwt_names_its_account() {
        let t = jwt(json!({"sub": "system:serviceaccount:hr:hashroll",
            "kubernetes.io": {"serviceaccount": {"uid": "u-1"}}}));
        assert_eq!(
            service_account_jwt(&t),
            Some(("hr".into(), "hashroll".into(), "u-1".into()))
        );
        assert_eq!(service_account_jwt(&jwt(json!({"sub": "alice"}))), None);
        assert_eq!(service_account_jwt("admin"), None);
    }

    #[test]
    fn a_review_says_who_the_token_is_or_that_it_is_not_authenticated() {
        let t = jwt(json!({"sub": "system:serviceaccount:hr:hashroll"}));
        let body = json!({"spec": {"token": t}}).to_string();
        let known = |_: &str| {
            Some(crate::rbac::UserInfo::new(
                "system:serviceaccount:hr:hashroll",
                vec![],
            ))
        };
        let r = token_review(body.as_bytes(), known).unwrap();
        assert_eq!(r["status"]["authenticated"], true);
        assert_eq!(
            r["status"]["user"]["username"],
            "system:serviceaccount:hr:hashroll"
        );
        let r = token_review(body.as_bytes(), |_| None).unwrap();
        assert_eq!(r["status"]["authenticated"], false);
        assert!(token_review(b"{}", |_| None).is_err());
    }
}
