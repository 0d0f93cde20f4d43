//! What a ServiceNode's Ready reason means to its Service: a failure to show, one that needs
//! someone to change something (Stalled), or a loss of health that remediation replaces.

/// Provider failures that repeat until someone changes the node's spec or its Cloud (credentials,
/// image, instance type): the loop stops retrying them and the Service is Stalled.
pub const PERMANENT_PROVIDER_REASONS: [&str; 5] = [
    "ProviderNotFound",
    "ProviderAlreadyExists",
    "ProviderUnauthorized",
    "ProviderUnsupported",
    "ProviderOther",
];

/// Ready reasons of a node that failed (rather than one still starting): shown on its Service.
pub fn is_failure(reason: &str) -> bool {
    reason.starts_with("Provider")
        || [
            "CloudNotFound",
            "CloudUnavailable",
            "AgentFailed",
            "VmFailed",
            "VmHalted",
            "VmUnknown",
        ]
        .contains(&reason)
}

/// Ready reasons of a node that cannot make progress without outside intervention.
pub fn is_stalled(reason: &str) -> bool {
    PERMANENT_PROVIDER_REASONS.contains(&reason) || reason == "CloudUnavailable"
}

/// Ready reasons that make a node unhealthy: its VM is lost or its agent went silent.
pub const UNHEALTHY_REASONS: [&str; 6] = [
    "VmFailed",
    "VmHalted",
    "VmUnknown",
    "VmGone",
    "HeartbeatStale",
    "AgentNeverReported",
];
