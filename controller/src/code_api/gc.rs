//! Removes archives from the store that no Service keeps (its versions, its last saves) in a
//! namespace that holds them. An upload is stored before cpsctl writes its version into the
//! Service, so only archives older than a grace period go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conpaas_artifacts::{Listed, Store};
use conpaas_reconcilers::Context;
use conpaas_reconcilers::caches::readable;

/// By archive digest: the namespaces whose Services keep it, or the namespaces it was stored
/// for.
pub type ByArchive = BTreeMap<String, BTreeSet<String>>;

/// The archives to delete: written more than `grace` before `now` (Unix seconds) and kept by no
/// namespace that holds them (a Service naming another tenant's digest keeps nothing alive).
/// An archive no one holds was stored before holders were recorded: any Service naming it
/// keeps it.
pub fn unreferenced(
    listed: &[Listed],
    named: &ByArchive,
    holders: &ByArchive,
    now: i64,
    grace: Duration,
) -> Vec<String> {
    let kept = |sha256: &str| {
        named
            .get(sha256)
            .is_some_and(|namers| holders.get(sha256).is_none_or(|h| !h.is_disjoint(namers)))
    };
    listed
        .iter()
        .filter(|a| !kept(&a.sha256))
        .filter(|a| now - a.written >= grace.as_secs() as i64)
        .map(|a| a.sha256.clone())
        .collect()
}

/// The holders to record for archives written before `started` (by a controller that did not
/// record holders): the namespaces naming each one no one holds.
pub fn unrecorded(
    listed: &[Listed],
    named: &ByArchive,
    holders: &ByArchive,
    started: i64,
) -> Vec<(String, String)> {
    listed
        .iter()
        .filter(|a| a.written < started && !holders.contains_key(&a.sha256))
        .flat_map(|a| {
            let namers = named.get(&a.sha256).into_iter().flatten();
            namers.map(|ns| (a.sha256.clone(), ns.clone()))
        })
        .collect()
}

/// Every archive a Service keeps (its versions, the data it saved at its last stops) with the
/// namespaces keeping it, or None when a Service cannot be read (what it names is unknown, so
/// nothing may be deleted).
fn named_archives(ctx: &Context) -> Option<ByArchive> {
    let mut names = ByArchive::new();
    for entry in ctx.caches.services.state() {
        let service = readable(&entry)?;
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        for sha256 in service.kept_archives() {
            names.entry(sha256).or_default().insert(namespace.clone());
        }
    }
    Some(names)
}

/// Sweeps the store every `every` while the controller runs.
pub async fn run(store: Store, ctx: Arc<Context>, grace: Duration, every: Duration) {
    let started = k8s_openapi::jiff::Timestamp::now().as_second();
    loop {
        tokio::time::sleep(every).await;
        if !ctx.caches.ready() {
            continue;
        }
        let Some(referenced) = named_archives(&ctx) else {
            tracing::info!("an unreadable Service may name archives: none is deleted this round");
            continue;
        };
        let listed = match store.list().await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "list the artifact store");
                continue;
            }
        };
        let holders = match store.holders().await {
            Ok(holders) => holders,
            Err(e) => {
                tracing::warn!(error = %e, "list the artifact store's holders");
                continue;
            }
        };
        for (sha256, namespace) in unrecorded(&listed, &referenced, &holders, started) {
            match store.grant(&sha256, &namespace).await {
                Ok(()) => {
                    tracing::info!(%sha256, %namespace, "recorded the namespace of an archive stored before holders were")
                }
                Err(e) => tracing::warn!(error = %e, %sha256, "record an archive's namespace"),
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        for sha256 in unreferenced(&listed, &referenced, &holders, now, grace) {
            // Looked at again just before the delete: the listing may be seconds old, and an
            // archive uploaded again (written anew) and named meanwhile must stay.
            let still_named = named_archives(&ctx).is_none_or(|r| r.contains_key(&sha256));
            let rewritten = match store.written(&sha256).await {
                Ok(Some(written)) => now - written < grace.as_secs() as i64,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, %sha256, "look at an unreferenced archive");
                    continue;
                }
            };
            if still_named || rewritten {
                continue;
            }
            match store.delete(&sha256).await {
                Ok(()) => tracing::info!(%sha256, "deleted an archive no code version names"),
                Err(e) => tracing::warn!(error = %e, %sha256, "delete an unreferenced archive"),
            }
        }
        match store.sweep_uploads(now - grace.as_secs() as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "deleted uploads that never completed"),
            Err(e) => tracing::warn!(error = %e, "sweep unfinished uploads"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(sha: &str, written: i64) -> Listed {
        Listed {
            sha256: sha.into(),
            size: 1,
            written,
        }
    }

    fn by(entries: &[(&str, &str)]) -> ByArchive {
        let mut out = ByArchive::new();
        for (sha, ns) in entries {
            out.entry(sha.to_string())
                .or_default()
                .insert(ns.to_string());
        }
        out
    }

    #[test]
    fn only_old_archives_no_holder_keeps_go() {
        let listed = [
            archive("named", 0),
            archive("old", 0),
            archive("fresh", 3000),
            archive("named-by-another", 0),
            archive("from-before-holders", 0),
        ];
        let named = by(&[
            ("named", "a"),
            ("named-by-another", "b"),
            ("from-before-holders", "a"),
        ]);
        let holders = by(&[("named", "a"), ("old", "a"), ("named-by-another", "a")]);
        let gone = unreferenced(&listed, &named, &holders, 3600, Duration::from_secs(3600));
        assert_eq!(gone, vec!["old", "named-by-another"]);
    }

    #[test]
    fn only_archives_from_before_holders_get_them_from_who_names_them() {
        let listed = [archive("old", 10), archive("new", 100), archive("held", 10)];
        let named = by(&[("old", "a"), ("old", "b"), ("new", "c"), ("held", "d")]);
        let holders = by(&[("held", "a")]);
        let recorded = unrecorded(&listed, &named, &holders, 50);
        let recorded: Vec<(&str, &str)> = recorded
            .iter()
            .map(|(s, n)| (s.as_str(), n.as_str()))
            .collect();
        assert_eq!(recorded, vec![("old", "a"), ("old", "b")]);
    }
}
