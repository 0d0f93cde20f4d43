//! `cpsctl`: the thin ConPaaS client over the CRDs. Its verbs come with the CLI work; until then
//! it says so and points at kubectl, which already drives every resource.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "cpsctl has no verbs yet. Use kubectl meanwhile:\n  kubectl get conpaas -A\n  kubectl apply -f manifests/examples/helloworld.yaml\n  kubectl explain services.conpaas.io.spec"
    );
    ExitCode::from(2)
}
