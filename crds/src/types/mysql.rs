//! mysql: ConPaaS' MySQL service on MariaDB with Galera: every node is a master of one
//! multi-master cluster, the first bootstraps it and the others join by state transfer.

use super::{
    Access, CredentialsDescriptor, DataCopies, LinkExport, RoleDescriptor, SecretValue,
    SettingCheck, SettingDescriptor, TypeDescriptor,
};

/// The Secret holding a mysql Service's credentials: the user clients and linked services log in
/// as, and its password.
pub const CREDENTIALS: CredentialsDescriptor = CredentialsDescriptor {
    suffix: "mysql",
    keys: &[
        ("username", SecretValue::Fixed("conpaas")),
        ("password", SecretValue::Random),
    ],
    shared_with_links: true,
};

/// The Secret holding a mysql Service's credentials (`username`, `password`).
pub fn secret_name(service: &str) -> String {
    CREDENTIALS.secret_name(service)
}

/// The user a rotation switches to: `cpsctl mysql password` alternates `<user>` and
/// `<user>_2`, so that the previous user keeps working while linked services switch.
pub fn alternate_user(user: &str) -> String {
    match user.strip_suffix(ALTERNATE_SUFFIX) {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{user}{ALTERNATE_SUFFIX}"),
    }
}

const ALTERNATE_SUFFIX: &str = "_2";

/// The mysql type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "mysql",
    summary: "ConPaaS' MySQL service: MariaDB with Galera, every node a master of one cluster (the first bootstraps it, the others join by state transfer with mariabackup). The credentials are in the Secret `<service>-mysql` (`username`, `password`; a random password unless it exists); a change to it is applied on every node within seconds, then handed to linked services (`cpsctl mysql password` rotates it); the database named by the setting `database` is created at start. A code version is an SQL dump (plain or gzipped; ConPaaS' `Dump`), loaded into that database once when activated; until the first one is in, the nodes are not Ready, and a dump MariaDB refuses fails the node with MariaDB's message. `status.endpoint` is `host:port` for clients: the first `glb` if there is one, else the first mysql node. Stopping keeps the data: the first mysql node dumps the database into the artifact store before the nodes go (`status.savedData`), and the first node of the next start loads it.",
    roles: &[
        RoleDescriptor {
            name: "mysql",
            summary: "a MariaDB Galera node on port 3306; Ready once Synced and answering queries",
            default_count: 1,
            min: 1,
            max: None,
        },
        RoleDescriptor {
            name: "glb",
            summary: "haproxy on port 3306 balancing clients over the Synced mysql nodes (health-checked); a leaving mysql node leaves every glb before it shuts down",
            default_count: 0,
            min: 0,
            max: None,
        },
    ],
    default_role: "mysql",
    settings: &[
        SettingDescriptor {
            key: "database",
            description: "the database created at start, which links name",
            default: Some("conpaas"),
            check: SettingCheck::Name { max_len: 64 },
        },
        SettingDescriptor {
            key: "previous_user_seconds",
            description: "after the Secret names another user (`cpsctl mysql password` alternates two), how long the previous user keeps working before it is locked, so that linked services switch without a failed connection",
            default: Some("300"),
            check: SettingCheck::Integer { min: 0, max: 86400 },
        },
    ],
    members: true,
    link_exports: &[
        LinkExport {
            name: "HOST",
            what: "the address clients connect to",
            value: "{host}",
        },
        LinkExport {
            name: "PORT",
            what: "its port (3306)",
            value: "{port}",
        },
        LinkExport {
            name: "USER",
            what: "the user of the Secret `<service>-mysql`",
            value: "{secret:username}",
        },
        LinkExport {
            name: "PASSWORD",
            what: "its password",
            value: "{secret:password}",
        },
        LinkExport {
            name: "DATABASE",
            what: "the database of the setting `database`",
            value: "{database}",
        },
        LinkExport {
            name: "URL",
            what: "`mysql://user:password@host:port/database`",
            value: "mysql://{secret:username}:{secret:password}@{endpoint}/{database}",
        },
    ],
    credentials: Some(&CREDENTIALS),
    check_count: None,
    runs_user_code: false,
    conpaas_alias: None,
    routers: &["glb"],
    drain_seconds: 1,
    access: None,
    endpoint: Some(Access {
        roles: &["glb", "mysql"],
        url: "{address}:3306",
        seeds: 1,
    }),
    saved_on_stop: Some("mysql"),
    // Galera replicates the whole database to every node.
    data_copies: Some(|_| DataCopies::EveryNode),
    restart_on_link_change: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_alternates_between_two_users() {
        assert_eq!(alternate_user("conpaas"), "conpaas_2");
        assert_eq!(alternate_user("conpaas_2"), "conpaas");
        assert_eq!(alternate_user("_2"), "_2_2");
    }

    #[test]
    fn a_new_password_is_32_random_hex_digits() {
        let password = super::super::random_secret();
        assert_eq!(password.len(), 32);
        assert!(password.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(password, super::super::random_secret());
    }
}
