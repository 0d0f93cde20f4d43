//! Whether the node's data folder ever held the cluster's data, across agent restarts: then it
//! is never deleted to retry a join.

use std::path::Path;

/// Written next to the data folder (in the role's folder, `dir`) once the node was Synced: from
/// then on the folder holds the cluster's data, whatever an agent restart forgot. Not inside
/// it, where a state transfer could copy it to a joiner that is not Synced yet.
const HELD_DATA: &str = "data-held";

/// Whether the data folder held the cluster's data (the node was Synced with it once).
pub fn held_data(dir: &Path) -> bool {
    dir.join(HELD_DATA).exists()
}

/// Notes that the data folder holds the cluster's data.
pub fn mark_held(dir: &Path) -> Result<(), String> {
    let marker = dir.join(HELD_DATA);
    if marker.exists() {
        return Ok(());
    }
    std::fs::write(&marker, b"").map_err(|e| {
        format!(
            "could not note the data as held in {}: {e}",
            marker.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_data_is_noted_for_the_next_agent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!held_data(dir.path()));
        mark_held(dir.path()).unwrap();
        mark_held(dir.path()).unwrap();
        assert!(held_data(dir.path()));
    }
}
