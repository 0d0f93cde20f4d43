//! Label selectors as Kubernetes evaluates them (matchLabels and matchExpressions, all of them
//! must hold; an empty selector matches everything).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An unknown operator matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("tier", "gold")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(vec!["blocked".into()]),
            }]),
        };
        let name = "kubernetes.io/metadata.name";
        assert!(matches(
            &selector,
            &labels(&[("tier", "gold"), (name, "a")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("tier", "gold"), (name, "blocked")])
        ));
        assert!(!matches(
            &selector,
            &labels(&[("tier", "silver"), (name, "a")])
        ));
        assert!(!matches(&selector, &labels(&[(name, "a")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        let exists = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tenant".into(),
                operator: "Exists".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(matches(&exists, &labels(&[("tenant", "")])));
        assert!(!matches(&exists, &labels(&[])));
    }
}
