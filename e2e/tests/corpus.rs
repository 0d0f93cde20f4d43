//! A corpus of malformed and hostile manifests applied in one run: each is rejected by the API
//! server with a message naming the field, or accepted and reported Ready=False with a reason.
//! The controller never stalls, and the valid Service beside them stays Ready and keeps scaling.

mod common;

use common::*;
use conpaas_e2e::wait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// Server-side apply names list-map items by key, schema validation by index: either names it.
const COUNT: &str = "spec.roles[0].count|.spec.roles[name=\"node\"].count";

enum Expect {
    /// The API server refuses it; its message contains this text (or one of `|`-separated ones).
    Rejected(&'static str),
    /// Accepted; the Service reports Ready=False with this reason.
    NotReady(&'static str),
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

fn hw(roles: Value) -> Value {
    json!({"application": "demo", "type": "helloworld", "roles": roles})
}

fn generic(extra: Value) -> Value {
    let mut spec = json!({"application": "demo", "type": "generic", "roles": [{"name": "master", "count": 1}]});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn with(mut spec: Value, key: &str, value: Value) -> Value {
    spec[key] = value;
    spec
}

fn cloud(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Cloud", "metadata": {"name": name}, "spec": spec})
}

fn app(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Application", "metadata": {"name": name}, "spec": spec})
}

fn version(v: Value) -> Value {
    json!({"code": {"versions": [v]}})
}

fn corpus() -> Vec<(Value, Expect)> {
    use Expect::*;
    let node = |count: Value| hw(json!([{"name": "node", "count": count}]));
    let sha = "a".repeat(64);
    let many = |n: usize, f: &dyn Fn(usize) -> Value| Value::Array((0..n).map(f).collect());
    let mut c: Vec<(Value, Expect)> = vec![
        // Wrong types.
        (
            service("t01", json!({"application": "demo", "type": 5})),
            Rejected("spec.type"),
        ),
        (service("t02", hw(json!("node"))), Rejected("spec.roles")),
        (service("t03", node(json!("three"))), Rejected(COUNT)),
        (service("t04", node(json!(1.5))), Rejected(COUNT)),
        (service("t05", node(json!(true))), Rejected(COUNT)),
        (
            service("t06", with(node(json!(1)), "state", json!("Paused"))),
            Rejected("spec.state"),
        ),
        (
            service("t07", with(node(json!(1)), "state", json!("running"))),
            Rejected("spec.state"),
        ),
        (
            service("t08", with(node(json!(1)), "settings", json!(["a", "b"]))),
            Rejected("spec.settings"),
        ),
        (
            service(
                "t09",
                with(node(json!(1)), "settings", json!({"greeting": 5})),
            ),
            Rejected("spec.settings.greeting"),
        ),
        (
            service("t10", with(node(json!(1)), "startupScript", json!(42))),
            Rejected("spec.startupScript"),
        ),
        (
            service("t11", with(node(json!(1)), "links", json!("db"))),
            Rejected("spec.links"),
        ),
        (
            service(
                "t12",
                with(node(json!(1)), "links", json!([{"name": "db"}])),
            ),
            Rejected("spec.links[0]|.spec.links: element 0"),
        ),
        (
            service("t13", with(node(json!(1)), "application", json!(7))),
            Rejected("spec.application"),
        ),
        (
            service(
                "t14",
                with(
                    node(json!(1)),
                    "health",
                    json!({"heartbeatTimeoutSeconds": "fast"}),
                ),
            ),
            Rejected("spec.health.heartbeatTimeoutSeconds"),
        ),
        (
            service("t15", with(node(json!(1)), "deletionPolicy", json!("Keep"))),
            Rejected("spec.deletionPolicy"),
        ),
        (
            service("t16", with(node(json!(1)), "code", json!([]))),
            Rejected("spec.code"),
        ),
        (
            service("t17", with(node(json!(1)), "code", json!({"versions": {}}))),
            Rejected("spec.code.versions"),
        ),
        (service("t18", json!("hello")), Rejected("spec")),
        // A role entry may leave its count out, but then spec.replicas and the entry's count
        // must not both count the default role.
        (
            service("t19", with(node(json!(2)), "replicas", json!(3))),
            Rejected("spec.replicas"),
        ),
        (
            service("t20", json!({"type": "helloworld"})),
            Rejected("spec.application"),
        ),
        (
            service("t21", json!({"application": "demo"})),
            Rejected("spec.type"),
        ),
        (
            service("t22", json!({"application": "demo", "type": ""})),
            Rejected("spec.type"),
        ),
        (
            service("t23", json!({"application": "demo", "type": "HelloWorld"})),
            Rejected("spec.type"),
        ),
        (
            service("t24", json!({"application": "demo", "type": "wordpress"})),
            Rejected("spec.type"),
        ),
        (
            service(
                "t25",
                json!({"application": "demo", "type": ["helloworld"]}),
            ),
            Rejected("spec.type"),
        ),
        // Counts and bounds.
        (service("n01", node(json!(1001))), Rejected(COUNT)),
        (service("n02", node(json!(2147483648u64))), Rejected(COUNT)),
        (service("n03", node(json!(-1))), Rejected(COUNT)),
        (service("n04", node(json!(-2147483649i64))), Rejected(COUNT)),
        (
            service(
                "n05",
                hw(many(17, &|i| json!({"name": format!("r{i}"), "count": 1}))),
            ),
            Rejected("spec.roles"),
        ),
        (
            service(
                "n06",
                with(
                    node(json!(1)),
                    "health",
                    json!({"heartbeatTimeoutSeconds": 0}),
                ),
            ),
            Rejected("spec.health.heartbeatTimeoutSeconds"),
        ),
        (
            service(
                "n07",
                with(
                    node(json!(1)),
                    "health",
                    json!({"heartbeatTimeoutSeconds": 100000}),
                ),
            ),
            Rejected("spec.health.heartbeatTimeoutSeconds"),
        ),
        (
            service(
                "n08",
                with(
                    node(json!(1)),
                    "health",
                    json!({"maxUnhealthyPercent": 101}),
                ),
            ),
            Rejected("spec.health.maxUnhealthyPercent"),
        ),
        (
            service(
                "n09",
                with(node(json!(1)), "health", json!({"maxUnhealthyPercent": -1})),
            ),
            Rejected("spec.health.maxUnhealthyPercent"),
        ),
        // Unknown fields (strict field validation, as kubectl applies).
        (
            service("u01", with(node(json!(1)), "foo", json!(1))),
            Rejected("spec.foo"),
        ),
        (
            service(
                "u02",
                hw(json!([{"name": "node", "count": 1, "replicas": 2}])),
            ),
            Rejected("spec.roles[0].replicas|.spec.roles[name=\"node\"].replicas"),
        ),
        (
            service("u03", with(node(json!(1)), "replicas", json!(3))),
            Rejected("spec.replicas"),
        ),
        (
            cloud(
                "u04",
                json!({"ec2": {"region": "us-east-1", "imageId": "ami-1", "instanceType": "t3.micro", "flavour": "x"}}),
            ),
            Rejected("spec.ec2.flavour"),
        ),
        (
            service(
                "u05",
                generic(version(
                    json!({"name": "v1", "url": "https://x.org/a.tar", "sha256": sha, "path": "/"}),
                )),
            ),
            Rejected("spec.code.versions[0].path|.spec.code.versions[name=\"v1\"].path"),
        ),
        (
            service("u06", with(node(json!(1)), "health", json!({"timeout": 3}))),
            Rejected("spec.health.timeout"),
        ),
        (
            service("u07", with(node(json!(1)), "Application", json!("demo"))),
            Rejected("spec.Application"),
        ),
        (
            service(
                "u08",
                with(
                    node(json!(1)),
                    "links",
                    json!([{"service": "hello", "alias": "x"}]),
                ),
            ),
            Rejected("spec.links[0].alias|.spec.links[service=\"hello\"].alias"),
        ),
        (
            cloud("u09", json!({"local": {"foo": 1}})),
            Rejected("spec.local.foo"),
        ),
        (
            app("u10", json!({"cloud": "local", "services": []})),
            Rejected("spec.services"),
        ),
        // Names.
        (service("Hello", node(json!(1))), Rejected("metadata.name")),
        (
            service("hello_world", node(json!(1))),
            Rejected("metadata.name"),
        ),
        (service("-hello", node(json!(1))), Rejected("metadata.name")),
        (service("hello.", node(json!(1))), Rejected("metadata.name")),
        (
            service(&"a".repeat(41), node(json!(1))),
            Rejected("at most 40 characters"),
        ),
        (
            service(&"b".repeat(64), node(json!(1))),
            Rejected("at most 40 characters"),
        ),
        (
            app("Demo", json!({"cloud": "local"})),
            Rejected("metadata.name"),
        ),
        (
            cloud("Local_1", json!({"local": {}})),
            Rejected("metadata.name"),
        ),
        (
            service("m01", hw(json!([{"name": "Node", "count": 1}]))),
            Rejected("spec.roles[0].name"),
        ),
        (
            service("m02", hw(json!([{"name": "node_1", "count": 1}]))),
            Rejected("spec.roles[0].name"),
        ),
        (
            service("m03", hw(json!([{"name": "n".repeat(31), "count": 1}]))),
            Rejected("spec.roles[0].name"),
        ),
        (
            service(
                "m04",
                generic(version(
                    json!({"name": "v 1", "url": "https://x.org/a.tar", "sha256": sha}),
                )),
            ),
            Rejected("spec.code.versions[0].name"),
        ),
        (
            service("m05", with(node(json!(1)), "application", json!(""))),
            Rejected("spec.application"),
        ),
        (
            service("m06", hw(json!([{"name": "", "count": 1}]))),
            Rejected("spec.roles[0].name"),
        ),
        // Oversized.
        (
            service(
                "o01",
                with(
                    node(json!(1)),
                    "settings",
                    Value::Object((0..65).map(|i| (format!("k{i}"), json!("v"))).collect()),
                ),
            ),
            Rejected("spec.settings"),
        ),
        (
            service(
                "o02",
                with(
                    node(json!(1)),
                    "settings",
                    json!({"greeting": "g".repeat(4097)}),
                ),
            ),
            Rejected("spec.settings.greeting"),
        ),
        (
            service(
                "o03",
                with(node(json!(1)), "startupScript", json!("x".repeat(65537))),
            ),
            Rejected("spec.startupScript"),
        ),
        (
            service(
                "o04",
                with(
                    node(json!(1)),
                    "links",
                    many(17, &|i| json!({"service": format!("s{i}")})),
                ),
            ),
            Rejected("spec.links"),
        ),
        (
            service(
                "o05",
                generic(
                    json!({"code": {"versions": many(33, &|i| json!({"name": format!("v{i}"), "url": "https://x.org/a", "sha256": "a".repeat(64)}))}}),
                ),
            ),
            Rejected("spec.code.versions"),
        ),
        (
            app(
                "o06",
                json!({"cloud": "local", "description": "d".repeat(1025)}),
            ),
            Rejected("spec.description"),
        ),
        (
            service(
                "o07",
                generic(version(
                    json!({"name": "v1", "url": format!("https://x.org/{}", "p".repeat(2049)), "sha256": sha}),
                )),
            ),
            Rejected("spec.code.versions[0].url"),
        ),
        (
            cloud(
                "o08",
                json!({"local": {}, "apiServerUrl": "h".repeat(2049)}),
            ),
            Rejected("spec.apiServerUrl"),
        ),
        // Clouds.
        (
            cloud("c01", json!({})),
            Rejected("exactly one of spec.local, spec.ec2 or spec.opennebula"),
        ),
        (
            cloud(
                "c02",
                json!({"local": {}, "ec2": {"region": "r", "imageId": "i", "instanceType": "t"}}),
            ),
            Rejected("exactly one of"),
        ),
        (
            cloud(
                "c03",
                json!({"ec2": {"imageId": "ami-1", "instanceType": "t3.micro"}}),
            ),
            Rejected("spec.ec2.region"),
        ),
        (
            cloud(
                "c04",
                json!({"ec2": {"region": "us-east-1", "instanceType": "t3.micro"}}),
            ),
            Rejected("spec.ec2.imageId"),
        ),
        (
            cloud("c05", json!({"opennebula": {"endpoint": ""}})),
            Rejected("spec.opennebula.endpoint"),
        ),
        (
            cloud("c06", json!({"local": {}, "maxNodes": -1})),
            Rejected("spec.maxNodes"),
        ),
        (cloud("c07", json!({"local": 5})), Rejected("spec.local")),
        (
            cloud(
                "c08",
                json!({"opennebula": {"endpoint": "http://one:2633/RPC2", "templateId": -1}}),
            ),
            Rejected("spec.opennebula.templateId"),
        ),
        (
            cloud(
                "c09",
                json!({"ec2": {"region": "", "imageId": "ami-1", "instanceType": "t3.micro"}}),
            ),
            Rejected("spec.ec2.region"),
        ),
        (
            cloud(
                "c10",
                json!({"local": {}, "opennebula": {"endpoint": "http://one", "templateId": 0, "credentialsSecret": {"name": "one"}}, "ec2": {"region": "r", "imageId": "i", "instanceType": "t"}}),
            ),
            Rejected("exactly one of"),
        ),
        // Applications.
        (app("a01", json!({"cloud": ""})), Rejected("spec.cloud")),
        (app("a02", json!({"cloud": 3})), Rejected("spec.cloud")),
        (
            app("a03", json!({"cloud": ["local"]})),
            Rejected("spec.cloud"),
        ),
        // Generic services and code.
        (
            service(
                "g01",
                generic(json!({"roles": [{"name": "master", "count": 2}]})),
            ),
            Rejected("spec.roles[master].count"),
        ),
        (
            service(
                "g02",
                generic(json!({"roles": [{"name": "master", "count": 0}]})),
            ),
            Rejected("spec.roles[master].count"),
        ),
        (
            service(
                "g03",
                generic(json!({"roles": [{"name": "web", "count": 1}]})),
            ),
            Rejected("spec.roles[].name must be a role of spec.type"),
        ),
        (
            service(
                "g04",
                generic(
                    json!({"code": {"active": "v2", "versions": [{"name": "v1", "url": "https://x.org/a", "sha256": sha}]}}),
                ),
            ),
            Rejected("spec.code.active"),
        ),
        (
            service("g05", generic(version(json!({"name": "v1"})))),
            Rejected("exactly one of artifact, configMap or url"),
        ),
        (
            service(
                "g06",
                generic(version(
                    json!({"name": "v1", "url": "https://x.org/a", "sha256": sha, "configMap": {"name": "c", "key": "k"}}),
                )),
            ),
            Rejected("exactly one of artifact, configMap or url"),
        ),
        (
            service(
                "g07",
                generic(version(json!({"name": "v1", "url": "https://x.org/a"}))),
            ),
            Rejected("needs its sha256"),
        ),
        (
            service(
                "g08",
                generic(version(
                    json!({"name": "v1", "url": "https://x.org/a", "sha256": "ABC"}),
                )),
            ),
            Rejected("spec.code.versions[0].sha256"),
        ),
        (
            service(
                "g09",
                generic(version(
                    json!({"name": "v1", "url": "ftp://x.org/a", "sha256": sha}),
                )),
            ),
            Rejected("spec.code.versions[0].url"),
        ),
        (
            service(
                "g10",
                generic(
                    json!({"code": {"versions": [{"name": "v1", "url": "https://x.org/a", "sha256": sha}, {"name": "v1", "url": "https://x.org/b", "sha256": sha}]}}),
                ),
            ),
            Rejected("duplicate entries"),
        ),
        (
            service(
                "g11",
                generic(version(json!({"name": "v1", "configMap": {"name": "c"}}))),
            ),
            Rejected("spec.code.versions[0].configMap.key"),
        ),
        (
            service(
                "g12",
                hw(json!([{"name": "node", "count": 1}, {"name": "node", "count": 2}])),
            ),
            Rejected("duplicate entries"),
        ),
        (
            service("g13", hw(json!([{"name": "master", "count": 1}]))),
            Rejected("spec.roles[].name must be a role of spec.type"),
        ),
        (
            service(
                "g14",
                generic(json!({"code": {"active": "", "versions": []}})),
            ),
            Rejected("spec.code.active"),
        ),
        // Changes to immutable fields of the valid Service.
        (
            service(
                "hello",
                json!({"application": "demo", "type": "generic", "roles": [{"name": "master", "count": 1}]}),
            ),
            Rejected("spec.type is immutable"),
        ),
        (
            service(
                "hello",
                json!({"application": "other", "type": "helloworld", "roles": [{"name": "node", "count": 3}]}),
            ),
            Rejected("spec.application is immutable"),
        ),
        // Valid by schema, unsatisfiable: accepted and reported.
        (
            service(
                "r01",
                hw(json!([{"name": "node", "count": 1, "cloud": "mars"}])),
            ),
            NotReady("CloudNotFound"),
        ),
        (
            service(
                "r02",
                json!({"application": "nowhere", "type": "helloworld"}),
            ),
            NotReady("ApplicationNotFound"),
        ),
        (
            service(
                "r03",
                json!({"application": "no-cloud", "type": "helloworld"}),
            ),
            NotReady("NoCloud"),
        ),
        (
            service(
                "r04",
                with(node(json!(1)), "links", json!([{"service": "missing"}])),
            ),
            NotReady("LinkNotFound"),
        ),
        (
            service(
                "r05",
                with(node(json!(1)), "links", json!([{"service": "r05"}])),
            ),
            NotReady("InvalidLink"),
        ),
        (
            service(
                "r06",
                with(node(json!(1)), "links", json!([{"service": "r07"}])),
            ),
            NotReady("LinkCycle"),
        ),
        (
            service(
                "r07",
                with(node(json!(1)), "links", json!([{"service": "r06"}])),
            ),
            NotReady("LinkCycle"),
        ),
        (
            service(
                "r08",
                with(node(json!(1)), "settings", json!({"colour": "red"})),
            ),
            NotReady("InvalidSettings"),
        ),
        (
            service("r09", generic(json!({"settings": {"greeting": "hi"}}))),
            NotReady("InvalidSettings"),
        ),
        (
            service(
                "r10",
                generic(
                    json!({"code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "absent", "key": "code.tar"}}]}}),
                ),
            ),
            NotReady("CodeNotFound"),
        ),
        (
            service(
                "r11",
                generic(
                    json!({"code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "empty", "key": "code.tar"}}]}}),
                ),
            ),
            NotReady("CodeNotFound"),
        ),
        (
            service(
                "r12",
                json!({"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": 1, "cloud": "aws"}]}),
            ),
            NotReady("Prologue"),
        ),
    ];
    c.shrink_to_fit();
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corpus_of_bad_manifests_is_refused_or_reported_and_nothing_stalls() {
    let env = env("corpus-e2e", 45).await;
    env.apply(&EXAMPLE).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: no-cloud}\nspec: {}\n").await;
    env.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: empty}\ndata: {other: x}\n")
        .await;
    // An EC2 Cloud that cannot work: its credentials Secret does not exist (and its endpoint is
    // a closed loopback port, so nothing ever leaves the machine).
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: aws}\nspec: {ec2: {region: us-east-1, endpoint: 'http://127.0.0.1:9', imageId: ami-03cf127a, instanceType: t3.micro, credentialsSecret: {name: missing}}}\n").await;
    env.wait_ready("hello", "node 3/3").await;

    let cases = corpus();
    assert!(
        cases.len() >= 100,
        "the corpus has {} manifests",
        cases.len()
    );
    let (mut rejected, mut reported) = (0, 0);
    let mut not_ready = Vec::new();
    let mut wrong = Vec::new();
    for (manifest, expect) in &cases {
        let yaml = serde_yaml::to_string(manifest).unwrap();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let outcome = conpaas_e2e::manifest::apply(&env.client, &yaml, &env.ns).await;
        match (expect, outcome) {
            (Expect::Rejected(field), Err(e)) => {
                let message = format!("{e:#}");
                if field.split('|').any(|f| message.contains(f)) {
                    rejected += 1;
                } else {
                    wrong.push(format!(
                        "{name}: the error does not name {field}: {}",
                        message.lines().next().unwrap_or("")
                    ));
                }
            }
            (Expect::Rejected(field), Ok(())) => wrong.push(format!(
                "{name}: accepted, expected a rejection naming {field}"
            )),
            (Expect::NotReady(reason), Ok(())) => not_ready.push((name, *reason)),
            (Expect::NotReady(reason), Err(e)) => wrong.push(format!(
                "{name}: rejected, expected Ready=False {reason}: {e:#}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} manifests were not handled as expected:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    for (name, reason) in &not_ready {
        env.wait_service(name, &format!("{name} Ready=False {reason}"), |s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == *reason)
            })
        })
        .await;
        reported += 1;
    }
    println!(
        "corpus: {} manifests, {rejected} rejected naming the field, {reported} accepted and reported Ready=False",
        cases.len()
    );

    // The controller lives and serves: the valid Service still scales.
    env.scale_hello(4).await;
    env.wait_ready("hello", "node 4/4").await;
    assert!(
        !env.controller.log().contains("panicked"),
        "the controller never panicked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_the_controller_cannot_read_stops_nothing_else() {
    let env = env("unreadable-e2e", 46).await;
    env.apply(&EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;

    // A newer CRD allows a service type this controller does not know, and a node of that type
    // appears. It is unreadable from its first version on: a node made readable first and then
    // changed (a status patch) would race the controller's own status writes, which put back
    // what the controller knows before its loop sees the unreadable version.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let widen = json!([{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/serviceType/enum/-", "value": "hibernator"}]);
    let widen: json_patch::Patch = serde_json::from_value(widen).unwrap();
    crds.patch(
        "servicenodes.conpaas.io",
        &PatchParams::default(),
        &Patch::<()>::Json(widen),
    )
    .await
    .unwrap();
    // The test reads through a guard too: its own client cannot parse the new node either.
    let guarded: Api<
        kube::core::error_boundary::DeserializeGuard<conpaas_crds::v1alpha1::ServiceNode>,
    > = Api::namespaced(env.client.clone(), &env.ns);
    let ghost = json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode", "metadata": {"name": "ghost"},
        "spec": {"application": "demo", "service": "ghost", "serviceType": "hibernator", "role": "node", "cloud": "local", "token": "ghost-token"}
    });
    wait::until("the widened schema to be served", LIMIT, || {
        let guarded = guarded.clone();
        let ghost = ghost.clone();
        async move {
            let pp = PatchParams::apply("conpaas-e2e");
            Ok(guarded
                .patch("ghost", &pp, &Patch::Apply(&ghost))
                .await
                .is_ok())
        }
    })
    .await
    .unwrap();

    // The controller says it cannot read it, and keeps serving everything else.
    env.wait_event(&env.ns, "InvalidObject", Some("ghost"))
        .await;
    env.scale_hello(4).await;
    env.wait_ready("hello", "node 4/4").await;
}
