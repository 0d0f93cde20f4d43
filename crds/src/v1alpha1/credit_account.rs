//! `CreditAccount`: a tenant's credits (ConPaaS' credit system). One per tenant namespace, named
//! `credits`; a namespace without one is not metered. Administrators write `spec.grant`; the
//! controller alone writes the status, whose ledger says which started VM-hours of which nodes
//! were charged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The only name a credit account may have: one per namespace, found without a list.
pub const CREDIT_ACCOUNT_NAME: &str = "credits";

/// How long before a credit hour begins it is charged: a quarter of the hour, at most 10 minutes
/// (time enough for the Services to stop, and a database to save its data, when it cannot be
/// paid).
pub fn charge_lead(hour: std::time::Duration) -> std::time::Duration {
    (hour / 4).min(std::time::Duration::from_secs(600))
}

/// Credits given to a tenant (1 credit = 1 VM-hour unless a Cloud prices an instance type).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "conpaas.io",
    version = "v1alpha1",
    kind = "CreditAccount",
    namespaced,
    status = "CreditAccountStatus",
    shortname = "credits",
    category = "conpaas",
    doc = "A tenant's credits: each started VM-hour of its nodes is charged once.",
    printcolumn(name = "Grant", type_ = "integer", json_path = ".spec.grant"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.used"),
    printcolumn(name = "Balance", type_ = "integer", json_path = ".status.balance"),
    printcolumn(
        name = "Exhausted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Exhausted\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CreditAccountSpec {
    /// Credits given to the tenant so far. Raising it brings back what stopped when the credits
    /// ran out.
    #[schemars(range(min = 0))]
    pub grant: i64,
}

/// What the tenant has spent, as the controller charged it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreditAccountStatus {
    /// Credits charged: every charge of the ledger plus the settled ones.
    #[serde(default)]
    pub used: i64,
    /// `grant - used`.
    #[serde(default)]
    pub balance: i64,
    /// Credits per hour of the nodes running now.
    #[serde(default)]
    pub burn_rate: i64,
    /// Set when an hour could not be paid: every Service of the namespace stops, and nothing
    /// starts until `spec.grant` exceeds the grant recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausted: Option<Exhaustion>,
    /// The grant for which the warning at 10% left was given (once per grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warned_at_grant: Option<i64>,
    /// One charge per node: open while the node lives, closed with its final hours when it is
    /// deleted. The oldest closed charges are folded into `settled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["uid".into()]))]
    pub ledger: Vec<Charge>,
    /// Credits of closed charges no longer listed in the ledger, per Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["service".into()]))]
    pub settled: Vec<ServiceCredits>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Exhausted`: True while the credits cannot pay the tenant's next hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// When and at which grant the credits ran out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Exhaustion {
    /// When an hour could first not be paid.
    pub since: Time,
    /// `spec.grant` then.
    pub grant: i64,
}

/// The VM-hours charged for one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    /// The ServiceNode's UID.
    pub uid: String,
    /// The ServiceNode's name.
    pub node: String,
    /// Its Service.
    pub service: String,
    /// Credits per VM-hour (its Cloud's price for its instance type, 1 by default).
    pub price: i64,
    /// When its hours start: the node's creation (or the account's, if the node is older).
    pub start: Time,
    /// Started hours paid: the first when the node is admitted, each next one shortly before it
    /// begins; when the node is deleted, set to the hours started before its deletion.
    pub hours: i64,
    /// The node's deletion: the charge is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Time>,
    /// The node's VM was seen (created, or its creation begun); a charge whose node never had
    /// one is closed at zero hours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm: bool,
}

impl Charge {
    /// Credits this charge costs.
    pub fn credits(&self) -> i64 {
        self.hours * self.price
    }
}

/// Credits charged for one Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCredits {
    /// Service name.
    pub service: String,
    /// Credits.
    pub credits: i64,
}

impl CreditAccountStatus {
    /// The charge of the node with this UID (a node has at most one).
    pub fn charge(&self, uid: &str) -> Option<&Charge> {
        self.ledger.iter().find(|c| c.uid == uid)
    }

    /// Credits charged for `service`, closed and open, settled included.
    pub fn service_credits(&self, service: &str) -> i64 {
        let listed: i64 = self
            .ledger
            .iter()
            .filter(|c| c.service == service)
            .map(Charge::credits)
            .sum();
        let settled: i64 = self
            .settled
            .iter()
            .filter(|s| s.service == service)
            .map(|s| s.credits)
            .sum();
        listed + settled
    }
}
