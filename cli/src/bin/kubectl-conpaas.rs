//! `kubectl conpaas ...`: cpsctl installed as a kubectl plugin (kubectl runs `kubectl-conpaas`
//! from the PATH).

fn main() -> std::process::ExitCode {
    cpsctl::main("kubectl conpaas")
}
