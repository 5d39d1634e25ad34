//! Watch: a chunked HTTP response with one compact JSON event per line.
//!
//! ```text
//! store watch (prefix, after rv) ──► selector filter ──► ADDED | MODIFIED | DELETED lines
//!                                     periodic BOOKMARK {"metadata":{"resourceVersion":…}}
//!                                       (how far the store watch has read: past other
//!                                        prefixes' revisions too, so a quiet watch resumes
//!                                        inside the history that is kept)
//!                                     ERROR {Status 410 Expired} when history is compacted
//! ```
//!
//! Each watch runs as its own task feeding a bounded channel that the HTTP body drains.
//! A slow client fills only its own channel; its task then stops reading the store's
//! stream, and the store (not the writers, not the other watchers) absorbs the lag by
//! replaying from history. The task ends when the client goes away, when
//! `timeoutSeconds` passes, or when the server shuts down.
//!
//! Like Kubernetes, an object that stops matching the selectors is sent as DELETED and
//! one that starts matching as ADDED, so a filtered watch is a consistent view.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use shoal_store::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::metrics::WatchLabels;
use crate::object;
use crate::rest::{self, Output, Params, ResourcePath, Selectors};
use crate::table::{self, IncludeObject};

/// Lines buffered per watch between its task and the HTTP body; a client that falls this
/// far behind stalls only its own task.
const WATCH_BUFFER: usize = 256;

/// The kind of a watch event line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// How one watch renders objects.
struct Render {
    def: Arc<crate::registry::ResourceDef>,
    output: Output,
    include: IncludeObject,
    st: Arc<AppState>,
}

impl Render {
    fn line(&self, ty: &str, obj: Value) -> Bytes {
        let obj = match self.output {
            Output::Json => obj,
            Output::Table => {
                let rv = object::meta_str(&obj, "resourceVersion")
                    .unwrap_or("")
                    .to_string();
                table::table(
                    &self.def,
                    &[obj],
                    json!({"resourceVersion": rv}),
                    self.st.clock.now(),
                    self.include,
                )
            }
        };
        event_line(ty, &obj)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        event_line("BOOKMARK", &obj)
    }

    fn error(&self, err: &ApiError) -> Bytes {
        event_line("ERROR", &err.status())
    }
}

/// One line of a watch: `{"type":…,"object":…}` and a newline, the type first as
/// kube-apiserver writes it. (A JSON map would put `object` first; a client such as
/// kube-rs, whose event type is tagged by that field, then has to buffer the whole
/// object before it knows what to parse it as.)
fn event_line(ty: &str, obj: &impl serde::Serialize) -> Bytes {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut line, ty).expect("a string serializes");
    line.extend_from_slice(b",\"object\":");
    serde_json::to_writer(&mut line, obj).expect("an event's object serializes");
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// Classifies a store event for a watcher with `selectors`; `None` when it does not
/// concern the watcher.
fn classify(ev: &Event, selectors: &Selectors) -> ApiResult<Option<(EventType, Value)>> {
    Ok(match ev {
        Event::Put { kv, prev } => {
            let obj = object::from_kv(kv)?;
            let now = selectors.matches(&obj);
            let before = match prev {
                None => false,
                Some(_) if selectors.is_empty() => true,
                Some(p) => selectors.matches(&object::from_kv(p)?),
            };
            match (before, now) {
                (false, true) => Some((EventType::Added, obj)),
                (true, true) => Some((EventType::Modified, obj)),
                (true, false) => Some((EventType::Deleted, obj)),
                (false, false) => None,
            }
        }
        Event::Delete { prev, revision } => {
            let mut obj = object::from_kv(prev)?;
            object::set_resource_version(&mut obj, *revision);
            selectors.matches(&obj).then_some((EventType::Deleted, obj))
        }
    })
}

/// Starts a watch and returns the streaming response.
pub async fn watch(
    st: Arc<AppState>,
    rp: ResourcePath,
    params: Params,
    output: Output,
) -> ApiResult<Response> {
    let selectors = Selectors::parse(&params)?;
    let bookmarks = matches!(
        params.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let send_initial = matches!(
        params.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = match params.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => st.config.default_watch_timeout,
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {s:?}")))?,
        ),
    };
    let rv = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let render = Render {
        def: rp.def.clone(),
        output,
        include: IncludeObject::parse(params.get("includeObject").map(String::as_str)),
        st: st.clone(),
    };

    // Where the stream starts: "" / "0" (or sendInitialEvents) replay the current state
    // as ADDED events first; a number starts strictly after that revision.
    let (initial, after) = if rv.is_empty() || rv == "0" || send_initial {
        let mut list_params = params.clone();
        list_params.remove("limit");
        list_params.remove("continue");
        let (items, rev, _) = rest::list(&st, &rp, &list_params).await?;
        (items, rev)
    } else {
        let after: i64 = rv.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid resourceVersion {rv:?}: must be an integer"
            ))
        })?;
        (Vec::new(), after)
    };

    let prefix = rp.def.collection_prefix(rp.namespace.as_deref());
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(WATCH_BUFFER);
    let stream = match st.store.watch_with_progress(&prefix, after).await {
        Ok(s) => Some(s),
        Err(e @ shoal_store::Error::Compacted { .. }) => {
            // As Kubernetes: the watch is accepted, then ends with a 410 ERROR event.
            let _ = tx.try_send(Ok(render.error(&ApiError::from(e))));
            None
        }
        Err(e) => return Err(e.into()),
    };

    let labels = WatchLabels {
        resource: rp.def.plural.clone(),
    };
    let gauge = st.telemetry.api.open_watches.get_or_create(&labels).clone();
    let shutdown = st.shutdown.clone();
    let bookmark_every = st.config.bookmark_interval;
    let span = tracing::info_span!("watch", resource = %rp.def.plural, after);
    if let Some((mut stream, progress)) = stream {
        tokio::spawn(
            async move {
                gauge.inc();
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let mut last_rev = after;
                let mut ticker = tokio::time::interval(bookmark_every);
                ticker.tick().await;
                let mut ok = true;
                for obj in initial {
                    if tx.send(Ok(render.line("ADDED", obj))).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if ok && send_initial && bookmarks {
                    ok = tx.send(Ok(render.bookmark(last_rev, true))).await.is_ok();
                }
                while ok {
                    tokio::select! {
                        ev = stream.next() => match ev {
                            None => break,
                            Some(Ok(ev)) => {
                                last_rev = ev.revision();
                                match classify(&ev, &selectors) {
                                    Ok(Some((ty, obj))) => ok = tx.send(Ok(render.line(ty.as_str(), obj))).await.is_ok(),
                                    Ok(None) => {}
                                    Err(e) => {
                                        let _ = tx.send(Ok(render.error(&e))).await;
                                        break;
                                    }
                                }
                            }
                            Some(Err(e)) => {
                                let _ = tx.send(Ok(render.error(&ApiError::from(e)))).await;
                                break;
                            }
                        },
                        _ = ticker.tick(), if bookmarks => {
                            // Every event up to the store watch's progress was handled
                            // above (this task is its only reader), sent or filtered out.
                            last_rev = last_rev.max(progress.revision());
                            ok = tx.send(Ok(render.bookmark(last_rev, false))).await.is_ok();
                        }
                        _ = tx.closed() => break,
                        _ = &mut deadline => break,
                        _ = shutdown.cancelled() => break,
                    }
                }
                gauge.dec();
            }
            .instrument(span),
        );
    }
    let body = Body::from_stream(ReceiverStream::new(rx));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("static response parts are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::KeyValue;

    fn mk_kv(rev: i64, env: &str) -> KeyValue {
        let v = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c", "labels": {"env": env}}});
        KeyValue {
            key: "/k/c".into(),
            value: Bytes::from(v.to_string()),
            create_revision: 1,
            mod_revision: rev,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn a_watch_line_names_its_type_first_as_kube_apiserver_does() {
        let obj = json!({"kind": "Namespace", "metadata": {"name": "a\"b"}});
        let line = event_line("MODIFIED", &obj);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Namespace\",\"metadata\":{\"name\":\"a\\\"b\"}}}\n"
        );
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed, json!({"type": "MODIFIED", "object": obj}));
    }

    fn sel(s: &str) -> Selectors {
        let mut p = Params::new();
        p.insert("labelSelector".into(), s.into());
        Selectors::parse(&p).unwrap()
    }

    #[test]
    fn an_object_leaving_the_selection_is_seen_as_deleted() {
        let ev = Event::Put {
            kv: mk_kv(3, "dev"),
            prev: Some(mk_kv(2, "prod")),
        };
        let (ty, obj) = classify(&ev, &sel("env=prod")).unwrap().unwrap();
        assert_eq!(ty, EventType::Deleted);
        assert_eq!(obj["metadata"]["resourceVersion"], "3");
    }

    #[test]
    fn an_object_entering_the_selection_is_seen_as_added() {
        let ev = Event::Put {
            kv: mk_kv(3, "prod"),
            prev: Some(mk_kv(2, "dev")),
        };
        assert_eq!(
            classify(&ev, &sel("env=prod")).unwrap().unwrap().0,
            EventType::Added
        );
        let ev = Event::Put {
            kv: mk_kv(3, "dev"),
            prev: Some(mk_kv(2, "dev")),
        };
        assert!(classify(&ev, &sel("env=prod")).unwrap().is_none());
    }

    #[test]
    fn deletes_carry_the_deletion_revision() {
        let ev = Event::Delete {
            prev: mk_kv(2, "prod"),
            revision: 9,
        };
        let (ty, obj) = classify(&ev, &Selectors::default()).unwrap().unwrap();
        assert_eq!(ty, EventType::Deleted);
        assert_eq!(obj["metadata"]["resourceVersion"], "9");
    }
}
