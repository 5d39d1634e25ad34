#!/usr/bin/env python3
"""The official Kubernetes Python client (PyPI `kubernetes`) against a real `shoal serve`.

Run by crates/shoal/tests/e2e/python.rs, with the kubeconfig the server wrote in
$SHOAL_KUBECONFIG and a scratch directory in $SHOAL_SCRATCH. Every check is an assert:
the first one that fails ends the script with a traceback and a non-zero exit, which
fails the Rust test. Sections, in order:

  typed      CoreV1Api: Namespace, Secret and Event bodies without apiVersion/kind
             (the typed models send none): create, read, list, patch, delete
  custom     CustomObjectsApi on shoal.io/v1alpha1 Clusters: create, get, list, patch,
             delete
  dynamic    DynamicClient: discovery of core/v1 and shoal.io/v1alpha1, a list through it
  watch      Watch().stream(..., resource_version=rv) sees exactly the later events
  paging     limit + _continue, typed and custom
  conflict   a replace carrying a stale resourceVersion is a 409, typed and custom
"""

import os
import sys
import time

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION = "shoal.io", "v1alpha1"
NS = "py-suite"
# Waits poll a condition against this deadline; nothing sleeps for a fixed time.
DEADLINE_S = 30


def section(name):
    print(f"== {name}", flush=True)


def eventually(what, probe):
    """Polls probe() until it returns a truthy value; fails naming `what` after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        v = probe()
        if v:
            return v
        assert time.monotonic() < deadline, f"gave up after {DEADLINE_S}s: {what}"
        time.sleep(0.05)


def status_of(call):
    """The HTTP status of the ApiException `call()` raises; fails if it succeeds."""
    try:
        call()
    except ApiException as e:
        return e.status
    raise AssertionError("expected an API error, the call succeeded")


def gone(call):
    def probe():
        try:
            call()
            return False
        except ApiException as e:
            assert e.status == 404, f"expected 404, got {e.status}: {e.body}"
            return True

    return probe


def mk_cluster(name, labels):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": labels},
        "spec": {"endpoint": {"server": f"https://{name}.example.test:6443"}},
    }


cfg = client.Configuration()
config.load_kube_config(config_file=os.environ["SHOAL_KUBECONFIG"], client_configuration=cfg)
api = client.ApiClient(cfg)
core = client.CoreV1Api(api)
custom = client.CustomObjectsApi(api)
meta = client.V1ObjectMeta

# ---------------------------------------------------------------------------------------
section("typed: Namespace")
body = client.V1Namespace(metadata=meta(name=NS, labels={"suite": "python"}))
assert body.to_dict().get("kind") is None, "the typed model sends no kind: the case under test"
ns = core.create_namespace(body)
assert (ns.api_version, ns.kind) == ("v1", "Namespace"), (ns.api_version, ns.kind)
assert ns.metadata.uid and ns.metadata.resource_version
assert core.read_namespace(NS).metadata.labels["suite"] == "python"
names = [n.metadata.name for n in core.list_namespace(label_selector="suite=python").items]
assert names == [NS], names
patched = core.patch_namespace(NS, {"metadata": {"labels": {"patched": "yes"}}})
assert patched.metadata.labels == {"suite": "python", "patched": "yes"}, patched.metadata.labels
scratch_ns = core.create_namespace(client.V1Namespace(metadata=meta(name="py-scratch")))
core.delete_namespace(scratch_ns.metadata.name)
eventually("namespace py-scratch deleted", gone(lambda: core.read_namespace("py-scratch")))

section("typed: Secret")
secret = core.create_namespaced_secret(
    NS, client.V1Secret(metadata=meta(name="creds"), string_data={"token": "s3cret"})
)
assert secret.kind == "Secret" and secret.metadata.namespace == NS
read = core.read_namespaced_secret("creds", NS)
assert read.data == {"token": "czNjcmV0"}, read.data  # base64("s3cret")
listed = [s.metadata.name for s in core.list_namespaced_secret(NS).items]
assert "creds" in listed, listed
patched = core.patch_namespaced_secret("creds", NS, {"metadata": {"labels": {"rotated": "1"}}})
assert patched.metadata.labels == {"rotated": "1"} and patched.data == read.data
core.delete_namespaced_secret("creds", NS)
eventually("secret creds deleted", gone(lambda: core.read_namespaced_secret("creds", NS)))

section("typed: Event")
event = core.create_namespaced_event(
    NS,
    client.CoreV1Event(
        metadata=meta(name="py-event"),
        involved_object=client.V1ObjectReference(kind="Namespace", name=NS, api_version="v1"),
        reason="Tested",
        message="the python client wrote an event",
        type="Normal",
    ),
)
assert event.kind == "Event" and event.reason == "Tested", event
assert core.read_namespaced_event("py-event", NS).message == "the python client wrote an event"
assert [e.metadata.name for e in core.list_namespaced_event(NS).items] == ["py-event"]
patched = core.patch_namespaced_event("py-event", NS, {"message": "patched"})
assert patched.message == "patched", patched.message
core.delete_namespaced_event("py-event", NS)
eventually("event deleted", gone(lambda: core.read_namespaced_event("py-event", NS)))

# ---------------------------------------------------------------------------------------
section("custom: Cluster")
created = custom.create_cluster_custom_object(
    GROUP, VERSION, "clusters", mk_cluster("py-c1", {"env": "prod"})
)
assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"], created
got = custom.get_cluster_custom_object(GROUP, VERSION, "clusters", "py-c1")
assert got["spec"]["endpoint"]["server"] == "https://py-c1.example.test:6443", got
items = custom.list_cluster_custom_object(GROUP, VERSION, "clusters", label_selector="env=prod")
assert [c["metadata"]["name"] for c in items["items"]] == ["py-c1"], items
patched = custom.patch_cluster_custom_object(
    GROUP, VERSION, "clusters", "py-c1", {"metadata": {"labels": {"tier": "1"}}}
)
assert patched["metadata"]["labels"] == {"env": "prod", "tier": "1"}, patched["metadata"]
no_kind = mk_cluster("py-nokind", {})
del no_kind["kind"]
code = status_of(
    lambda: custom.create_cluster_custom_object(GROUP, VERSION, "clusters", no_kind)
)
assert code == 400, f"a custom resource must name its kind, as in kube-apiserver: {code}"
custom.delete_cluster_custom_object(GROUP, VERSION, "clusters", "py-c1")
eventually(
    "cluster py-c1 deleted",
    gone(lambda: custom.get_cluster_custom_object(GROUP, VERSION, "clusters", "py-c1")),
)

# ---------------------------------------------------------------------------------------
section("dynamic: discovery")
dyn = dynamic.DynamicClient(
    api, cache_file=os.path.join(os.environ["SHOAL_SCRATCH"], "discovery.json")
)
clusters = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Cluster")
assert (clusters.name, clusters.namespaced) == ("clusters", False), clusters
namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
assert namespaces.name == "namespaces", namespaces
secrets = dyn.resources.get(api_version="v1", kind="Secret")
assert secrets.namespaced, secrets
listed = [n.metadata.name for n in namespaces.get(label_selector="suite=python").items]
assert listed == [NS], listed
dyn.create(body=mk_cluster("py-dyn", {"via": "dynamic"}), resource=clusters)
assert clusters.get(name="py-dyn").metadata.labels.via == "dynamic"
clusters.delete(name="py-dyn")

# ---------------------------------------------------------------------------------------
section("watch: from a resourceVersion")
before = core.create_namespaced_secret(NS, client.V1Secret(metadata=meta(name="w-before")))
rv = core.list_namespaced_secret(NS).metadata.resource_version
core.create_namespaced_secret(NS, client.V1Secret(metadata=meta(name="w-after")))
core.patch_namespaced_secret("w-after", NS, {"metadata": {"labels": {"changed": "yes"}}})
core.delete_namespaced_secret("w-before", NS)
# The last write marks the end: the stream is read up to it, so nothing waits on a timer.
core.create_namespaced_secret(NS, client.V1Secret(metadata=meta(name="w-end")))
seen = []
w = watch.Watch()
for e in w.stream(core.list_namespaced_secret, NS, resource_version=rv, timeout_seconds=DEADLINE_S):
    if e["type"] == "BOOKMARK":
        continue
    seen.append((e["type"], e["object"].metadata.name))
    if seen[-1] == ("ADDED", "w-end"):
        w.stop()
want = [("ADDED", "w-after"), ("MODIFIED", "w-after"), ("DELETED", "w-before"), ("ADDED", "w-end")]
assert seen == want, f"watch from {rv}: {seen}"

# ---------------------------------------------------------------------------------------
section("paging: limit and _continue")
for i in range(5):
    custom.create_cluster_custom_object(
        GROUP, VERSION, "clusters", mk_cluster(f"py-page-{i}", {"paging": "yes"})
    )
pages, token = [], None
while True:
    page = custom.list_cluster_custom_object(
        GROUP, VERSION, "clusters", label_selector="paging=yes", limit=2, _continue=token
    )
    pages.append([c["metadata"]["name"] for c in page["items"]])
    token = page["metadata"].get("continue")
    if not token:
        break
    assert len(pages) < 10, f"paging does not end: {pages}"
assert [len(p) for p in pages] == [2, 2, 1], pages
assert sorted(n for p in pages for n in p) == [f"py-page-{i}" for i in range(5)], pages
for i in range(3):
    core.create_namespace(client.V1Namespace(metadata=meta(name=f"py-page-{i}", labels={"paging": "yes"})))
first = core.list_namespace(label_selector="paging=yes", limit=2)
assert len(first.items) == 2 and first.metadata._continue, first.metadata
rest = core.list_namespace(label_selector="paging=yes", limit=2, _continue=first.metadata._continue)
assert len(rest.items) == 1 and not rest.metadata._continue, rest.metadata
assert {n.metadata.name for n in first.items + rest.items} == {f"py-page-{i}" for i in range(3)}

# ---------------------------------------------------------------------------------------
section("conflict: a stale replace is a 409")
stale = core.create_namespaced_secret(
    NS, client.V1Secret(metadata=meta(name="cas"), string_data={"v": "1"})
)
fresh = core.read_namespaced_secret("cas", NS)
fresh.string_data = {"v": "2"}
replaced = core.replace_namespaced_secret("cas", NS, fresh)
assert replaced.metadata.resource_version != stale.metadata.resource_version
stale.string_data = {"v": "3"}
code = status_of(lambda: core.replace_namespaced_secret("cas", NS, stale))
assert code == 409, f"a replace at a stale resourceVersion: {code}"
assert core.read_namespaced_secret("cas", NS).data == {"v": "Mg=="}, "the stale write changed nothing"
c = custom.get_cluster_custom_object(GROUP, VERSION, "clusters", "py-page-0")
c["metadata"]["labels"]["round"] = "1"
custom.replace_cluster_custom_object(GROUP, VERSION, "clusters", "py-page-0", c)
c["metadata"]["labels"]["round"] = "2"
code = status_of(
    lambda: custom.replace_cluster_custom_object(GROUP, VERSION, "clusters", "py-page-0", c)
)
assert code == 409, f"a custom replace at a stale resourceVersion: {code}"

print("python client suite: all sections passed", flush=True)
sys.exit(0)
