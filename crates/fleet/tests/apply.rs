//! The fleet driver against a simulated cluster served over HTTP in-process: the same
//! path a release takes to a real cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_apiserver::{ApiServer, Registry, ServerConfig};
use shoal_core::clock::{ScaledClock, SharedClock, SystemClock};
use shoal_fleet::{Action, Fleet, Member, health, read_workload};
use shoal_sim::Simulation;
use shoal_sim::runtime::SimConfig;
use tokio_util::sync::CancellationToken;

/// A simulated fleet of `clusters` × 4 nodes at 20× virtual time, served on loopback.
async fn serve(
    clusters: u32,
    faults: Option<&str>,
) -> (String, Arc<Simulation>, CancellationToken) {
    let real: SharedClock = Arc::new(SystemClock);
    let start = real.now();
    let clock: SharedClock = Arc::new(ScaledClock::new(real, start, 20.0).unwrap());
    let stop = CancellationToken::new();
    let sim = Arc::new(Simulation::build(
        &shoal_sim::fleet::uniform(clusters, 4),
        clock.clone(),
        SimConfig::default(),
    ));
    if let Some(yaml) = faults {
        let profile = shoal_sim::faults::FaultProfile::from_yaml(yaml).unwrap();
        sim.set_faults(shoal_sim::faults::FaultModel::compile(&profile, start).unwrap());
    }
    let mut drivers = sim.spawn(&stop);
    tokio::spawn(async move { while drivers.join_next().await.is_some() {} });
    let server = ApiServer::new(
        shoal_store::Store::memory(),
        Registry::shoal(),
        clock,
        ServerConfig::default(),
        prometheus_client::registry::Registry::default(),
        stop.clone(),
    )
    .with_member_clusters(sim.clone(), shoal_sim::runtime::registry());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(shoal_apiserver::serve(
        listener,
        server.router(),
        stop.clone(),
    ));
    (url, sim, stop)
}

fn daemonset(image: &str, selector_app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system", "labels": {"team": "net"}},
        "spec": {
            "selector": {"matchLabels": {"app": selector_app}},
            "template": {"metadata": {"labels": {"app": selector_app}},
                         "spec": {"containers": [{"name": "agent", "image": image}]}}
        }
    })
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}

async fn live(fleet: &Fleet, member: &Member) -> Value {
    let (api, _) = fleet
        .api_for(member, &daemonset("x", "agent"))
        .await
        .unwrap();
    serde_json::to_value(api.get("agent").await.unwrap()).unwrap()
}

#[tokio::test]
async fn apply_creates_patches_only_what_changed_and_keeps_what_others_set() {
    within("three-way apply", async {
        let (url, sim, _stop) = serve(1, None).await;
        let name = sim.members()[0].cluster.name().to_string();
        let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
        let fleet = Fleet::new();
        let dangerous = vec!["spec.selector".to_string()];

        let a = fleet
            .apply(&member, &daemonset("agent:1", "agent"), &dangerous, false)
            .await
            .unwrap();
        assert_eq!(a.action, Action::Created);
        let a = fleet
            .apply(&member, &daemonset("agent:1", "agent"), &dangerous, false)
            .await
            .unwrap();
        assert_eq!(a.action, Action::Unchanged, "{}", a.patch);

        // Someone else labels the object: that label survives our next apply.
        let (api, _) = fleet
            .api_for(&member, &daemonset("x", "agent"))
            .await
            .unwrap();
        api.patch(
            "agent",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"oncall": "alice"}}})),
        )
        .await
        .unwrap();

        // A dry run reports the patch and writes nothing.
        let dry = fleet
            .apply(&member, &daemonset("agent:2", "agent"), &dangerous, true)
            .await
            .unwrap();
        assert_eq!(dry.action, Action::Patched);
        assert_eq!(
            dry.patch.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("agent:2"))
        );
        assert_eq!(
            live(&fleet, &member)
                .await
                .pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("agent:1"))
        );

        // The new version, with a selector change that must not go through.
        let a = fleet
            .apply(&member, &daemonset("agent:2", "other"), &dangerous, false)
            .await
            .unwrap();
        assert_eq!(a.action, Action::Patched);
        assert_eq!(a.dropped.len(), 1, "{:?}", a.dropped);
        assert_eq!(a.dropped[0].path, "spec.selector");
        assert!(a.patch.pointer("/metadata/labels").is_none(), "{}", a.patch);
        let now = live(&fleet, &member).await;
        assert_eq!(
            now.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("agent:2"))
        );
        assert_eq!(
            now.pointer("/spec/selector/matchLabels/app"),
            Some(&json!("agent"))
        );
        assert_eq!(
            now.pointer("/metadata/labels/oncall"),
            Some(&json!("alice"))
        );
        assert_eq!(now.pointer("/metadata/labels/team"), Some(&json!("net")));

        // And it reaches health: every node runs the new version.
        let h = loop {
            let h = health(
                &fleet,
                &member,
                "apps/v1",
                "DaemonSet",
                "kube-system",
                "agent",
            )
            .await
            .unwrap();
            if h.ready {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!((h.desired, h.updated, h.available), (4, 4, 4));
    })
    .await;
}

#[tokio::test]
async fn health_reports_crash_looping_pods_of_a_bad_version() {
    within("health of a crash-looping version", async {
        let faults =
            "seed: 1\nfaults:\n  - podCrashLoop: {name: bad, version: bad, probability: 1}\n";
        let (url, sim, _stop) = serve(1, Some(faults)).await;
        let name = sim.members()[0].cluster.name().to_string();
        let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
        let fleet = Fleet::new();
        fleet
            .apply(&member, &daemonset("agent:bad", "agent"), &[], false)
            .await
            .unwrap();
        let h = loop {
            let h = health(
                &fleet,
                &member,
                "apps/v1",
                "DaemonSet",
                "kube-system",
                "agent",
            )
            .await
            .unwrap();
            if h.crash_looping > 0 {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!h.ready);
        assert!(h.message.contains("crash-looping"), "{}", h.message);
    })
    .await;
}

#[tokio::test]
async fn read_workload_gives_the_object_its_last_applied_copy_and_its_pods_or_none() {
    within("read_workload", async {
        let (url, sim, _stop) = serve(1, None).await;
        let name = sim.members()[0].cluster.name().to_string();
        let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
        let fleet = Fleet::new();
        let read = || {
            read_workload(
                &fleet,
                &member,
                "apps/v1",
                "DaemonSet",
                "kube-system",
                "agent",
            )
        };
        assert!(read().await.unwrap().is_none(), "nothing applied yet");

        fleet
            .apply(&member, &daemonset("agent:1", "agent"), &[], false)
            .await
            .unwrap();
        let w = loop {
            let w = read().await.unwrap().expect("applied above");
            if w.pods.len() == 4 {
                break w;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(w.last_applied, Some(daemonset("agent:1", "agent")));
        assert_eq!(
            w.object.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("agent:1"))
        );
        assert!(
            w.pods
                .iter()
                .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("agent:1"))),
            "{:?}",
            w.pods
        );
    })
    .await;
}

/// A manifest is user input: one whose `metadata.annotations` is not a map is an error
/// naming the object and the field (it panicked, and a task reported only "executor
/// panicked"), and nothing is created.
#[tokio::test]
async fn a_manifest_whose_annotations_are_not_a_map_is_an_error_not_a_panic() {
    within("apply of a bad manifest", async {
        let (url, sim, _stop) = serve(1, None).await;
        let name = sim.members()[0].cluster.name().to_string();
        let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
        let fleet = Fleet::new();
        let mut bad = daemonset("agent:1", "agent");
        bad["metadata"]["annotations"] = json!("team=net");
        let e = fleet.apply(&member, &bad, &[], false).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("DaemonSet kube-system/agent: metadata.annotations must be a map"),
            "{e}"
        );
        let (api, _) = fleet.api_for(&member, &bad).await.unwrap();
        assert!(api.get_opt("agent").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn an_apply_prepared_from_a_copy_already_read_sends_what_a_read_would_and_reads_nothing() {
    within("prepare from a known copy", async {
        let (url, sim, _stop) = serve(1, None).await;
        let name = sim.members()[0].cluster.name().to_string();
        let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
        let fleet = Fleet::new();
        let dangerous = vec!["spec.selector".to_string()];
        let v1 = daemonset("agent:1", "agent");
        let v2 = daemonset("agent:2", "other");

        // Not there: a create, as prepare would decide.
        let p = fleet
            .prepare_from(&member, &v1, &dangerous, None)
            .await
            .unwrap();
        assert!(p.live.is_none());
        assert_eq!(p.send(false).await.unwrap().action, Action::Created);

        // There: the same patch and the same refusal of a dangerous field as from a GET,
        // with no GET sent (the member's request count for daemonsets does not move).
        let copy = live(&fleet, &member).await;
        let from_get = fleet.prepare(&member, &v2, &dangerous).await.unwrap();
        let root = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let gets = || async {
            let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
            let text = root.request_text(req).await.unwrap();
            text.lines()
                .filter(|l| {
                    l.starts_with("apiserver_requests_total{") && l.contains("verb=\"get\"")
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
        };
        let before = gets().await;
        let from_copy = fleet
            .prepare_from(&member, &v2, &dangerous, Some(copy))
            .await
            .unwrap();
        assert_eq!(gets().await, before, "prepare_from read nothing");
        let _ = live(&fleet, &member).await;
        assert!(gets().await > before, "a GET of the member is counted");
        assert_eq!(from_copy.dropped(), from_get.dropped());
        let (a, b) = (
            from_get.send(true).await.unwrap(),
            from_copy.send(false).await.unwrap(),
        );
        assert_eq!((a.action, &a.patch), (b.action, &b.patch));
        assert_eq!(b.dropped[0].path, "spec.selector");
        assert_eq!(
            live(&fleet, &member)
                .await
                .pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("agent:2"))
        );
    })
    .await;
}

/// The sum of the server's `apiserver_requests_total` series for `verb`.
async fn requests(url: &str, verb: &str) -> f64 {
    let root = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = root.request_text(req).await.unwrap();
    let verb = format!("verb=\"{verb}\"");
    text.lines()
        .filter(|l| l.starts_with("apiserver_requests_total{") && l.contains(&verb))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One simulated member, reached at its URL, with the agent DaemonSet applied to it
/// through `fleet`: the server's URL, the simulation, its stop token, the member and the
/// DaemonSet.
async fn agent_on_one_member(
    fleet: &Fleet,
) -> (String, Arc<Simulation>, CancellationToken, Member, Value) {
    let (url, sim, stop) = serve(1, None).await;
    let name = sim.members()[0].cluster.name().to_string();
    let member = Member::at(&name, &format!("{url}/clusters/{name}")).unwrap();
    let ds = daemonset("agent:1", "agent");
    fleet
        .prepare(&member, &ds, &[])
        .await
        .unwrap()
        .send(false)
        .await
        .unwrap();
    (url, sim, stop, member, ds)
}

async fn observed(follow: &mut shoal_fleet::Follow) -> shoal_fleet::WorkloadHealth {
    loop {
        if let shoal_fleet::Reading::Observed { health, .. } = follow.reading() {
            return health;
        }
        follow.changed().await;
    }
}

#[tokio::test]
async fn follows_of_one_workload_share_their_watches_until_the_last_has_been_gone_a_while() {
    within("shared follows", async {
        let fleet = Fleet::new().with_follow_linger(Duration::from_millis(300));
        let (url, _sim, _stop, member, ds) = agent_on_one_member(&fleet).await;
        let name = &member.name;

        let lists = requests(&url, "list").await;
        let mut first = shoal_fleet::Follow::start(&fleet, &member, &ds).await.unwrap();
        let health = observed(&mut first).await;
        let after_first = requests(&url, "list").await;
        assert!(after_first >= lists + 2.0, "the workload and its pods were listed");

        // A second follow while the first lives, and a third just after both are gone:
        // the same watches, read at once, with no list of their own.
        let second = shoal_fleet::Follow::start(&fleet, &member, &ds).await.unwrap();
        assert!(
            matches!(second.reading(), shoal_fleet::Reading::Observed { health: ref h, .. } if h.total == health.total),
            "{:?}",
            second.reading()
        );
        drop((first, second));
        let third = shoal_fleet::Follow::start(&fleet, &member, &ds).await.unwrap();
        assert!(matches!(third.reading(), shoal_fleet::Reading::Observed { .. }));
        assert_eq!(requests(&url, "list").await, after_first, "no list for a joined follow");
        assert_eq!(fleet.followed(), 1);

        // Another client of the same member (new credentials) does not join them.
        let other = Member::at(name, &format!("{url}/clusters/{name}")).unwrap();
        let mut elsewhere = shoal_fleet::Follow::start(&fleet, &other, &ds).await.unwrap();
        observed(&mut elsewhere).await;
        assert!(requests(&url, "list").await > after_first);
        assert_eq!(fleet.followed(), 2);

        // Once the last follow has been gone for the linger, the watches stop.
        drop((third, elsewhere));
        while fleet.followed() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before = requests(&url, "list").await;
        let mut fresh = shoal_fleet::Follow::start(&fleet, &member, &ds).await.unwrap();
        assert_eq!(fresh.reading(), shoal_fleet::Reading::Syncing, "a new watch");
        observed(&mut fresh).await;
        assert!(requests(&url, "list").await >= before + 2.0, "listed again");
    })
    .await;
}

#[tokio::test]
async fn watches_that_fail_are_joined_and_stop_with_their_last_follow_not_a_linger_later() {
    within("a failing share", async {
        let fleet = Fleet::new().with_follow_linger(Duration::from_secs(3600));
        let (_url, sim, _stop, member, ds) = agent_on_one_member(&fleet).await;
        let mut first = shoal_fleet::Follow::start(&fleet, &member, &ds)
            .await
            .unwrap();
        observed(&mut first).await;

        // The member answers nothing but 503 from now on: the watches fail.
        let profile = shoal_sim::faults::FaultProfile::from_yaml(
            "seed: 1\nfaults:\n  - apiServer: {name: down, errorRate: 1.0, errorCode: 503}\n",
        )
        .unwrap();
        // From now on in real time, which the simulated clock (20×) is already past.
        let real: SharedClock = Arc::new(SystemClock);
        sim.set_faults(shoal_sim::faults::FaultModel::compile(&profile, real.now()).unwrap());
        while !matches!(first.reading(), shoal_fleet::Reading::Failing { .. }) {
            first.changed().await;
        }

        // A newcomer joins the failing watches rather than making a second set.
        let second = shoal_fleet::Follow::start(&fleet, &member, &ds)
            .await
            .unwrap();
        assert!(matches!(
            second.reading(),
            shoal_fleet::Reading::Failing { .. }
        ));
        assert_eq!(fleet.followed(), 1);

        // Nobody waits on them once both are gone: they stop at once, not an hour later.
        drop((first, second));
        assert_eq!(fleet.followed(), 0);
    })
    .await;
}
