//! The command line: global flags like kubectl's, and one subcommand per verb, each with examples.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use conpaas_crds::v1alpha1::ServiceType;

/// Drive ConPaaS applications and services on Kubernetes.
#[derive(Parser, Debug)]
#[command(
    version,
    propagate_version = true,
    after_help = "Examples:\n  cpsctl create helloworld --app demo --node 3\n  cpsctl describe --app demo\n  cpsctl add-nodes helloworld --node 2\n  cpsctl import wordpress.json --cloud local\n  cpsctl doctor"
)]
pub struct Cli {
    /// Path to the kubeconfig file [default: $KUBECONFIG, ~/.kube/config, in-cluster]
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace [default: the context's namespace, else `default`]
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format: table, yaml or json [default: table]; for `code download`, the file to
    /// write
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_name = "FORMAT|FILE"
    )]
    pub output: Option<String>,
    /// What to do
    #[command(subcommand)]
    pub verb: Verb,
}

impl Cli {
    /// How to print results, from `-o`.
    pub fn format(&self) -> anyhow::Result<Output> {
        match &self.output {
            None => Ok(Output::Table),
            Some(value) => Output::from_str(value, true).map_err(|_| {
                anyhow::anyhow!("-o {value:?}: the output format is table, yaml or json")
            }),
        }
    }
}

/// How results are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Tables and trees for people
    Table,
    /// YAML, as kubectl prints it
    Yaml,
    /// JSON, as kubectl prints it
    Json,
}

/// What a `wait` waits for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Ready for its current spec (RUNNING, or STOPPED when stopped)
    Ready,
    /// Stopped: no nodes left
    Stopped,
    /// Gone
    Deleted,
}

/// Role counts given as `--<role> N` (e.g. `--node 2`, `--web=3`).
#[derive(clap::Args, Debug, Clone)]
pub struct RoleCounts {
    /// `--<role> N` for each role to change; `cpsctl usage <type>` lists a type's roles
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "--ROLE N"
    )]
    pub counts: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Create a Service (and its Application when missing)
    #[command(
        after_help = "Examples:\n  cpsctl create helloworld --app demo --node 3\n  cpsctl create generic --app batch --name workers --cloud local --node 4\n  cpsctl create helloworld --stopped"
    )]
    Create {
        /// Service type; `cpsctl usage <type>` shows its roles and settings
        #[arg(value_parser = parse_type)]
        r#type: ServiceType,
        /// Application to add the Service to; created when missing
        #[arg(long, default_value = "default")]
        app: String,
        /// Service name [default: the type, or type-2, type-3, ... when taken]
        #[arg(long)]
        name: Option<String>,
        /// Cloud of a new Application [default: the only Cloud, when there is one]
        #[arg(long)]
        cloud: Option<String>,
        /// Create it stopped (no VMs until `cpsctl start`)
        #[arg(long)]
        stopped: bool,
        #[command(flatten)]
        roles: RoleCounts,
    },
    /// List Services with their phase and readiness
    #[command(
        after_help = "Examples:\n  cpsctl list\n  cpsctl list --app demo\n  cpsctl list -A -o yaml"
    )]
    List {
        /// Only this Application's Services
        #[arg(long)]
        app: Option<String>,
        /// Every namespace
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show an Application, its Services and their nodes as a tree
    #[command(
        after_help = "Examples:\n  cpsctl describe hello\n  cpsctl describe --app demo\n  cpsctl describe            # every Application of the namespace"
    )]
    Describe {
        /// A Service
        service: Option<String>,
        /// A whole Application
        #[arg(long, conflicts_with = "service")]
        app: Option<String>,
    },
    /// Start a stopped Service (its roles get their nodes again)
    #[command(after_help = "Example:\n  cpsctl start hello && cpsctl wait hello")]
    Start {
        /// The Service
        service: String,
    },
    /// Stop a Service: every node goes, the Service and its settings stay
    #[command(after_help = "Example:\n  cpsctl stop hello && cpsctl wait hello --for stopped")]
    Stop {
        /// The Service
        service: String,
    },
    /// Delete a Service and every VM it runs
    #[command(after_help = "Example:\n  cpsctl terminate hello --wait")]
    Terminate {
        /// The Service
        service: String,
        /// Return only when the Service and its VMs are gone
        #[arg(long)]
        wait: bool,
    },
    /// Give a Service a new display name (Kubernetes names cannot change)
    #[command(after_help = "Example:\n  cpsctl rename hello 'Front page'")]
    Rename {
        /// The Service
        service: String,
        /// The new display name, shown by list and describe and written by export
        display_name: String,
    },
    /// A service type's roles, their default counts and its settings
    #[command(after_help = "Examples:\n  cpsctl usage generic\n  cpsctl usage helloworld -o yaml")]
    Usage {
        /// Service type
        #[arg(value_parser = parse_type)]
        r#type: ServiceType,
    },
    /// Add nodes to roles of a Service
    #[command(
        after_help = "Examples:\n  cpsctl add-nodes hello --node 2\n  cpsctl add-nodes workers --node=3"
    )]
    AddNodes {
        /// The Service
        service: String,
        #[command(flatten)]
        roles: RoleCounts,
    },
    /// Remove nodes from roles of a Service (the newest and not-ready go first)
    #[command(after_help = "Example:\n  cpsctl remove-nodes hello --node 1")]
    RemoveNodes {
        /// The Service
        service: String,
        #[command(flatten)]
        roles: RoleCounts,
    },
    /// Set role counts of a Service; a bare number sets the default role
    #[command(
        after_help = "Examples:\n  cpsctl scale hello 5\n  cpsctl scale workers --node 10\n  kubectl scale services.conpaas.io/hello --replicas=5   # the same, for the default role"
    )]
    Scale {
        /// The Service
        service: String,
        #[command(flatten)]
        roles: RoleCounts,
    },
    /// Agent logs of a Service's nodes, and what the controller reported about them
    #[command(
        after_help = "Examples:\n  cpsctl logs hello\n  cpsctl logs hello --node hello-node-0 --tail 20\n  cpsctl logs workers --role master --controller\n  cpsctl logs workers --file run.sh.log"
    )]
    Logs {
        /// The Service
        service: String,
        /// Only nodes of this role
        #[arg(long)]
        role: Option<String>,
        /// Only this node
        #[arg(long)]
        node: Option<String>,
        /// The controller's side instead of the agents': Events and, when the controller runs
        /// in the cluster, its log lines naming the Service
        #[arg(long)]
        controller: bool,
        /// Lines per node
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// A generic script's output instead of the agent's log, e.g. `run.sh.log`
        #[arg(long, conflicts_with = "controller")]
        file: Option<String>,
    },
    /// Set the script every node of a Service runs once before its role starts
    #[command(
        after_help = "Examples:\n  cpsctl startup-script hello setup.sh\n  echo 'apt-get install -y htop' | cpsctl startup-script hello -"
    )]
    StartupScript {
        /// The Service
        service: String,
        /// Script file, `-` for standard input
        file: PathBuf,
    },
    /// The Clouds nodes can run on, and whether they work
    #[command(after_help = "Example:\n  cpsctl clouds")]
    Clouds,
    /// What the controller would do to a Service's nodes now (reads only, writes nothing)
    #[command(after_help = "Example:\n  cpsctl plan hello")]
    Plan {
        /// The Service
        service: String,
    },
    /// Wait until a Service is Ready, stopped or deleted
    #[command(
        after_help = "Examples:\n  cpsctl wait hello\n  cpsctl wait hello --for stopped --timeout 10m"
    )]
    Wait {
        /// The Service
        service: String,
        /// What to wait for
        #[arg(long = "for", value_enum, default_value_t = WaitFor::Ready)]
        condition: WaitFor,
        /// Give up after this long (e.g. 90s, 5m)
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Preflight: API server, CRDs, controller and each Cloud's credentials
    #[command(after_help = "Example:\n  cpsctl doctor && cpsctl create helloworld")]
    Doctor,
    /// Create an Application from a ConPaaS manifest (JSON) and apply it
    #[command(
        after_help = "Examples:\n  cpsctl import wordpress.json --cloud local\n  cpsctl import mediawiki.json --dry-run -o yaml"
    )]
    Import {
        /// The ConPaaS manifest (`-` for standard input)
        file: PathBuf,
        /// Cloud of the Application (ConPaaS' `default` cloud) [default: the only Cloud]
        #[arg(long)]
        cloud: Option<String>,
        /// Print the resources; apply nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Write an Application back as a ConPaaS manifest (JSON)
    #[command(after_help = "Example:\n  cpsctl export demo > demo.json")]
    Export {
        /// The Application
        app: String,
    },
    /// A Service's code versions: upload, list, activate, rollback, delete, download
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl code upload hello ./site --activate\n  cpsctl code list hello\n  cpsctl code activate hello v1\n  cpsctl code rollback hello\n  cpsctl code download hello v1 -o v1.tar.gz"
    )]
    Code(CodeVerb),
    /// A Service's nodes: replace one whose data has no other copy
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl node replace db-mysql-0 --accept-data-loss"
    )]
    Node(NodeVerb),
    /// MySQL services: dump the database, rotate the password
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl mysql dump db > db.sql\n  cpsctl code upload db db.sql --version restore --activate   # load it (into another Service)\n  cpsctl mysql password db --wait"
    )]
    Mysql(MysqlVerb),
    /// Filesystem services: a volume's files as a tar, out and in (ConPaaS' XtreemFS snapshot)
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl fs export files uploads > uploads.tar\n  cpsctl fs import files uploads uploads.tar"
    )]
    Fs(FsVerb),
    /// MapReduce services: run a Spark application against the Service (ConPaaS' Hadoop jobs)
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl mapreduce submit jobs wordcount.py /var/lib/conpaas/volumes/data/in /var/lib/conpaas/volumes/data/out\n  cpsctl mapreduce submit jobs --conf spark.executor.cores=1 etl.py"
    )]
    Mapreduce(MapreduceVerb),
    /// Tenants (for administrators): a namespace, its users and its credits
    #[command(
        subcommand,
        after_help = "Examples:\n  cpsctl tenant create alice --user alice@example.org --credits 100\n  cpsctl tenant create bob --credits 50 --kubeconfig-out bob.kubeconfig\n  cpsctl tenant grant alice --credits 200"
    )]
    Tenant(TenantVerb),
    /// The namespace's credits: grant, used, balance, burn rate, time left, per Service
    #[command(after_help = "Examples:\n  cpsctl credits\n  cpsctl credits -n alice -o yaml")]
    Credits,
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  cpsctl completion bash > /etc/bash_completion.d/cpsctl\n  cpsctl completion zsh > \"${fpath[1]}/_cpsctl\""
    )]
    Completion {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// What `cpsctl tenant` does.
#[derive(Subcommand, Debug)]
pub enum TenantVerb {
    /// Make (or update) a tenant: namespace NAME labelled `conpaas.io/tenant`, a RoleBinding
    /// `conpaas-tenant` giving its users the namespace's edit role (ConPaaS' own roles aggregate
    /// into it), a RoleBinding `conpaas-controller` giving the controller what it does inside
    /// the namespace (Secrets, its agents' tokens), and its CreditAccount `credits`
    Create {
        /// The tenant, and its namespace
        name: String,
        /// A user of the tenant (repeatable)
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        /// A group of users of the tenant (repeatable)
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Credits granted (1 credit = 1 VM-hour at the default price)
        #[arg(long)]
        credits: i64,
        /// Also make a ServiceAccount `tenant` in the namespace as the tenant's user, and write a
        /// kubeconfig with its token to FILE (as ConPaaS' getcerts handed out certificates)
        #[arg(long, value_name = "FILE")]
        kubeconfig_out: Option<PathBuf>,
        /// Lifetime of that kubeconfig's token, in hours
        #[arg(long, default_value_t = 720)]
        token_hours: i64,
        /// The controller's ServiceAccount as NAMESPACE/NAME (the chart's release namespace and
        /// full name); it is bound to the ClusterRole `<NAME>-namespace` in the tenant's namespace
        #[arg(long, default_value = "conpaas/conpaas", value_name = "NAMESPACE/NAME")]
        controller: String,
    },
    /// Set a tenant's grant (raising it brings back what stopped when its credits ran out)
    Grant {
        /// The tenant
        name: String,
        /// Credits granted in total
        #[arg(long)]
        credits: i64,
    },
}

/// What `cpsctl node` does.
#[derive(Subcommand, Debug)]
pub enum NodeVerb {
    /// Let an unhealthy node be replaced although its data has no other copy (its Service is
    /// Degraded with reason DataAtRisk meanwhile): the new node starts empty. A node that is
    /// healthy again, or whose data has a copy, needs none of this.
    Replace {
        /// The ServiceNode (as `kubectl get servicenodes` lists it)
        node: String,
        /// Say that its data may be lost: without it nothing is changed
        #[arg(long)]
        accept_data_loss: bool,
    },
}

/// What `cpsctl mysql` does.
#[derive(Subcommand, Debug)]
pub enum MysqlVerb {
    /// Write the Service's database as SQL to standard output (mariadb-dump against its
    /// endpoint with the credentials of its Secret; needs the MariaDB client here)
    Dump {
        /// The mysql Service
        service: String,
    },
    /// Rotate the Service's credentials (ConPaaS' set_password): its Secret gets a new random
    /// password for the other of two users (`<user>` and `<user>_2`). Every mysql node applies
    /// it within seconds, linked services then switch to it, and the previous user stops working
    /// after the setting `previous_user_seconds` (300 by default), so no request fails.
    Password {
        /// The mysql Service
        service: String,
        /// Wait until every mysql node accepts the new credentials (and linked services are
        /// told)
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// What `cpsctl fs` does. Both mount the volume here (GlusterFS' FUSE client, Debian package
/// glusterfs-client; root) from the Service's endpoint.
#[derive(Subcommand, Debug)]
pub enum FsVerb {
    /// Write the volume's files as a tar to standard output
    Export {
        /// The filesystem Service
        service: String,
        /// The volume
        volume: String,
    },
    /// Unpack a tar into the volume, over what it holds
    Import {
        /// The filesystem Service
        service: String,
        /// The volume
        volume: String,
        /// The tar; standard input when left out
        file: Option<std::path::PathBuf>,
    },
}

/// What `cpsctl mapreduce` does.
#[derive(Subcommand, Debug)]
pub enum MapreduceVerb {
    /// Run spark-submit against the Service's master, the driver here, its output streamed
    Submit {
        /// The mapreduce Service
        service: String,
        /// A Spark property for this run (repeatable), e.g. spark.executor.cores=1
        #[arg(long = "conf", value_name = "KEY=VALUE")]
        conf: Vec<String>,
        /// Run the driver without the linked volumes (mounting them here needs root and the
        /// GlusterFS client); for jobs whose driver reads and writes none of them
        #[arg(long)]
        no_volumes: bool,
        /// The application: a Python file or a jar
        app: PathBuf,
        /// The application's arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What `cpsctl code` does.
#[derive(Subcommand, Debug)]
pub enum CodeVerb {
    /// Store an archive (or a directory, packed) and add it as a version
    // `version` names a code version here, not cpsctl's own.
    #[command(disable_version_flag = true)]
    Upload {
        /// The Service
        service: String,
        /// A tar, tar.gz or war file, or a directory to pack
        path: PathBuf,
        /// The version's name [default: code-<first 10 digits of its sha256>]
        #[arg(long)]
        version: Option<String>,
        /// Make it the version the nodes serve
        #[arg(long)]
        activate: bool,
    },
    /// The versions, their source and digest, and which one is active
    List {
        /// The Service
        service: String,
    },
    /// Make a version the one every node serves
    // `version` names a code version here, not cpsctl's own.
    #[command(disable_version_flag = true)]
    Activate {
        /// The Service
        service: String,
        /// The version
        version: String,
    },
    /// Activate the version that was active before the current one
    Rollback {
        /// The Service
        service: String,
    },
    /// Remove a version (never the active one)
    // `version` names a code version here, not cpsctl's own.
    #[command(disable_version_flag = true)]
    Delete {
        /// The Service
        service: String,
        /// The version
        version: String,
    },
    /// Write a version's archive to a file, its digest checked
    // `version` names a code version here, not cpsctl's own.
    #[command(disable_version_flag = true)]
    Download {
        /// The Service
        service: String,
        /// The version (the file to write is given with -o)
        version: String,
    },
}

/// Parses a service type name, listing the valid ones when it is not one.
pub fn parse_type(name: &str) -> Result<ServiceType, String> {
    ServiceType::ALL
        .into_iter()
        .find(|t| t.as_str() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = ServiceType::ALL.iter().map(|t| t.as_str()).collect();
            format!(
                "unknown service type {name:?}; this ConPaaS runs: {}",
                known.join(", ")
            )
        })
}

/// Parses `90s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_every_verb_has_examples() {
        Cli::command().debug_assert();
        for verb in Cli::command().get_subcommands() {
            let help = verb
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("cpsctl"),
                "`{}` has no example",
                verb.get_name()
            );
        }
    }

    #[test]
    fn role_counts_are_taken_as_given() {
        let cli = Cli::parse_from(["cpsctl", "add-nodes", "hello", "--node", "2", "--web=3"]);
        let Verb::AddNodes { service, roles } = cli.verb else {
            panic!("parsed {:?}", cli.verb)
        };
        assert_eq!(service, "hello");
        assert_eq!(roles.counts, ["--node", "2", "--web=3"]);
    }

    #[test]
    fn durations_and_types_parse_or_say_what_is_wrong() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5d").unwrap_err().contains("unit"));
        assert!(
            parse_type("htc")
                .unwrap_err()
                .contains("helloworld, generic, php")
        );
    }
}
