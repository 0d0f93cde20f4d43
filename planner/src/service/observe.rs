//! Reads everything the Service loop decides on. Network: the API server only.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::node_reasons::{self as node_status, UNHEALTHY_REASONS};
use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::labels::conditions::{HEALTHY, READY};
use conpaas_crds::v1alpha1::{
    AgentState, Application, CREDIT_ACCOUNT_NAME, Cloud, CreditAccount, NodeCode, NodeLink,
    Service, ServiceLink, ServiceNode, ServiceType, is_condition_true,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use sha2::{Digest, Sha256};

use super::model::Problem;
use super::model::{NodeFailure, ObservedNode};
use crate::error::{Error, KubeResultExt, is_not_found};

/// What the Service loop observed.
pub struct Observed {
    /// The Application, if it exists.
    pub application: Option<Application>,
    /// Names of existing Clouds.
    pub clouds: BTreeSet<String>,
    /// Other Services of the same Application.
    pub siblings: BTreeMap<String, Vec<String>>,
    /// The volumes of the filesystem Services among them.
    pub filesystems: BTreeMap<String, Vec<String>>,
    /// The Service's nodes.
    pub nodes: Vec<ObservedNode>,
    /// When unhealthy nodes need another look, if any is unhealthy.
    pub next_health_check: Option<Duration>,
    /// The active code version, resolved.
    pub code: Result<Option<NodeCode>, Problem>,
    /// The linked services that export something, as nodes reach them.
    pub links: Vec<NodeLink>,
    /// What the Service's tenant may use.
    pub tenancy: Tenancy,
    /// When it was observed.
    pub now: Timestamp,
}

/// The instance types a Cloud prices, and the type its VMs get when a role names none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricedTypes {
    pub types: std::collections::BTreeSet<String>,
    pub default_type: Option<String>,
}

/// What a Service's namespace (its tenant) may use now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenancy {
    /// Clouds that do not admit the namespace, with why (`spec.allowedNamespaces`).
    pub refused_clouds: BTreeMap<String, String>,
    /// In a metered namespace, the Clouds that list prices: the instance types they price and
    /// their default type. Only priced types run there (an unlisted one would cost 1 credit).
    pub priced: BTreeMap<String, PricedTypes>,
    /// Why the namespace's credits cannot pay for nodes, while they cannot.
    pub credits_exhausted: Option<String>,
    /// Credits left, when the namespace is metered.
    pub balance: Option<i64>,
    /// When each of the Service's nodes' paid hours end (from the ledger; unmetered, from
    /// their age), by node name.
    pub paid_until: BTreeMap<String, Timestamp>,
    /// Credits per VM-hour of a new node (the highest price the Service pays now; 1 without).
    pub price: i64,
    /// The length of the credit hour.
    pub credit_hour: Duration,
}

impl Tenancy {
    /// What the autoscaler may spend, and when the nodes' paid hours end.
    pub fn budget(&self, service: &Service) -> super::autoscale::Budget {
        let descriptor = service.spec.r#type.descriptor();
        let drain = service
            .spec
            .drain_seconds
            .unwrap_or(descriptor.drain_seconds);
        super::autoscale::Budget {
            balance: self.balance,
            price: self.price.max(1),
            paid_until: self.paid_until.clone(),
            lead: conpaas_crds::v1alpha1::charge_lead(self.credit_hour),
            // Its drain, the proxies' reload and a margin for the loops (10 s was 1 s short
            // once on a loaded CI machine: a backend went 14 s before its hour's end, inside
            // the 15 s in which the next hour is paid).
            leaving: Duration::from_secs(drain.max(0) as u64 + 15),
        }
    }
}

/// When a node's agent last renewed its heartbeat Lease, if that is known (the controller keeps
/// the Leases in a watched cache; `cpsctl` does not look).
pub type Heartbeats<'a> = &'a (dyn Fn(&ServiceNode) -> Option<Timestamp> + Sync);

/// What a Service's observation is made of, however it was read: from the API server
/// (`cpsctl`, [`observe`]) or from the controller's watch caches.
pub struct Objects<'a> {
    /// The Application the Service names, if it exists.
    pub application: Option<Application>,
    /// Names of the Clouds that exist.
    pub clouds: BTreeSet<String>,
    /// The Services of the same namespace (read only when the Service has links).
    pub services: Vec<&'a Service>,
    /// The Service's ServiceNodes.
    pub nodes: Vec<&'a ServiceNode>,
    /// What the Service's tenant may use.
    pub tenancy: Tenancy,
}

/// Observes `service` through the API server (what `cpsctl plan` does; the controller reads
/// its caches and calls [`from_objects`]).
pub async fn observe(
    client: &kube::Client,
    service: &Service,
    heartbeats: Heartbeats<'_>,
) -> Result<Observed, Error> {
    let ns = service
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let name = service.name_any();
    let apps: Api<Application> = Api::namespaced(client.clone(), &ns);
    let application = match apps.get(&service.spec.application).await {
        Ok(app) => Some(app),
        Err(e) if is_not_found(&e) => None,
        Err(e) => {
            return Err(e).ctx(
                "get application",
                format!("{ns}/{}", service.spec.application),
            );
        }
    };
    let clouds: Api<Cloud> = Api::all(client.clone());
    let clouds = clouds
        .list(&ListParams::default())
        .await
        .ctx("list clouds", "")?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    let services = if service.spec.links.is_empty() {
        Vec::new()
    } else {
        let api = Api::namespaced(client.clone(), &ns);
        crate::list::list::<Service>(&api, &ListParams::default())
            .await
            .ctx("list services", &ns)?
            .0
    };
    let nodes = list_nodes(client, &ns, &name).await?;
    let code = resolve_code(client, &ns, service).await?;
    let objects = Objects {
        application,
        clouds,
        services: services.iter().collect(),
        nodes: nodes.iter().collect(),
        tenancy: tenancy(client, &ns).await?,
    };
    Ok(from_objects(
        service,
        objects,
        code,
        heartbeats,
        &Timestamp::now(),
    ))
}

/// The observation of `service` from what was read. Pure.
pub fn from_objects(
    service: &Service,
    objects: Objects<'_>,
    code: Result<Option<NodeCode>, Problem>,
    heartbeats: Heartbeats<'_>,
    now: &Timestamp,
) -> Observed {
    let name = service.name_any();
    let siblings = objects
        .services
        .iter()
        .filter(|s| s.spec.application == service.spec.application && s.name_any() != name)
        .map(|s| {
            (
                s.name_any(),
                s.spec.links.iter().map(|l| l.service.clone()).collect(),
            )
        })
        .collect();
    let filesystems = objects
        .services
        .iter()
        .filter(|s| s.spec.application == service.spec.application)
        .filter(|s| s.spec.r#type == ServiceType::Filesystem)
        .map(|s| {
            let volumes = s.spec.filesystem.iter().flat_map(|f| &f.volumes);
            (s.name_any(), volumes.map(|v| v.name.clone()).collect())
        })
        .collect();
    let window_start = health_window_start(service, now);
    let accepted = accepted_losses(service, now);
    let nodes = objects
        .nodes
        .iter()
        .map(|n| ObservedNode {
            accept_data_loss: n.uid().is_some_and(|uid| accepted.contains(uid.as_str())),
            ..observed_node(n, heartbeats(n), window_start, now)
        })
        .collect();
    let links = service
        .spec
        .links
        .iter()
        .filter_map(|link| {
            let target = objects.services.iter().find(|s| {
                s.name_any() == link.service && s.spec.application == service.spec.application
            })?;
            node_link(link, target)
        })
        .collect();
    Observed {
        links,
        filesystems,
        next_health_check: next_health_check(&objects.nodes, window_start, now),
        application: objects.application,
        clouds: objects.clouds,
        siblings,
        nodes,
        code,
        tenancy: objects.tenancy,
        now: *now,
    }
}

/// Whether the namespace's credits ran out, read directly (`cpsctl plan`; tenants may read their
/// account). Which Clouds admit the namespace is left to the controller: tenants cannot read
/// Namespaces.
async fn tenancy(client: &kube::Client, ns: &str) -> Result<Tenancy, Error> {
    let accounts: Api<CreditAccount> = Api::namespaced(client.clone(), ns);
    let account = accounts
        .get_opt(CREDIT_ACCOUNT_NAME)
        .await
        .ctx("get credit account", ns)?;
    Ok(Tenancy {
        refused_clouds: BTreeMap::new(),
        credits_exhausted: account.as_ref().and_then(exhausted),
        balance: account
            .as_ref()
            .and_then(|a| Some(a.status.as_ref()?.balance)),
        ..Default::default()
    })
}

/// Why the account cannot pay for nodes, while it cannot.
pub fn exhausted(account: &CreditAccount) -> Option<String> {
    let Some(status) = account.status.as_ref() else {
        // An account the credits loop has not looked at yet has used nothing: a grant of 0
        // pays for no node (else one could start, and be charged, before the first look).
        let grant = account.spec.grant;
        return (grant <= 0).then(|| format!(
            "the namespace's credits ran out (0 of {grant} left): its Services are stopped until CreditAccount {CREDIT_ACCOUNT_NAME} spec.grant is raised above {grant}"
        ));
    };
    let exhausted = status.exhausted.as_ref()?;
    Some(format!(
        "the namespace's credits ran out ({} of {} left): its Services are stopped until CreditAccount {CREDIT_ACCOUNT_NAME} spec.grant is raised above {}",
        status.balance, account.spec.grant, exhausted.grant
    ))
}

/// How a node reaches the linked Service `target`: for types whose links export something
/// (mysql, kvstore, filesystem), its endpoint once known, its credentials' Secret and its database.
fn node_link(link: &ServiceLink, target: &Service) -> Option<NodeLink> {
    let descriptor = target.spec.r#type.descriptor();
    if descriptor.link_exports.is_empty() {
        return None;
    }
    let setting = |key: &str| {
        target.spec.settings.get(key).cloned().or_else(|| {
            descriptor
                .setting(key)
                .and_then(|s| s.default.map(str::to_string))
        })
    };
    Some(NodeLink {
        prefix: link.prefix(),
        service: link.service.clone(),
        endpoint: target.status.as_ref().and_then(|s| s.endpoint.clone()),
        service_type: Some(target.spec.r#type),
        secret: descriptor
            .credentials
            .filter(|c| c.shared_with_links)
            .map(|c| c.secret_name(&link.service)),
        database: setting("database"),
        secret_version: target
            .status
            .as_ref()
            .and_then(|s| s.credentials_version.clone()),
        volume: link.volume.clone(),
        mount_path: link.mount_path.clone(),
    })
}

/// The ServiceNodes of a Service, by label.
pub async fn list_nodes(
    client: &kube::Client,
    ns: &str,
    service: &str,
) -> Result<Vec<ServiceNode>, Error> {
    let api = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{LABEL_SERVICE}={service}"));
    // Unreadable nodes are reported by their own loop; their names stay reserved anyway,
    // since creating a node under a taken name fails.
    let (nodes, _unreadable) = crate::list::list::<ServiceNode>(&api, &lp)
        .await
        .ctx("list service nodes", format!("{ns}/{service}"))?;
    Ok(nodes)
}

/// The UIDs of the nodes the Service's users let go although their data has no other copy
/// (`cpsctl node replace NODE --accept-data-loss`, `<uid>@<unix seconds>`), for
/// [`ACCEPTANCE_SECONDS`] after they said so: a node that recovered meanwhile is protected
/// again later. UIDs, not names: a later node under a reused name is not covered.
fn accepted_losses<'a>(
    service: &'a Service,
    now: &Timestamp,
) -> std::collections::BTreeSet<&'a str> {
    let Some(entries) = service
        .annotations()
        .get(conpaas_crds::labels::ANNOTATION_ACCEPT_DATA_LOSS)
    else {
        return Default::default();
    };
    entries
        .split(',')
        .filter_map(|entry| {
            let (uid, at) = entry.trim().split_once('@')?;
            let at: i64 = at.parse().ok()?;
            let age = now.as_second() - at;
            (0..ACCEPTANCE_SECONDS).contains(&age).then_some(uid)
        })
        .collect()
}

/// How long `cpsctl node replace --accept-data-loss` holds.
pub const ACCEPTANCE_SECONDS: i64 = 3600;

/// The earliest time a node's unhealthy spell counts from: while an outage holds remediation,
/// now (nothing is confirmed, so the hold's end starts every window afresh); after it, when
/// remediation resumed.
fn health_window_start(service: &Service, now: &Timestamp) -> Option<Timestamp> {
    let status = service.status.as_ref()?;
    if super::status::remediation_held(&status.conditions) {
        return Some(*now);
    }
    status.remediation_resumed_at.as_ref().map(|t| t.0)
}

fn observed_node(
    node: &ServiceNode,
    heartbeat: Option<Timestamp>,
    window_start: Option<Timestamp>,
    now: &Timestamp,
) -> ObservedNode {
    let status = node.status.clone().unwrap_or_default();
    // An agent that renewed its heartbeat within the timeout lives, whatever the node's condition
    // still says (the node loop rewrites it at its next pass): after an outage nodes recover one
    // by one, and the last one would otherwise be replaced just as it comes back.
    let beating = heartbeat.is_some_and(|t| {
        now.duration_since(t).as_secs_f64() < node.spec.heartbeat_timeout_seconds as f64
    });
    let silent = |reason: &str| beating && SILENT_AGENT_REASONS.contains(&reason);
    ObservedNode {
        metrics: status
            .agent
            .as_ref()
            .map(|a| a.metrics.clone())
            .unwrap_or_default(),
        name: node.name_any(),
        spec: node.spec.clone(),
        deleting: node.metadata.deletion_timestamp.is_some(),
        accept_data_loss: false,
        unhealthy: unhealthy(node, window_start, now).filter(|reason| !silent(reason)),
        suspect: healthy_false(node).is_some_and(|reason| !silent(&reason)),
        ready: is_condition_true(&status.conditions, READY),
        was_ready: status.ready_at.is_some(),
        // A condition written before the spec changed says nothing about the new one (a proxy
        // that has not yet applied a new member list).
        settled: status.conditions.iter().any(|c| {
            c.type_ == READY
                && c.observed_generation
                    .is_none_or(|g| Some(g) == node.metadata.generation)
        }),
        failure: status
            .conditions
            .iter()
            .find(|c| c.type_ == READY && c.status == "False" && node_status::is_failure(&c.reason))
            .map(|c| NodeFailure {
                reason: c.reason.clone(),
                message: c.message.clone(),
                stalled: node_status::is_stalled(&c.reason),
            }),
        address: status.address,
        agent_ready: status
            .agent
            .as_ref()
            .is_some_and(|a| a.state == Some(AgentState::Ready)),
        agent_failure: status
            .agent
            .as_ref()
            .filter(|a| {
                a.state == Some(AgentState::Failed)
                    && a.observed_generation.is_some()
                    && a.observed_generation == node.metadata.generation
            })
            .map(|a| {
                a.message
                    .clone()
                    .unwrap_or_else(|| "the role failed".into())
            }),
        routes_to: status.agent.as_ref().and_then(|a| a.routes_to.clone()),
        recovered_position: status
            .agent
            .as_ref()
            .and_then(|a| a.recovered_position.clone()),
        drained: status.agent.as_ref().is_some_and(|a| {
            a.state == Some(AgentState::Drained)
                && a.observed_generation == node.metadata.generation
        }),
        credentials_version: status
            .agent
            .as_ref()
            .and_then(|a| a.credentials_version.clone()),
        saved: status.agent.as_ref().and_then(|a| a.saved.clone()),
        save_failure: status.agent.as_ref().and_then(|a| a.save_failure.clone()),
        failed_code: status
            .agent
            .as_ref()
            .and_then(|a| a.failed_code_version.clone()),
        running_code: status.agent.and_then(|a| a.code_version),
    }
}

/// How long the cloud must have said a node's VM is gone before the node is replaced: a VM
/// asked for by its ID right after it was made can be missing for a moment (EC2's eventual
/// consistency), but a VM that is really gone is not worth a whole heartbeat timeout.
const VM_GONE_CONFIRMATION_SECONDS: f64 = 10.0;

/// How long a node's `Healthy` condition must have been False, for `reason`, before the node
/// counts as unhealthy: its heartbeat timeout, or less for a VM the cloud says is gone.
fn confirmation_seconds(node: &ServiceNode, reason: &str) -> f64 {
    let timeout = node.spec.heartbeat_timeout_seconds as f64;
    if reason == "VmGone" {
        timeout.min(VM_GONE_CONFIRMATION_SECONDS)
    } else {
        timeout
    }
}

/// Why a node counts as unhealthy: its `Healthy` condition has been False for long enough
/// ([`confirmation_seconds`]: the VM failed or vanished, or the agent went silent or never
/// reported), counted from `window_start` at the earliest.
fn unhealthy(
    node: &ServiceNode,
    window_start: Option<Timestamp>,
    now: &Timestamp,
) -> Option<&'static str> {
    let healthy = healthy_false_condition(node)?;
    if unhealthy_for(healthy, window_start, now) < confirmation_seconds(node, &healthy.reason) {
        return None;
    }
    UNHEALTHY_REASONS
        .iter()
        .copied()
        .find(|r| *r == healthy.reason)
}

fn healthy_false_condition(node: &ServiceNode) -> Option<&Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == HEALTHY && c.status == "False")
}

/// Seconds the node's unhealthy spell counts for.
fn unhealthy_for(healthy: &Condition, window_start: Option<Timestamp>, now: &Timestamp) -> f64 {
    let since = window_start.map_or(healthy.last_transition_time.0, |start| {
        start.max(healthy.last_transition_time.0)
    });
    now.duration_since(since).as_secs_f64()
}

/// Why the node's `Healthy` condition is False, however recently.
fn healthy_false(node: &ServiceNode) -> Option<String> {
    healthy_false_condition(node).map(|c| c.reason.clone())
}

/// Healthy reasons a fresh heartbeat disproves.
const SILENT_AGENT_REASONS: [&str; 2] = ["HeartbeatStale", "AgentNeverReported"];

/// When to look again at nodes whose `Healthy` condition is False: when the first one's
/// confirmation window ends, or every 10 s while they wait (remediation held).
fn next_health_check(
    nodes: &[&ServiceNode],
    window_start: Option<Timestamp>,
    now: &Timestamp,
) -> Option<Duration> {
    nodes
        .iter()
        .filter_map(|n| {
            let c = healthy_false_condition(n)?;
            let remaining =
                confirmation_seconds(n, &c.reason) - unhealthy_for(c, window_start, now);
            Some(if remaining > 0.0 {
                Duration::from_secs_f64(remaining + 0.1)
            } else {
                Duration::from_secs(10)
            })
        })
        .min()
}

/// The active code version with its digest (a ConfigMap's is read and hashed), or why there is
/// none.
pub async fn resolve_code(
    client: &kube::Client,
    ns: &str,
    service: &Service,
) -> Result<Result<Option<NodeCode>, Problem>, Error> {
    let Some(code) = &service.spec.code else {
        return Ok(Ok(None));
    };
    let Some(active) = &code.active else {
        return Ok(Ok(None));
    };
    let Some(version) = code.versions.iter().find(|v| &v.name == active) else {
        return Ok(Err(Problem::new(
            "CodeNotFound",
            format!("spec.code.active: no version named {active:?}"),
        )));
    };
    if let Some(artifact) = &version.artifact {
        return Ok(Ok(Some(NodeCode {
            version: version.name.clone(),
            artifact: true,
            sha256: artifact.sha256.clone(),
            ..Default::default()
        })));
    }
    if let Some(url) = &version.url {
        return Ok(Ok(Some(NodeCode {
            version: version.name.clone(),
            url: Some(url.clone()),
            sha256: version.sha256.clone().unwrap_or_default(),
            ..Default::default()
        })));
    }
    let Some(key) = &version.config_map else {
        return Ok(Ok(None));
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = match cms.get(&key.name).await {
        Ok(cm) => cm,
        Err(e) if is_not_found(&e) => {
            return Ok(Err(Problem::new(
                "CodeNotFound",
                format!(
                    "spec.code.versions[{}].configMap: ConfigMap {:?} does not exist",
                    version.name, key.name
                ),
            )));
        }
        Err(e) => return Err(e).ctx("get configmap", format!("{ns}/{}", key.name)),
    };
    let bytes = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(&key.key).map(|b| b.0.clone()))
        .or_else(|| {
            cm.data
                .as_ref()
                .and_then(|d| d.get(&key.key).map(|s| s.as_bytes().to_vec()))
        });
    let Some(bytes) = bytes else {
        return Ok(Err(Problem::new(
            "CodeNotFound",
            format!(
                "spec.code.versions[{}].configMap: ConfigMap {:?} has no key {:?}",
                version.name, key.name, key.key
            ),
        )));
    };
    Ok(Ok(Some(NodeCode {
        version: version.name.clone(),
        config_map: Some(key.clone()),
        sha256: hex::encode(Sha256::digest(&bytes)),
        ..Default::default()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Desired as Cond, merge};
    use conpaas_crds::v1alpha1::{ServiceNodeSpec, ServiceNodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    /// A node with heartbeat timeout 10 whose Healthy condition turned to `healthy` at `since`.
    fn node(healthy: bool, reason: &str, since: i64) -> ServiceNode {
        let mut n = ServiceNode::new(
            "s-node-0",
            ServiceNodeSpec {
                heartbeat_timeout_seconds: 10,
                ..crate::fixtures::node_spec("t")
            },
        );
        n.status = Some(ServiceNodeStatus {
            conditions: merge(
                &[],
                vec![Cond::new(HEALTHY, healthy, reason, "")],
                None,
                &Time(at(since)),
            ),
            ..Default::default()
        });
        n
    }

    #[test]
    fn a_new_account_without_credits_pays_for_nothing() {
        let account = |grant: i64| {
            CreditAccount::new(
                CREDIT_ACCOUNT_NAME,
                conpaas_crds::v1alpha1::CreditAccountSpec { grant },
            )
        };
        let said = exhausted(&account(0)).expect("a grant of 0 is exhausted at once");
        assert!(said.contains("raised above 0"), "{said}");
        assert_eq!(exhausted(&account(10)), None, "unused credits pay");
    }

    #[test]
    fn an_accepted_loss_holds_for_an_hour_and_for_that_node_only() {
        let mut service = Service::new(
            "s",
            serde_json::from_value(serde_json::json!({"application": "a", "type": "mysql"}))
                .unwrap(),
        );
        service.metadata.annotations = Some(
            [(
                conpaas_crds::labels::ANNOTATION_ACCEPT_DATA_LOSS.to_string(),
                "u1@1000, u2@-3000,u3".to_string(),
            )]
            .into(),
        );
        let accepted = accepted_losses(&service, &at(1100));
        assert_eq!(accepted.into_iter().collect::<Vec<_>>(), vec!["u1"]);
        assert!(accepted_losses(&service, &at(1000 + ACCEPTANCE_SECONDS)).is_empty());
    }

    #[test]
    fn a_vm_the_cloud_says_is_gone_is_not_waited_for_a_whole_heartbeat_timeout() {
        let slow = |reason: &str| {
            let mut n = node(false, reason, 100);
            n.spec.heartbeat_timeout_seconds = 120;
            n
        };
        let o = observed_node(&slow("VmGone"), None, None, &at(105));
        assert_eq!((o.unhealthy, o.suspect), (None, true), "a moment's absence");
        let o = observed_node(&slow("VmGone"), None, None, &at(111));
        assert_eq!(o.unhealthy, Some("VmGone"), "gone for 11 s");
        let o = observed_node(&slow("HeartbeatStale"), None, None, &at(111));
        assert_eq!(o.unhealthy, None, "a silent agent gets its whole timeout");
        let all = [slow("VmGone"), slow("HeartbeatStale")];
        let refs: Vec<&ServiceNode> = all.iter().collect();
        assert_eq!(
            next_health_check(&refs, None, &at(105)),
            Some(Duration::from_secs_f64(5.1)),
            "looked at again when the VM's absence is confirmed"
        );
    }

    #[test]
    fn a_fresh_heartbeat_outweighs_a_stale_condition() {
        let now = at(100);
        let stale = node(false, "HeartbeatStale", 50);
        let o = observed_node(&stale, Some(at(99)), None, &now);
        assert_eq!((o.unhealthy, o.suspect), (None, false), "it beats again");
        let o = observed_node(&stale, Some(at(50)), None, &now);
        assert_eq!((o.unhealthy, o.suspect), (Some("HeartbeatStale"), true));
        let o = observed_node(&stale, None, None, &now);
        assert_eq!(o.unhealthy, Some("HeartbeatStale"), "no heartbeat known");
        let gone = node(false, "VmGone", 50);
        let o = observed_node(&gone, Some(at(99)), None, &now);
        assert_eq!(
            o.unhealthy,
            Some("VmGone"),
            "a heartbeat does not bring a VM back"
        );
    }

    #[test]
    fn a_node_is_unhealthy_only_after_its_timeout() {
        let cases = [
            ("healthy", node(true, "Healthy", 0), None, 100, None, None),
            (
                "just turned: suspect, not yet replaced; look again when the window ends",
                node(false, "HeartbeatStale", 95),
                None,
                100,
                None,
                Some(5.1),
            ),
            (
                "unhealthy for the whole timeout",
                node(false, "HeartbeatStale", 90),
                None,
                100,
                Some("HeartbeatStale"),
                Some(10.0),
            ),
            (
                "unhealthy through an outage that ended 4 s ago: the window counts from its end",
                node(false, "HeartbeatStale", 50),
                Some(at(96)),
                100,
                None,
                Some(6.1),
            ),
            (
                "unhealthy for the whole timeout after the outage ended",
                node(false, "HeartbeatStale", 50),
                Some(at(80)),
                100,
                Some("HeartbeatStale"),
                Some(10.0),
            ),
            (
                "the VM is gone",
                node(false, "VmGone", 50),
                None,
                100,
                Some("VmGone"),
                Some(10.0),
            ),
            (
                "a reason that is not a health failure",
                node(false, "AgentStarting", 50),
                None,
                100,
                None,
                Some(10.0),
            ),
        ];
        for (what, n, window_start, now, want, next) in cases {
            let now = at(now);
            assert_eq!(unhealthy(&n, window_start, &now), want, "{what}");
            assert_eq!(
                healthy_false(&n).is_some(),
                next.is_some(),
                "{what}: suspect"
            );
            let got = next_health_check(&[&n], window_start, &now).map(|d| d.as_secs_f64());
            match (got, next) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 0.01, "{what}: {g} != {w}"),
                (g, w) => assert_eq!(g, w, "{what}"),
            }
        }
    }
}
