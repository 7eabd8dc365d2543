//! The Kubernetes client: kube's own service stack (TLS from the kubeconfig, timeouts, base URI, retries,
//! auth, extra headers, a debug span per request), assembled here for one setting kube does not expose: the
//! largest read buffer a connection keeps.
//!
//! hyper grows a connection's read buffer while reads fill it, up to about 400 KiB, and keeps it for the
//! connection's life. A watch that streams thousands of objects at start-up fills every read, so each of
//! hashroll's long-lived watch connections held a buffer of that size for good (1.5 MiB at the M scale of
//! `benches/scale`, benches/README.md). Bounded at one TLS record's size, a read is just a little smaller;
//! nothing else changes.

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{ClientBuilder, ConfigExt};
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::trace::TraceLayer;

/// The largest read buffer a connection keeps: one TLS record's plaintext, the most rustls hands over at
/// once anyway. hyper accepts nothing under 8 KiB.
pub const READ_BUFFER_MAX: usize = 16 * 1024;

/// A client for `config`. With a proxy, kube's own builder (which knows the proxy kinds kube was built
/// with) does it all.
pub fn build(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
        .http1_max_buf_size(READ_BUFFER_MAX)
        .build(connector);
    let retry = config
        .default_retry
        .then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // As kube's: a span per request at debug level, an error logged for a failed one.
        .layer(TraceLayer::new_for_http())
        .map_err(BoxError::from)
        .service(hyper);
    Ok(ClientBuilder::new(service, config.default_namespace.clone()).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    use serde_json::json;

    use crate::k8s::wire::SecretDigests;
    use crate::model::hashing::{Section, key_digest};

    /// Objects far larger than a connection's read buffer arrive whole, listed and watched, and the
    /// admin's token is sent (the test server refuses requests without one).
    #[tokio::test]
    async fn objects_larger_than_the_read_buffer_arrive_whole() {
        let server = kube_testserver::TestServer::start().await.unwrap();
        let mut config = Config::new(server.url().parse().unwrap());
        config.default_namespace = "default".into();
        config.auth_info = serde_json::from_value(json!({"token": "admin"})).unwrap();
        let client = build(config).unwrap();

        let value: Vec<u8> = (0..READ_BUFFER_MAX * 40).map(|i| (i % 251) as u8).collect();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "big", "namespace": "default"},
            "data": {"blob": k8s_openapi::ByteString(value.clone())},
        }))
        .unwrap();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
        let watched: Api<SecretDigests> = Api::namespaced(client, "default");
        let mut events = watched
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();

        let want = key_digest(Section::Data, "blob", &value);
        let listed = watched.get("big").await.unwrap();
        assert_eq!(listed.data["blob"], want);
        loop {
            match events.next().await.unwrap().unwrap() {
                WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("big") => {
                    assert_eq!(s.data["blob"], want);
                    break;
                }
                _ => {}
            }
        }
    }
}
