//! The kubectl-like verbs for humans: `get`, `describe`, `apply`, `delete`.
//!
//! A thin client over kube-rs' `Client` (connection, auth, error decoding). Resource
//! names are resolved through the server's aggregated discovery, so `clusters`,
//! `cluster`, `cl` and `clusters.shoal.io` all work, as with kubectl. `get` prints the
//! server's own Table, so the CLI and kubectl show the same columns.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

/// How to reach the server.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// The shoal server URL.
    #[arg(long, env = "SHOAL_SERVER", default_value = "http://127.0.0.1:7420")]
    pub server: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed an `https://` server's certificate (`shoal serve
    /// --tls` keeps it in DATA_DIR/pki/ca.crt).
    #[arg(long, env = "SHOAL_CA", value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// The name the server's certificate is verified against, when not the URL's host
    /// (shoal's own clients of its server; not a flag).
    #[arg(skip)]
    pub tls_server_name: Option<String>,
}

/// How the kubeconfigs of member clusters (the Secrets their Clusters'
/// `credentialsRef` names) may be used: `shoal serve`, and the verbs that reach members
/// from where they run (`shoal diff`, `shoal release rehearse`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MemberKubeconfigs {
    /// Let members' kubeconfigs run exec plugins and auth providers, and read
    /// `tokenFile`, `client-certificate`, `client-key` and `certificate-authority` files,
    /// on this host. Off: such a kubeconfig is refused, naming the field (a Cluster's
    /// Ready condition says it, reason `KubeconfigRefused`), since whoever may write a
    /// Secret and a Cluster could otherwise run a program here or send a local file to a
    /// server they name. Turn it on only if every such writer is trusted that far.
    #[arg(long)]
    pub allow_member_kubeconfig_exec_and_files: bool,
}

impl MemberKubeconfigs {
    /// The fleet driver's policy these flags ask for.
    pub fn policy(&self) -> shoal_fleet::KubeconfigPolicy {
        if self.allow_member_kubeconfig_exec_and_files {
            shoal_fleet::KubeconfigPolicy::AllowExecAndFiles
        } else {
            shoal_fleet::KubeconfigPolicy::InlineOnly
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Resource type (`clusters`, `cl`, `namespaces`, …).
    pub resource: String,
    /// Object names; all objects when omitted.
    pub names: Vec<String>,
    /// Output: wide, yaml, json, name.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Label selector (`env=prod,tier in (1,2)`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    pub resource: String,
    pub name: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// File with one or more YAML/JSON documents ("-" for stdin).
    #[arg(short, long)]
    pub filename: PathBuf,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Resource type, then names (omit with -f).
    pub args: Vec<String>,
    /// Delete the objects in this file instead.
    #[arg(short, long)]
    pub filename: Option<PathBuf>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// A resource as discovery describes it.
#[derive(Clone, Debug)]
struct Resource {
    group: String,
    version: String,
    kind: String,
    plural: String,
    singular: String,
    short_names: Vec<String>,
    namespaced: bool,
}

impl Resource {
    fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            p.push_str(&format!("/namespaces/{ns}"));
        }
        p.push('/');
        p.push_str(&self.plural);
        if let Some(n) = name {
            p.push('/');
            p.push_str(n);
        }
        p
    }

    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.singular.clone()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }
}

struct Client {
    kube: kube::Client,
    resources: Vec<Resource>,
}

pub(crate) fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!("Error from server ({}): {}", s.reason, s.message),
        other => anyhow!(other),
    }
}

/// A kube-rs client for the server `conn` names.
///
/// The PEM text of a CA file given on the command line, if one was.
///
/// # Errors
/// The file cannot be read.
pub(crate) fn read_ca(path: Option<&std::path::Path>) -> Result<Option<String>> {
    path.map(|f| {
        std::fs::read_to_string(f)
            .with_context(|| format!("failed to read the certificate authority {}", f.display()))
    })
    .transpose()
}

/// # Errors
/// When `--server` is not a URL.
pub(crate) fn kube_client(conn: &Conn) -> Result<kube::Client> {
    let ca = read_ca(conn.certificate_authority.as_deref())?;
    let mut cfg = kube_config(&conn.server, conn.token.as_deref(), ca.as_deref())
        .with_context(|| format!("invalid --server {:?}", conn.server))?;
    cfg.tls_server_name = conn.tls_server_name.clone();
    Ok(kube::Client::try_from(cfg)?)
}

/// The kube-rs config for a shoal server at `server` with an optional bearer token (and
/// the CA of an `https://` server): the one
/// place the binary's clients (CLI verbs, in-process controllers, fleet registration) are
/// configured.
pub(crate) fn kube_config(
    server: &str,
    token: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<kube::Config> {
    let url = server.parse().context("the server URL is not a URI")?;
    let mut cfg = kube::Config::new(url);
    // Field manager "shoal" for writes without ?fieldManager=, and the audit's client.
    shoal_fleet::identify(&mut cfg);
    cfg.auth_info.token = token.map(|t| secrecy::SecretString::from(t.to_string()));
    if let Some(pem) = ca_pem {
        cfg.root_cert = Some(
            shoal_fleet::pem_certs(pem.as_bytes())
                .map_err(|e| anyhow!("the certificate authority: {e}"))?,
        );
    }
    Ok(cfg)
}

impl Client {
    async fn connect(conn: &Conn) -> Result<Self> {
        let kube = kube_client(conn)?;
        let mut client = Client {
            kube,
            resources: Vec::new(),
        };
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        for root in ["/api", "/apis"] {
            let doc = client
                .request(
                    http::Request::get(root)
                        .header(ACCEPT, accept)
                        .body(Vec::new())?,
                )
                .await
                .with_context(|| format!("failed to reach shoal at {}", conn.server))?;
            for group in doc["items"].as_array().into_iter().flatten() {
                let g = group["metadata"]["name"].as_str().unwrap_or("").to_string();
                for v in group["versions"].as_array().into_iter().flatten() {
                    for r in v["resources"].as_array().into_iter().flatten() {
                        client.resources.push(Resource {
                            group: g.clone(),
                            version: v["version"].as_str().unwrap_or("").into(),
                            kind: r["responseKind"]["kind"].as_str().unwrap_or("").into(),
                            plural: r["resource"].as_str().unwrap_or("").into(),
                            singular: r["singularResource"].as_str().unwrap_or("").into(),
                            short_names: r["shortNames"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect(),
                            namespaced: r["scope"] == "Namespaced",
                        });
                    }
                }
            }
        }
        Ok(client)
    }

    async fn request(&self, req: http::Request<Vec<u8>>) -> Result<Value> {
        self.kube.request::<Value>(req).await.map_err(api_error)
    }

    /// Resolves `clusters`, `cluster`, `cl`, `Cluster` or `clusters.shoal.io`.
    fn resolve(&self, name: &str) -> Result<Resource> {
        let lower = name.to_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (lower.clone(), None),
        };
        self.resources
            .iter()
            .find(|r| {
                group.as_ref().is_none_or(|g| *g == r.group)
                    && (r.plural == base
                        || r.singular == base
                        || r.kind.to_lowercase() == base
                        || r.short_names.contains(&base))
            })
            .cloned()
            .ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
    }

    fn resolve_kind(&self, api_version: &str, kind: &str) -> Result<Resource> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
            .ok_or_else(|| anyhow!("no matches for kind {kind:?} in version {api_version:?}"))
    }
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut s = form_urlencoded_pairs(pairs);
    if !s.is_empty() {
        s.insert(0, '?');
    }
    s
}

fn form_urlencoded_pairs(pairs: &[(&str, Option<&str>)]) -> String {
    let present: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    serde_urlencoded::to_string(present).unwrap_or_default()
}

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

pub async fn get(a: GetArgs) -> Result<()> {
    let c = Client::connect(&a.conn).await?;
    let r = c.resolve(&a.resource)?;
    let ns = (!a.all_namespaces).then_some(a.namespace.as_str());
    let mode = a.output.as_deref().unwrap_or("");
    let table = matches!(mode, "" | "wide");
    let accept = if table {
        TABLE_ACCEPT
    } else {
        "application/json"
    };
    let mut results = Vec::new();
    if a.names.is_empty() {
        let path = format!(
            "{}{}",
            r.path(ns, None),
            query(&[("labelSelector", a.selector.as_deref())])
        );
        results.push(
            c.request(
                http::Request::get(path)
                    .header(ACCEPT, accept)
                    .body(Vec::new())?,
            )
            .await?,
        );
    } else {
        for n in &a.names {
            let req = http::Request::get(r.path(Some(&a.namespace), Some(n)))
                .header(ACCEPT, accept)
                .body(Vec::new())?;
            results.push(c.request(req).await?);
        }
    }
    match mode {
        "" | "wide" => {
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut header: Vec<String> = Vec::new();
            for t in &results {
                let cols = t["columnDefinitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let show: Vec<usize> = cols
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| mode == "wide" || c["priority"].as_i64().unwrap_or(0) == 0)
                    .map(|(i, _)| i)
                    .collect();
                header = show
                    .iter()
                    .map(|i| cols[*i]["name"].as_str().unwrap_or("").to_uppercase())
                    .collect();
                if a.all_namespaces && r.namespaced {
                    header.insert(0, "NAMESPACE".into());
                }
                for row in t["rows"].as_array().into_iter().flatten() {
                    let cells = row["cells"].as_array().cloned().unwrap_or_default();
                    let mut line: Vec<String> = show.iter().map(|i| cell(cells.get(*i))).collect();
                    if a.all_namespaces && r.namespaced {
                        line.insert(
                            0,
                            row["object"]["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .into(),
                        );
                    }
                    rows.push(line);
                }
            }
            if rows.is_empty() {
                eprintln!("No resources found");
                return Ok(());
            }
            print_columns(&header, &rows);
        }
        "yaml" | "json" => {
            // As kubectl without --show-managed-fields: who owns which field is noise here.
            for v in &mut results {
                match v["items"].as_array_mut() {
                    Some(items) => items.iter_mut().for_each(hide_managed_fields),
                    None => hide_managed_fields(v),
                }
            }
            let out = if a.names.len() == 1 {
                results.remove(0)
            } else {
                let items: Vec<Value> = results
                    .iter()
                    .flat_map(|v| match v["items"].as_array() {
                        Some(items) => items.clone(),
                        None => vec![v.clone()],
                    })
                    .collect();
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
            };
            if mode == "yaml" {
                print!("{}", serde_saphyr::to_string(&out)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
        "name" => {
            for v in &results {
                let items = v["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![v.clone()]);
                for i in items {
                    println!(
                        "{}/{}",
                        r.qualified(),
                        i["metadata"]["name"].as_str().unwrap_or("")
                    );
                }
            }
        }
        other => bail!("unknown output format {other:?}: expected wide, yaml, json or name"),
    }
    Ok(())
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn print_columns(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let fmt = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        parts.join("   ").trim_end().to_string()
    };
    println!("{}", fmt(header));
    for r in rows {
        println!("{}", fmt(r));
    }
}

fn title(key: &str) -> String {
    let mut out = String::new();
    for (i, ch) in key.chars().enumerate() {
        if i == 0 {
            out.extend(ch.to_uppercase());
        } else if ch.is_uppercase() {
            out.push(' ');
            out.push(ch);
        } else {
            out.push(ch);
        }
    }
    out
}

fn describe_value(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}{}:\n", title(k)));
                        describe_value(out, v, indent + 2);
                    }
                    _ => out.push_str(&format!("{pad}{}:  {}\n", title(k), cell(Some(v)))),
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(_) => {
                        let mut inner = String::new();
                        describe_value(&mut inner, item, indent + 2);
                        let inner = inner.replacen(&format!("{pad}  "), &format!("{pad}- "), 1);
                        out.push_str(&inner);
                    }
                    other => out.push_str(&format!("{pad}- {}\n", cell(Some(other)))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", cell(Some(other)))),
    }
}

fn kv_block(label: &str, map: Option<&Value>) -> String {
    let entries: BTreeMap<String, String> = map
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), cell(Some(v)))).collect())
        .unwrap_or_default();
    if entries.is_empty() {
        return format!("{label:<14}<none>\n");
    }
    let mut s = String::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        let l = if i == 0 {
            format!("{label:<14}")
        } else {
            " ".repeat(14)
        };
        s.push_str(&format!("{l}{k}={v}\n"));
    }
    s
}

/// Renders an object the way `kubectl describe` renders custom resources.
pub fn render_describe(obj: &Value, events: &[Value], now: jiff::Timestamp) -> String {
    let meta = &obj["metadata"];
    let mut s = String::new();
    s.push_str(&format!(
        "{:<14}{}\n",
        "Name:",
        meta["name"].as_str().unwrap_or("")
    ));
    if let Some(ns) = meta["namespace"].as_str() {
        s.push_str(&format!("{:<14}{ns}\n", "Namespace:"));
    }
    s.push_str(&kv_block("Labels:", meta.get("labels")));
    s.push_str(&kv_block("Annotations:", meta.get("annotations")));
    s.push_str(&format!(
        "{:<14}{}\n",
        "API Version:",
        obj["apiVersion"].as_str().unwrap_or("")
    ));
    s.push_str(&format!(
        "{:<14}{}\n",
        "Kind:",
        obj["kind"].as_str().unwrap_or("")
    ));
    let mut rest = meta.clone();
    if let Some(m) = rest.as_object_mut() {
        for k in [
            "name",
            "namespace",
            "labels",
            "annotations",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    s.push_str("Metadata:\n");
    describe_value(&mut s, &rest, 2);
    for part in ["spec", "status"] {
        if let Some(v) = obj.get(part).filter(|v| !v.is_null()) {
            s.push_str(&format!("{}:\n", title(part)));
            describe_value(&mut s, v, 2);
        }
    }
    s.push_str(&render_events(events, now));
    s
}

/// kubectl describe's Events section: oldest first, `Type Reason Age From Message`.
pub fn render_events(events: &[Value], now: jiff::Timestamp) -> String {
    if events.is_empty() {
        return "Events:       <none>\n".into();
    }
    let when = |e: &Value| {
        ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|k| e[*k].as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| when(e));
    let rows: Vec<[String; 5]> = sorted
        .iter()
        .map(|e| {
            let age = when(e).map_or("<unknown>".into(), |t| {
                shoal_apiserver::table::human_duration(now.duration_since(t).as_secs())
            });
            let from = e["reportingComponent"]
                .as_str()
                .or_else(|| e["source"]["component"].as_str())
                .unwrap_or("");
            [
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                age,
                from.to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let header = ["Type", "Reason", "Age", "From", "Message"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..4).map(width).collect();
    let line = |cells: [&str; 5]| {
        let mut l = String::from("  ");
        for (i, c) in cells.iter().enumerate().take(4) {
            l.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        l.push_str(cells[4]);
        l.push('\n');
        l
    };
    let mut out = String::from("Events:\n");
    out.push_str(&line(header));
    let dashes: Vec<String> = header.iter().map(|h| "-".repeat(h.len())).collect();
    out.push_str(&line([
        &dashes[0], &dashes[1], &dashes[2], &dashes[3], &dashes[4],
    ]));
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out
}

pub async fn describe(a: DescribeArgs) -> Result<()> {
    let c = Client::connect(&a.conn).await?;
    let r = c.resolve(&a.resource)?;
    let obj = c
        .request(http::Request::get(r.path(Some(&a.namespace), Some(&a.name))).body(Vec::new())?)
        .await?;
    let events = events_of(&c, &obj).await;
    let now = jiff::Timestamp::now();
    if r.group == "shoal.io" && r.kind == "PipelineRun" {
        let run: shoal_core::taskflow::PipelineRun =
            serde_json::from_value(obj).context("the server sent a malformed PipelineRun")?;
        println!(
            "Name:         {}",
            run.metadata.name.as_deref().unwrap_or("")
        );
        println!(
            "Namespace:    {}",
            run.metadata.namespace.as_deref().unwrap_or("")
        );
        println!("Pipeline:     {}", run.spec.pipeline_ref.name);
        if run.spec.paused {
            println!("Paused:       true");
        }
        print!("{}", crate::pipelinerun::render_dag(&run)?);
        return Ok(());
    }
    if r.group == "shoal.io" && r.kind == "Component" {
        let component: shoal_core::kinds::Component =
            serde_json::from_value(obj.clone()).context("the server sent a malformed Component")?;
        let text = render_describe(&obj, &events, now);
        // The fleet view goes before the events, as kubectl prints events last.
        let (head, events) = text.rsplit_once("Events:").unwrap_or((&text, ""));
        print!("{head}");
        print!(
            "{}",
            crate::component::render_fleet_view(component.status.as_ref())
        );
        if !events.is_empty() {
            print!("Events:{events}");
        }
        return Ok(());
    }
    print!("{}", render_describe(&obj, &events, now));
    Ok(())
}

/// The Events about `obj`, found as kubectl describe finds them: by the involved
/// object's kind, name, namespace and uid (in its namespace; in all for a cluster-scoped
/// object). A server that cannot say gets an empty list: the object is what was asked.
async fn events_of(c: &Client, obj: &Value) -> Vec<Value> {
    let meta = &obj["metadata"];
    let mut fields = vec![
        format!("involvedObject.kind={}", obj["kind"].as_str().unwrap_or("")),
        format!(
            "involvedObject.name={}",
            meta["name"].as_str().unwrap_or("")
        ),
    ];
    if let Some(uid) = meta["uid"].as_str() {
        fields.push(format!("involvedObject.uid={uid}"));
    }
    let path = match meta["namespace"].as_str() {
        Some(ns) => {
            fields.push(format!("involvedObject.namespace={ns}"));
            format!("/api/v1/namespaces/{ns}/events")
        }
        None => "/api/v1/events".to_string(),
    };
    let selector = fields.join(",");
    let query = query(&[("fieldSelector", Some(&selector))]);
    let Ok(req) = http::Request::get(format!("{path}{query}")).body(Vec::new()) else {
        return Vec::new();
    };
    match c.request(req).await {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn read_documents(path: &PathBuf) -> Result<Vec<Value>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

pub async fn apply(a: ApplyArgs) -> Result<()> {
    let c = Client::connect(&a.conn).await?;
    for doc in read_documents(&a.filename)? {
        let av = doc["apiVersion"]
            .as_str()
            .ok_or_else(|| anyhow!("a document has no apiVersion"))?;
        let kind = doc["kind"]
            .as_str()
            .ok_or_else(|| anyhow!("a document has no kind"))?;
        let r = c.resolve_kind(av, kind)?;
        let name = doc["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("a {kind} has no metadata.name"))?
            .to_string();
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&a.namespace)
            .to_string();
        let body = serde_json::to_vec(&doc)?;
        let existing = c
            .kube
            .request::<Value>(http::Request::get(r.path(Some(&ns), Some(&name))).body(Vec::new())?)
            .await;
        let verb = match existing {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let req = http::Request::post(format!(
                    "{}?fieldValidation=Strict",
                    r.path(Some(&ns), None)
                ))
                .header(CONTENT_TYPE, "application/json")
                .body(body)?;
                c.request(req).await?;
                "created"
            }
            Err(e) => return Err(api_error(e)),
            Ok(before) => {
                let mut patch = doc.clone();
                if let Some(m) = patch.as_object_mut() {
                    m.remove("status");
                }
                let req = http::Request::patch(format!(
                    "{}?fieldValidation=Strict",
                    r.path(Some(&ns), Some(&name))
                ))
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(serde_json::to_vec(&patch)?)?;
                let after = c.request(req).await?;
                if after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"] {
                    "unchanged"
                } else {
                    "configured"
                }
            }
        };
        println!("{}/{name} {verb}", r.qualified());
    }
    Ok(())
}

pub async fn delete(a: DeleteArgs) -> Result<()> {
    let c = Client::connect(&a.conn).await?;
    let mut targets: Vec<(Resource, String, String)> = Vec::new();
    if let Some(f) = &a.filename {
        for doc in read_documents(f)? {
            let r = c.resolve_kind(
                doc["apiVersion"].as_str().unwrap_or(""),
                doc["kind"].as_str().unwrap_or(""),
            )?;
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&a.namespace)
                .to_string();
            targets.push((
                r,
                ns,
                doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            ));
        }
    } else {
        let (kind, names) = a
            .args
            .split_first()
            .ok_or_else(|| anyhow!("say what to delete: shoal delete KIND NAME… or -f FILE"))?;
        if names.is_empty() {
            bail!("name the {kind} to delete");
        }
        let r = c.resolve(kind)?;
        targets.extend(
            names
                .iter()
                .map(|n| (r.clone(), a.namespace.clone(), n.clone())),
        );
    }
    for (r, ns, name) in targets {
        c.request(http::Request::delete(r.path(Some(&ns), Some(&name))).body(Vec::new())?)
            .await?;
        println!("{} {name:?} deleted", r.qualified());
    }
    Ok(())
}

/// Removes `metadata.managedFields` from an object, as kubectl's output does by default.
fn hide_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lists_events_oldest_first_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let events = [
            json!({"type": "Normal", "reason": "Ready", "message": "back",
                "lastTimestamp": "2026-01-01T00:50:00Z", "reportingComponent": "shoal-cluster-prober"}),
            json!({"type": "Warning", "reason": "NotReady", "message": "down",
                "lastTimestamp": "2026-01-01T00:30:00Z", "source": {"component": "shoal-cluster-prober"}}),
        ];
        let s = render_events(&events, now);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "Events:");
        assert_eq!(
            lines[1],
            "  Type     Reason    Age  From                  Message"
        );
        assert_eq!(
            lines[2],
            "  ----     ------    ---  ----                  -------"
        );
        assert_eq!(
            lines[3],
            "  Warning  NotReady  30m  shoal-cluster-prober  down"
        );
        assert_eq!(
            lines[4],
            "  Normal   Ready     10m  shoal-cluster-prober  back"
        );
    }

    #[test]
    fn describe_titles_fields_and_lists_labels() {
        let obj = json!({"apiVersion": "shoal.io/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "c-1", "labels": {"env": "prod", "tier": "1"}, "uid": "u"},
            "spec": {"endpoint": {"server": "https://x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let s = render_describe(&obj, &[], jiff::Timestamp::now());
        assert!(s.ends_with("Events:       <none>\n"), "{s}");
        assert!(s.contains("Name:         c-1"), "{s}");
        assert!(
            s.contains("Labels:       env=prod\n              tier=1"),
            "{s}"
        );
        assert!(s.contains("  Endpoint:\n    Server:  https://x"), "{s}");
        assert!(
            s.contains("- Status:  True") || s.contains("- Type:  Ready"),
            "{s}"
        );
    }

    #[test]
    fn resource_paths_follow_scope() {
        let r = Resource {
            group: "shoal.io".into(),
            version: "v1alpha1".into(),
            kind: "Cluster".into(),
            plural: "clusters".into(),
            singular: "cluster".into(),
            short_names: vec![],
            namespaced: false,
        };
        assert_eq!(
            r.path(Some("default"), Some("c")),
            "/apis/shoal.io/v1alpha1/clusters/c"
        );
        assert_eq!(r.qualified(), "cluster.shoal.io");
    }
}
