//! Installing ConPaaS as operators do, and driving it with kubectl as users do: the Helm chart
//! (lint, values schema, template | kubectl apply --dry-run=server), `manifests/install.yaml`
//! (fresh, and installed for real), the controller running with exactly the chart's RBAC,
//! `kubectl scale`, an empty `kubectl diff` after converging, and the printer columns.

mod common;

use std::collections::BTreeMap;

use conpaas_e2e::tools::{Ran, helm, kubectl, repo_root, run};
use conpaas_e2e::{ControlPlane, Controller, wait};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

fn kubectl_run(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Ran {
    run(&kubectl(), args, &cp.kubeconfig, stdin).expect("kubectl")
}

fn helm_run(cp: &ControlPlane, args: &[&str]) -> Ran {
    run(&helm(), args, &cp.kubeconfig, None).expect("helm")
}

#[tokio::test]
async fn the_chart_lints_and_renders_objects_the_api_server_accepts() {
    let cp = ControlPlane::start().await.expect("control plane");
    helm_run(&cp, &["lint", "--strict", "charts/conpaas"]).ok();
    // The values schema rejects bad values, naming them.
    let bad = helm_run(&cp, &["lint", "charts/conpaas", "--set", "replicas=0"]);
    assert_ne!(bad.code, Some(0));
    assert!(
        format!("{}{}", bad.stdout, bad.stderr).contains("replicas"),
        "{}{}",
        bad.stdout,
        bad.stderr
    );

    kubectl_run(&cp, &["create", "namespace", "conpaas"], None).ok();
    let values = [
        "--set",
        "clouds[0].name=aws",
        "--set",
        "clouds[0].spec.ec2.region=us-east-1",
        "--set",
        "clouds[0].spec.ec2.imageId=ami-03cf127a",
        "--set",
        "clouds[0].spec.ec2.instanceType=t3.micro",
    ];
    let mut args = vec![
        "template",
        "conpaas",
        "charts/conpaas",
        "--namespace",
        "conpaas",
    ];
    args.extend(values);
    let rendered = helm_run(&cp, &args).ok().stdout;
    assert!(
        rendered.contains("kind: Cloud"),
        "clouds from values render"
    );
    let applied = kubectl_run(
        &cp,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    )
    .ok()
    .stdout;
    for object in [
        "serviceaccount/conpaas",
        "clusterrole.rbac.authorization.k8s.io/conpaas",
        "clusterrolebinding.rbac.authorization.k8s.io/conpaas",
        "service/conpaas-metrics",
        "deployment.apps/conpaas",
        "cloud.conpaas.io/aws",
    ] {
        assert!(
            applied.contains(&format!("{object} created (server dry run)")),
            "{object} not accepted:\n{applied}"
        );
    }

    // helm install, upgrade and uninstall for real (no kubelet runs the pods; the objects are
    // what is checked). The CRDs stay after uninstall, as Helm treats its crds/ folder.
    helm_run(
        &cp,
        &[
            "install",
            "conpaas",
            "charts/conpaas",
            "--namespace",
            "conpaas",
            "--set",
            "replicas=1",
        ],
    )
    .ok();
    let replicas = |cp: &ControlPlane| {
        kubectl_run(
            cp,
            &[
                "-n",
                "conpaas",
                "get",
                "deployment",
                "conpaas",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .ok()
        .stdout
    };
    assert_eq!(replicas(&cp), "1");
    helm_run(
        &cp,
        &[
            "upgrade",
            "conpaas",
            "charts/conpaas",
            "--namespace",
            "conpaas",
            "--set",
            "replicas=3",
        ],
    )
    .ok();
    assert_eq!(replicas(&cp), "3");
    helm_run(&cp, &["uninstall", "conpaas", "--namespace", "conpaas"]).ok();
    let gone = kubectl_run(
        &cp,
        &[
            "-n",
            "conpaas",
            "get",
            "deployment,serviceaccount",
            "-l",
            "app.kubernetes.io/name=conpaas",
            "-o",
            "name",
        ],
        None,
    )
    .ok();
    assert_eq!(
        gone.stdout.trim(),
        "",
        "uninstall removes the controller's objects"
    );
    kubectl_run(&cp, &["get", "crd", "services.conpaas.io"], None).ok();

    // manifests/install.yaml is what the chart renders today.
    let fresh = run(
        &repo_root().join("e2e/tools/render-install.sh"),
        &[],
        &cp.kubeconfig,
        None,
    )
    .unwrap()
    .ok()
    .stdout;
    let committed = std::fs::read_to_string(repo_root().join("manifests/install.yaml")).unwrap();
    assert!(
        fresh == committed,
        "manifests/install.yaml is stale: run `make install-yaml`"
    );
}

/// Mints a token for the chart's controller ServiceAccount.
async fn controller_token(client: &kube::Client) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "conpaas");
    let request: TokenRequest = serde_json::from_value(
        serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 3600}}),
    )
    .unwrap();
    accounts
        .create_token_request("conpaas", &PostParams::default(), &request)
        .await
        .expect("token for the controller's ServiceAccount")
        .status
        .expect("token")
        .token
}

/// What `kubectl auth can-i --list` says the controller's ServiceAccount may do in `namespace`:
/// `resource[names]` and its verbs (the discovery and self-review rules every account has are
/// left out).
fn can_i(cp: &ControlPlane, namespace: &str) -> BTreeMap<String, String> {
    let listed = kubectl_run(
        cp,
        &[
            "auth",
            "can-i",
            "--list",
            "-n",
            namespace,
            "--as",
            "system:serviceaccount:conpaas:conpaas",
            // The groups its token carries: what is bound to them counts too.
            "--as-group",
            "system:serviceaccounts",
            "--as-group",
            "system:serviceaccounts:conpaas",
            "--as-group",
            "system:authenticated",
        ],
        None,
    )
    .ok()
    .stdout;
    let mut rules: BTreeMap<String, String> = BTreeMap::new();
    for line in listed.lines().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let [resource, urls, names, verbs @ ..] = columns.as_slice() else {
            continue;
        };
        // Rules over URLs (discovery, health) come with no resource: their first column is the
        // URL list.
        if *urls != "[]" || resource.starts_with('[') || resource.starts_with("selfsubject") {
            continue;
        }
        let names = if *names == "[]" { "" } else { names };
        // A resource granted by two rules (cluster-wide and in the namespace) is listed twice.
        let granted = rules.entry(format!("{resource}{names}")).or_default();
        *granted = sorted_verbs(&format!("{granted} {}", verbs.join(" ")));
    }
    rules
}

/// Verbs as `kubectl auth can-i --list` prints them (`[get list]`), sorted, one list.
fn sorted_verbs(verbs: &str) -> String {
    let mut verbs: Vec<&str> = verbs
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter(|v| !v.is_empty())
        .collect();
    verbs.sort_unstable();
    verbs.dedup();
    verbs.join(" ")
}

/// The controller's reach, as the README writes it down: cluster-wide, ConPaaS' own resources
/// and what its nodes need; Secrets and token minting only in a tenant's namespace.
fn controller_may_do_what_the_readme_lists(cp: &ControlPlane) {
    let all = "[get list watch create update patch delete]";
    let everywhere = BTreeMap::from([
        ("applications.conpaas.io", all),
        ("applications.conpaas.io/status", "[get update patch]"),
        (
            "apiservices.apiregistration.k8s.io[v1alpha1.code.conpaas.io]",
            "[get patch update]",
        ),
        ("clouds.conpaas.io", all),
        ("clouds.conpaas.io/status", "[get update patch]"),
        ("configmaps", "[get list watch]"),
        ("creditaccounts.conpaas.io", "[get list watch]"),
        ("creditaccounts.conpaas.io/status", "[get update]"),
        ("events", "[create patch update]"),
        ("events.events.k8s.io", "[create patch update]"),
        ("leases.coordination.k8s.io", "[get list watch]"),
        ("namespaces", "[get list watch]"),
        ("rolebindings.rbac.authorization.k8s.io", "[get list watch]"),
        ("roles.rbac.authorization.k8s.io", "[get list watch]"),
        ("serviceaccounts", "[get list watch]"),
        ("servicenodes.conpaas.io", all),
        ("servicenodes.conpaas.io/status", "[get update patch]"),
        ("services.code.conpaas.io/archives", "[get create]"),
        ("services.conpaas.io", all),
        ("services.conpaas.io/status", "[get update patch]"),
        ("subjectaccessreviews.authorization.k8s.io", "[create]"),
    ]);
    let listed = |map: &BTreeMap<&str, &str>| -> BTreeMap<String, String> {
        map.iter()
            .map(|(k, v)| (k.to_string(), sorted_verbs(v)))
            .collect()
    };
    assert_eq!(
        can_i(cp, "kube-system"),
        listed(&everywhere),
        "beyond a tenant's namespace"
    );
    let mut tenant = listed(&everywhere);
    tenant.insert("secrets".into(), sorted_verbs("[get create]"));
    tenant.insert("serviceaccounts/token".into(), sorted_verbs("[create]"));
    let written = "[create update patch delete]";
    for resource in [
        "leases.coordination.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "roles.rbac.authorization.k8s.io",
        "serviceaccounts",
    ] {
        let verbs = sorted_verbs(&format!("{} {written}", everywhere[resource]));
        tenant.insert(resource.into(), verbs);
    }
    assert_eq!(can_i(cp, "demo"), tenant, "in a tenant's namespace");
}

#[tokio::test]
async fn installed_from_install_yaml_the_controller_runs_with_its_rbac_and_kubectl_works() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.unwrap();
    kubectl_run(
        &cp,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "manifests/install.yaml",
        ],
        None,
    )
    .ok();

    // No kubelet runs here, so the Deployment's pod never starts; the same binary runs as a
    // process with the token of the chart's ServiceAccount: any permission the chart lacks
    // fails this test.
    let token = controller_token(&client).await;
    let kubeconfig = cp.kubeconfig_with_token("controller", &token).unwrap();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let state = tempfile::tempdir().unwrap();
    let mut controller = Controller::start_with(
        &cp,
        state.path(),
        121,
        &[
            ("KUBECONFIG", &kubeconfig),
            ("CONPAAS_LEADER_NAMESPACE", "conpaas"),
            // As in the cluster: the chart makes the code API's Service, not the controller.
            ("CONPAAS_CODE_API_EXTERNAL_NAME", ""),
        ],
    )
    .unwrap();

    // A tenant's namespace, as administrators make one: cpsctl binds the controller in it.
    let tenant = ["tenant", "create", "demo", "--credits", "1000"];
    run(&conpaas_e2e::tools::cpsctl(), &tenant, &cp.kubeconfig, None)
        .unwrap()
        .ok();
    let example = common::EXAMPLE.replace("namespace: default", "namespace: demo");
    let example_file = cp.dir().join("helloworld.yaml");
    std::fs::write(&example_file, &example).unwrap();
    let file = example_file.to_string_lossy().into_owned();
    kubectl_run(&cp, &["apply", "-f", &file], None).ok();
    let waited = kubectl_run(
        &cp,
        &[
            "-n",
            "demo",
            "wait",
            "--for=condition=Ready",
            "services.conpaas.io/hello",
            "--timeout=120s",
        ],
        None,
    );
    if waited.code != Some(0) {
        panic!("not Ready:\n{}\n{}", waited.stderr, controller.log());
    }
    assert!(
        !controller.log().contains("forbidden"),
        "the chart's RBAC lacks a permission:\n{}",
        controller.log()
    );
    controller_may_do_what_the_readme_lists(&cp);

    // The controller never writes into spec: after converging, kubectl diff is empty.
    let diff = kubectl_run(&cp, &["diff", "-f", &file], None);
    assert_eq!(
        diff.code,
        Some(0),
        "kubectl diff after converging:\n{}{}",
        diff.stdout,
        diff.stderr
    );

    // kubectl scale goes through the scale subresource to spec.replicas; with the example's
    // roles[node].count set as well, the API server refuses and says which field to drop.
    let scale_to_5 = [
        "-n",
        "demo",
        "scale",
        "services.conpaas.io/hello",
        "--replicas=5",
    ];
    let refused = kubectl_run(&cp, &scale_to_5, None);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("spec.replicas"),
        "{}",
        refused.stderr
    );
    let drop_count = r#"[{"op":"remove","path":"/spec/roles/0/count"},{"op":"add","path":"/spec/replicas","value":3}]"#;
    kubectl_run(
        &cp,
        &[
            "-n",
            "demo",
            "patch",
            "services.conpaas.io/hello",
            "--type=json",
            "-p",
            drop_count,
        ],
        None,
    )
    .ok();
    kubectl_run(&cp, &scale_to_5, None).ok();
    let api: Api<conpaas_crds::v1alpha1::Service> = Api::namespaced(client.clone(), "demo");
    wait::until("5 nodes Ready after kubectl scale", common::LIMIT, || {
        let api = api.clone();
        async move {
            let s = api.get("hello").await?;
            let st = s.status.unwrap_or_default();
            Ok(st.observed_generation == s.metadata.generation
                && st.ready.as_deref() == Some("node 5/5")
                && st.replicas == Some(5))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", controller.log()));
    let scale = kubectl_run(
        &cp,
        &[
            "-n",
            "demo",
            "get",
            "--raw",
            "/apis/conpaas.io/v1alpha1/namespaces/demo/services/hello/scale",
        ],
        None,
    )
    .ok()
    .stdout;
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 5);
    assert_eq!(
        scale["status"]["selector"],
        "conpaas.io/service=hello,conpaas.io/role=node"
    );

    let clouds: Api<conpaas_crds::v1alpha1::Cloud> = Api::all(client.clone());
    wait::until("the Cloud to count 5 nodes", common::LIMIT, || {
        let clouds = clouds.clone();
        async move { Ok(clouds.get("local").await?.status.and_then(|s| s.nodes) == Some(5)) }
    })
    .await
    .unwrap();

    // The printer columns answer "is it working", checked against a snapshot with the parts
    // that change per run (ages, addresses, IDs, node names) masked.
    let snapshot = |args: &[&str]| {
        let out = kubectl_run(&cp, args, None).ok().stdout;
        mask(&out)
    };
    let got = format!(
        "{}{}{}",
        snapshot(&["get", "cpcloud"]),
        snapshot(&["-n", "demo", "get", "cpapp,cpsvc"]),
        snapshot(&["-n", "demo", "get", "cpnode", "--sort-by=.metadata.name"]),
    );
    let expected_path = repo_root().join("e2e/tests/snapshots/printer-columns.txt");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if std::env::var_os("CONPAAS_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    assert!(
        got == expected,
        "printer columns changed (CONPAAS_UPDATE_SNAPSHOTS=1 rewrites {}):\n{got}",
        expected_path.display()
    );

    // Deleting the whole example at once (the Cloud first) still terminates every VM.
    let deleted = kubectl_run(
        &cp,
        &["delete", "-f", &file, "--wait=true", "--timeout=120s"],
        None,
    );
    if deleted.code != Some(0) {
        panic!(
            "kubectl delete:\n{}{}\n{}",
            deleted.stdout,
            deleted.stderr,
            controller.log()
        );
    }
    assert!(controller.vm_pids().is_empty(), "every VM is gone");
    controller.stop();
}

/// Masks what differs between runs in kubectl's table output and aligns it again.
fn mask(table: &str) -> String {
    let rows: Vec<Vec<String>> = table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|cell| {
                    let is_age = cell.len() <= 4
                        && cell.ends_with(['s', 'm', 'h'])
                        && cell[..cell.len() - 1].chars().all(|c| c.is_ascii_digit())
                        && cell.len() > 1;
                    if is_age {
                        "<age>".to_string()
                    } else if cell.starts_with("local:///") {
                        "<provider-id>".into()
                    } else if cell.starts_with("127.") {
                        "<address>".into()
                    } else if let Some(i) = cell.find("-node-") {
                        format!("{}-node-<n>", &cell[..i])
                    } else {
                        cell.to_string()
                    }
                })
                .collect()
        })
        .collect();
    rows.iter().map(|r| format!("{}\n", r.join(" "))).collect()
}
