//! Events about Clusters, as `kubectl describe cluster` and the dashboard's hover card
//! show them: core/v1 Events in the `default` namespace (where Kubernetes puts the
//! events of cluster-scoped objects), which the API server expires after an hour.
//!
//! ```text
//!  controller ── Note{reason, message, type} ──► record(cluster) ── GET its uid ──►
//!      POST /api/v1/namespaces/default/events   (a fixed name answers 409 the second
//!                                                time: recorded once, whoever retries)
//! ```
//!
//! The key decision: shoal writes core/v1 Events itself rather than through kube-rs'
//! `runtime::events::Recorder`, which writes `events.k8s.io/v1` — a group shoal does not
//! serve — and the Events kubectl describe reads are the core/v1 ones anyway.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};
use shoal_core::kinds::Cluster;

/// The namespace Events about cluster-scoped objects go to, as in Kubernetes.
pub const NAMESPACE: &str = "default";

/// What to say about a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The Event's name when it must be recorded once only (`None`: a fresh name).
    pub name: Option<String>,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// CamelCase, e.g. `NotReady`, `ReleaseFailed`.
    pub reason: &'static str,
    pub message: String,
}

/// The Event recording `note` about `cluster` (`uid` ties it to this incarnation, as
/// `kubectl describe` selects by it).
pub fn event(
    cluster: &str,
    uid: Option<String>,
    note: &Note,
    reporter: &str,
    now: jiff::Timestamp,
) -> Event {
    let time = Time(now);
    let name = note
        .name
        .clone()
        // Unique per moment, as client-go's recorder names events.
        .unwrap_or_else(|| format!("{cluster}.{:x}", now.as_nanosecond()));
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(Cluster::api_version(&()).into_owned()),
            kind: Some(Cluster::kind(&()).into_owned()),
            name: Some(cluster.into()),
            uid,
            ..ObjectReference::default()
        },
        type_: Some(note.type_.into()),
        reason: Some(note.reason.into()),
        message: Some(note.message.clone()),
        count: Some(1),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        source: Some(EventSource {
            component: Some(reporter.into()),
            host: None,
        }),
        reporting_component: Some(reporter.into()),
        ..Event::default()
    }
}

/// Records `note` about the cluster named `cluster`; an Event of the same fixed name
/// already there is success. `uid` is looked up when not given.
///
/// # Errors
/// The API's, but for 409 (recorded already) and a cluster that no longer exists.
pub async fn record(
    client: &Client,
    cluster: &str,
    uid: Option<String>,
    note: &Note,
    reporter: &str,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let uid = match uid {
        Some(u) => Some(u),
        None => match Api::<Cluster>::all(client.clone()).get_opt(cluster).await? {
            Some(c) => c.uid(),
            None => return Ok(()),
        },
    };
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    match events
        .create(
            &PostParams::default(),
            &event(cluster, uid, note, reporter, now),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_the_cluster_as_kubectl_describe_selects_it() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let note = Note {
            name: None,
            type_: "Warning",
            reason: "NotReady",
            message: "down".into(),
        };
        let e = event("prod-1", Some("u-1".into()), &note, "shoal-x", now);
        let o = &e.involved_object;
        assert_eq!(
            (
                o.api_version.as_deref(),
                o.kind.as_deref(),
                o.name.as_deref(),
                o.uid.as_deref()
            ),
            (
                Some("shoal.io/v1alpha1"),
                Some("Cluster"),
                Some("prod-1"),
                Some("u-1")
            )
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("prod-1."));
        let fixed = Note {
            name: Some("prod-1.r.failed".into()),
            ..note
        };
        assert_eq!(
            event("prod-1", None, &fixed, "shoal-x", now)
                .metadata
                .name
                .as_deref(),
            Some("prod-1.r.failed")
        );
    }
}
