//! What the EC2 tests ask of moto (`conpaas_cloud::moto`): the instances it runs for us.

use conpaas_cloud::moto::Moto;
use conpaas_cloud::{ComputeDriver, Tags, VmState};

/// The Secret `aws-creds` (in the controller's namespace, `default`) with moto's credentials,
/// for a Cloud's `ec2.credentialsSecret`.
pub async fn apply_credentials(client: &kube::Client) -> anyhow::Result<()> {
    crate::manifest::apply(
        client,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: aws-creds}\nstringData: {accessKeyId: testing, secretAccessKey: testing}\n",
        "default",
    )
    .await
}

/// The instances moto runs (not terminated) that carry our managed-by tag, by ID.
pub async fn live_instances(moto: &Moto) -> anyhow::Result<Vec<String>> {
    let ours = Tags::from([(
        conpaas_crds::labels::TAG_MANAGED_BY.to_string(),
        conpaas_crds::labels::MANAGED_BY_VALUE.to_string(),
    )]);
    let mut ids: Vec<String> = moto
        .driver()
        .await
        .list(&ours)
        .await?
        .into_iter()
        .filter(|vm| vm.state != VmState::Terminated)
        .map(|vm| vm.id)
        .collect();
    ids.sort();
    Ok(ids)
}
