//! `cpsctl`: the thin ConPaaS client over the CRDs.

fn main() -> std::process::ExitCode {
    cpsctl::main("cpsctl")
}
