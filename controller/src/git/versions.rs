//! What a commit of a Service's git source changes in its `spec.code`, decided without I/O: a
//! new version `git-<short sha>` for a commit not stored yet, the oldest git versions dropped
//! beyond a limit (never the active or previous one), and with `autoActivate` the commit's
//! version made active once each time the ref moves to it.

use conpaas_crds::v1alpha1::{ArtifactRef, CodeSpec, CodeVersion};

/// Version names of git commits start with this, as ConPaaS named them (`git-<rev>`).
pub const PREFIX: &str = "git-";
/// Hex digits of the commit in a version's name: enough that two commits of one repository
/// never share a name.
const SHORT: usize = 12;
/// Git versions kept in the spec (a Service holds at most 32 versions in all).
pub const KEEP: usize = 10;

/// The version name of `commit`.
pub fn version_name(commit: &str) -> String {
    format!("{PREFIX}{}", &commit[..SHORT.min(commit.len())])
}

/// Versions the git source made: named by it and carrying their commit.
fn is_git_version(version: &CodeVersion) -> bool {
    version.name.starts_with(PREFIX) && version.commit.is_some()
}

/// The version already made from `commit`, if any: its archive is not packed again.
pub fn known<'a>(code: &'a CodeSpec, commit: &str) -> Option<&'a CodeVersion> {
    code.versions
        .iter()
        .find(|v| is_git_version(v) && v.commit.as_deref() == Some(commit))
}

/// A change of `spec.code`: the whole new version list, and the version to activate.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Every version, the user's untouched.
    pub versions: Vec<CodeVersion>,
    /// The version to make active, when it changes.
    pub activate: Option<String>,
}

/// What to write after the ref was found at `commit`. `stored` is the digest of its archive when
/// it was packed just now (it was not [`known`]); `last_seen` is the commit the ref was at the
/// last time it was looked up; `previous` is the version active before the current one (kept).
/// None when nothing changes.
pub fn change(
    code: &CodeSpec,
    commit: &str,
    stored: Option<&str>,
    last_seen: Option<&str>,
    auto_activate: bool,
    previous: Option<&str>,
) -> Option<Change> {
    let mut versions = code.versions.clone();
    let name = match (known(code, commit), stored) {
        (Some(version), _) => version.name.clone(),
        (None, Some(sha256)) => {
            let name = version_name(commit);
            // A version of that name that is not this commit's (made by hand) is replaced: the
            // name says which commit it is.
            versions.retain(|v| v.name != name);
            versions.push(CodeVersion {
                name: name.clone(),
                artifact: Some(ArtifactRef {
                    sha256: sha256.to_string(),
                }),
                commit: Some(commit.to_string()),
                ..Default::default()
            });
            name
        }
        (None, None) => return None,
    };
    let moved = last_seen != Some(commit);
    let activate = (auto_activate && moved && code.active.as_deref() != Some(name.as_str()))
        .then(|| name.clone());
    let active = activate.as_deref().or(code.active.as_deref());
    // The oldest git versions go first; the one just made, the active (the new one and the one
    // it replaces, which becomes the previous) and the previous stay.
    let mut excess = versions
        .iter()
        .filter(|v| is_git_version(v))
        .count()
        .saturating_sub(KEEP);
    versions.retain(|v| {
        let keep = !is_git_version(v)
            || excess == 0
            || v.name == name
            || Some(v.name.as_str()) == active
            || Some(v.name.as_str()) == code.active.as_deref()
            || Some(v.name.as_str()) == previous;
        if !keep {
            excess -= 1;
        }
        keep
    });
    (versions != code.versions || activate.is_some()).then_some(Change { versions, activate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(n: u8) -> String {
        format!("{n:02x}").repeat(20)
    }

    fn git_version(n: u8) -> CodeVersion {
        CodeVersion {
            name: version_name(&commit(n)),
            artifact: Some(ArtifactRef {
                sha256: "ab".repeat(32),
            }),
            commit: Some(commit(n)),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_commit_becomes_a_version_and_is_activated_only_when_asked() {
        let code = CodeSpec::default();
        let plain = change(&code, &commit(1), Some("digest"), None, false, None).unwrap();
        assert_eq!(plain.versions.len(), 1);
        assert_eq!(plain.versions[0].name, "git-010101010101");
        assert_eq!(
            plain.versions[0].commit.as_deref(),
            Some(commit(1).as_str())
        );
        assert_eq!(plain.activate, None);
        let auto = change(&code, &commit(1), Some("digest"), None, true, None).unwrap();
        assert_eq!(auto.activate.as_deref(), Some("git-010101010101"));
    }

    #[test]
    fn a_known_commit_is_not_stored_again_and_is_activated_once_when_the_ref_moves_back() {
        let code = CodeSpec {
            active: Some(git_version(2).name),
            versions: vec![git_version(1), git_version(2)],
            ..Default::default()
        };
        assert_eq!(known(&code, &commit(1)), Some(&code.versions[0]));
        // The ref was force-pushed back to commit 1: no new version, commit 1 active again.
        let back = change(&code, &commit(1), None, Some(&commit(2)), true, None).unwrap();
        assert_eq!(back.versions, code.versions);
        assert_eq!(back.activate, Some(git_version(1).name));
        // Seen before: a version activated by hand since then stays active.
        assert_eq!(
            change(&code, &commit(1), None, Some(&commit(1)), true, None),
            None
        );
        // Without autoActivate nothing changes.
        assert_eq!(
            change(&code, &commit(1), None, Some(&commit(2)), false, None),
            None
        );
    }

    #[test]
    fn old_git_versions_go_but_not_the_active_previous_or_users_own() {
        let mine = CodeVersion {
            name: "v1".into(),
            url: Some("https://example.com/v1.tar".into()),
            sha256: Some("cd".repeat(32)),
            ..Default::default()
        };
        let mut versions = vec![mine.clone()];
        versions.extend((1..=KEEP as u8).map(git_version));
        let code = CodeSpec {
            active: Some(git_version(1).name),
            versions,
            ..Default::default()
        };
        let previous = git_version(2).name;
        let next = change(
            &code,
            &commit(100),
            Some("digest"),
            None,
            false,
            Some(&previous),
        )
        .unwrap();
        let names: Vec<&str> = next.versions.iter().map(|v| v.name.as_str()).collect();
        assert!(names.contains(&"v1"));
        assert!(names.contains(&git_version(1).name.as_str()), "active kept");
        assert!(names.contains(&previous.as_str()), "previous kept");
        assert!(
            !names.contains(&git_version(3).name.as_str()),
            "oldest other dropped"
        );
        assert!(names.contains(&version_name(&commit(100)).as_str()));
        assert_eq!(next.versions.len(), KEEP + 1);

        // Activating the new commit keeps the one it replaces: it is the one to roll back to.
        let auto = change(&code, &commit(100), Some("digest"), None, true, None).unwrap();
        let names: Vec<&str> = auto.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(auto.activate, Some(version_name(&commit(100))));
        assert!(
            names.contains(&git_version(1).name.as_str()),
            "replaced active kept"
        );
    }
}
