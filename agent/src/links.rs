//! The environment a node's links give the user code it runs, the same for every type that runs
//! user code (php, java, generic, mapreduce): each link's variables rendered from the linked
//! type's descriptor ([`conpaas_crds::types::links`]) with the values of its credentials Secret,
//! read with the node's own token, and the variables of the volumes it mounted. It depends on no
//! role: the roles call it.

use std::collections::BTreeMap;

use conpaas_crds::types::links::{self, LinkFacts};
use conpaas_crds::v1alpha1::NodeLink;

use kube::Client;

use crate::secrets;
use crate::volumes::Mounts;

/// The links' environment, or what it waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEnvironment {
    Ready(BTreeMap<String, String>),
    /// A linked Service has no endpoint yet: the message says which.
    Waiting(String),
}

impl LinkEnvironment {
    /// The environment when ready; else `None`, with what the role waits for noted in
    /// `waiting` (cleared when ready).
    pub fn or_wait(self, waiting: &mut Option<String>) -> Option<BTreeMap<String, String>> {
        match self {
            LinkEnvironment::Ready(environment) => {
                *waiting = None;
                Some(environment)
            }
            LinkEnvironment::Waiting(why) => {
                *waiting = Some(why);
                None
            }
        }
    }
}

/// The environment of `links` (those without a volume; volume links are `mounts`'); an error
/// names the Secret or value that could not be had.
pub async fn environment(
    client: &Client,
    namespace: &str,
    links: &[NodeLink],
    mounts: &Mounts,
) -> Result<LinkEnvironment, String> {
    let waiting: Vec<&str> = links
        .iter()
        .filter(|l| l.volume.is_none() && l.endpoint.is_none() && exports(l))
        .map(|l| l.service.as_str())
        .collect();
    if !waiting.is_empty() {
        return Ok(LinkEnvironment::Waiting(format!(
            "waiting for the linked service {} to have an endpoint",
            waiting.join(", ")
        )));
    }
    let mut out: BTreeMap<String, String> = mounts.environment()?.into_iter().collect();
    for link in links.iter().filter(|l| l.volume.is_none() && exports(l)) {
        let keys = link
            .service_type
            .map(|t| links::secret_keys(t.descriptor().link_exports))
            .unwrap_or_default();
        let secret = match (&link.secret, keys.is_empty()) {
            (_, true) => BTreeMap::new(),
            (Some(name), false) => {
                let (values, _) = secrets::read(client, namespace, name, &keys).await?;
                keys.iter().map(|k| k.to_string()).zip(values).collect()
            }
            (None, false) => {
                return Err(format!(
                    "link {}: no Secret to read {} from",
                    link.prefix,
                    keys.join(", ")
                ));
            }
        };
        out.extend(links::environment(LinkFacts {
            link,
            secret: &secret,
            mount: None,
        })?);
    }
    Ok(LinkEnvironment::Ready(out))
}

/// Whether a link exports anything (a link to a type that exports nothing waits for nothing).
fn exports(link: &NodeLink) -> bool {
    link.service_type
        .is_some_and(|t| !t.descriptor().link_exports.is_empty())
}

/// How long a links' environment that could not be read waits before it is read again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What an environment was read for: the links and the mounted volumes' variables.
type ReadFor = (Vec<NodeLink>, Vec<(String, String)>);

/// A node's links' environment, read again only when the links or the mounted volumes change
/// (a Secret rotation changes the links' `secretVersion`), or, after a failed read, once
/// [`RETRY`] passed: a role may ask on every look without a Secret read each time.
#[derive(Default)]
pub struct LinkCache {
    read_for: Option<ReadFor>,
    last: Option<Result<LinkEnvironment, String>>,
    retry_at: Option<tokio::time::Instant>,
}

impl LinkCache {
    /// The environment of `links` with `mounts` as they are now.
    pub async fn get(
        &mut self,
        client: &Client,
        namespace: &str,
        links: &[NodeLink],
        mounts: &Mounts,
    ) -> Result<LinkEnvironment, String> {
        let key = (links.to_vec(), mounts.environment().unwrap_or_default());
        let same = self.read_for.as_ref() == Some(&key);
        let retry_due = self
            .retry_at
            .is_none_or(|t| t <= tokio::time::Instant::now());
        if let Some(last) = self
            .last
            .as_ref()
            .filter(|l| same && (l.is_ok() || !retry_due))
        {
            return last.clone();
        }
        let read = environment(client, namespace, links, mounts).await;
        if let Err(e) = &read {
            tracing::warn!(error = %e, "reading the links' environment");
        }
        self.retry_at = Some(tokio::time::Instant::now() + RETRY);
        self.read_for = Some(key);
        self.last = Some(read.clone());
        read
    }

    /// The last environment read, if any (`None` before the first read).
    pub fn last(&self) -> Option<&Result<LinkEnvironment, String>> {
        self.last.as_ref()
    }
}
