//! One module per group of verbs; `run` dispatches.

mod code;
mod describe;
mod doctor;
mod fs;
mod info;
mod logs;
mod manifest;
mod mapreduce;
mod mysql;
mod node;
mod nodes;
mod services;
mod tenant;
mod wait;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use conpaas_crds::labels::LABEL_SERVICE;
use conpaas_crds::v1alpha1::{Application, Cloud, Service, ServiceNode};
use kube::Api;
use kube::api::ListParams;

use crate::args::{Cli, CodeVerb, FsVerb, MapreduceVerb, MysqlVerb, NodeVerb, TenantVerb, Verb};
use crate::connect::{Session, connect};

/// Runs one verb; the exit code says whether it succeeded (doctor and wait may fail politely).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Verb::Usage { r#type } = &cli.verb {
        info::usage(cli.format()?, *r#type)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Verb::Code(CodeVerb::Download { service, version }) = &cli.verb {
        let out = cli
            .output
            .as_deref()
            .context("cpsctl code download SERVICE VERSION -o FILE: name the file to write")?;
        let s = connect(&cli, crate::args::Output::Table).await?;
        code::download(&s, service, version, std::path::Path::new(out)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = connect(&cli, cli.format()?).await?;
    match cli.verb {
        Verb::Create {
            r#type,
            app,
            name,
            cloud,
            stopped,
            roles,
        } => services::create(&s, r#type, &app, name, cloud, stopped, &roles.counts).await?,
        Verb::List {
            app,
            all_namespaces,
        } => services::list(&s, app.as_deref(), all_namespaces).await?,
        Verb::Describe { service, app } => describe::describe(&s, service, app).await?,
        Verb::Start { service } => services::set_state(&s, &service, "Running").await?,
        Verb::Stop { service } => services::set_state(&s, &service, "Stopped").await?,
        Verb::Terminate { service, wait } => {
            return services::terminate(&s, &service, wait).await;
        }
        Verb::Rename {
            service,
            display_name,
        } => services::rename(&s, &service, &display_name).await?,
        Verb::AddNodes { service, roles } => {
            nodes::change(&s, &service, &roles.counts, nodes::Change::Add).await?
        }
        Verb::RemoveNodes { service, roles } => {
            nodes::change(&s, &service, &roles.counts, nodes::Change::Remove).await?
        }
        Verb::Scale { service, roles } => {
            nodes::change(&s, &service, &roles.counts, nodes::Change::Set).await?
        }
        Verb::Logs {
            service,
            role,
            node,
            controller,
            tail,
            file,
        } => logs::logs(&s, &service, role, node, controller, tail, file).await?,
        Verb::StartupScript { service, file } => {
            services::startup_script(&s, &service, &file).await?
        }
        Verb::Clouds => info::clouds(&s).await?,
        Verb::Plan { service } => info::plan(&s, &service).await?,
        Verb::Wait {
            service,
            condition,
            timeout,
        } => return wait::wait(&s, &service, condition, timeout).await,
        Verb::Doctor => return doctor::doctor(&s).await,
        Verb::Import {
            file,
            cloud,
            dry_run,
        } => manifest::import(&s, &file, cloud, dry_run).await?,
        Verb::Export { app } => manifest::export(&s, &app).await?,
        Verb::Code(verb) => match verb {
            CodeVerb::Upload {
                service,
                path,
                version,
                activate,
            } => code::upload(&s, &service, &path, version, activate).await?,
            CodeVerb::List { service } => code::list(&s, &service).await?,
            CodeVerb::Activate { service, version } => {
                code::activate(&s, &service, &version).await?
            }
            CodeVerb::Rollback { service } => code::rollback(&s, &service).await?,
            CodeVerb::Delete { service, version } => code::delete(&s, &service, &version).await?,
            CodeVerb::Download { .. } => unreachable!("handled before connecting"),
        },
        Verb::Node(NodeVerb::Replace {
            node,
            accept_data_loss,
        }) => node::replace(&s, &node, accept_data_loss).await?,
        Verb::Mysql(MysqlVerb::Dump { service }) => mysql::dump(&s, &service).await?,
        Verb::Fs(FsVerb::Export { service, volume }) => fs::export(&s, &service, &volume).await?,
        Verb::Fs(FsVerb::Import {
            service,
            volume,
            file,
        }) => fs::import(&s, &service, &volume, file).await?,
        Verb::Mapreduce(MapreduceVerb::Submit {
            service,
            conf,
            no_volumes,
            app,
            args,
        }) => mapreduce::submit(&s, &service, &app, &conf, no_volumes, &args).await?,
        Verb::Mysql(MysqlVerb::Password {
            service,
            wait,
            timeout,
        }) => mysql::password(&s, &service, wait.then(|| Duration::from_secs(timeout))).await?,
        Verb::Tenant(TenantVerb::Create {
            name,
            users,
            groups,
            credits,
            kubeconfig_out,
            token_hours,
            controller,
        }) => {
            let people = tenant::People { users, groups };
            tenant::create(
                &s,
                &name,
                &people,
                credits,
                kubeconfig_out.as_deref(),
                token_hours,
            )
            .await?;
            tenant::bind_controller(&s, &name, &controller).await?
        }
        Verb::Tenant(TenantVerb::Grant { name, credits }) => {
            tenant::grant(&s, &name, credits).await?
        }
        Verb::Credits => tenant::credits(&s).await?,
        Verb::Usage { .. } | Verb::Completion { .. } => unreachable!("handled before connecting"),
    }
    Ok(ExitCode::SUCCESS)
}

impl Session {
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn applications(&self) -> Api<Application> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn nodes(&self) -> Api<ServiceNode> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn clouds(&self) -> Api<Cloud> {
        Api::all(self.client.clone())
    }

    /// The Service `name`, or an error that says where to look.
    async fn service(&self, name: &str) -> anyhow::Result<Service> {
        self.services().get_opt(name).await?.with_context(|| {
            format!(
                "no Service {name:?} in namespace {:?}; `cpsctl list` shows the Services (-n picks the namespace)",
                self.namespace
            )
        })
    }

    /// The ServiceNodes of a Service, by name.
    async fn nodes_of(&self, service: &str) -> anyhow::Result<Vec<ServiceNode>> {
        let lp = ListParams::default().labels(&format!("{LABEL_SERVICE}={service}"));
        let mut nodes = self.nodes().list(&lp).await?.items;
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(nodes)
    }

    /// Names of the Clouds, to default to the only one.
    async fn only_cloud(&self) -> anyhow::Result<String> {
        let clouds = self.clouds().list(&ListParams::default()).await?.items;
        let names: Vec<String> = clouds.into_iter().filter_map(|c| c.metadata.name).collect();
        match names.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!(
                "no Cloud exists; an admin creates one (see manifests/examples/helloworld.yaml), `cpsctl clouds` lists them"
            ),
            many => anyhow::bail!(
                "several Clouds exist ({}); name one with --cloud",
                many.join(", ")
            ),
        }
    }
}

/// Whether `program` is a file in one of the PATH's folders (a client tool a verb runs).
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
