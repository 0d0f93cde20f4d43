//! Checks that a Service can be satisfied and turns its spec into the planner's [`Desired`].
//! Pure: everything it needs was observed before.

use std::collections::{BTreeMap, BTreeSet};

use conpaas_crds::types::DataCopies;
use conpaas_crds::v1alpha1::{
    ApplicationSpec, DesiredState, FilesystemNodeSpec, NodeCode, NodeLink, OnFailure, ServiceSpec,
    ServiceType,
};

use super::autoscale::Scaling;
use super::model::{Desired, DesiredRole, DrainPolicy, NodeConfig, RolloutPolicy};
use super::observe::Tenancy;

pub use super::model::Problem;

/// What validation needs besides the Service itself.
pub struct Inputs<'a> {
    /// Service name.
    pub service: &'a str,
    /// The Application's spec, when the Application exists.
    pub application: Option<&'a ApplicationSpec>,
    /// Names of the Clouds that exist.
    pub clouds: &'a BTreeSet<String>,
    /// Names of the other Services of the same Application.
    pub siblings: &'a BTreeMap<String, Vec<String>>,
    /// The volumes of the filesystem Services among them.
    pub filesystems: &'a BTreeMap<String, Vec<String>>,
    /// The active code version, resolved with its digest, or why it could not be.
    pub code: Result<Option<NodeCode>, Problem>,
    /// The Service carries `conpaas.io/paused: "true"`.
    pub paused: bool,
    /// The linked services, as nodes reach them.
    pub links: Vec<NodeLink>,
    /// The SHA-256 of the data the Service saved at its last stop (its status).
    pub saved: Option<String>,
    /// What the Service's tenant may use.
    pub tenancy: &'a Tenancy,
    /// The counts the autoscaler set, and the nodes it removes first.
    pub scaling: &'a Scaling,
}

/// The data a Service saved at its last stop, as its nodes restore it: the archive `sha256` in
/// the artifact store.
pub(crate) fn saved_data(sha256: String) -> NodeCode {
    NodeCode {
        version: "saved-data".into(),
        config_map: None,
        url: None,
        artifact: true,
        sha256,
    }
}

/// Validates `spec` against what exists.
pub fn validate(spec: &ServiceSpec, inputs: Inputs<'_>) -> Result<Desired, Problem> {
    let Some(application) = inputs.application else {
        return Err(Problem::new(
            "ApplicationNotFound",
            format!(
                "spec.application: Application {:?} does not exist in this namespace",
                spec.application
            ),
        ));
    };
    let descriptor = spec.r#type.descriptor();
    descriptor
        .check_settings(&spec.settings)
        .map_err(|message| Problem::new("InvalidSettings", message))?;
    for link in &spec.links {
        if link.service == inputs.service {
            return Err(Problem::new(
                "InvalidLink",
                "spec.links: a service cannot link to itself",
            ));
        }
        if !inputs.siblings.contains_key(&link.service) {
            return Err(Problem::new(
                "LinkNotFound",
                format!(
                    "spec.links[{}]: no Service of that name in Application {:?}",
                    link.service, spec.application
                ),
            ));
        }
    }

    check_volume_links(spec, inputs.filesystems)?;

    if let Some(cycle) = link_cycle(inputs.service, spec, inputs.siblings) {
        return Err(Problem::new(
            "LinkCycle",
            format!("spec.links: {} forms a cycle", cycle.join(" -> ")),
        ));
    }

    let mut roles = Vec::new();
    for role in descriptor.roles {
        let name = role.name;
        let role_spec = spec.roles.iter().find(|r| r.name == name);
        let count = inputs
            .scaling
            .count(name)
            .unwrap_or_else(|| spec.role_count(name));
        let cloud = role_spec
            .and_then(|r| r.cloud.clone())
            .or_else(|| application.cloud.clone());
        let Some(cloud) = cloud else {
            return Err(Problem::new(
                "NoCloud",
                format!(
                    "spec.roles[{name}].cloud: no cloud given here nor in Application {:?} spec.cloud",
                    spec.application
                ),
            ));
        };
        if count > 0 && !inputs.clouds.contains(&cloud) {
            return Err(Problem::new(
                "CloudNotFound",
                format!("spec.roles[{name}]: Cloud {cloud:?} does not exist"),
            ));
        }
        if count > 0
            && let Some(why) = inputs.tenancy.refused_clouds.get(&cloud)
        {
            return Err(Problem::new(
                "CloudNotAllowed",
                format!("spec.roles[{name}]: {why}"),
            ));
        }
        if count > 0
            && let Some(priced) = inputs.tenancy.priced.get(&cloud)
        {
            let asked = role_spec.and_then(|r| r.instance_type.clone());
            let field = if asked.is_some() {
                format!("spec.roles[{name}].instanceType")
            } else {
                format!("spec.roles[{name}]: Cloud {cloud:?}'s default instance type")
            };
            if let Some(unpriced) = asked
                .or_else(|| priced.default_type.clone())
                .filter(|t| !priced.types.contains(t))
            {
                return Err(Problem::new(
                    "InstanceTypeNotPriced",
                    format!(
                        "{field} {unpriced:?} has no price on Cloud {cloud:?} (it prices: {}); \
                         a metered namespace runs only priced types",
                        priced.types.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if let Some(check) = spec.r#type.descriptor().check_count {
            check(spec, name, count).map_err(|r| Problem::new(r.reason, r.message))?;
        }
        roles.push(DesiredRole {
            name: name.to_string(),
            count,
            cloud,
            instance_type: role_spec.and_then(|r| r.instance_type.clone()),
            volume: role_spec.and_then(|r| r.volume.clone()),
        });
    }

    Ok(Desired {
        service: inputs.service.to_string(),
        application: spec.application.clone(),
        service_type: spec.r#type,
        running: spec.state == DesiredState::Running && inputs.tenancy.credits_exhausted.is_none(),
        leaving_first: inputs.scaling.leaving_first.clone(),
        held: match &inputs.tenancy.credits_exhausted {
            Some(why) if spec.state == DesiredState::Running => {
                Some(Problem::new("CreditsExhausted", why.clone()))
            }
            _ => None,
        },
        roles,
        config: NodeConfig {
            code: inputs.code?,
            settings: spec.settings.clone(),
            startup_script: spec.startup_script.clone(),
            with_members: descriptor.members,
            generic: spec.generic.clone(),
            filesystem: (spec.r#type == ServiceType::Filesystem).then(|| FilesystemNodeSpec {
                volumes: spec.filesystem.clone().unwrap_or_default().volumes,
            }),
            links: inputs.links,
            heartbeat_timeout_seconds: spec.health.heartbeat_timeout_seconds,
            rollout: spec
                .code
                .as_ref()
                .map(|c| RolloutPolicy {
                    max_unavailable: c.rollout.max_unavailable.max(1) as usize,
                    rollback: c.rollout.on_failure == OnFailure::Rollback,
                })
                .unwrap_or_default(),
        },
        max_unhealthy_percent: spec.health.max_unhealthy_percent,
        // Running out of credits stops a paused Service too: pausing is no way to run unpaid.
        paused: inputs.paused && inputs.tenancy.credits_exhausted.is_none(),
        saved_on_stop: descriptor.saved_on_stop,
        data_copies: descriptor
            .data_copies
            .map_or(DataCopies::None, |copies| copies(spec)),
        restore: inputs.saved.map(saved_data),
        drain: DrainPolicy {
            seconds: spec.drain_seconds.unwrap_or(descriptor.drain_seconds),
            routers: descriptor.routers,
        },
    })
}

/// A link to a filesystem Service names one of its volumes and is made by a type that mounts
/// it; a volume is only linked on a filesystem Service.
fn check_volume_links(
    spec: &ServiceSpec,
    filesystems: &BTreeMap<String, Vec<String>>,
) -> Result<(), Problem> {
    for link in &spec.links {
        let at = format!("spec.links[{}]", link.service);
        let volumes = filesystems.get(&link.service);
        match (&link.volume, volumes) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(Problem::new(
                    "InvalidLink",
                    format!(
                        "{at}.volume: Service {:?} is not a filesystem; only a filesystem Service has volumes",
                        link.service
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::new(
                    "InvalidLink",
                    format!(
                        "{at}: a link to a filesystem Service names the volume to mount (volume, mountPath)"
                    ),
                ));
            }
            (Some(volume), Some(volumes)) => {
                if !volumes.contains(volume) {
                    return Err(Problem::new(
                        "LinkNotFound",
                        format!(
                            "{at}.volume: filesystem {:?} has no volume {volume:?} (it has: {})",
                            link.service,
                            if volumes.is_empty() {
                                "none".to_string()
                            } else {
                                volumes.join(", ")
                            }
                        ),
                    ));
                }
                if !spec.r#type.descriptor().runs_user_code {
                    let mounting: Vec<&str> = ServiceType::ALL
                        .iter()
                        .filter(|t| t.descriptor().runs_user_code)
                        .map(|t| t.as_str())
                        .collect();
                    return Err(Problem::new(
                        "InvalidLink",
                        format!(
                            "{at}.volume: a {} service does not mount volumes (only {} do)",
                            spec.r#type.as_str(),
                            mounting.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A path of links from `service` back to itself, if there is one.
fn link_cycle(
    service: &str,
    spec: &ServiceSpec,
    siblings: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut stack: Vec<Vec<String>> = spec
        .links
        .iter()
        .map(|l| vec![service.to_string(), l.service.clone()])
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        if last == service {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in siblings.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::{RoleSpec, ServiceLink, ServiceType};

    fn spec(ty: ServiceType, roles: Vec<RoleSpec>) -> ServiceSpec {
        ServiceSpec {
            application: "demo".into(),
            r#type: ty,
            state: DesiredState::Running,
            roles,
            replicas: None,
            autoscaling: vec![],
            code: None,
            settings: Default::default(),
            startup_script: None,
            health: Default::default(),
            deletion_policy: Default::default(),
            links: vec![],
            generic: None,
            filesystem: None,
            drain_seconds: None,
        }
    }

    fn role(name: &str, count: i32, cloud: Option<&str>) -> RoleSpec {
        RoleSpec {
            name: name.into(),
            count: Some(count),
            cloud: cloud.map(Into::into),
            instance_type: None,
            volume: None,
        }
    }

    fn run(
        spec: &ServiceSpec,
        app_cloud: Option<&str>,
        clouds: &[&str],
    ) -> Result<Desired, Problem> {
        run_for(spec, app_cloud, clouds, &Default::default())
    }

    /// Validates `spec` for a tenant that may use what `tenancy` says.
    fn run_for(
        spec: &ServiceSpec,
        app_cloud: Option<&str>,
        clouds: &[&str],
        tenancy: &Tenancy,
    ) -> Result<Desired, Problem> {
        let app = ApplicationSpec {
            cloud: app_cloud.map(Into::into),
            description: None,
        };
        let clouds: BTreeSet<String> = clouds.iter().map(|c| c.to_string()).collect();
        let siblings = BTreeMap::from([("db".to_string(), vec![])]);
        validate(
            spec,
            Inputs {
                service: "hello",
                application: Some(&app),
                clouds: &clouds,
                siblings: &siblings,
                filesystems: &BTreeMap::new(),
                code: Ok(None),
                paused: false,
                links: vec![],
                saved: None,
                tenancy,
                scaling: &Default::default(),
            },
        )
    }

    #[test]
    fn a_tenant_runs_only_on_clouds_that_admit_it_and_while_its_credits_pay() {
        let hello = spec(ServiceType::Helloworld, vec![role("node", 1, None)]);
        let with = |tenancy: &Tenancy| run_for(&hello, Some("local"), &["local"], tenancy);
        let refused = Tenancy {
            refused_clouds: BTreeMap::from([("local".into(), "not for you".into())]),
            ..Default::default()
        };
        let problem = with(&refused).unwrap_err();
        assert_eq!(problem.reason, "CloudNotAllowed");
        assert_eq!(problem.message, "spec.roles[node]: not for you");
        // Metered, on a Cloud with prices: only priced instance types run.
        let priced = Tenancy {
            priced: BTreeMap::from([(
                "local".into(),
                crate::service::observe::PricedTypes {
                    types: ["small".to_string()].into(),
                    default_type: Some("small".into()),
                },
            )]),
            ..Default::default()
        };
        assert!(with(&priced).is_ok(), "the default type is priced");
        let mut large = spec(ServiceType::Helloworld, vec![role("node", 1, None)]);
        large.roles[0].instance_type = Some("x1.32xlarge".into());
        let problem = run_for(&large, Some("local"), &["local"], &priced).unwrap_err();
        assert_eq!(problem.reason, "InstanceTypeNotPriced");
        assert_eq!(
            problem.message,
            "spec.roles[node].instanceType \"x1.32xlarge\" has no price on Cloud \"local\" (it prices: small); a metered namespace runs only priced types"
        );
        let broke = Tenancy {
            credits_exhausted: Some("out of credits".into()),
            ..Default::default()
        };
        let held = with(&broke).unwrap();
        assert!(!held.running, "held stopped");
        assert_eq!(
            held.held,
            Some(Problem::new("CreditsExhausted", "out of credits"))
        );
        assert!(with(&Default::default()).unwrap().running);
    }

    #[test]
    fn roles_default_to_the_application_cloud_and_type_counts() {
        let d = run(
            &spec(ServiceType::Generic, vec![role("node", 2, None)]),
            Some("local"),
            &["local"],
        )
        .unwrap();
        let roles: Vec<(&str, i32, &str)> = d
            .roles
            .iter()
            .map(|r| (r.name.as_str(), r.count, r.cloud.as_str()))
            .collect();
        assert_eq!(roles, vec![("master", 1, "local"), ("node", 2, "local")]);
        assert!(d.config.with_members);
    }

    #[test]
    fn replicas_count_the_default_role_and_a_role_entry_may_leave_its_count_out() {
        let placed = RoleSpec {
            count: None,
            ..role("node", 0, Some("other"))
        };
        let mut scaled = spec(ServiceType::Generic, vec![placed]);
        scaled.replicas = Some(4);
        let d = run(&scaled, Some("local"), &["local", "other"]).unwrap();
        let node = d.roles.iter().find(|r| r.name == "node").unwrap();
        assert_eq!((node.count, node.cloud.as_str()), (4, "other"));

        scaled.replicas = None;
        let d = run(&scaled, Some("local"), &["local", "other"]).unwrap();
        let node = d.roles.iter().find(|r| r.name == "node").unwrap();
        assert_eq!(node.count, 0, "no count anywhere: the type's default");
    }

    #[test]
    fn unsatisfiable_services_name_the_field() {
        let cases: Vec<(ServiceSpec, Option<&str>, &str, &str)> = vec![
            (
                spec(ServiceType::Helloworld, vec![role("node", 1, None)]),
                None,
                "NoCloud",
                "spec.roles[node].cloud",
            ),
            (
                spec(ServiceType::Helloworld, vec![role("node", 1, Some("aws"))]),
                Some("local"),
                "CloudNotFound",
                "spec.roles[node]",
            ),
            (
                {
                    let mut s = spec(ServiceType::Helloworld, vec![]);
                    s.settings.insert("colour".into(), "red".into());
                    s
                },
                Some("local"),
                "InvalidSettings",
                "spec.settings.colour",
            ),
            (
                {
                    let mut s = spec(ServiceType::Helloworld, vec![]);
                    s.links.push(ServiceLink {
                        service: "nope".into(),
                        as_name: None,
                        volume: None,
                        mount_path: None,
                    });
                    s
                },
                Some("local"),
                "LinkNotFound",
                "spec.links[nope]",
            ),
        ];
        for (spec, app_cloud, reason, field) in cases {
            let problem = run(&spec, app_cloud, &["local"]).unwrap_err();
            assert_eq!(problem.reason, reason);
            assert!(
                problem.message.starts_with(field),
                "{} should name {field}",
                problem.message
            );
        }
    }

    #[test]
    fn link_cycles_are_reported_with_their_path() {
        let mut s = spec(ServiceType::Helloworld, vec![]);
        s.links.push(ServiceLink {
            service: "db".into(),
            as_name: None,
            volume: None,
            mount_path: None,
        });
        let app = ApplicationSpec {
            cloud: Some("local".into()),
            description: None,
        };
        let clouds = BTreeSet::from(["local".to_string()]);
        let siblings = BTreeMap::from([
            ("db".to_string(), vec!["cache".to_string()]),
            ("cache".to_string(), vec!["hello".to_string()]),
        ]);
        let inputs = Inputs {
            service: "hello",
            application: Some(&app),
            clouds: &clouds,
            siblings: &siblings,
            filesystems: &BTreeMap::new(),
            code: Ok(None),
            paused: false,
            links: vec![],
            saved: None,
            tenancy: &Default::default(),
            scaling: &Default::default(),
        };
        let problem = validate(&s, inputs).unwrap_err();
        assert_eq!(problem.reason, "LinkCycle");
        assert_eq!(
            problem.message,
            "spec.links: hello -> db -> cache -> hello forms a cycle"
        );
    }

    /// Validates `spec` beside a mysql `db` and a filesystem `fs` with the volume `data`.
    fn run_beside_a_filesystem(spec: &ServiceSpec) -> Result<Desired, Problem> {
        let app = ApplicationSpec {
            cloud: Some("local".into()),
            description: None,
        };
        let clouds = BTreeSet::from(["local".to_string()]);
        let siblings = BTreeMap::from([("db".to_string(), vec![]), ("fs".to_string(), vec![])]);
        let filesystems = BTreeMap::from([("fs".to_string(), vec!["data".to_string()])]);
        validate(
            spec,
            Inputs {
                service: "hello",
                application: Some(&app),
                clouds: &clouds,
                siblings: &siblings,
                filesystems: &filesystems,
                code: Ok(None),
                paused: false,
                links: vec![],
                saved: None,
                tenancy: &Default::default(),
                scaling: &Default::default(),
            },
        )
    }

    #[test]
    fn a_volume_link_names_a_volume_of_a_filesystem_and_only_mounting_types_make_one() {
        let link = |service: &str, volume: Option<&str>| ServiceLink {
            service: service.into(),
            as_name: None,
            volume: volume.map(Into::into),
            mount_path: volume.map(|_| "uploads".into()),
        };
        let with = |ty: ServiceType, l: ServiceLink| {
            let mut s = spec(ty, vec![]);
            s.links.push(l);
            run_beside_a_filesystem(&s)
        };
        assert!(with(ServiceType::Php, link("fs", Some("data"))).is_ok());
        assert!(with(ServiceType::Generic, link("fs", Some("data"))).is_ok());
        let cases = [
            (
                ServiceType::Php,
                link("fs", Some("nope")),
                "LinkNotFound",
                "has no volume \"nope\" (it has: data)",
            ),
            (
                ServiceType::Php,
                link("fs", None),
                "InvalidLink",
                "names the volume to mount",
            ),
            (
                ServiceType::Php,
                link("db", Some("data")),
                "InvalidLink",
                "is not a filesystem",
            ),
            (
                ServiceType::Mysql,
                link("fs", Some("data")),
                "InvalidLink",
                "a mysql service does not mount volumes",
            ),
        ];
        for (ty, l, reason, says) in cases {
            let problem = with(ty, l).unwrap_err();
            assert_eq!(problem.reason, reason, "{}", problem.message);
            assert!(problem.message.contains(says), "{}", problem.message);
            assert!(
                problem.message.starts_with("spec.links["),
                "{}",
                problem.message
            );
        }
    }

    #[test]
    fn a_filesystem_runs_at_least_each_volumes_group_and_tells_its_nodes_the_volumes() {
        let fs = |nodes: i32, replicas: i32, disperse: Option<i32>| {
            let mut s = spec(ServiceType::Filesystem, vec![role("storage", nodes, None)]);
            s.filesystem = Some(conpaas_crds::v1alpha1::FilesystemSpec {
                volumes: vec![conpaas_crds::v1alpha1::VolumeSpec {
                    name: "data".into(),
                    replicas,
                    disperse,
                }],
            });
            run_beside_a_filesystem(&s)
        };
        let problem = fs(1, 2, None).unwrap_err();
        assert_eq!(problem.reason, "VolumeTooWide");
        assert!(
            problem
                .message
                .contains("1 storage nodes cannot hold volume data"),
            "{}",
            problem.message
        );
        assert_eq!(fs(2, 1, Some(3)).unwrap_err().reason, "VolumeTooWide");
        let desired = fs(3, 1, Some(3)).unwrap();
        let volumes = desired.config.filesystem.unwrap().volumes;
        assert_eq!(volumes[0].group_size(), 3);
        assert!(fs(2, 2, None).is_ok());
    }

    #[test]
    fn a_kvstore_runs_at_least_three_masters() {
        let kv = |nodes: i32, replicas: &str| {
            let mut s = spec(ServiceType::Kvstore, vec![role("node", nodes, None)]);
            s.settings.insert("replicas".into(), replicas.into());
            run_beside_a_filesystem(&s)
        };
        assert!(kv(3, "0").is_ok());
        let problem = kv(4, "1").unwrap_err();
        assert_eq!(problem.reason, "TooFewMasters");
        assert!(
            problem.message.contains("run at least 6"),
            "{}",
            problem.message
        );
        assert!(
            kv(5, "1").is_err(),
            "a master without its replica would hold its slots' only copy"
        );
        assert!(kv(6, "1").is_ok());
        assert!(kv(7, "1").is_ok(), "an extra replica");
        assert!(kv(9, "2").is_ok());
        assert!(kv(8, "2").is_err());
    }

    #[test]
    fn a_missing_application_is_reported() {
        let clouds = BTreeSet::new();
        let siblings = BTreeMap::new();
        let problem = validate(
            &spec(ServiceType::Helloworld, vec![]),
            Inputs {
                service: "hello",
                application: None,
                clouds: &clouds,
                siblings: &siblings,
                filesystems: &BTreeMap::new(),
                code: Ok(None),
                paused: false,
                links: vec![],
                saved: None,
                tenancy: &Default::default(),
                scaling: &Default::default(),
            },
        )
        .unwrap_err();
        assert_eq!(problem.reason, "ApplicationNotFound");
    }
}
