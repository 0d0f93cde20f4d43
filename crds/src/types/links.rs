//! What a link exports, written once per linked type in its descriptor ([`LinkExport`]) and
//! rendered by one pure function ([`environment`]) that every role running user code calls: a
//! php, java, generic or mapreduce node linked to a mysql as `DB` sees the same `DB_*` variables.

use std::collections::BTreeMap;

use crate::v1alpha1::NodeLink;

/// One variable a link exports: `<AS>_<name>`.
#[derive(Debug)]
pub struct LinkExport {
    /// The variable's name after `<AS>_`.
    pub name: &'static str,
    /// What it holds, for the docs.
    pub what: &'static str,
    /// Its value: text with `{host}`, `{port}`, `{endpoint}` (the linked Service's
    /// `status.endpoint`), `{database}`, `{volume}`, `{mount}` (where the node mounted the
    /// volume) and `{secret:KEY}` (a key of the linked type's credentials Secret).
    pub value: &'static str,
}

/// What a node knows of one link when it renders its variables.
#[derive(Debug, Clone, Copy)]
pub struct LinkFacts<'a> {
    pub link: &'a NodeLink,
    /// The values of the linked Service's credentials Secret that the exports name.
    pub secret: &'a BTreeMap<String, String>,
    /// Where the node mounted the link's volume (volume links).
    pub mount: Option<&'a str>,
}

/// The keys of the credentials Secret that `exports` read.
pub fn secret_keys(exports: &[LinkExport]) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = exports
        .iter()
        .flat_map(|e| placeholders(e.value))
        .filter_map(|p| p.strip_prefix("secret:"))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Every placeholder in a value template, without its braces.
pub fn placeholders(template: &'static str) -> impl Iterator<Item = &'static str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// The variables one link exports, by its linked type's descriptor; an error names the
/// placeholder that has no value (a link without an endpoint yet, a Secret without a key).
pub fn environment(facts: LinkFacts<'_>) -> Result<Vec<(String, String)>, String> {
    let Some(service_type) = facts.link.service_type else {
        return Ok(Vec::new());
    };
    let exports = service_type.descriptor().link_exports;
    exports
        .iter()
        .map(|export| {
            let value = render(export.value, &facts).map_err(|missing| {
                format!(
                    "link {} ({}): {}_{} needs {missing}",
                    facts.link.prefix, facts.link.service, facts.link.prefix, export.name
                )
            })?;
            Ok((format!("{}_{}", facts.link.prefix, export.name), value))
        })
        .collect()
}

/// `template` with each placeholder replaced; the first one without a value is the error.
fn render(template: &str, facts: &LinkFacts<'_>) -> Result<String, String> {
    let link = facts.link;
    let endpoint = link.endpoint.as_deref();
    // A kvstore's endpoint lists seeds; host and port are those of a single-address endpoint.
    let host_port = endpoint.map(|e| e.rsplit_once(':').unwrap_or((e, "")));
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &rest[start + 1..start + len];
        let value = match name {
            "host" => host_port.map(|(h, _)| h),
            "port" => host_port.map(|(_, p)| p),
            "endpoint" => endpoint,
            "database" => Some(link.database.as_deref().unwrap_or_default()),
            "volume" => link.volume.as_deref(),
            "mount" => facts.mount,
            other => match other.strip_prefix("secret:") {
                Some(key) => facts.secret.get(key).map(String::as_str),
                None => None,
            },
        };
        out.push_str(value.ok_or_else(|| format!("{{{name}}}"))?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1alpha1::ServiceType;

    fn link(service_type: ServiceType, endpoint: Option<&str>) -> NodeLink {
        NodeLink {
            prefix: "DB".into(),
            service: "db".into(),
            service_type: Some(service_type),
            endpoint: endpoint.map(str::to_string),
            database: Some("wp".into()),
            ..Default::default()
        }
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_mysql_link_exports_its_address_credentials_and_url() {
        let link = link(ServiceType::Mysql, Some("127.1.2.3:3306"));
        let secret = values(&[("username", "u"), ("password", "p")]);
        let env: BTreeMap<_, _> = environment(LinkFacts {
            link: &link,
            secret: &secret,
            mount: None,
        })
        .unwrap()
        .into_iter()
        .collect();
        let expected = values(&[
            ("DB_HOST", "127.1.2.3"),
            ("DB_PORT", "3306"),
            ("DB_USER", "u"),
            ("DB_PASSWORD", "p"),
            ("DB_DATABASE", "wp"),
            ("DB_URL", "mysql://u:p@127.1.2.3:3306/wp"),
        ]);
        assert_eq!(env, expected);
    }

    #[test]
    fn a_kvstore_link_exports_its_seeds_and_password() {
        let link = link(ServiceType::Kvstore, Some("127.0.0.1:6379,127.0.0.2:6379"));
        let secret = values(&[("password", "p")]);
        let env = environment(LinkFacts {
            link: &link,
            secret: &secret,
            mount: None,
        })
        .unwrap();
        assert_eq!(
            env,
            vec![
                (
                    "DB_HOSTS".to_string(),
                    "127.0.0.1:6379,127.0.0.2:6379".into()
                ),
                ("DB_PASSWORD".to_string(), "p".into())
            ]
        );
    }

    #[test]
    fn what_is_missing_is_named() {
        let link = link(ServiceType::Mysql, None);
        let err = environment(LinkFacts {
            link: &link,
            secret: &BTreeMap::new(),
            mount: None,
        })
        .unwrap_err();
        assert!(err.contains("DB_HOST needs {host}"), "{err}");
        let link = self::link(ServiceType::Mysql, Some("h:1"));
        let err = environment(LinkFacts {
            link: &link,
            secret: &values(&[("username", "u")]),
            mount: None,
        })
        .unwrap_err();
        assert!(err.contains("{secret:password}"), "{err}");
    }

    #[test]
    fn a_volume_link_exports_where_it_is_mounted() {
        let mut link = link(ServiceType::Filesystem, Some("127.0.0.9:24007"));
        link.volume = Some("data".into());
        let env = environment(LinkFacts {
            link: &link,
            secret: &BTreeMap::new(),
            mount: Some("/srv/data"),
        })
        .unwrap();
        assert!(
            env.contains(&("DB_MOUNT".into(), "/srv/data".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("DB_VOLUME".into(), "data".into())),
            "{env:?}"
        );
        assert!(
            env.contains(&("DB_SERVERS".into(), "127.0.0.9:24007".into())),
            "{env:?}"
        );
    }
}
