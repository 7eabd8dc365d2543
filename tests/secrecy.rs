//! End to end: a Secret's value never leaves hashroll, in any form an attacker could match or brute-force
//! (plain, base64, plain SHA-256 or SHA-1 hex), in its debug logs, its Events or any workload annotation.

mod common;

use common::{Env, Server, e2e, pod, secret_key_ref};
use serde_json::json;
use sha2::{Digest, Sha256};

const NS: &str = "secrecy";
const VALUE: &str = "correct-horse-battery-staple-42";

/// SHA-1, the digest Stakater Reloader writes, which hashroll must never write.
fn sha1(data: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(data).into()
}

/// Every form of the value that must not appear anywhere, with a label for the failure message.
fn forbidden_forms() -> Vec<(&'static str, String)> {
    let b64 = serde_json::to_value(k8s_openapi::ByteString(VALUE.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let mut forms = vec![("value", VALUE.to_string()), ("base64", b64)];
    // Plain digests of the value, and of `key=value` as Reloader-like tools concatenate it.
    for (what, input) in [
        ("value", VALUE.to_string()),
        ("key=value", format!("password={VALUE}")),
    ] {
        let sha256 = hex::encode(Sha256::digest(input.as_bytes()));
        let sha1 = hex::encode(sha1(input.as_bytes()));
        forms.push((
            if what == "value" {
                "SHA-256"
            } else {
                "SHA-256 key=value"
            },
            sha256.clone(),
        ));
        forms.push((
            if what == "value" {
                "SHA-1"
            } else {
                "SHA-1 key=value"
            },
            sha1.clone(),
        ));
        // A truncated prefix would be just as guessable.
        forms.push(("SHA-256 prefix", sha256[..16].to_string()));
        forms.push(("SHA-1 prefix", sha1[..16].to_string()));
    }
    forms
}

fn assert_clean(place: &str, text: &str) {
    let lower = text.to_ascii_lowercase();
    for (what, form) in forbidden_forms() {
        assert!(
            !lower.contains(&form.to_ascii_lowercase()),
            "{place} contains the secret's {what} ({form})"
        );
    }
}

e2e!(the_secret_value_appears_nowhere);
async fn the_secret_value_appears_nowhere(on: Server) {
    let env = Env::start(on).await;
    env.namespace(NS).await;
    env.secret(NS, "db", &[("password", "first-value"), ("user", "app")])
        .await;
    env.deployment(NS, "key-ref", secret_key_ref("db", "password"))
        .await;
    env.deployment(
        NS,
        "env-from",
        pod(json!({"envFrom": [{"secretRef": {"name": "db"}}]})),
    )
    .await;
    env.workload(
        "cronjobs",
        NS,
        "job",
        &[("hashroll.dev/reload", "true")],
        secret_key_ref("db", "password"),
    )
    .await;
    // Full debug logging, every module: the strictest setting a user could pick.
    let hr = env.hashroll(&["--log-level=debug"]).await;
    env.wait_recorded("deployments", NS, "key-ref").await;

    env.secret(NS, "db", &[("password", VALUE), ("user", "app")])
        .await;
    env.wait_rolls("deployments", NS, "key-ref", 1).await;
    env.wait_rolls("deployments", NS, "env-from", 1).await;
    env.wait_rolls("cronjobs", NS, "job", 1).await;
    // A second change away from the value: the old value must not show up either.
    env.secret(NS, "db", &[("password", "third-value"), ("user", "app")])
        .await;
    env.wait_rolls("deployments", NS, "key-ref", 2).await;
    env.barrier(NS).await;

    // The detector itself finds the value where it really is: in the Secret as stored.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), NS);
    let mut stored = secrets.get("db").await.unwrap();
    stored.data.get_or_insert_default().insert(
        "password".into(),
        k8s_openapi::ByteString(VALUE.as_bytes().to_vec()),
    );
    let stored = serde_json::to_string(&stored).unwrap();
    assert!(std::panic::catch_unwind(|| assert_clean("the Secret", &stored)).is_err());

    // The log is one of the outputs that must never carry a value: reading it is the point here.
    let logs = hr.logs();
    assert!(
        logs.contains("rolling workload"),
        "the log is the one that saw the rolls"
    );
    assert_clean("hashroll's log", &logs);

    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), NS);
    let all = events.list(&Default::default()).await.unwrap().items;
    assert!(
        all.iter().any(|e| e.reason.as_deref() == Some("Reloaded")
            && e.note.as_deref().is_some_and(|n| n.contains("password"))),
        "the Reloaded Events name the key"
    );
    assert_clean("Events", &serde_json::to_string(&all).unwrap());

    for (kind, name) in [
        ("deployments", "key-ref"),
        ("deployments", "env-from"),
        ("cronjobs", "job"),
    ] {
        let obj = env.get(kind, NS, name).await;
        assert_clean(
            &format!("{kind} {name}"),
            &serde_json::to_string(&obj).unwrap(),
        );
        for stored in env.stored_templates(kind, NS, name).await {
            assert_clean(
                &format!("{kind} {name} template history"),
                &serde_json::to_string(&stored).unwrap(),
            );
        }
    }
}
