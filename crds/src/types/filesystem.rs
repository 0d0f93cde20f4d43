//! filesystem: ConPaaS' XtreemFS service on GlusterFS: POSIX volumes over the storage nodes,
//! mounted by the nodes of the Services that link to them.

use crate::v1alpha1::ServiceSpec;

use super::{
    Access, ConpaasAlias, CountRefusal, DataCopies, LinkExport, RoleDescriptor, SettingCheck,
    SettingDescriptor, TypeDescriptor,
};

/// The port of a storage node's glusterd, which clients ask for a volume's layout.
pub const GLUSTERD_PORT: u16 = 24007;

/// A filesystem's storage nodes are at least as many as each volume's group spans (the API
/// server refuses a count below it; an autoscaler's count is checked here).
fn check_widths(spec: &ServiceSpec, role: &str, count: i32) -> Result<(), CountRefusal> {
    if role != "storage" {
        return Ok(());
    }
    let volumes = spec.filesystem.iter().flat_map(|f| &f.volumes);
    match volumes.into_iter().find(|v| v.group_size() > count) {
        Some(v) => Err(CountRefusal {
            reason: "VolumeTooWide",
            message: format!(
                "spec: {count} storage nodes cannot hold volume {}, whose every file lives on {} nodes: scale to at least that many, or change the volume",
                v.name,
                v.group_size()
            ),
        }),
        None => Ok(()),
    }
}

/// The filesystem type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "filesystem",
    summary: "ConPaaS' XtreemFS service on GlusterFS: the volumes of `spec.filesystem.volumes`, each with one brick per storage node in groups of `replicas` (or `disperse`) nodes and files distributed over the groups. A new node's bricks join once a whole group can (data is rebalanced onto them); a leaving node's group has its data moved onto the others before the VM goes, and a scale-in that would leave a volume fewer nodes than its group is refused. A link with `volume` and `mountPath` mounts the volume on every node of the linking php, java or generic Service, inside its code folder. Stopping keeps the data: the first storage node archives every volume into the artifact store (`status.savedData`), and the first node of the next start puts it back. ConPaaS manifests' `xtreemfs` imports as this type.",
    roles: &[RoleDescriptor {
        name: "storage",
        summary: "glusterd on port 24007 and one brick per volume; the node with the lowest ordinal manages the volumes",
        default_count: 1,
        min: 1,
        max: None,
    }],
    default_role: "storage",
    settings: &[SettingDescriptor {
        key: "min_free_disk_percent",
        description: "the share of each brick's disk kept free: no file is placed or moved onto a brick with less (GlusterFS cluster.min-free-disk)",
        default: Some("10"),
        check: SettingCheck::Integer { min: 0, max: 90 },
    }],
    members: true,
    link_exports: &[
        LinkExport {
            name: "MOUNT",
            what: "the absolute path where the volume is mounted on the node",
            value: "{mount}",
        },
        LinkExport {
            name: "VOLUME",
            what: "the volume's name",
            value: "{volume}",
        },
        LinkExport {
            name: "SERVERS",
            what: "`host:port` of the storage node clients ask for the volume",
            value: "{endpoint}",
        },
    ],
    credentials: None,
    check_count: Some(check_widths),
    runs_user_code: false,
    conpaas_alias: Some(ConpaasAlias {
        name: "xtreemfs",
        roles: &[("osd", "storage")],
    }),
    // Every storage node reports which nodes hold bricks: a leaving node is released once its
    // bricks' data moved off it.
    routers: &["storage"],
    drain_seconds: 1,
    access: None,
    endpoint: Some(Access {
        roles: &["storage"],
        url: "{address}:24007",
        seeds: 1,
    }),
    saved_on_stop: Some("storage"),
    data_copies: Some(|spec| {
        let volumes = spec.filesystem.iter().flat_map(|f| &f.volumes);
        let mut volumes = volumes.into_iter();
        // A dispersed volume survives the loss of one node of each group, as a replicated one.
        if volumes.any(|v| v.replicas < 2 && v.disperse.is_none()) {
            DataCopies::None
        } else {
            DataCopies::Replicated
        }
    }),
    restart_on_link_change: &[],
};
