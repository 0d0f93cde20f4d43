//! What the EC2 tests ask of moto (`conpaas_cloud::moto`): the instances it runs for us.

use conpaas_cloud::moto::Moto;
use conpaas_cloud::{ComputeDriver, Tags, VmState};

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
