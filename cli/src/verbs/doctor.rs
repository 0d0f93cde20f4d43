//! doctor: the preflight ConPaaS' cpscheck did, for this operator — API server reachable, CRDs
//! installed and the same as this cpsctl's, a controller holding its leader Lease, and each
//! Cloud's credentials working (the controller checks them and reports Ready on the Cloud).

use std::process::ExitCode;

use conpaas_crds::generate;
use conpaas_crds::labels::conditions::READY;
use conpaas_crds::v1alpha1::find_condition;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::connect::Session;
use crate::output::structured;

/// The Lease the controller's leader holds.
const LEADER_LEASE: &str = "conpaas-controller";

#[derive(Serialize)]
struct Check {
    check: String,
    ok: bool,
    detail: String,
}

fn check(out: &mut Vec<Check>, name: &str, result: Result<String, String>) {
    let ok = result.is_ok();
    out.push(Check {
        check: name.into(),
        ok,
        detail: result.unwrap_or_else(|e| e),
    });
}

pub async fn doctor(s: &Session) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    match s.client.apiserver_version().await {
        Ok(v) => check(
            &mut checks,
            "api-server",
            Ok(format!("reachable, Kubernetes {}", v.git_version)),
        ),
        Err(e) => {
            check(
                &mut checks,
                "api-server",
                Err(format!(
                    "unreachable: {e}; check --kubeconfig/--context and that the cluster runs"
                )),
            );
            return report(s, checks);
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    for wanted in generate::all() {
        let name = wanted.name_any();
        let result = match crds.get_opt(&name).await {
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(None) => Err("not installed; `kubectl apply -f manifests/crds/` or `helm install conpaas charts/conpaas`".into()),
            Ok(Some(have)) => crd_matches(&have, &wanted),
        };
        check(&mut checks, &format!("crd {name}"), result);
    }
    check(&mut checks, "controller", controller(s).await);
    check(&mut checks, "code api", code_api(s).await);
    match s.clouds().list(&ListParams::default()).await {
        Err(e) => check(
            &mut checks,
            "clouds",
            Err(format!("cannot list Clouds: {e}")),
        ),
        Ok(list) if list.items.is_empty() => check(
            &mut checks,
            "clouds",
            Err("no Cloud exists: nothing can run; an admin creates one (kind: Cloud)".into()),
        ),
        Ok(list) => {
            for cloud in list.items {
                let st = cloud.status.clone().unwrap_or_default();
                let result = match find_condition(&st.conditions, READY) {
                    Some(c) if c.status == "True" => Ok(format!("{}: {}", st.provider.as_deref().unwrap_or("?"), c.message)),
                    Some(c) => Err(format!("{}: {} (fix the Cloud's spec or credentials Secret)", c.reason, c.message)),
                    None => Err("no Ready condition yet: the controller has not checked it (is it running?)".into()),
                };
                check(&mut checks, &format!("cloud {}", cloud.name_any()), result);
            }
        }
    }
    report(s, checks)
}

fn report(s: &Session, checks: Vec<Check>) -> anyhow::Result<ExitCode> {
    let ok = checks.iter().all(|c| c.ok);
    if !structured(s.output, &checks)? {
        for c in &checks {
            println!(
                "{} {:<40} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.check,
                c.detail
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Compares what the API server serves with what this cpsctl was built with.
fn crd_matches(
    have: &CustomResourceDefinition,
    wanted: &CustomResourceDefinition,
) -> Result<String, String> {
    let established = have
        .status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    if !established {
        return Err("installed but not Established yet".into());
    }
    let shape = |crd: &CustomResourceDefinition| -> Value {
        let versions: Vec<Value> = crd
            .spec
            .versions
            .iter()
            .map(|v| json!({"name": v.name, "schema": v.schema, "subresources": v.subresources, "columns": v.additional_printer_columns}))
            .collect();
        json!(versions)
    };
    if shape(have) == shape(wanted) {
        Ok("installed, current".into())
    } else {
        Err("installed but differs from this cpsctl's version: upgrade one of them (`kubectl apply --server-side -f manifests/crds/` or `helm upgrade`)".into())
    }
}

/// Whether the API server reaches the controller's code API (uploads, downloads, agents' code).
async fn code_api(s: &Session) -> Result<String, String> {
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    let name = conpaas_crds::code_api::API_SERVICE;
    let found = Api::<APIService>::all(s.client.clone())
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read APIService {name}: {e}"))?
        .ok_or_else(|| format!("no APIService {name}: the controller registers it when it leads, the chart installs it"))?;
    let available = found
        .status
        .and_then(|st| st.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Available");
    match available {
        Some(c) if c.status == "True" => Ok(format!("{name} available")),
        Some(c) => {
            let reason = c.reason.unwrap_or_default();
            // The API server cannot find or dial the controller's Service: usually a controller
            // outside the cluster whose host the API server cannot reach by that name.
            let hint = if matches!(
                reason.as_str(),
                "ServiceNotFound"
                    | "MissingEndpoints"
                    | "FailedDiscoveryCheck"
                    | "ServiceAccessError"
            ) {
                "; a controller outside the cluster names its host in that Service (CONPAAS_CODE_API_EXTERNAL_NAME: by default `localhost` for an API server on the same machine, else the host's name), and the API server must reach it there at the code API's port"
            } else {
                ""
            };
            Err(format!(
                "{name} is not available ({reason}: {}): code uploads and downloads fail; the controller's log says why{hint}",
                c.message.unwrap_or_default()
            ))
        }
        None => Err(format!("{name} has not been checked by the API server yet")),
    }
}

async fn controller(s: &Session) -> Result<String, String> {
    let leases: Api<Lease> = Api::all(s.client.clone());
    let lp = ListParams::default().fields(&format!("metadata.name={LEADER_LEASE}"));
    let list = leases
        .list(&lp)
        .await
        .map_err(|e| format!("cannot read Leases to find the controller: {e}"))?;
    let Some(lease) = list.items.into_iter().next() else {
        return Err(format!(
            "no Lease {LEADER_LEASE:?}: no controller has started (helm install conpaas charts/conpaas, or `make run`)"
        ));
    };
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let since = spec
        .renew_time
        .map(|t| Timestamp::now().duration_since(t.0).as_secs())
        .unwrap_or(i64::MAX);
    let ns = lease.metadata.namespace.unwrap_or_default();
    if holder.is_empty() || since > 2 * duration {
        Err(format!(
            "no controller has renewed Lease {ns}/{LEADER_LEASE} for {since}s: is the conpaas-controller Deployment running? (kubectl -n {ns} get pods)"
        ))
    } else {
        Ok(format!(
            "running: {holder} leads (Lease {ns}/{LEADER_LEASE} renewed {since}s ago)"
        ))
    }
}
