//! The Kubernetes edge: everything that talks to the API server. Objects come in through [`watch`] (parsed
//! by [`wire`] straight into the model's summaries); writes go out through [`patch`] and [`events`].

pub mod canary;
pub mod client;
pub mod csi;
pub mod events;
pub mod key_secret;
pub mod leader;
pub mod patch;
pub mod watch;
pub mod wire;

use kube::api::ApiResource;

use crate::model::kind::WorkloadKind;

/// The API resource of a workload kind, from its row in the kind table.
pub fn api_resource(kind: WorkloadKind) -> ApiResource {
    let info = kind.info();
    ApiResource {
        group: info.group.into(),
        version: info.version.into(),
        api_version: info.api_version(),
        kind: info.kind.into(),
        plural: info.plural.into(),
    }
}
